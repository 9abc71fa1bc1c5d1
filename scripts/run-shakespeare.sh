#!/usr/bin/env bash
# Trains examples/shakespeare_char.tfm with nanoGPT's CPU settings (release build), then
# measures the validation loss on 200 batches and samples some text. The corpus is
# `$TFM_DATA_DIR/tinyshakespeare.txt`, by default `shared/data/` beside the repository.
# Extra arguments go to `tfm train` (e.g. `--steps 200`, `--device cuda`).
set -euo pipefail
cd "$(dirname "$0")/.."

data="${TFM_DATA_DIR:-../shared/data}/tinyshakespeare.txt"
if [ ! -f "$data" ]; then
    echo "error: tiny Shakespeare not found at $data; set TFM_DATA_DIR to the folder holding tinyshakespeare.txt" >&2
    exit 1
fi
cargo build --release --quiet --bin tfm
tfm() { cargo run --release --quiet --bin tfm -- "$@"; }

start=$SECONDS
tfm train examples/shakespeare_char.tfm --config examples/shakespeare_char.yaml --data "$data" "$@"
trained=$((SECONDS - start))
echo
echo "== validation loss of the best checkpoint over 200 batches"
tfm eval examples/shakespeare_char.tfm --checkpoint runs/shakespeare_char --data "$data" --batches 200
echo
echo "== sample"
tfm generate examples/shakespeare_char.tfm --checkpoint runs/shakespeare_char --prompt "ROMEO:" --tokens 300 --temperature 0.8 --top-k 40
echo
echo "wall time: ${trained} s of training, $((SECONDS - start)) s in all"
