#!/usr/bin/env bash
# The main job: install what is needed, then run glyph-guard on this host (see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/glyph-exporter "$@"
