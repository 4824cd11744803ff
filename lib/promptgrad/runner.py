"""Run the notebooks through papermill with a profile, never in place.

    python -m promptgrad.runner --profile cpu                  # all notebooks/NN_*.ipynb -> results/
    python -m promptgrad.runner --profile smoke --only 01 -p STEPS 5   # -> runs/smoke/
    python -m promptgrad.runner --profile paper --check        # every parameter checked, nothing run
    python -m promptgrad.runner --profile paper --dry-run      # every notebook on stand-ins (promptgrad.dryrun)
    python -m promptgrad.runner --profile smoke --prepare-only --out build/smoke

Parameters come from, in order: the notebook's own ``parameters`` cell (the ``cpu``
profile), ``notebooks/profiles/<profile>.yaml`` (a section per notebook stem), then
``-p NAME VALUE`` overrides. ``PROFILE`` and ``RESULTS_DIR`` are always set. A notebook
without a ``parameters`` cell, or a parameter it does not declare, is an error.

Only the ``cpu`` profile writes to ``results/`` (the committed results); ``smoke`` and
``paper`` write to ``runs/<profile>/`` unless ``--results`` says otherwise. A notebook runs
into ``<results>/.running/<stem>/`` and replaces ``<results>/<stem>/`` only when it finished,
so a failed run leaves the earlier results as they were (its partial output is kept in
``<results>/.failed/<stem>/``). Every notebook runs even when one fails; a table at the end
says which failed and why, and the exit status is non-zero. Wall times go to
``<results>/runtimes.json``. A ``RESULTS_DIR`` given with ``-p`` is written into directly.
A notebook's ``REUSE_FROM`` entries point at the same results folder as the run.
"""

from __future__ import annotations

import argparse
import json
import os
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


def declared_defaults(path: Path) -> dict:
    """The values of the notebook's own ``parameters`` cell (literals only, as the cpu profile)."""
    import ast

    return {name: ast.literal_eval(spec["default"]) for name, spec in notebook_parameters(path).items()}


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


def parse_value(text: str):
    """A ``-p NAME VALUE`` value: YAML (numbers, lists, dicts, null), else the text itself."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def default_results(profile: str) -> Path:
    """``results/`` for the cpu profile (committed), ``runs/<profile>/`` for the others."""
    return ROOT / "results" if profile == "cpu" else ROOT / "runs" / profile


def check(plans: list[tuple[Path, dict]]) -> int:
    """Every notebook's parameters checked (``promptgrad.checks``); 1 when any has a problem."""
    from .checks import check_notebook

    reports = [check_notebook(path.stem, params) for path, params in plans]
    for report in reports:
        print(report.text(), flush=True)
    bad = [r.notebook for r in reports if not r.ok]
    print(f"check: {len(reports) - len(bad)} of {len(reports)} notebooks ok" + (f"; fix {bad}" if bad else ""))
    return 1 if bad else 0


def _failure(err: BaseException) -> str:
    """One line on why a notebook failed (papermill's error names the exception)."""
    name = getattr(err, "ename", type(err).__name__)
    value = str(getattr(err, "evalue", err)).strip().splitlines()
    return f"{name}: {value[0][:200] if value else ''}"


# A batch run shows no progress bars (they would fill the executed copy); JupyterLab still does.
QUIET = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error",
         "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1"}


def clean_executed(path: Path) -> int:
    """Drop what the kernel wrote to stderr (progress bars, library warnings, log lines) from an
    executed notebook, so the committed copy reads as a document; returns how many outputs went.
    Errors are not stderr streams and stay."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type == "code":
            kept = [o for o in cell.get("outputs", []) if not (o.get("output_type") == "stream"
                                                                and o.get("name") == "stderr")]
            dropped += len(cell.get("outputs", [])) - len(kept)
            cell["outputs"] = kept
    nbformat.write(nb, path)
    return dropped


def run_one(path: Path, params: dict, results: Path, profile: str) -> str | None:
    """Execute one notebook; its results replace ``results/<stem>`` only when it finished.
    Returns None, or why it failed."""
    import papermill

    own_dir = results / path.stem
    user_dir = Path(params["RESULTS_DIR"]).resolve() != own_dir  # a RESULTS_DIR given with -p: written directly
    work = Path(params["RESULTS_DIR"]).resolve() if user_dir else results / ".running" / path.stem
    if not user_dir:
        shutil.rmtree(work, ignore_errors=True)
        params = {**params, "RESULTS_DIR": str(work)}
    work.mkdir(parents=True, exist_ok=True)
    print(f"[{profile}] {path.name} -> {work if user_dir else own_dir}", flush=True)
    saved = {k: os.environ.get(k) for k in QUIET}
    os.environ.update(QUIET)  # the kernel inherits it
    try:
        papermill.execute_notebook(str(path), str(work / path.name), parameters=params, cwd=str(path.parent),
                                   kernel_name="python3", progress_bar=sys.stderr.isatty())
    except Exception as err:  # papermill's execution errors, a dead kernel...
        if not user_dir:
            failed = results / ".failed" / path.stem
            shutil.rmtree(failed, ignore_errors=True)
            failed.parent.mkdir(parents=True, exist_ok=True)
            work.rename(failed)
        return _failure(err)
    finally:
        for key, value in saved.items():
            os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
    clean_executed(work / path.name)
    if not user_dir:
        if own_dir.is_dir():
            shutil.rmtree(own_dir)  # an earlier run's records and tables must not pass for this one's
        work.rename(own_dir)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu", choices=PROFILES)
    parser.add_argument("--only", nargs="*", default=None, help="notebook stems or their number prefixes")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--notebooks", type=Path, default=ROOT / "notebooks")
    parser.add_argument("--results", type=Path, default=None,
                        help="default: results/ for the cpu profile, runs/<profile>/ for the others")
    parser.add_argument("--check", action="store_true",
                        help="check every parameter, task, split size and model of the notebooks; run nothing")
    parser.add_argument("--dry-run", nargs="?", type=int, const=4, default=None, metavar="ROWS",
                        help="run on local stand-ins of every model, sizes cut to ROWS (default 4) rows and a few "
                             "steps, into runs/<profile>-dry/ (see promptgrad.dryrun)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="write parameterized notebooks to --out without executing them (for nbval)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    overrides = {name: parse_value(value) for name, value in args.parameter}
    paths = select_notebooks(args.notebooks, args.only)
    default = default_results(args.profile)
    if args.dry_run is not None:
        default = ROOT / "runs" / f"{args.profile}-dry"
    results = (args.results or default).resolve()
    plans = [(p, resolve_parameters(p, args.profile, results, overrides, args.notebooks / "profiles"))
             for p in paths]  # every notebook's parameters checked before any runs
    plans = [(p, _point_reuse(p, params, results, overrides)) for p, params in plans]
    if args.dry_run is not None:
        return dry_run(plans, results, args.profile, args.dry_run)
    if args.check:
        return check([(p, {**declared_defaults(p), **params}) for p, params in plans])
    if args.prepare_only:
        import papermill

        out_dir = (args.out or results).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, params in plans:
            papermill.execute_notebook(str(path), str(out_dir / path.name), parameters=params,
                                       cwd=str(path.parent), prepare_only=True, kernel_name="python3")
        return 0
    return run_all(plans, results, args.profile)


def select_notebooks(folder: Path, only: list[str] | None) -> list[Path]:
    """The notebooks ``NN_*.ipynb`` in ``folder``, or those ``only`` names (stems or number prefixes)."""
    paths = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        paths = [p for p in paths if any(p.stem == o or p.stem.startswith(o) for o in only)]
        if not paths:
            raise SystemExit(f"No notebook matches {only} in {folder}.")
    return paths


def run_all(plans: list[tuple[Path, dict]], results: Path, profile: str) -> int:
    """Every notebook in turn, then a table of which failed and why; 1 when any failed."""
    results.mkdir(parents=True, exist_ok=True)
    runtimes_path = results / "runtimes.json"
    runtimes = json.loads(runtimes_path.read_text()) if runtimes_path.exists() else {}
    outcomes = []
    for path, params in plans:
        start = time.perf_counter()
        failure = run_one(path, params, results, profile)
        seconds = round(time.perf_counter() - start, 1)
        outcomes.append((path.stem, seconds, failure))
        print(f"[{profile}] {path.stem}: {seconds:.0f} s" + (f", FAILED: {failure}" if failure else ""),
              flush=True)
        if failure is None:
            runtimes[path.stem] = {"profile": profile, "wall_seconds": seconds}
            runtimes_path.write_text(json.dumps(runtimes, indent=1) + "\n")
    print(f"\n{'notebook':<20} {'seconds':>8}  outcome")
    for stem, seconds, failure in outcomes:
        print(f"{stem:<20} {seconds:>8.0f}  {failure or 'ok'}")
    failed = [stem for stem, _, failure in outcomes if failure]
    if failed:
        print(f"\n{len(failed)} of {len(outcomes)} notebooks failed; their earlier results in {results} are "
              f"untouched, their partial output is in {results / '.failed'}.")
    return 1 if failed else 0


def dry_run(plans: list[tuple[Path, dict]], results: Path, profile: str, rows: int) -> int:
    """The notebooks on stand-ins (``promptgrad.dryrun``): checked, then run with a llama.cpp
    server on loopback answering for every OpenAI model."""
    from .dryrun import LlamaServer, dry_parameters, free_port

    port = free_port()
    server = LlamaServer(results / "llama-server.log", port=port, n_ctx=4096, threads=min(4, os.cpu_count() or 1))
    dry = []
    for path, params in plans:
        params, notes = dry_parameters(params, results / "stand-ins", server.url, rows)
        declared = notebook_parameters(path)
        if "CACHE_PATH" in declared:  # the real runs' cache and checkpoints stay clean
            params["CACHE_PATH"] = str(results / "responses.sqlite")
        if "CHECKPOINT_DIR" in declared:
            params["CHECKPOINT_DIR"] = str(results / "checkpoints" / path.stem)
        for note in notes:
            print(f"[{profile} dry run] {path.stem}: {note}", flush=True)
        dry.append((path, params))
    if check([(p, {**declared_defaults(p), **params}) for p, params in dry]):
        return 1
    with server:
        return run_all(dry, results, f"{profile} dry run")


def _point_reuse(path: Path, params: dict, results: Path, overrides: dict) -> dict:
    """A notebook's ``REUSE_FROM`` folders, by name, in this run's results folder."""
    if "REUSE_FROM" in overrides or "REUSE_FROM" not in notebook_parameters(path):
        return params
    folders = params["REUSE_FROM"] if "REUSE_FROM" in params else declared_defaults(path)["REUSE_FROM"]
    return {**params, "REUSE_FROM": [str(results / Path(d).name) for d in folders]}


if __name__ == "__main__":
    sys.exit(main())
