"""The smoke runs' metrics.json files, read after run_tests.sh has executed the notebooks
under nbval (it sets PROMPTGRAD_SMOKE_RESULTS and runs the notebooks first)."""

import json
import os
from pathlib import Path

import pytest

from promptgrad.runner import ROOT

RESULTS = os.environ.get("PROMPTGRAD_SMOKE_RESULTS")
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ROW_KEYS = {"task", "method", "prompt", "split", "n", "accuracy", "ci95", "format_failure_rate", "answers",
            "top_answer", "top_answer_share", "constant", "majority_accuracy", "chance"}

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
        _check_answer_profile(Path(RESULTS) / stem, row)


def _check_answer_profile(directory, row):
    """The row's answer distribution and majority baseline, recomputed from its records."""
    from collections import Counter

    from promptgrad.results import records_path

    records = [json.loads(line) for line in records_path(directory, row["task"], row["method"], "test")
               .read_text().splitlines()]
    assert len(records) == row["n"]
    parsed = Counter(str(r["parsed"]) for r in records if r["parsed"] is not None)
    if len(parsed) <= 10:
        assert row["answers"] == dict(parsed)
    assert sum(row["answers"].values()) == sum(parsed.values())
    if parsed:
        top, count = parsed.most_common(1)[0]
        assert row["top_answer_share"] == count / sum(parsed.values())
        assert row["constant"] == (count / sum(parsed.values()) > 0.95)
    golds = Counter(str(r["gold"]) for r in records if r["gold"] != "")
    if golds:
        assert row["majority_accuracy"] == golds.most_common(1)[0][1] / len(records)


def test_head_to_head_has_every_method_on_every_task_with_its_budget():
    metrics = json.loads((Path(RESULTS) / "04_head_to_head" / "metrics.json").read_text())
    required = {"no instruction", "step by step", "EmbedGrad", "PEFT prompt tuning", "GPO", "OPRO", "GRAD-SUM",
                "GRAD-SUM (no summarization)", "GEPA"}
    for task in {r["task"] for r in metrics["rows"]}:
        assert required <= {r["method"] for r in metrics["rows"] if r["task"] == task}, task
    for row in metrics["rows"]:
        assert row["source"]
        if row["method"] in ("GPO", "OPRO", "GRAD-SUM", "GEPA"):
            assert row["model_calls"] > 0 and row["tokens"] > 0 and row["optimize_seconds"] > 0
        if row["method"] in ("EmbedGrad", "PEFT prompt tuning"):
            assert row["train_examples"] > 0 and row["optimize_seconds"] > 0
    assert {d["task"] for d in metrics["reuse"]} == {r["task"] for r in metrics["rows"]}
    assert metrics["paired_differences"]


def test_head_to_head_reuses_the_quickstart_rows_from_its_metrics_alone():
    """Under nbval there is no executed notebook: reuse reads 00's metrics.json (its parameters)."""
    metrics = json.loads((Path(RESULTS) / "04_head_to_head" / "metrics.json").read_text())
    reused = [r for r in metrics["rows"] if r["source"] == "00_quickstart"]
    assert {r["method"] for r in reused} >= {"no instruction", "step by step"}, metrics["reuse"]
    assert {r["task"] for r in reused} == {r["task"] for r in metrics["rows"]}
    assert metrics["parameters"]["METHODS"] and "PROFILE" in metrics["parameters"]


def test_gepa_saved_its_candidates():
    """Per task, GEPA's candidate pool: the seed first (no parent, found before any metric call),
    then its children, each with its parents, dev score and the examples it is best on."""
    import pandas as pd

    folder = Path(RESULTS) / "04_head_to_head"
    metrics = json.loads((folder / "metrics.json").read_text())
    for task in {r["task"] for r in metrics["rows"] if r["method"] == "GEPA"}:
        pool = pd.read_csv(folder / f"gepa_candidates_{task.replace('/', '_')}.csv")
        assert list(pool.columns) == ["index", "parents", "val_score", "best_on", "metric_calls_at_discovery", "prompt"]
        assert (pool.loc[0, "parents"], pool.loc[0, "metric_calls_at_discovery"]) == ("[]", 0)
        assert pool["val_score"].between(0, 1).all()


def test_embedgrad_seed_study_repeats_the_main_run_and_adds_seeds():
    """01's smoke run trains EmbedGrad and PEFT under seeds 0 and 1 on SST-2: the seed-0 rows are
    the main run's (same prompt, so the same test accuracy), every seed is scored on the same rows."""
    metrics = json.loads((Path(RESULTS) / "01_embedgrad" / "metrics.json").read_text())
    main = {(r["task"], r["method"]): r for r in metrics["rows"]}
    seeds = metrics["seeds"]
    assert {(r["method"], r["seed"]) for r in seeds} == {(m, s) for m in ("EmbedGrad", "PEFT prompt tuning")
                                                         for s in (0, 1)}
    for row in seeds:
        assert row["n"] == main["sst2", row["method"]]["n"]
        if row["seed"] == 0:
            assert row["accuracy"] == main["sst2", row["method"]]["accuracy"]
        text = main["sst2", "text prompt"]["accuracy"]
        assert abs(row["minus_baseline"] - (row["accuracy"] - text)) < 1e-9


@pytest.mark.parametrize("stem, method", [("02_gpo", "GPO"), ("03_gradsum", "GRAD-SUM")])
def test_text_optimizers_are_paired_with_the_initial_prompt_and_no_instruction(stem, method):
    """02 and 03 compare what the loop found with the prompt it started from and with no instruction,
    question by question: each paired difference is the two rows' accuracies apart."""
    metrics = json.loads((Path(RESULTS) / stem / "metrics.json").read_text())
    accuracy = {(r["task"], r["method"]): r["accuracy"] for r in metrics["rows"]}
    pairs = {(p["task"], p["a"], p["b"]): p for p in metrics["paired_differences"]}
    answered = [t for t, m in accuracy if m == "no instruction"]  # tasks whose initial prompt is not blank
    assert answered
    for task in answered:
        assert {(task, method, "initial"), (task, method, "no instruction")} <= set(pairs)
    for (task, a, b), pair in pairs.items():
        assert abs(pair["difference"] - (accuracy[task, a] - accuracy[task, b])) < 1e-4
        assert pair["ci95_low"] <= pair["difference"] <= pair["ci95_high"]


@pytest.mark.parametrize("stem", ["02_gpo", "03_gradsum"])
def test_the_plan_counts_every_test_row_the_smoke_run_recorded(stem):
    """``promptgrad.plan`` counts, with the parameters the smoke run had, one answer per test
    question of every row the run recorded (two under the forced protocol): every prompt the
    notebook scores, the baselines included."""
    from promptgrad.plan import notebook_demand

    metrics = json.loads((Path(RESULTS) / stem / "metrics.json").read_text())
    params = metrics["parameters"]
    planned = sum(d.calls for d in notebook_demand(stem, params, [])["task"].values())
    turns = 2 if params["PROTOCOL"] == "forced" else 1
    assert planned == turns * sum(r["n"] for r in metrics["rows"])
