#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv with every pinned dependency. Idempotent: a second run
# with an unchanged pyproject.toml does nothing. Needs only python3 (3.10+) with venv; nothing from apt so far.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.raydgp-installed
want=$(cat pyproject.toml scripts/bootstrap.sh | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c "import raydgp, tvm, ray, botorch" 2>/dev/null; then
  exit 0
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# The CPU build of torch first: an unpinned torch pulled in by a dependency would be a multi-GB CUDA build.
# Elsewhere, TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu takes it from PyTorch's CPU index.
.venv/bin/python -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q -e '.[test]'
# HEBO (a peer in scripts/bench.py's searcher benchmark) in its own directory, without its declared dependencies: its
# only release (0.3.6) pins numpy<1.25 and pymoo==0.6.0 (no wheel: built from the sdist as pure Python), but runs on
# this environment's numpy/torch/pandas (checked: HEBO's API and Ray Tune's HEBOSearch). flat_searcher.hebo_search_class()
# appends .venv/hebo to sys.path only when HEBO is not importable otherwise, so nothing there shadows the venv.
.venv/bin/python -m pip install -q --no-deps --target .venv/hebo --upgrade HEBO==0.3.6 pymoo==0.6.0 \
  disjoint-set==0.9.0 autograd==1.9.1 cma==3.2.2 alive-progress==3.3.0 about-time==4.2.2 grapheme==0.5.0 \
  dill==0.4.1 Deprecated==1.3.1 wrapt==2.5.2 \
  || echo "bootstrap: warning: HEBO was not installed (optional: only \`--searcher hebo\` and the benchmarks use it)" >&2
echo "$want" > "$stamp"
