#!/bin/sh
# bench/bench_binary.sh: the standalone binary beside a venv install;
# see bench/bench_binary.py.  The interpreter as bench_session.sh chooses it.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-}
if [ -z "$PY" ] && [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; fi
if [ -z "$PY" ]; then PY=$(python3 -c 'import sys; print(sys.executable)'); fi
exec "$PY" "$ROOT/bench/bench_binary.py" "$@"
