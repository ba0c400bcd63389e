#!/usr/bin/env bash
# featscope demo: the study reproduced on generated data, served in the dashboard (`featscope demo --help`).
# Environment: FEATSCOPE_DATA_DIR (default demo-data/featscope), DEMO_SERVE=0 (work, then exit), DEMO_PROFILE
# (tiny, cpu or cuda; default cuda with a GPU, else cpu), DEMO_PORT (default 8050).
set -euo pipefail
export FEATSCOPE_DATA_DIR=${FEATSCOPE_DATA_DIR:-demo-data/featscope}
fs=${FEATSCOPE:-.venv/bin/featscope}
exec "$fs" demo "$@"
