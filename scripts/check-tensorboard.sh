#!/usr/bin/env bash
# Checks that TensorBoard itself reads what `tfm train` logs: installs the `tensorboard`
# package from PyPI into .venv-bench, trains the addition example twice (once straight through,
# once stopped with Ctrl-C and resumed, which leaves two event files in one folder), and reads
# each run folder with TensorBoard's own event loader, comparing every scalar with the run's
# metrics.jsonl (bench/tensorboard_check.py); last, the resumed run's losses must equal the
# uninterrupted run's bit for bit.
#
#   scripts/check-tensorboard.sh [OUT_DIR]      (default runs/tensorboard-check)
#
# TFM_BIN runs a prebuilt binary instead of `cargo run`.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-runs/tensorboard-check}"
venv=.venv-bench
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c "import tensorboard" 2>/dev/null; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check tensorboard
fi
"$venv/bin/python" -c "import tensorboard; print('tensorboard', tensorboard.__version__)"

if [ -n "${TFM_BIN:-}" ]; then
    tfm_cmd=($TFM_BIN)
else
    cargo build --release --quiet --bin tfm
    tfm_cmd=(target/release/tfm)
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        tfm_cmd=("$CARGO_TARGET_DIR/release/tfm")
    fi
fi

rm -rf "$out"
mkdir -p "$out"
train=(train examples/addition.tfm --config examples/addition.yaml --steps 400 --no-progress
    --cfg eval.every=100 --cfg logging.every=5)

echo "== a run straight through"
"${tfm_cmd[@]}" "${train[@]}" --out "$out/whole" > "$out/whole.log"
tail -n 3 "$out/whole.log"

echo "== the same run, stopped with Ctrl-C after its first logged steps and resumed"
"${tfm_cmd[@]}" "${train[@]}" --out "$out/resumed" > "$out/resumed.log" 2>&1 &
pid=$!
for _ in $(seq 600); do
    if [ -f "$out/resumed/metrics.jsonl" ] && [ "$(wc -l < "$out/resumed/metrics.jsonl")" -ge 8 ]; then
        break
    fi
    sleep 0.1
done
kill -INT "$pid"
status=0
wait "$pid" || status=$?
if [ "$status" != 130 ]; then
    echo "error: expected the interrupted run to exit with 130, got $status" >&2
    cat "$out/resumed.log" >&2
    exit 1
fi
grep "interrupted at step" "$out/resumed.log"
"${tfm_cmd[@]}" train examples/addition.tfm --resume "$out/resumed" --steps 400 --no-progress >> "$out/resumed.log"
tail -n 3 "$out/resumed.log"
echo "event files in the resumed run: $(ls "$out/resumed" | grep -c tfevents)"

for run in whole resumed; do
    echo "== TensorBoard reads $out/$run"
    "$venv/bin/python" bench/tensorboard_check.py "$out/$run"
done

echo "== the resumed run's losses against the uninterrupted run's"
"$venv/bin/python" bench/tensorboard_check.py --same-losses "$out/whole" "$out/resumed"
