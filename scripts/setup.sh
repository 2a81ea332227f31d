#!/usr/bin/env bash
# Create .venv with a CPU build of PyTorch and rollfit (editable) plus the extras named in $1.
#
# PyTorch from PyPI on Linux is a CUDA build of several GB; a CPU build serves training of
# these small networks. Its source is chosen once, by what is configured, never by retrying:
#   1. pip's configured sources (find-links, index-url, extra-index-url from `pip config list`,
#      PIP_* variables included) when a local wheel folder or file:// index among them holds
#      the pinned CPU build for this Python;
#   2. else PyTorch's CPU index, after one probe of at most 5 s (scripts/torch_source.py);
#   3. else an error naming both.
# The pin carries "+cpu", which no CUDA build has, and torch is pinned to the installed
# version while rollfit's dependencies are installed, so a CUDA build is never pulled.
# Network indexes are used with --retries 1 --timeout 15 (no minutes of retry loops).
# Nothing is reinstalled when the venv already has rollfit with these extras from this
# pyproject.toml (a stamp in .venv). Set TORCH_SPEC to pin another version, ROLLFIT_TORCH=skip
# to keep the torch the venv already has, PYTHON to create the venv with another interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
PY="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0+cpu}"
TORCH_CPU_INDEX="${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
NET=(--retries 1 --timeout 15)
STAMP=.venv/rollfit-setup.stamp

[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip --disable-pip-version-check -q)

# "configured", "cpu-index" or "none": where TORCH_SPEC can come from (see the header).
torch_source() { .venv/bin/python scripts/torch_source.py "$TORCH_SPEC" "$TORCH_CPU_INDEX"; }

install_torch() {
  local source
  source="$(torch_source)"
  case "$source" in
    configured)
      echo "setup: installing ${TORCH_SPEC} (CPU build) from pip's configured sources"
      "${PIP[@]}" install "${NET[@]}" "${TORCH_SPEC}" ;;
    cpu-index)
      echo "setup: installing ${TORCH_SPEC} (CPU build) from ${TORCH_CPU_INDEX}"
      "${PIP[@]}" install "${NET[@]}" "${TORCH_SPEC}" --index-url "${TORCH_CPU_INDEX}" ;;
    *) echo "setup: error: expected ${TORCH_SPEC} in a wheel folder or file:// index of pip's configuration" \
            "(pip config list) or at ${TORCH_CPU_INDEX}, but neither has it (the index did not answer within" \
            "5 s); add a folder with the wheel to pip's find-links, or set TORCH_CPU_INDEX" >&2
       exit 1 ;;
  esac
}

# Installed at all (metadata only: importing torch takes seconds; the last line imports it).
has_torch() { .venv/bin/python -c "import importlib.metadata as m; m.version('torch')" 2>/dev/null; }

if ! has_torch; then
  if [ "${ROLLFIT_TORCH:-}" = "skip" ]; then
    echo "setup: error: expected torch in .venv with ROLLFIT_TORCH=skip, but it is not installed" >&2
    exit 1
  fi
  install_torch
fi

# With "covers EXTRAS": whether the stamp says this pyproject.toml was installed with a superset
# of EXTRAS; with "write EXTRAS": record them (with the earlier ones, if pyproject.toml is unchanged).
stamp() {
  .venv/bin/python - "$STAMP" "$@" <<'PYEOF'
import hashlib, os, sys
path, mode, extras = sys.argv[1], sys.argv[2], set(filter(None, sys.argv[3].split(",")))
digest = hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest()
old, _, had = open(path).read().strip().partition(" ") if os.path.exists(path) else ("", "", "")
had = set(filter(None, had.split(","))) if old == digest else None
if mode == "covers":
    sys.exit(0 if had is not None and extras <= had else 1)
open(path, "w").write(f"{digest} {','.join(sorted(extras | (had or set())))}\n")
PYEOF
}

if stamp covers "$EXTRAS"; then
  echo "setup: rollfit${EXTRAS:+ with extras [$EXTRAS]} already installed in .venv"
else
  target="."
  [ -n "$EXTRAS" ] && target=".[${EXTRAS}]"
  echo "setup: installing rollfit${EXTRAS:+ with extras [$EXTRAS]}"
  pin="$(mktemp)"
  trap 'rm -f "$pin"' EXIT
  .venv/bin/python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > "$pin"
  "${PIP[@]}" install "${NET[@]}" --constraint "$pin" -e "$target"
  stamp write "$EXTRAS"
fi
.venv/bin/python -c "import rollfit, torch; print(f'setup: rollfit {rollfit.__version__}, torch {torch.__version__}')"
