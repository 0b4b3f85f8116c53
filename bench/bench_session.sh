#!/bin/sh
# bench/bench_session.sh: cubbi's session commands beside docker's own CLI.
# Runs on a real interpreter: $PYTHON, else the checkout's .venv, else the
# interpreter python3 resolves to (a pyenv shim costs ~90 ms per start, so
# it is looked through).  See bench/bench_session.py for what is measured.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-}
if [ -z "$PY" ] && [ -x "$ROOT/.venv/bin/python" ]; then PY=$ROOT/.venv/bin/python; fi
if [ -z "$PY" ]; then PY=$(python3 -c 'import sys; print(sys.executable)'); fi
exec "$PY" "$ROOT/bench/bench_session.py" "$@"
