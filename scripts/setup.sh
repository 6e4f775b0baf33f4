#!/usr/bin/env bash
# Set up finsta on a fresh Debian/Ubuntu machine: ffmpeg (Debian package) when missing,
# a virtual environment in .venv at the repository root, pinned Python packages, and finsta itself
# (editable: `import finsta_model` from your own code, and the `finsta` command).
#
#   bash scripts/setup.sh            # idempotent: a second run only checks
#
# Environment:
#   FINSTA_KEEP_TORCH=1   keep the torch already in .venv (e.g. your CUDA build); see README "GPU".
#   PYTHON=python3.11     interpreter used to create .venv (default: python3, must be >= 3.10).
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null; then
  echo "setup: installing Debian's ffmpeg"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg >/dev/null
fi

PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
  echo "setup: finsta needs Python >= 3.10; set PYTHON=/path/to/python3.x" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  if ! "$PYTHON" -m venv .venv 2>/dev/null; then
    echo "setup: installing python3-venv"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    rm -rf .venv
    "$PYTHON" -m venv .venv
  fi
fi

stamp=.venv/.finsta-installed
want=$(cat requirements.in constraints.txt pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "setup: .venv is up to date"
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip
if [ "${FINSTA_KEEP_TORCH:-0}" = 1 ] && .venv/bin/python -c 'import torch' 2>/dev/null; then
  # keep the user's torch (CUDA build): install everything else against it
  grep -v '^torch==' requirements.in > .venv/requirements-no-torch.in
  .venv/bin/python -m pip install -q -r .venv/requirements-no-torch.in -c constraints.txt
else
  # torch first and alone: on these machines torch==2.13.0 resolves to the CPU wheel
  .venv/bin/python -m pip install -q "$(grep '^torch==' requirements.in)"
  .venv/bin/python -m pip install -q -r requirements.in -c constraints.txt
fi
# the project itself, editable: `import finsta_model` works from any folder and `finsta` = `python cli.py`
.venv/bin/python -m pip install -q --no-deps -e . -c constraints.txt
echo "$want" > "$stamp"
echo "setup: done (.venv ready; ffmpeg $(ffmpeg -version | head -1 | cut -d' ' -f3))"
