#!/usr/bin/env bash
# PyTorch reference numbers on a CUDA machine: GPT-2 small (124M, context 1024) training steps,
# eager and torch.compile, with tokens/s, MFU and peak GPU memory; one JSON line per run.
#
# Usage: bash bench/gpu.sh [PEAK_TFLOPS] [BATCH]
#   PEAK_TFLOPS: the accelerator's dense bf16 peak for MFU (H100 SXM: 989; H200: 989; A100: 312).
#   PYTHON: a python with a CUDA build of torch (default: .venv-bench, else python3).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEAK="${1:-989}"
BATCH="${2:-8}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv-bench/bin/python" ]; then PY="$ROOT/.venv-bench/bin/python"; else PY=python3; fi
fi

"$PY" "$ROOT/bench/torch_gpt.py" --device cuda --measure-peak --dtype bf16 --peak-size 8192
for variant in "" "--compile"; do
    # shellcheck disable=SC2086
    "$PY" "$ROOT/bench/torch_gpt.py" --config gpt2 --device cuda --dtype bf16 --attn sdpa \
        --batch "$BATCH" --warmup 5 --steps 20 --peak-tflops "$PEAK" $variant \
        || echo "{\"error\": \"gpt2 run failed\", \"variant\": \"$variant\"}"
done
