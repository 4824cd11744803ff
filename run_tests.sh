#!/usr/bin/env bash
# The whole test suite: unit tests, then every notebook under nbval with the smoke profile.
set -euo pipefail
cd "$(dirname "$0")"
source ./setup_env.sh
# Absolute, because the notebooks run from other folders.
data="${PROMPTGRAD_DATA_DIR:-../shared/data}"
if [ -d "$data" ]; then data="$(cd "$data" && pwd)"; fi
export PROMPTGRAD_DATA_DIR="$data"
smoke=build/smoke
rm -rf "$smoke"
python -m promptgrad.runner --profile smoke --prepare-only --out "$smoke/notebooks" --results "$smoke/results"
export PROMPTGRAD_SMOKE_RESULTS="$PWD/$smoke/results"
python -m pytest -p no:cacheprovider --nbval-lax --nbval-current-env "$smoke/notebooks" tests "$@"
