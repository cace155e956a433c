#!/usr/bin/env bash
# One-shot set-up of a fresh clone: a virtual environment in .venv with sweeper and its tests.
# torch is installed first and pinned: an unpinned `torch` pulls the newest CUDA build (GBs),
# and on CPU-only machines the 2.13.0 CPU wheel is what pip finds locally.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
# torchattacks (an independent PGD-L2 for tests/test_threats.py) without its dependencies: it
# asks for torchvision, whose PyPI build does not import beside the CPU torch and could pull
# another torch; torchattacks itself imports without it.
.venv/bin/python -m pip install -q --no-deps "torchattacks==3.5.1"
