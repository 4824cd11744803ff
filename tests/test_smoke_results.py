"""The smoke runs' metrics.json files, read after run_tests.sh has executed the notebooks
under nbval (it sets PROMPTGRAD_SMOKE_RESULTS and runs the notebooks first)."""

import json
import os
from pathlib import Path

import pytest

from promptgrad.runner import ROOT

RESULTS = os.environ.get("PROMPTGRAD_SMOKE_RESULTS")
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ROW_KEYS = {"task", "method", "prompt", "split", "n", "accuracy", "ci95", "format_failure_rate"}

pytestmark = pytest.mark.skipif(not RESULTS, reason="only after run_tests.sh has run the smoke notebooks")


@pytest.mark.parametrize("stem", NOTEBOOKS)
def test_smoke_metrics_follow_the_schema(stem):
    path = Path(RESULTS) / stem / "metrics.json"
    assert path.is_file(), f"the smoke run of {stem} wrote no metrics.json"
    metrics = json.loads(path.read_text())
    assert metrics["notebook"] == stem and metrics["profile"] == "smoke"
    assert {"model", "seed", "rows", "cost"} <= set(metrics)
    assert {"model_calls", "prompt_tokens", "completion_tokens", "wall_seconds"} <= set(metrics["cost"])
    assert metrics["rows"], f"{stem} wrote no rows"
    for row in metrics["rows"]:
        assert ROW_KEYS <= set(row), row
        assert row["split"] == "test" and row["n"] > 0
        lo, hi = row["ci95"]
        assert 0 <= lo <= row["accuracy"] <= hi <= 1
        assert 0 <= row["format_failure_rate"] <= 1


def test_head_to_head_has_every_method_on_every_task_with_its_budget():
    metrics = json.loads((Path(RESULTS) / "04_head_to_head" / "metrics.json").read_text())
    required = {"no instruction", "step by step", "EmbedGrad", "PEFT prompt tuning", "GPO", "OPRO", "GRAD-SUM",
                "GRAD-SUM (no summarization)"}
    for task in {r["task"] for r in metrics["rows"]}:
        assert required <= {r["method"] for r in metrics["rows"] if r["task"] == task}, task
    for row in metrics["rows"]:
        assert row["source"]
        if row["method"] in ("GPO", "OPRO", "GRAD-SUM"):
            assert row["model_calls"] > 0 and row["tokens"] > 0 and row["optimize_seconds"] > 0
        if row["method"] in ("EmbedGrad", "PEFT prompt tuning"):
            assert row["train_examples"] > 0 and row["optimize_seconds"] > 0
    assert {d["task"] for d in metrics["reuse"]} == {r["task"] for r in metrics["rows"]}
    assert metrics["paired_differences"]
