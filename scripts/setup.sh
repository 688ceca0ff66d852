#!/usr/bin/env bash
# Create the virtual environment and install fedpeft into it (as a built wheel, so what runs
# and what is tested is what users install).
#
# torch: with no NVIDIA GPU, pin the CPU build where one is available (this project's machines
# carry torch 2.13.0+cpu locally); elsewhere set TORCH_INDEX_URL to PyTorch's CPU wheel index to
# avoid a multi-GB CUDA download. With a GPU, the ordinary range in pyproject.toml applies.
set -euo pipefail
VENV="${1:-.venv}"
PYTHON="${PYTHON:-python3}"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: NVIDIA GPU found, installing the default (CUDA) torch build"
    "${PIP[@]}" "torch>=2.2,<3"
  elif [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "setup: no GPU, installing CPU torch from \$TORCH_INDEX_URL"
    "${PIP[@]}" --index-url "$TORCH_INDEX_URL" "torch>=2.2,<3"
  else
    echo "setup: no GPU, installing the CPU torch build 2.13.0"
    "${PIP[@]}" "torch==2.13.0"
  fi
fi

echo "setup: installing fedpeft and its dependencies"
"${PIP[@]}" ".[test]"
