#!/usr/bin/env bash
# The main job: install what is needed, then run the guarded stack on this host (see README).
# Arguments go to glyph-stack, e.g. `bash scripts/demo.sh --scenario kill`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
exec .venv/bin/glyph-stack "$@"
