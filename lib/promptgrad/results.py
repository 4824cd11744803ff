"""What a notebook writes: ``metrics.json`` in the common schema, per-example records,
tables (CSV + Markdown) and PNG figures, all under ``results/<notebook stem>/``.

metrics.json::

    {"notebook": "00_quickstart", "profile": "cpu", "model": "...", "seed": 0,
     "rows": [{"task": ..., "method": ..., "prompt": ..., "split": "test", "n": ...,
               "accuracy": ..., "ci95": [lo, hi], "format_failure_rate": ...,
               "answers": {answer: count}, "top_answer": ..., "top_answer_share": ..., "constant": ...,
               "majority_accuracy": ..., "chance": ...}, ...],
     "cost": {"model_calls": ..., "prompt_tokens": ..., "completion_tokens": ...,
              "wall_seconds": ...},
     "parameters": {"TASKS": ..., "N_TEST": ..., ...}}   # the notebook's parameters, as it ran
"""

from __future__ import annotations

import json
import math
import re
import time
from pathlib import Path

import pandas as pd

from .engines import Usage
from .evaluation import Evaluation, answers_label, prompt_label
from .tasks import TASKS

PROFILE_KEYS = ("answers", "top_answer", "top_answer_share", "constant", "majority_accuracy")

ROW_KEYS = ("task", "method", "prompt", "split", "n", "accuracy", "ci95", "format_failure_rate")


def _jsonable(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def records_path(directory: str | Path, task: str, method: str, split: str) -> Path:
    """Where a row's per-example records are: ``records/<task>__<method>__<split>.jsonl``."""
    return Path(directory) / "records" / f"{_slug(task)}__{_slug(method)}__{split}.jsonl"


class Results:
    """Collects rows and writes them; one per notebook run."""

    def __init__(self, directory: str | Path, profile: str, model: str, seed: int, parameters: dict | None = None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.notebook = self.dir.name
        self.profile, self.model, self.seed = profile, model, seed
        self.rows: list[dict] = []
        self.extra: dict = {"parameters": parameters} if parameters is not None else {}
        self.started = time.perf_counter()

    def add(self, task: str, method: str, evaluation: Evaluation, prompt, split: str = "test", **extra) -> dict:
        """A row from an evaluation; its per-example records go to ``records/``."""
        s = evaluation.summary
        row = {"task": task, "method": method, "prompt": prompt_label(prompt), "split": split, "n": s["n"],
               "accuracy": s["accuracy"], "ci95": s["ci95"], "format_failure_rate": s["format_failure_rate"],
               "accuracy_parsed": s["accuracy_parsed"], "truncation_rate": s.get("truncation_rate"),
               **{k: s[k] for k in PROFILE_KEYS},
               "chance": chance_accuracy(task, evaluation.records),
               **{k: s[k] for k in ("scored_by", "exact_accuracy") if k in s}, **extra}
        self.rows = [r for r in self.rows if (r["task"], r["method"], r["split"]) != (task, method, split)]
        self.rows.append(row)
        path = records_path(self.dir, task, method, split)
        path.parent.mkdir(exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            for record in evaluation.records:
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return row

    def table(self, split: str | None = "test") -> pd.DataFrame:
        """The rows as a table: the CI as text, ``answers`` as what the answers were
        (``evaluation.answers_label``: the most frequent answer, its share, "constant")."""
        rows = [r for r in self.rows if split is None or r["split"] == split]
        frame = pd.DataFrame(rows)
        if frame.empty:
            return frame
        frame["ci95"] = frame["ci95"].map(lambda ci: f"[{ci[0]:.3f}, {ci[1]:.3f}]")
        frame["answers"] = [answers_label(r) if "top_answer" in r else "" for r in rows]
        return frame

    def save_table(self, frame: pd.DataFrame, name: str, floatfmt: str = ".3f") -> Path:
        frame.to_csv(self.dir / f"{name}.csv", index=False)
        path = self.dir / f"{name}.md"
        path.write_text(frame.to_markdown(index=False, floatfmt=floatfmt) + "\n", encoding="utf-8")
        return path

    def save_paired(self, evaluations: dict, pairs: list[tuple[str, str]], tasks: list[str],
                    name: str = "paired_differences") -> pd.DataFrame:
        """Paired differences on the same test items (:func:`paired_table`), saved as ``<name>.csv``
        and ``.md`` and kept for metrics.json under ``name``; returns the table to show (its
        intervals as text)."""
        frame = paired_table(evaluations, pairs, tasks)
        self.save_table(frame, name)
        self.extra[name] = frame.to_dict("records")
        return frame.drop(columns=["ci95_low", "ci95_high"], errors="ignore")

    def save_jsonl(self, items: list[dict], name: str) -> Path:
        """One JSON object per line (a trajectory, every step's candidates), as ``<name>.jsonl``."""
        path = self.dir / f"{name}.jsonl"
        path.write_text("".join(json.dumps(_jsonable(item), ensure_ascii=False) + "\n" for item in items),
                        encoding="utf-8")
        return path

    def save_figure(self, fig, name: str) -> Path:
        path = self.dir / f"{name}.png"
        fig.savefig(path, dpi=120, bbox_inches="tight")
        return path

    def write(self, cost: Usage | dict, **extra) -> Path:
        """Write metrics.json. ``cost.wall_seconds`` is this notebook's wall time."""
        cost = cost.as_dict() if isinstance(cost, Usage) else dict(cost)
        cost["wall_seconds"] = round(time.perf_counter() - self.started, 1)
        self.extra.update(extra)
        metrics = {"notebook": self.notebook, "profile": self.profile, "model": self.model, "seed": self.seed,
                   "rows": self.rows, "cost": cost, **self.extra}
        path = self.dir / "metrics.json"
        path.write_text(json.dumps(_jsonable(metrics), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        return path


def paired_table(evaluations: dict, pairs: list[tuple[str, str]], tasks: list[str]) -> pd.DataFrame:
    """Paired differences ``a - b`` on the same test items (``evaluation.paired_difference``) for
    each task and each pair whose two evaluations ``{(task, method): Evaluation}`` holds; the
    interval as text with signs (and as numbers, ``ci95_low`` and ``ci95_high``)."""
    from .evaluation import paired_difference

    frame = pd.DataFrame([{"task": t, "a": a, "b": b,
                           **paired_difference(evaluations[t, a].correct, evaluations[t, b].correct)}
                          for t in tasks for a, b in pairs if (t, a) in evaluations and (t, b) in evaluations])
    if not frame.empty:  # unrounded numbers: the Markdown prints the digits the text gives
        frame["ci95_low"], frame["ci95_high"] = zip(*frame["ci95"])
        frame["ci95"] = frame["ci95"].map(lambda ci: f"[{ci[0]:+.3f}, {ci[1]:+.3f}]")
    return frame


def seed_table(rows: list[dict]) -> pd.DataFrame:
    """Per task and method (rows of ``methods.across_seeds``): the seeds, test accuracy per seed,
    their mean and sample standard deviation, the mean paired difference from the baseline, and
    on how many seeds that difference's 95% interval excludes zero."""
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    out = []
    for (task, method), group in frame.groupby(["task", "method"], sort=False):
        excludes = sum(lo > 0 or hi < 0 for lo, hi in group["minus_baseline_ci95"])
        out.append({"task": task, "method": method, "n": int(group["n"].iloc[0]), "seeds": list(group["seed"]),
                    "accuracy_per_seed": [round(a, 4) for a in group["accuracy"]],
                    "mean": round(group["accuracy"].mean(), 4),
                    "sd": round(group["accuracy"].std(ddof=1), 4) if len(group) > 1 else None,
                    "mean_minus_baseline": round(group["minus_baseline"].mean(), 4),
                    "seeds_gain_ci_excludes_zero": f"{excludes}/{len(group)}"})
    return pd.DataFrame(out)


def notebook_parameters(namespace: dict) -> dict:
    """A notebook's parameters from its namespace: the upper-case names bound to JSON literals
    (call it right after the parameters cell). metrics.json keeps them, so another notebook
    can decide what to reuse without running any of this notebook's code."""
    def literal(value) -> bool:
        if isinstance(value, (list, tuple)):
            return all(map(literal, value))
        if isinstance(value, dict):
            return all(isinstance(k, str) and literal(v) for k, v in value.items())
        return value is None or isinstance(value, (str, int, float, bool))

    return {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("_") and literal(v)}


def chance_accuracy(task: str, records: list[dict]) -> float | None:
    """The mean accuracy of a uniform guess on these records' questions (None for numbers, text,
    or a task name not registered)."""
    chances = [TASKS[task].chance(r.get("input", "")) for r in records] if task in TASKS else []
    chances = [c for c in chances if c is not None]
    return sum(chances) / len(chances) if chances else None


def read_metrics(directory: str | Path) -> dict:
    path = Path(directory) / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: run that notebook first (./run_all.sh).")
    return json.loads(path.read_text(encoding="utf-8"))
