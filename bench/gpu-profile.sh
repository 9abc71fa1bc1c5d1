#!/usr/bin/env bash
# On a GPU machine, with a staged CUDA build (scripts/stage-cuda.sh): where tfm's CUDA training
# step spends its time, and how it compares with PyTorch on the same model.
#   1. tfm-bench on nanoGPT's GPU model (6 x 384, context 256, batch 64) with TFM_PROFILE=1:
#      per-op times with the device synchronised around each op;
#   2. the same, unprofiled: ms/step and tokens/s, on tfm's fused CUDA kernels and on dfdx's
#      generic kernels (`--generic`), side by side;
#   3. PyTorch eager on the same model and batch, fp32 and bf16 autocast;
#   4. `tfm train` on tiny Shakespeare in f32 and in mixed precision (precision: f16), a few
#      steps each, for the CLI's own throughput.
# Usage: bash bench/gpu-profile.sh [STAGE_DIR] [DATA_DIR]   (defaults .stage/cuda, ../shared/data)
# Logs go to $OUT (if set) or /tmp/tfm-gpu-profile.
set -uo pipefail
STAGE=${1:-.stage/cuda}
DATA=${2:-../shared/data}
LOGS=${OUT:-/tmp/tfm-gpu-profile}
mkdir -p "$LOGS"
RUN="$STAGE/run.sh"
PY=${PYTHON:-python3}
step() { echo; echo "== $*"; }

step "tfm-bench, profiled (2 steps)"
TFM_PROFILE=1 "$RUN" tfm-bench --config medium-cpu --batch 64 --device cuda --warmup 1 --steps 2 2>&1 | tee "$LOGS/profile.txt"

step "tfm-bench, f32, unprofiled: fused kernels, then dfdx's generic ones"
"$RUN" tfm-bench --config medium-cpu --batch 64 --device cuda --warmup 2 --steps 5 2>&1 | tee -a "$LOGS/bench.jsonl"
"$RUN" tfm-bench --config medium-cpu --batch 64 --device cuda --warmup 2 --steps 5 --generic 2>&1 | tee -a "$LOGS/bench.jsonl"

step "PyTorch eager, same model and batch"
for dt in fp32 bf16; do
    "$PY" bench/torch_gpt.py --config medium-cpu --batch 64 --device cuda --attn manual --dtype "$dt" --warmup 5 --steps 20 2>&1 | tee -a "$LOGS/bench.jsonl"
done

step "tfm train on tiny Shakespeare, nanoGPT's GPU config, f32 then f16"
for p in f32 f16; do
    "$RUN" tfm train examples/shakespeare_char.tfm --config examples/shakespeare_char_gpu.yaml \
        --data "$DATA/tinyshakespeare.txt" --device cuda --steps 12 --cfg precision=$p \
        --out "/tmp/tfm-gpu-$p" --overwrite 2>&1 | tail -8
    tail -2 "/tmp/tfm-gpu-$p/metrics.jsonl" 2>/dev/null
done
