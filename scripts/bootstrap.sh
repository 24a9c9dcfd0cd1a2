#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with every pinned dependency. Idempotent: a second run
# with an unchanged pyproject.toml does nothing. Needs only python3 (3.10+) with venv; nothing from apt so far.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.raydgp-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import raydgp, tvm, ray, botorch" 2>/dev/null; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first: an unpinned torch pulled in by a dependency would be a multi-GB CUDA build.
# Elsewhere, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes it from PyTorch's CPU index.
.venv/bin/python -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q -e '.[test]'
echo "$want" > "$stamp"
