#!/usr/bin/env bash
# Create .venv with a CPU build of PyTorch and rollfit (editable) plus the extras named in $1.
#
# PyTorch from PyPI on Linux is a CUDA build of several GB; a CPU build serves training of
# these small networks, so it is taken from a local wheel folder configured for pip when one
# has it (offline), else from PyTorch's CPU index. Set TORCH_SPEC to pin another version,
# or ROLLFIT_TORCH=skip to keep whatever torch the venv already has.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

if [ "${ROLLFIT_TORCH:-}" != "skip" ] && ! .venv/bin/python -c "import torch" 2>/dev/null; then
  echo "setup: installing ${TORCH_SPEC} (CPU build)"
  "${PIP[@]}" install --no-index "${TORCH_SPEC}" 2>/dev/null \
    || "${PIP[@]}" install "${TORCH_SPEC}" --index-url "${TORCH_CPU_INDEX}"
fi

target="."
[ -n "$EXTRAS" ] && target=".[${EXTRAS}]"
echo "setup: installing rollfit${EXTRAS:+ with extras [$EXTRAS]}"
"${PIP[@]}" install -e "$target"
.venv/bin/python -c "import rollfit, torch; print(f'setup: rollfit {rollfit.__version__}, torch {torch.__version__}')"
