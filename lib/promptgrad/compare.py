"""Head to head (notebook 04): every method on one model, task, split and protocol.

Rows measured by another notebook are reused only where everything that decides them matches
(:func:`find_reusable`): the notebook-level parameters that decide every answer (model, system
prompt, answer budget), the prompt text or the trained method's settings on that task (which
``methods.record`` keeps in each row), the answer protocol, and a test set that holds every
example asked for (the accuracy is then recomputed on exactly those examples from the saved
per-example records). Nothing of the other notebook is executed: its metrics.json says it all.
Everything else is run here.
"""

from __future__ import annotations

import json
from pathlib import Path

from .evaluation import Evaluation, summarize
from .results import read_metrics, records_path
from .tasks import per_task

DECIDE_EVERY_ANSWER = ("MODEL", "SYSTEM_PROMPT", "MAX_TOKENS", "PLACEMENT")  # notebook parameters compared for every row


class Source:
    """Another notebook's results folder: its rows, records and the parameters it ran with."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.name = self.dir.name
        self.metrics = read_metrics(self.dir)
        self.params = self.metrics.get("parameters")

    def reuse(self, task: str, method: str, prompt: str | None, settings: dict | None, test_ids: list[str],
              here: dict, protocol: str = "direct"):
        """``(Evaluation on test_ids, the source row)``, or ``(None, why not)``.

        A text baseline (``settings`` None) is the source's untrained row with the same prompt
        text; a trained method the row of the same method name with equal ``settings``. ``here``
        maps the parameters of ``DECIDE_EVERY_ANSWER`` to this notebook's values."""
        if self.params is None:
            return None, "its metrics.json records no parameters (written by older code)"
        rows = [r for r in self.metrics["rows"] if r["task"] == task and r["split"] == "test"]
        if settings is None:
            row = next((r for r in rows if "settings" not in r and r["prompt"] == prompt), None)
        else:
            row = next((r for r in rows if r["method"] == method), None)
        if row is None:
            return None, f"no row for {method!r} on {task}"
        if settings is not None and row.get("settings") != json.loads(json.dumps(settings)):
            return None, "trained with other settings"
        theirs = {k: per_task(self.params.get(k), task, k, default=None) for k in here}
        ours = {k: per_task(v, task, k, default=None) for k, v in here.items()}
        differ = [f"{k}={theirs[k]!r} (here {ours[k]!r})" for k in here if theirs[k] != ours[k]]
        if differ:
            return None, "differs: " + ", ".join(differ)
        records = {r["id"]: r for r in map(json.loads, records_path(self.dir, task, row["method"], "test")
                                           .read_text(encoding="utf-8").splitlines())}
        if any(("forced_output" in r) != (protocol == "forced") for r in records.values()):
            return None, f"protocol is not '{protocol}'"
        missing = [i for i in test_ids if i not in records]
        if missing:
            return None, f"{len(missing)} of the {len(test_ids)} test examples were not scored there"
        chosen = [records[i] for i in test_ids]
        return Evaluation(chosen, summarize(chosen)), row


def head_to_head_methods(params: dict) -> dict:
    """Notebook 04's methods from its parameters as given (each method resolves its per-task
    dicts per task): those ``METHODS`` names, in that order. Every method the notebook can run is
    one entry below; the plan (``promptgrad.plan``) counts the same list."""
    from . import GEPA, GPO, EmbedGrad, GradSum
    from .methods import choose

    p = params
    common = dict(max_tokens=p["MAX_TOKENS"], seed=p["SEED"])
    embedding = dict(initial_prompt=p["INIT_TEXT"], placement=p["PLACEMENT"], steps=p["STEPS"],
                     batch_size=p["BATCH_SIZE"], learning_rates=p["LEARNING_RATES"], sweep_steps=p["SWEEP_STEPS"],
                     gsm8k_target=p["GSM8K_TARGET"], **common)
    text = dict(dev=p["LOOP_DEV"], **common)
    gpo = dict(steps=p["TEXT_STEPS"], candidates=p["CANDIDATES"], initial_prompt=p["COT_PROMPT"],
               placement=p["PLACEMENT"], parse=p["PARSE"], protocol=p["PROTOCOL"],
               optimizer_max_tokens=p["OPTIMIZER_MAX_TOKENS"], **text)
    gradsum = dict(initial_prompt="{question}\n" + p["COT_PROMPT"], parse=p["PARSE"], **p["GRADSUM"], **text)
    chosen = choose([EmbedGrad(**embedding), EmbedGrad(peft=True, **embedding),
                     GPO(**gpo), GPO(strategy="OPRO", **gpo),
                     GradSum(**gradsum), GradSum(summarize=False, **gradsum),
                     GEPA(initial_prompt=p["COT_PROMPT"], placement=p["PLACEMENT"], protocol=p["PROTOCOL"], **p["GEPA"],
                          **text)], p["METHODS"])
    problem = hybrid_problem(p.get("HYBRID_TASKS") or [], chosen)
    if problem:
        raise ValueError(problem)
    return chosen


def hybrid_problem(hybrid_tasks: list[str], method_names) -> str | None:
    """Why ``HYBRID_TASKS`` cannot run with these methods (it starts EmbedGrad from GPO's prompt), or None."""
    if hybrid_tasks and not {"EmbedGrad", "GPO"} <= set(method_names):
        return ('HYBRID_TASKS starts EmbedGrad from GPO\'s prompt: METHODS must list "EmbedGrad" and "GPO" '
                "(or set HYBRID_TASKS = []).")
    return None


HYBRID = "EmbedGrad from GPO's prompt"


def hybrid(methods: dict, gpo_found, task, splits, engines, checkpoint_dir=None):
    """EmbedGrad with its own settings, started from the text prompt GPO found (ours: no paper
    tries it). Its ``Found`` pays for both stages."""
    from .methods import found_by

    refined = methods["EmbedGrad"].starting_from(gpo_found.prompt).optimize(task, splits, engines, checkpoint_dir)
    return found_by(gpo_found, refined, HYBRID)


def sources(directories: list[str]) -> list[Source]:
    """The folders of ``directories`` that hold a metrics.json (a notebook not run yet is skipped)."""
    return [Source(d) for d in directories if Path(d, "metrics.json").is_file()]


def wanted(tasks: dict, baselines: dict, methods: dict) -> dict:
    """``(task, method) -> (prompt, settings)``: the rows another notebook may give. Each text
    baseline by its prompt text; each embedding method by its settings on that task. The text
    optimizers always run here: their rows depend on the loop and optimizer models too."""
    from .embedgrad import EmbedGrad

    return {**{(n, m): (prompt, None) for n in tasks for m, prompt in baselines.items()},
            **{(n, m): (None, method.for_task(task).settings()) for n, task in tasks.items()
               for m, method in methods.items() if isinstance(method, EmbedGrad)}}


def find_reusable(sources: list[Source], splits: dict, wanted: dict, params: dict, protocol: str = "direct"):
    """For each ``(task, method) -> (prompt, settings)`` of ``wanted`` (:func:`wanted`; the
    fingerprint of ``splits``' train and dev examples is added to the settings here), the first
    source row that ``Source.reuse`` accepts, with this notebook's ``params`` (those of
    ``DECIDE_EVERY_ANSWER`` are compared).
    Returns ``{(task, method): (evaluation, row, source name)}`` and one decision per entry
    (where it came from, or why nothing was reused), to show."""
    from .methods import examples_fingerprint

    here = {k: params.get(k) for k in DECIDE_EVERY_ANSWER}  # one missing here counts as None, never as equal
    found, decisions = {}, []
    for (task, method), (prompt, settings) in wanted.items():
        test_ids = [ex.id for ex in splits[task].test]
        if settings is not None:  # a trained row must also have learned from these train and dev examples
            settings = {**settings, "examples": examples_fingerprint(splits[task])}
        why = []
        for source in sources:
            evaluation, row = source.reuse(task, method, prompt, settings, test_ids, here, protocol)
            if evaluation is not None:
                found[task, method] = (evaluation, row, source.name)
                break
            why.append(f"{source.name}: {row}")
        decisions.append({"task": task, "method": method,
                          "from": found[task, method][2] if (task, method) in found else "run here",
                          "why not reused": "" if (task, method) in found else "; ".join(why)[:160]})
    return found, decisions


BUDGET = ("model_calls", "cache_hits", "tokens", "train_examples", "steps", "lr", "optimize_seconds")  # table columns


def reused_columns(row: dict) -> dict:
    """The budget columns and settings a reused row carries over."""
    return {k: row[k] for k in (*BUDGET, "settings") if k in row}


def score_rows(results, engine, tasks: dict, splits: dict, baselines: dict, found: dict, reused: dict, order: list,
               **protocol) -> dict:
    """Every row of the head-to-head, in ``order`` per task: reused rows as they were recomputed,
    the rest (``baselines`` not reused, every prompt ``found``) scored now with
    ``methods.score_on_test`` (``protocol``: placement, protocol, max_tokens per task as a dict).
    Rows go to ``results``; returns ``{(task, method): Evaluation}`` for paired differences."""
    from .methods import record, score_on_test

    max_tokens = protocol.pop("max_tokens", {})
    evaluations = {}
    for name, task in tasks.items():
        todo = {**{m: p for m, p in baselines.items() if (name, m) not in reused},
                **{m: f.prompt for (n, m), f in found.items() if n == name}}
        scored = score_on_test(engine, task, todo, splits[name].test, max_tokens=max_tokens.get(name), **protocol)
        for method in (m for m in order if (name, m) in reused or m in scored):
            if (name, method) in reused:
                evaluation, row, source = reused[name, method]
                record(results, name, method, evaluation, row["prompt"], source=source, **reused_columns(row))
            else:
                evaluation = scored[method]
                record(results, name, method, evaluation, todo[method], found.get((name, method)), source="run here")
            evaluations[name, method] = evaluation
    return evaluations


def transfer(engine, tasks: dict, splits: dict, baselines: dict, found: dict, **protocol) -> list[dict]:
    """The text prompts (baselines and those found) scored on another task model, ``engine``:
    a soft prompt lives in one model's embedding space and cannot go."""
    from .methods import score_on_test

    max_tokens = protocol.pop("max_tokens", {})
    rows = []
    for name, task in tasks.items():
        texts = {**baselines, **{m: f.prompt for (n, m), f in found.items() if n == name and isinstance(f.prompt, str)}}
        for method, ev in score_on_test(engine, task, texts, splits[name].test, max_tokens=max_tokens.get(name),
                                        **protocol).items():
            rows.append({"task": name, "method": method, "scored on": engine.model, "accuracy": ev.summary["accuracy"],
                         "ci95": ev.summary["ci95"]})
    return rows


def save_gepa_frontiers(results, found: dict) -> None:
    """Each GEPA run's candidate tree and Pareto front, one table per task (``gepa_candidates_<task>``)."""
    import pandas as pd

    from .gepa_search import frontier_table

    for (name, method), f in found.items():
        if method == "GEPA":
            results.save_table(pd.DataFrame(frontier_table(f)), f"gepa_candidates_{name.replace('/', '_')}")
