"""Run the notebooks through papermill with a profile, never in place.

    python -m promptgrad.runner --profile cpu                  # all notebooks/NN_*.ipynb
    python -m promptgrad.runner --profile smoke --only 01 -p STEPS 5
    python -m promptgrad.runner --profile smoke --prepare-only --out build/smoke

Parameters come from, in order: the notebook's own ``parameters`` cell (the ``cpu``
profile), ``notebooks/profiles/<profile>.yaml`` (a section per notebook stem), then
``-p NAME VALUE`` overrides. ``PROFILE`` and ``RESULTS_DIR`` are always set. A notebook
without a ``parameters`` cell, or a parameter it does not declare, is an error.
Executed copies go to ``<results>/<stem>/<stem>.ipynb``; wall times to
``<results>/runtimes.json``. A run first empties ``<results>/<stem>/``, so no file there
outlives the run that wrote it (a ``RESULTS_DIR`` given with ``-p`` is left as it is).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import yaml

PROFILES = ("smoke", "cpu", "paper")
ROOT = Path(__file__).resolve().parents[2]


def notebook_parameters(path: Path) -> dict:
    """Names declared in the notebook's cell tagged ``parameters``."""
    import nbformat
    import papermill

    nb = nbformat.read(path, as_version=4)
    if not any("parameters" in c.metadata.get("tags", []) for c in nb.cells):
        raise ValueError(f"{path} has no cell tagged 'parameters'; papermill could not set its parameters.")
    return papermill.inspect_notebook(str(path))


def resolve_parameters(path: Path, profile: str, results_dir: Path, overrides: dict, profiles_dir: Path) -> dict:
    if profile not in PROFILES:
        raise ValueError(f"Unknown profile '{profile}'; expected one of {PROFILES}.")
    declared = notebook_parameters(path)
    profile_file = profiles_dir / f"{profile}.yaml"
    from_profile = {}
    if profile_file.exists():
        from_profile = (yaml.safe_load(profile_file.read_text()) or {}).get(path.stem, {}) or {}
    params = {"PROFILE": profile, "RESULTS_DIR": str(results_dir / path.stem), **from_profile, **overrides}
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise ValueError(f"{path.name} does not declare parameter(s) {unknown}; it declares {sorted(declared)}.")
    return params


def _parse_value(text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--only", nargs="*", default=None, help="notebook stems or their number prefixes")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write parameterized notebooks to --out without executing them (for nbval)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    import papermill

    overrides = {name: _parse_value(value) for name, value in args.parameter}
    paths = sorted(args.notebooks.glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        paths = [p for p in paths if any(p.stem == o or p.stem.startswith(o) for o in args.only)]
        if not paths:
            raise SystemExit(f"No notebook matches {args.only} in {args.notebooks}.")
    results = args.results.resolve()
    plans = [(p, resolve_parameters(p, args.profile, results, overrides, args.notebooks / "profiles"))
             for p in paths]  # every notebook checked before any runs
    runtimes_path = results / "runtimes.json"
    runtimes = json.loads(runtimes_path.read_text()) if runtimes_path.exists() and not args.prepare_only else {}
    for path, params in plans:
        own_dir = results / path.stem
        if not args.prepare_only and Path(params["RESULTS_DIR"]).resolve() == own_dir and own_dir.is_dir():
            shutil.rmtree(own_dir)  # an earlier run's records and tables must not pass for this one's
        out_dir = (args.out or own_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        output = out_dir / path.name
        print(f"[{args.profile}] {path.name} -> {output}", flush=True)
        start = time.perf_counter()
        papermill.execute_notebook(str(path), str(output), parameters=params, cwd=str(path.parent),
                                   prepare_only=args.prepare_only, kernel_name="python3",
                                   progress_bar=sys.stderr.isatty())
        if not args.prepare_only:
            seconds = round(time.perf_counter() - start, 1)
            runtimes[path.stem] = {"profile": args.profile, "wall_seconds": seconds}
            print(f"[{args.profile}] {path.stem}: {seconds:.0f} s", flush=True)
            runtimes_path.write_text(json.dumps(runtimes, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
