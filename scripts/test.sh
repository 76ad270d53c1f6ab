#!/usr/bin/env bash
# Run the whole test suite (installs what is missing first).  As root (or with sudo):
#
#   bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --no-demo
exec .venv/bin/python -m pytest "${@:-tests}"
