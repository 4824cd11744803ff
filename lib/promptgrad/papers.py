"""What the papers report, in one place, and our rows beside them.

Every number in the constants below is a paper's own (or its released README's), labelled with
where it comes from; nothing here is measured. The functions put our test rows beside them.
"""

from __future__ import annotations

import pandas as pd

EMBEDGRAD = {  # the abstract of arXiv 2508.03533: Qwen2.5-Math-1.5B, "please reason step by step", math problems
    "source": "EmbedGrad paper (arXiv 2508.03533), abstract", "model": "Qwen2.5-Math-1.5B",
    "task": "mathematical problems", "text prompt": 14.74, "EmbedGrad": 58.96}

GPO_TABLE5 = {  # GPO README Table 5, Llama-2-7b-chat task model, gpt-3.5-turbo optimizer, accuracy %
    "Empty": {"BBH": 30.51, "GSM8K": 22.00, "MMLU": 35.96, "WSC": 60.67},
    "CoT": {"BBH": 29.91, "GSM8K": 24.00, "MMLU": 36.36, "WSC": 59.33},
    "APE": {"BBH": 32.94, "GSM8K": 25.00, "MMLU": 37.53, "WSC": 62.00},
    "APO": {"BBH": 32.97, "GSM8K": 25.33, "MMLU": 37.75, "WSC": 62.00},
    "OPRO": {"BBH": 33.29, "GSM8K": 26.67, "MMLU": 37.88, "WSC": 63.33},
    "PE2": {"BBH": 33.43, "GSM8K": 25.33, "MMLU": 38.15, "WSC": 62.67},
    "GPO": {"BBH": 35.43, "GSM8K": 28.33, "MMLU": 39.14, "WSC": 65.33},
}
# The paper's rows and ours: CoT is our initial "Let's think step by step.", Empty our no instruction
GPO_OUR_METHOD = {"Empty": "no instruction", "CoT": "initial", "APE": "APE", "OPRO": "OPRO", "GPO": "GPO"}

GRADSUM_CLAIMS = {"gain_over_initial": 0.14, "gain_from_summarization": 0.05}  # GRAD-SUM: Table 2, its ablation


def _pct(row: dict | None) -> str:
    if row is None:
        return "not run"
    lo, hi = row["ci95"]
    return f"{100 * row['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={row['n']})"


def embedgrad_table(rows: list[dict], model: str) -> pd.DataFrame:
    """The paper's headline beside ours: per task, the text prompt and EmbedGrad (test accuracy %,
    95% CI, n)."""
    paper = {"source": EMBEDGRAD["source"], "model": EMBEDGRAD["model"], "task": EMBEDGRAD["task"],
             "text prompt": f"{EMBEDGRAD['text prompt']:.2f}", "EmbedGrad": f"{EMBEDGRAD['EmbedGrad']:.2f}"}
    by = {(r["task"], r["method"]): r for r in rows if r["split"] == "test"}
    ours = [{"source": "this run", "model": model, "task": task, "text prompt": _pct(by.get((task, "text prompt"))),
             "EmbedGrad": _pct(by.get((task, "EmbedGrad")))} for task in dict.fromkeys(t for t, _ in by)]
    return pd.DataFrame([paper, *ours])


def benchmark_of(task_name: str) -> str:
    """The Table-5 column a task counts in: gpo/bbh/* -> BBH, gpo/mmlu/* -> MMLU, ..."""
    family = task_name.removeprefix("gpo/").split("/")[0]
    return {"bbh": "BBH", "mmlu": "MMLU", "gsm8k": "GSM8K", "wsc": "WSC"}.get(family, family)


def gpo_table5(rows: list[dict], label: str = "ours", max_task_columns: int = 6) -> pd.DataFrame:
    """The GPO README's Table 5 (its reported values) with our test accuracy beside it: for each
    method, the mean over our tasks of each benchmark (BBH, MMLU...), in %, and each task's
    accuracy when there are at most ``max_task_columns`` tasks."""
    tasks = list(dict.fromkeys(r["task"] for r in rows if r["split"] == "test"))
    groups: dict[str, list[str]] = {}
    for t in tasks:
        groups.setdefault(benchmark_of(t), []).append(t)
    by = {(r["task"], r["method"]): r["accuracy"] for r in rows if r["split"] == "test"}
    out = []
    for method, paper in GPO_TABLE5.items():
        ours = GPO_OUR_METHOD.get(method)
        row = {"method": method, **{f"paper {k}": v for k, v in paper.items()}}
        for bench, names in groups.items():
            valid = [by[(t, ours)] for t in names if (t, ours) in by]
            row[f"{label}: {bench} mean ({len(names)} tasks)"] = \
                round(100 * sum(valid) / len(valid), 2) if len(valid) == len(names) else None
        if len(tasks) <= max_task_columns:
            for t in tasks:
                a = by.get((t, ours))
                row[f"{label}: {t.removeprefix('gpo/')}"] = round(100 * a, 2) if a is not None else None
        out.append(row)
    return pd.DataFrame(out)


def gradsum_claims(rows: list[dict]) -> str:
    """The paper's two claims beside what the test rows measured (mean over tasks), as Markdown."""
    arms = ("GRAD-SUM", "GRAD-SUM (no summarization)")
    by: dict = {}
    for r in rows:
        by.setdefault(r["task"], {})[r["method"]] = r["accuracy"]
    full = [t for t, m in by.items() if {"initial", *arms} <= set(m) and all(v is not None for v in m.values())]
    if not full:
        return "No task has test rows for all three methods."
    mean = {m: sum(by[t][m] for t in full) / len(full) for m in ("initial", *arms)}
    init, gs, nosum = mean["initial"], mean["GRAD-SUM"], mean["GRAD-SUM (no summarization)"]
    rel = (lambda a, b: f"{(a - b) / b:+.1%}" if b else "n/a")
    lines = [
        "| claim | paper | measured here (mean over tasks) |", "|---|---|---|",
        f"| GRAD-SUM over the initial prompt | about {GRADSUM_CLAIMS['gain_over_initial']:+.0%} | "
        f"{100 * (gs - init):+.1f} points ({rel(gs, init)} relative; {init:.1%} -> {gs:.1%}) |",
        f"| summarization vs no summarization | about {GRADSUM_CLAIMS['gain_from_summarization']:+.0%} | "
        f"{100 * (gs - nosum):+.1f} points ({rel(gs, nosum)} relative; {nosum:.1%} -> {gs:.1%}) |",
        "", "Per task: " + "; ".join(f"{t}: initial {by[t]['initial']:.1%}, GRAD-SUM {by[t]['GRAD-SUM']:.1%}, "
                                     f"no summarization {by[t]['GRAD-SUM (no summarization)']:.1%}" for t in full),
    ]
    return "\n".join(lines)
