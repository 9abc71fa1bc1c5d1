#!/usr/bin/env bash
# Trains examples/shakespeare_char.tfm with nanoGPT's CPU settings (release build), then
# measures the validation loss on 200 batches and samples some text. The corpus is
# `$TFM_DATA_DIR/tinyshakespeare.txt`, by default `shared/data/` beside the repository.
#
#   scripts/run-shakespeare.sh [--gpu] [TRAIN ARGS...]
#
# --gpu: nanoGPT's GPU run instead (examples/shakespeare_char_gpu.yaml: 6 x 384, context 256,
# batch 64, dropout 0.2, 5000 iterations, on CUDA). Extra arguments go to `tfm train` (e.g.
# `--steps 200`). TFM_BIN runs a prebuilt binary instead of `cargo run`, e.g. on a GPU machine
# without a Rust toolchain: TFM_BIN=".stage/cuda/run.sh tfm" scripts/run-shakespeare.sh --gpu
set -euo pipefail
cd "$(dirname "$0")/.."

config=examples/shakespeare_char.yaml
run=runs/shakespeare_char
if [ "${1:-}" = "--gpu" ]; then
    shift
    config=examples/shakespeare_char_gpu.yaml
    run=runs/shakespeare_char_gpu
fi
data="${TFM_DATA_DIR:-../shared/data}/tinyshakespeare.txt"
if [ ! -f "$data" ]; then
    echo "error: tiny Shakespeare not found at $data; set TFM_DATA_DIR to the folder holding tinyshakespeare.txt" >&2
    exit 1
fi
if [ -n "${TFM_BIN:-}" ]; then
    tfm() { $TFM_BIN "$@"; }
else
    cargo build --release --quiet --bin tfm
    tfm() { cargo run --release --quiet --bin tfm -- "$@"; }
fi

start=$SECONDS
tfm train examples/shakespeare_char.tfm --config "$config" --data "$data" --overwrite "$@"
trained=$((SECONDS - start))
echo
echo "== validation loss of the best checkpoint over 200 batches"
tfm eval examples/shakespeare_char.tfm --checkpoint "$run" --data "$data" --batches 200
echo
echo "== sample"
tfm generate examples/shakespeare_char.tfm --checkpoint "$run" --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40
echo
echo "wall time: ${trained} s of training, $((SECONDS - start)) s in all"
