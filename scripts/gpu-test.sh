#!/usr/bin/env bash
# Runs the staged CUDA checks on a GPU machine (no Rust toolchain needed there):
#   1. reports the GPU and checks the driver supports CUDA 13.0 (driver 580 or newer);
#   2. runs the smoke binary (matmul, softmax, backward, run-time compiled kernels vs the CPU);
#   3. runs the smoke binary with no visible device, to show the error path;
#   4. runs every staged test binary (op tests: the same code on CPU and CUDA, compared).
# Usage: scripts/gpu-test.sh [STAGE_DIR]    (default .stage/cuda, made by scripts/stage-cuda.sh)
# Exit status: 0 when every step passed, 1 otherwise.
set -uo pipefail
STAGE=${1:-.stage/cuda}
RUN=$STAGE/run.sh
[ -x "$RUN" ] || { echo "gpu-test: error: expected $RUN, found none; hint: run scripts/stage-cuda.sh first" >&2; exit 1; }
failed=0
step() { echo; echo "== $*"; }

step "gpu and driver"
if ! command -v nvidia-smi >/dev/null; then
  echo "gpu-test: error: nvidia-smi not found: no NVIDIA driver on this machine" >&2; exit 1
fi
nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
if [ "${driver%%.*}" -lt 580 ]; then
  echo "FAIL driver $driver is older than 580: binaries built with CUDA 13.0 need driver 580 or newer"
  failed=1
fi
cat "$STAGE/manifest"

step "smoke: cuda_smoke"
if [ -x "$STAGE/bin/cuda_smoke" ]; then
  "$RUN" cuda_smoke || { echo "FAIL cuda_smoke (exit $?)"; failed=1; }
  step "smoke with no visible device (expects exit 2 and an error message)"
  CUDA_VISIBLE_DEVICES="" "$RUN" cuda_smoke; rc=$?
  if [ "$rc" -eq 2 ]; then echo "ok   no-device path exits 2"; else echo "FAIL no-device path exited $rc"; failed=1; fi
else
  echo "skip: cuda_smoke not staged"
fi

for bin in "$STAGE"/bin/*; do
  name=$(basename "$bin")
  case "$name" in cuda_smoke|tfm|tfm-bench) continue ;; esac
  if ! grep -q "^needs $name:.*libcuda" "$STAGE/manifest"; then
    echo; echo "== skip $name: it holds no CUDA code (it does not link libcuda)"; continue
  fi
  step "tests: $name"
  "$RUN" "$name" --test-threads=1 || { echo "FAIL $name"; failed=1; }
done

if [ -x "$STAGE/bin/tfm" ]; then
  step "cli: tfm --version"
  "$RUN" tfm --version || { echo "FAIL tfm --version"; failed=1; }
fi

echo
if [ "$failed" -eq 0 ]; then echo "gpu-test: all steps passed"; else echo "gpu-test: some steps failed"; fi
exit "$failed"
