#!/usr/bin/env bash
# The main job: run every notebooks/NN_*.ipynb through papermill with a profile.
#   ./run_all.sh                 # cpu profile (the committed results), embedded model
#   ./run_all.sh smoke           # seconds to minutes
#   ./run_all.sh paper -p MODEL Qwen/Qwen2.5-1.5B-Instruct   # needs a GPU / the hub
#   ./run_all.sh cpu --only 01   # one notebook
# Executed copies and results go to results/<notebook>/; wall times to results/runtimes.json.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup_env.sh
profile="${1:-cpu}"
[ $# -gt 0 ] && shift
# Absolute, because the notebooks run from other folders.
data="${PROMPTGRAD_DATA_DIR:-../shared/data}"
if [ -d "$data" ]; then data="$(cd "$data" && pwd)"; fi
export PROMPTGRAD_DATA_DIR="$data"
python -m promptgrad.runner --profile "$profile" "$@"
