#!/usr/bin/env bash
# Stage CUDA builds of tfm for a GPU machine that has an NVIDIA driver and PyTorch's CUDA
# libraries but no Rust toolchain.
#
#   scripts/stage-cuda.sh [-o DIR] --build          # build the smoke example, the cuda test
#                                                   # binaries, the tfm CLI and tfm-bench, then
#                                                   # stage them
#   scripts/stage-cuda.sh [-o DIR] BINARY...        # stage binaries you built with --features cuda
#
# DIR defaults to .stage/cuda (ignored by git). It receives:
#   bin/          the binaries (debug info stripped)
#   include/N/    headers that dfdx's run-time (NVRTC) kernels include: a copy of each absolute
#                 include path that was baked into the binaries at build time
#   baked-paths   lines "include/N ABSOLUTE_PATH": run.sh recreates each path as a link to the copy
#   manifest      build facts: compute capability, toolkit version, libraries the binaries need
#   run.sh        run.sh BINARY [ARGS...]: sets up the include paths and LD_LIBRARY_PATH, then runs
#                 bin/BINARY (or BINARY as given, if it is a path)
#
# --build needs the CUDA toolkit environment (CUDA_ROOT, nvcc and nvidia-smi on PATH), see the
# README's CUDA section. Binaries built from the same dfdx build share one pair of include paths.
set -euo pipefail

OUT=.stage/cuda
BUILD=0
BINS=()
while [ $# -gt 0 ]; do
  case "$1" in
    -o) OUT=$2; shift 2 ;;
    --build) BUILD=1; shift ;;
    -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) BINS+=("$1"); shift ;;
  esac
done
die() { echo "stage-cuda: error: $*" >&2; exit 1; }
log() { echo "stage-cuda: $*" >&2; }

if [ "$BUILD" = 1 ]; then
  command -v nvcc >/dev/null || die "nvcc not found on PATH; hint: set up the CUDA toolkit environment first"
  [ -n "${CUDA_ROOT:-}" ] || die "CUDA_ROOT is not set; hint: point it at the toolkit root that holds include/cuda.h"
  # cargo prints one JSON message per artifact; executables are what we stage.
  list_exes() { python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["executable"])'; }
  log "building the cuda smoke example and the tfm-runtime test binaries (release, --features cuda)"
  mapfile -t found < <(cargo build --release -p tfm-runtime --features cuda --example cuda_smoke \
      --message-format=json-render-diagnostics | list_exes)
  BINS+=("${found[@]}")
  mapfile -t found < <(cargo test --release -p tfm-runtime --features cuda --no-run \
      --message-format=json-render-diagnostics | list_exes)
  BINS+=("${found[@]}")
  log "building the tfm CLI and the benchmark harness (release, --features cuda)"
  for pkg in tfm-cli tfm-bench; do
    mapfile -t found < <(cargo build --release -p "$pkg" --features cuda \
        --message-format=json-render-diagnostics | list_exes)
    BINS+=("${found[@]}")
  done
fi
[ ${#BINS[@]} -gt 0 ] || die "no binaries to stage; hint: pass binary paths or --build"
# cargo reports an example again when `cargo test` rebuilds it: stage each path once.
mapfile -t BINS < <(printf '%s\n' "${BINS[@]}" | awk '!seen[$0]++')

rm -rf "$OUT"
mkdir -p "$OUT/bin" "$OUT/include"
: > "$OUT/baked-paths"
: > "$OUT/manifest"
# Headers NVRTC opens from the toolkit include path (the rest are built into NVRTC): dfdx's
# run-time kernels include cuda_fp16.h only; the others are its companions, kept for safety.
TOOLKIT_HEADERS="cuda_fp16.h cuda_fp16.hpp cuda_bf16.h cuda_bf16.hpp vector_types.h vector_functions.h vector_functions.hpp"
n=0
declare -A SEEN=()
for bin in "${BINS[@]}"; do
  [ -f "$bin" ] || die "expected a built binary, found no file at $bin"
  name=$(basename "$bin")
  # dfdx bakes its build-script OUT_DIR (holding cuda_utils.cuh) and CUDA_INCLUDE_DIR into the binary.
  # Literals sit back to back in the binary, so the match may carry a neighbour's text in front:
  # keep the longest trailing part that is an existing dfdx build folder.
  outdir=""
  raw=$(grep -aoE '/[[:graph:]]*/build/dfdx-[0-9a-f]{16}/out' "$bin" | head -1 || true)
  while [ -n "$raw" ]; do
    if [ -f "$raw/cuda_utils.cuh" ]; then outdir=$raw; break; fi
    case "$raw" in /*/*) raw=/${raw#/*/} ;; *) raw="" ;; esac
  done
  if [ -z "$outdir" ] && grep -aqE '/build/dfdx-[0-9a-f]{16}/out' "$bin"; then
    die "$name was built against a dfdx build folder that is gone; hint: rebuild, then stage"
  fi
  if [ -z "$outdir" ]; then
    log "$name: no dfdx CUDA include paths inside (built without --features cuda?): staged as is"
  elif [ -z "${SEEN[$outdir]:-}" ]; then
    SEEN[$outdir]=1
    incdir=$(sed -n 's/^cargo:rustc-env=CUDA_INCLUDE_DIR=//p' "$(dirname "$outdir")/output")
    cap=$(sed -n 's/^cargo:rustc-env=CUDA_COMPUTE_CAP=//p' "$(dirname "$outdir")/output")
    [ -f "$incdir/cuda_fp16.h" ] || die "expected cuda_fp16.h in $incdir (baked into $name), found none"
    grep -aqF "$incdir" "$bin" || die "expected $name to hold the include path $incdir, found none"
    n=$((n + 1))
    mkdir -p "$OUT/include/dfdx$n" "$OUT/include/cuda$n"
    cp "$outdir"/*.cuh "$OUT/include/dfdx$n/"
    for h in $TOOLKIT_HEADERS; do
      [ -f "$incdir/$h" ] && cp "$incdir/$h" "$OUT/include/cuda$n/"
    done
    echo "include/dfdx$n $outdir" >> "$OUT/baked-paths"
    echo "include/cuda$n $incdir" >> "$OUT/baked-paths"
    echo "compute_cap $cap" >> "$OUT/manifest"
  fi
  # cargo names test binaries NAME-HASH: stage them as NAME.
  name=$(echo "$name" | sed -E 's/-[0-9a-f]{16}$//')
  cp "$bin" "$OUT/bin/$name"
  strip --strip-debug "$OUT/bin/$name" 2>/dev/null || true
  libs=$(readelf -d "$bin" | sed -n 's/.*Shared library: \[\(.*\)\]/\1/p' | tr '\n' ' ')
  echo "needs $name: $libs" >> "$OUT/manifest"
done
if command -v nvcc >/dev/null; then
  echo "nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')" >> "$OUT/manifest"
fi
sort -u "$OUT/baked-paths" -o "$OUT/baked-paths"

cat > "$OUT/run.sh" <<'EOF'
#!/usr/bin/env bash
# Runs a staged CUDA binary: recreates the include paths baked in at build time (as links to the
# staged copies), finds the CUDA 13 libraries (TFM_CUDA_LIB, else PyTorch's nvidia/cu13/lib, else
# a system toolkit), and runs the binary. Usage: run.sh BINARY [ARGS...]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
die() { echo "run.sh: error: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "expected a binary name, found nothing; hint: run.sh cuda_smoke"
if [ -x "$HERE/bin/$1" ]; then bin=$HERE/bin/$1; elif [ -x "$1" ]; then bin=$1; else
  die "expected a staged binary, found no $1 in $HERE/bin; hint: ls $HERE/bin"; fi
shift

# 1. include paths: each baked absolute path becomes a link to the staged copy.
while read -r rel abs; do
  [ -n "$rel" ] || continue
  if [ -L "$abs" ] || [ ! -e "$abs" ]; then
    mkdir -p "$(dirname "$abs")" 2>/dev/null && ln -sfn "$HERE/$rel" "$abs" 2>/dev/null \
      || die "cannot create $abs (baked into the binary at build time); hint: run as a user who can, or create it as a link to $HERE/$rel"
  fi
done < "$HERE/baked-paths"

# 2. libraries: libcuda.so.1 comes from the driver; cuBLAS and NVRTC 13 from a CUDA 13 install.
has_cu13() { [ -f "$1/libcublas.so.13" ] && [ -f "$1/libnvrtc.so.13" ]; }
lib=${TFM_CUDA_LIB:-}
if [ -z "$lib" ]; then
  for py in python3 /opt/*/.venv/bin/python3; do
    d=$("$py" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))' 2>/dev/null || true)
    if [ -n "$d" ] && has_cu13 "$d"; then lib=$d; break; fi
  done
fi
if [ -z "$lib" ]; then
  for d in /usr/local/cuda/lib64 /usr/local/cuda-13*/lib64 /usr/lib/x86_64-linux-gnu; do
    if has_cu13 "$d"; then lib=$d; break; fi
  done
fi
[ -n "$lib" ] || die "expected libcublas.so.13 and libnvrtc.so.13 (CUDA 13), found neither; hint: set TFM_CUDA_LIB to their folder, or install PyTorch's cu13 wheels"
export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec "$bin" "$@"
EOF
chmod +x "$OUT/run.sh"
size=$(du -sh "$OUT" | cut -f1)
log "staged ${#BINS[@]} binaries into $OUT ($size)"
cat "$OUT/manifest" >&2
