"""Head to head (notebook 04): every method on one model, task, split and protocol.

Rows measured by another notebook are reused only where everything that decides them
matches (``reuse``): the parameters that notebook ran with, the answer protocol, and a test
set that holds every example asked for (the accuracy is then recomputed on exactly those
examples from the saved per-example records). Everything else is run here.
"""

from __future__ import annotations

import json
from pathlib import Path

from .engines import Usage
from .evaluation import Evaluation, summarize
from .results import read_metrics, records_path
from .tasks import per_task


def executed_parameters(notebook: str | Path) -> dict:
    """The parameters an executed notebook ran with: its ``parameters`` cell, then the
    cell papermill injected."""
    cells = json.loads(Path(notebook).read_text(encoding="utf-8"))["cells"]
    scope: dict = {}
    for tag in ("parameters", "injected-parameters"):
        for cell in cells:
            if tag in cell.get("metadata", {}).get("tags", []):
                exec("".join(cell["source"]), {}, scope)  # noqa: S102 - our own committed notebooks
    return scope


class Source:
    """Another notebook's results folder: its metrics, records and parameters."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)
        self.name = self.dir.name
        self.metrics = read_metrics(self.dir)
        executed = self.dir / f"{self.name}.ipynb"  # absent when the notebook ran under nbval
        self.params = executed_parameters(executed) if executed.is_file() else None

    def param(self, name: str, task: str):
        """A parameter's value for a task (per-task dicts are looked up as ``tasks.per_task`` does,
        missing entries are None)."""
        return per_task(self.params.get(name), task, name, default=None)

    def reuse(self, task: str, method: str, test_ids: list[str], require: dict, protocol: str = "direct"):
        """``(Evaluation on test_ids, the source row)``, or ``(None, why not)``.

        ``require`` maps parameter names to the values this run would use for ``task``
        (per-task dict parameters are compared by their entry for ``task``)."""
        row = next((r for r in self.metrics["rows"]
                    if (r["task"], r["method"], r["split"]) == (task, method, "test")), None)
        if row is None:
            return None, f"no '{method}' row for {task}"
        if self.params is None:
            return None, "no executed notebook to read its parameters from"
        differ = [f"{k}={self.param(k, task)!r} (here {v!r})" for k, v in require.items() if self.param(k, task) != v]
        if differ:
            return None, "differs: " + ", ".join(differ)
        path = records_path(self.dir, task, method, "test")
        records = {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
        if any(("forced_output" in r) != (protocol == "forced") for r in records.values()):
            return None, f"protocol is not '{protocol}'"
        missing = [i for i in test_ids if i not in records]
        if missing:
            return None, f"{len(missing)} of the {len(test_ids)} test examples were not scored there"
        chosen = [records[i] for i in test_ids]
        return Evaluation(chosen, summarize(chosen)), row


def find_reusable(sources: list[Source], splits: dict, methods: dict[str, str], required, protocol: str = "direct",
                  reject=lambda row: None):
    """For each task of ``splits`` and each method (our name -> the source notebooks' name), the
    first source row that ``Source.reuse`` accepts and ``reject(row)`` does not (it returns a
    reason, or None). Returns ``{(task, method): (evaluation, row, source name)}`` and one
    decision per task and method (where it came from, or why nothing was reused), to show."""
    found, decisions = {}, []
    for name, split in splits.items():
        test_ids = [ex.id for ex in split.test]
        for method, theirs in methods.items():
            why = []
            for source in sources:
                evaluation, row = source.reuse(name, theirs, test_ids, required(name, theirs), protocol)
                reason = row if evaluation is None else reject(row)
                if reason is None:
                    found[name, method] = (evaluation, row, source.name)
                    break
                why.append(f"{source.name}: {reason}")
            decisions.append({"task": name, "method": method,
                              "from": found[name, method][2] if (name, method) in found else "run here",
                              "why not reused": "; ".join(why)[:160] if (name, method) not in found else ""})
    return found, decisions


TEXT_METHODS = ("GPO", "OPRO", "GRAD-SUM", "GRAD-SUM (no summarization)")


def check_text_methods(methods: list[str], hybrid: bool = False) -> None:
    """Fail early, before any model is loaded, on a method this notebook cannot run; the
    hybrid (EmbedGrad from GPO's prompt) needs GPO."""
    unknown = [m for m in methods if m not in TEXT_METHODS]
    if unknown:
        raise ValueError(f"Unknown text method(s) {unknown}; choose from {list(TEXT_METHODS)}.")
    if hybrid and "GPO" not in methods:
        raise ValueError("HYBRID_TASKS starts EmbedGrad from GPO's prompt: add \"GPO\" to TEXT_METHODS "
                         "or set HYBRID_TASKS = [].")


def text_budget(usage: dict) -> dict:
    """The budget columns of a text optimizer from its loop's usage (a Usage dict)."""
    return {"model_calls": usage.get("model_calls", 0),
            "tokens": usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0),
            "optimize_seconds": round(usage.get("wall_seconds", 0.0), 1)}


def embedding_budget(steps: int, batch_size: int, seconds: float) -> dict:
    """The budget columns of an embedding method: examples through forward + backward."""
    return {"train_examples": steps * batch_size, "optimize_seconds": round(seconds, 1)}


def plot_accuracy_vs_cost(rows: list[dict], baselines: tuple[str, ...] = ("no instruction",)):
    """Test accuracy (95% CI) against optimization wall time, one panel per task; methods that
    optimize nothing are horizontal lines."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for r in (r for r in rows if r["task"] == task):
            lo, hi = r["ci95"]
            seconds = r.get("optimize_seconds") or 0
            if r["method"] in baselines or not seconds:
                ax.axhline(r["accuracy"], color=colors[r["method"]], ls="--", lw=1, label=r["method"])
                continue
            ax.errorbar(seconds, r["accuracy"], yerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]], fmt="o",
                        color=colors[r["method"]], capsize=3, label=r["method"])
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("optimization wall time (s, log)")
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("test accuracy (95% CI)")
    legend: dict = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(5, len(legend)),
               bbox_to_anchor=(0.5, -0.12), frameon=False)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- running what is missing


def run_embedding(method: str, engine, task, splits, init_text: str, config, learning_rates: list[float],
                  sweep_steps: int, *, placement: str = "after", checkpoint_dir: str | None = None,
                  max_tokens: int | None = None):
    """EmbedGrad or PEFT prompt tuning (``promptgrad.embedgrad.fit``: learning rate on dev,
    then training): ``(soft prompt, budget columns)``."""
    from .embedgrad import fit
    from .models import local_model_path

    result = fit(method, engine, task, splits.train, splits.dev, config, learning_rates, sweep_steps, init_text,
                 placement, local_model_path(engine.model), checkpoint_dir, max_tokens)
    steps = len(result.log.losses)
    return result.soft, {"lr": result.learning_rate, "steps": steps,
                         **embedding_budget(steps, config.batch_size, result.log.seconds_per_step * steps)}


def run_gpo(strategy: str, task, splits, loop_engine, optimizer_engine, loop_dev: int, **settings):
    """GPO or OPRO (``promptgrad.gpo.optimize``) scoring candidates on the first ``loop_dev``
    dev examples, exemplars from train: ``(final prompt, budget columns, the run)``."""
    from . import gpo

    run = gpo.optimize(task, loop_engine, optimizer_engine, splits.dev[:loop_dev], splits.train[:3],
                       strategy=strategy, **settings)
    usage = sum((Usage(**u) for u in run.usage.values()), Usage())  # task model + optimizer
    return run.final["prompt"], text_budget(usage.as_dict()), run


def run_gradsum(summarize: bool, task, splits, engines: dict, loop_dev: int, **settings):
    """GRAD-SUM or its no-summarization ablation (``promptgrad.gradsum.optimize``), candidates
    scored on the first ``loop_dev`` dev examples: ``(best template, budget columns, the run)``."""
    from . import gradsum

    run = gradsum.optimize(task, splits.train, splits.dev[:loop_dev], summarize=summarize, **engines, **settings)
    return run.best_prompt, text_budget(run.total_usage().as_dict()), run
