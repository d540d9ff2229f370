#!/usr/bin/env bash
# AI-Writer setup: creates .venv here and installs the package with its pinned dependencies.
#   bash install.sh          the program
#   bash install.sh --test   the program and the test tools (what .ci/run uses)
# PyTorch: on Linux without an NVIDIA GPU (no working nvidia-smi) the CPU-only build is taken from
# PyTorch's own index (about 190 MB, instead of the CUDA build's several GB and ~17 nvidia packages).
# With an NVIDIA GPU, on macOS and on Windows, pip's usual torch is right. AIWRITER_TORCH=cuda or
# AIWRITER_TORCH=cpu overrides the check. If PyTorch's index cannot be reached, pip installs from
# its usual sources (PyPI, or a local wheel cache) as it would without this script.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
EXTRAS=""
for arg in "$@"; do
  case "$arg" in
    --test) EXTRAS="[test]" ;;
    *) echo "install.sh: unknown option $arg (use --test)" >&2; exit 2 ;;
  esac
done

want=${AIWRITER_TORCH:-}
if [ -z "$want" ]; then
  if [ "$(uname -s)" = Linux ] && ! nvidia-smi -L >/dev/null 2>&1; then want=cpu; else want=default; fi
fi

index=()
if [ "$want" = cpu ]; then
  url=https://download.pytorch.org/whl/cpu
  # --extra-index-url, not --index-url: the other dependencies still come from PyPI, and pip
  # prefers torch 2.13.0+cpu from this index over PyPI's CUDA-linked 2.13.0 (same version, pinned).
  if "$PY" -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=8)" "$url" 2>/dev/null; then
    index=(--extra-index-url "$url")
    echo "没有 NVIDIA 显卡：安装只用 CPU 的 PyTorch / no NVIDIA GPU: installing the CPU-only PyTorch ($url)"
  else
    echo "连不上 $url：按 pip 的默认来源安装 PyTorch / cannot reach $url: PyTorch comes from pip's usual sources" >&2
  fi
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q ${index[@]+"${index[@]}"} -e ".$EXTRAS"
echo "安装完成 / installed: .venv/bin/aiwriter ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
