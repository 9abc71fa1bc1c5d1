#!/usr/bin/env bash
# Trains examples/addition.tfm on the built-in 3-digit addition task (release build) and prints
# the final figures: losses, exact match on held-out problems, sample answers, wall time.
# Extra arguments go to `tfm train` (e.g. `--steps 500`, `--device cuda`).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --quiet --bin tfm
start=$SECONDS
cargo run --release --quiet --bin tfm -- train examples/addition.tfm --config examples/addition.yaml --overwrite "$@"
echo "wall time: $((SECONDS - start)) s (training and evaluation)"
