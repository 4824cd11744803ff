#!/usr/bin/env bash
# Open the notebooks in JupyterLab on the cpu profile (each notebook's own parameters cell):
#   ./run_lab.sh            # installs the `lab` extra into .venv once, then starts JupyterLab
# Running a notebook here writes to results/<notebook>/, as ./run_all.sh cpu does.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup_env.sh
if ! python -c "import jupyterlab" 2>/dev/null; then
  python -m pip install --quiet -e ".[lab]"
fi
data="${PROMPTGRAD_DATA_DIR:-../shared/data}"
if [ -d "$data" ]; then data="$(cd "$data" && pwd)"; fi
export PROMPTGRAD_DATA_DIR="$data"
exec jupyter lab notebooks/ "$@"
