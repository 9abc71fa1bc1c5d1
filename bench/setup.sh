#!/usr/bin/env bash
# Creates the benchmark virtualenv (.venv-bench at the repository root) with PyTorch for CPU.
#
# Strategy, in order:
#   1. PyTorch's own CPU wheel index (small, no CUDA libraries), if that host is reachable.
#   2. Otherwise the PyPI `torch` wheel WITHOUT its nvidia-* dependencies, plus its pure-Python
#      dependencies, kept only if torch then imports and trains on CPU.
#   3. Otherwise the full PyPI install (torch 2.15 + cu13 libraries, about 4.5 GiB, a few minutes).
#      Measured here: the CPU index is unreachable and torch 2.15 from PyPI does not import
#      without its CUDA libraries, so setup ends at step 3.
#
# Usage: bash bench/setup.sh            (idempotent: does nothing when torch already imports)
#        PYTHON=python3.11 bash bench/setup.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-bench"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)

torch_ok() {
    "$PY" - <<'EOF' 2>/dev/null
import torch
x = torch.randn(64, 64, requires_grad=True)
(x @ x).sum().backward()
print("torch", torch.__version__, "ok; threads:", torch.get_num_threads())
EOF
}

if torch_ok; then
    exit 0
fi

"${PIP[@]}" install --quiet --upgrade pip numpy

CPU_INDEX="https://download.pytorch.org/whl/cpu"
if timeout 15 "$PY" -c "import urllib.request; urllib.request.urlopen('$CPU_INDEX/', timeout=10)" 2>/dev/null; then
    echo "installing torch from the PyTorch CPU index" >&2
    "${PIP[@]}" install torch --index-url "$CPU_INDEX"
else
    echo "PyTorch CPU index unreachable; installing the PyPI torch wheel without nvidia packages" >&2
    "${PIP[@]}" install --no-deps torch
    # torch's own requirements, minus nvidia-*/triton (only needed for CUDA).
    deps=$("$PY" - <<'EOF'
from importlib.metadata import requires
out = []
for r in requires("torch") or []:
    if "extra ==" in r:
        continue
    name = r.split(";")[0].strip()
    base = name.split(" ")[0].split("<")[0].split(">")[0].split("=")[0].split("!")[0].split("~")[0].split("[")[0]
    if base.startswith("nvidia") or base.startswith("triton") or base.startswith("cuda"):
        continue
    out.append(name.replace(" ", ""))
print(" ".join(out))
EOF
)
    echo "dependencies: $deps" >&2
    # shellcheck disable=SC2086
    "${PIP[@]}" install $deps
fi

if ! torch_ok; then
    echo "torch does not import without its CUDA libraries; installing the full PyPI wheel" >&2
    "${PIP[@]}" install torch
    torch_ok
fi
