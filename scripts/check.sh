#!/usr/bin/env bash
# The gates and the tests, as CI runs them: ruff, mypy --strict (scripts/typecheck.py), pytest.
# Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/python scripts/typecheck.py
.venv/bin/python -m pytest "$@"
