# Sourced by run_all.sh and run_tests.sh: create or reuse .venv and install the pinned
# dependencies (Python 3.11 and pip are all a fresh machine needs). Re-installs only
# when pyproject.toml changed.
venv="${PROMPTGRAD_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3.11 -m venv "$venv" 2>/dev/null || python3 -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"
stamp="$venv/.promptgrad-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  python -m pip install --quiet --upgrade pip
  python -m pip install --quiet -e ".[test]"
  touch "$stamp"
fi
export TOKENIZERS_PARALLELISM=false
