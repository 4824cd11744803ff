"""Figures the notebooks share. Each returns the matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from .evaluation import shorten

sns.set_theme(style="whitegrid", context="notebook")


def accuracy_bars(rows: list[dict], title: str = "", hue: str = "method"):
    """Accuracy per task and method with 95% CI error bars; format failures (counted wrong) hatched
    on top of each bar; the test set's majority-class accuracy (dashed) and chance (dotted) as
    lines; "constant" over a bar whose answers are over 95% one answer."""
    frame = pd.DataFrame(rows)
    tasks = list(dict.fromkeys(frame["task"]))
    methods = list(dict.fromkeys(frame[hue]))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 + 2.6 * len(tasks), 4.2), squeeze=False, sharey=True)
    palette = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    for ax, task in zip(axes[0], tasks):
        sub = frame[frame["task"] == task].set_index(hue).reindex([m for m in methods if m in set(frame[hue])])
        sub = sub.dropna(subset=["accuracy"])
        x = list(range(len(sub)))
        lo = [a - ci[0] for a, ci in zip(sub["accuracy"], sub["ci95"])]
        hi = [ci[1] - a for a, ci in zip(sub["accuracy"], sub["ci95"])]
        ax.bar(x, sub["accuracy"], yerr=[lo, hi], capsize=3, color=[palette[m] for m in sub.index])
        ax.bar(x, sub["format_failure_rate"], bottom=sub["accuracy"], color="none", edgecolor="black", hatch="//",
               linewidth=0.6, label="format failures (counted wrong)")
        has_labels = "chance" in sub and sub["chance"].notna().any()  # numbers and free text have no classes
        for column, style, label in (("majority_accuracy", "--", "majority class"), ("chance", ":", "chance")):
            if has_labels and sub[column].notna().any():
                ax.axhline(float(sub[column].mean()), color="dimgray", linestyle=style, linewidth=1, label=label)
        tops = sub["accuracy"] + sub["format_failure_rate"]
        for i, (constant, top) in enumerate(zip(sub["constant"] if "constant" in sub else [], tops)):
            if constant is True:
                ax.text(i, min(top + 0.02, 0.9), "constant", ha="center", va="bottom", fontsize=7,
                        bbox=dict(facecolor="white", edgecolor="none", pad=0.5))
        ax.set_xticks(x, sub.index, rotation=30, ha="right")
        ax.set_title(task)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel("test accuracy (95% CI)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        unique = dict(zip(labels, handles))
        fig.legend(unique.values(), unique.keys(), loc="lower center", ncol=len(unique), frameon=False,
                   bbox_to_anchor=(0.5, -0.02))
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def line_curves(curves: dict[str, list[float]], xlabel: str, ylabel: str, title: str = "", ax=None):
    """One line per named series (loss per step, dev score per iteration...)."""
    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, label=name, marker="o" if len(values) < 30 else None,
                markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(curves) > 1:
        ax.legend(frameon=False, fontsize=8)
    return fig or ax.figure


def accuracy_vs_cost(rows: list[dict]):
    """Test accuracy (95% CI) against optimization wall time, one panel per task. Methods that
    optimize nothing (no ``optimize_seconds``) are labelled horizontal lines; every method has
    its own marker and colour, and points that would sit on each other are spread sideways a
    little (the wall time is still readable from the axis)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    tasks = list(dict.fromkeys(r["task"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colors = dict(zip(methods, sns.color_palette("tab10", len(methods))))
    markers = dict(zip(methods, "osD^vP*Xph<>"))
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.2 * len(tasks), 4.2), squeeze=False, sharey=True)
    for ax, task in zip(axes[0], tasks):
        points = [r for r in rows if r["task"] == task and r.get("optimize_seconds")]
        for r in (r for r in rows if r["task"] == task and not r.get("optimize_seconds")):
            ax.axhline(r["accuracy"], color=colors[r["method"]], ls="--", lw=1, label=r["method"])
        for k, r in enumerate(sorted(points, key=lambda r: r["optimize_seconds"])):
            lo, hi = r["ci95"]
            x = r["optimize_seconds"] * (1.06 ** (k % 3 - 1))  # a small sideways spread against overlaps
            ax.errorbar(x, r["accuracy"], yerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]], fmt=markers[r["method"]],
                        color=colors[r["method"]], capsize=3, markersize=7, label=r["method"])
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # 10, 20, 50, 100...: several labels
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_title(task)
        ax.set_xlabel("optimization wall time (s, log scale)")
        ax.set_ylim(-0.03, 1.03)  # points at 0 and 1 stay visible
    axes[0][0].set_ylabel("test accuracy (95% CI)")
    legend: dict = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    fig.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(4, len(legend)),
               bbox_to_anchor=(0.5, -0.02), frameon=False)
    fig.tight_layout(rect=(0, 0.04 + 0.05 * ((len(legend) - 1) // 4), 1, 1))
    return fig


def answer_counts(rows: list[dict], top: int = 6):
    """What each prompt answered: per task, the count of each parsed answer (stacked bars, one
    bar per method; the ``top`` most frequent answers in colour, the rest white, format failures
    grey). A bar of one colour is a constant classifier."""
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, len(tasks), figsize=(1 + 4.6 * len(tasks), 3.8), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        sub = [r for r in rows if r["task"] == task]
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        labels = list(dict.fromkeys(a for r in sub for a, _ in sorted(r["answers"].items(), key=lambda x: -x[1])))[:top]
        colors = dict(zip(labels, sns.color_palette("Set2", len(labels))))
        for i, r in enumerate(sub):
            bottom = 0
            for label in labels:
                count = r["answers"].get(label, 0)
                ax.bar(i, count, bottom=bottom, color=colors[label], label=label)
                bottom += count
            other = sum(r["answers"].values()) - bottom
            failures = round(r["format_failure_rate"] * r["n"])
            ax.bar(i, other, bottom=bottom, color="white", edgecolor="grey", label="other answers")
            ax.bar(i, failures, bottom=bottom + other, color="lightgrey", label="format failures")
        ax.set_xticks(range(len(sub)), [r["method"] for r in sub], rotation=30, ha="right")
        ax.set_title(task)
        ax.set_ylabel("test answers")
        handles = dict(zip(*reversed(ax.get_legend_handles_labels())))
        ax.legend(handles.values(), handles.keys(), fontsize=7, frameon=False, loc="upper left",
                  bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------- GPO (notebook 02)


def gpo_trajectories(runs: list):
    """Dev score along each run (``gpo.Run``): the prompt chosen at each step (line, one marker per
    method, drawn side by side so none hides another) and every candidate (dots); each run's best
    prompt (the one it returns) in the legend."""
    from matplotlib.ticker import MaxNLocator

    tasks = list(dict.fromkeys(r.task for r in runs))
    methods = list(dict.fromkeys(r.method for r in runs))
    colors = dict(zip(methods, sns.color_palette("colorblind", len(methods))))
    markers = dict(zip(methods, "osD^v"))
    fig, axes = plt.subplots(len(tasks), 1, figsize=(11, 3.2 * len(tasks)), squeeze=False, sharex=True)
    for ax, task in zip(axes[:, 0], tasks):
        for i, run in enumerate(r for r in runs if r.task == task):
            shift = 0.12 * (i - (len(methods) - 1) / 2)
            color = colors[run.method]
            best = run.final
            ax.plot([e["step"] + shift for e in run.trajectory], [e["score"] for e in run.trajectory],
                    marker=markers[run.method], color=color,
                    label=f"{run.method} (best, step {best['step']}: {shorten(best['prompt'], 40)})")
            ax.scatter([s["step"] + shift for s in run.steps for _ in s["candidates"]],
                       [c["score"] for s in run.steps for c in s["candidates"]], s=14, alpha=0.5, color=color)
        ax.legend(frameon=False, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        ax.set_title(task)
        ax.set_ylabel("dev accuracy")
        ax.set_ylim(-0.03, 1.03)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes[-1, 0].set_xlabel("step (0: the initial prompt; line: the prompt chosen; dots: every candidate scored)")
    fig.tight_layout()
    return fig


def gpo_edits(runs: list, schedule: str = "cosine", paper_steps: int = 18):
    """GPO's edit limit against what the optimizer did: the ``schedule`` over this run's steps
    (line) and over the ``paper_steps`` of GPO's BBH runs (dotted, for reference), each
    candidate's word edit distance from the prompt it refined (dots) and the chosen one (circled)."""
    from matplotlib.ticker import MaxNLocator

    from .gpo import edit_schedule

    def schedule_of(total):
        return edit_schedule(total, schedule)

    runs = [r for r in runs if any(s["edit_limit"] is not None for s in r.steps)]
    fig, axes = plt.subplots(1, max(1, len(runs)), figsize=(1 + 4.6 * max(1, len(runs)), 3.6), squeeze=False)
    for ax, run in zip(axes[0], runs):
        ax.plot(range(1, paper_steps + 1), schedule_of(paper_steps), ls=":", color="grey",
                label=f"limit over GPO's {paper_steps} steps")
        ax.plot([s["step"] for s in run.steps], [s["edit_limit"] for s in run.steps], marker="s", color="black",
                label="limit N_t here")
        ax.scatter([s["step"] for s in run.steps for _ in s["candidates"]],
                   [c["edit_distance"] for s in run.steps for c in s["candidates"]], s=16, alpha=0.6,
                   label="candidates' word edit distance")
        chosen = [(s["step"], c["edit_distance"]) for s in run.steps for c in s["candidates"]
                  if c["prompt"] == s["chosen"] and s["moved"]]
        if chosen:
            ax.scatter(*zip(*chosen), s=60, facecolors="none", edgecolors="red", label="chosen")
        ax.set_title(f"{run.task} · {run.method}")
        ax.set_xlabel("step")
        ax.set_ylabel("words")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


# ---------------------------------------------------------------- GRAD-SUM (notebook 03)


def beam_curves(runs: dict):
    """Validation score of the beam per iteration (best: solid, beam mean: dashed), per task and
    arm (``{task: {arm: gradsum.GradSumRun}}``); the y label says what scored it (exact match or
    the judge)."""
    tasks = list(runs)
    arms = list(dict.fromkeys(a for by_arm in runs.values() for a in by_arm))
    colors = dict(zip(arms, sns.color_palette("colorblind", len(arms))))
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.2 + 3.0 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        judged = set()
        for k, (arm, run) in enumerate(runs[task].items()):
            scores = run.beam_scores()
            xs = [x + 0.05 * (k - 0.5) for x in range(len(scores))]  # side by side: equal curves stay visible
            ax.plot(xs, [max(s) for s in scores], marker="o", color=colors[arm], label=f"{arm}: best")
            ax.plot(xs, [sum(s) / len(s) for s in scores], ls="--", color=colors[arm], label=f"{arm}: beam mean")
            judged.add("exact match" if run.config["engines"]["judge"] == "exact" else "LLM judge")
        ax.set_title(task)
        ax.set_xlabel("iteration (0 = initial prompt)")
        ax.set_ylabel(f"validation score ({', '.join(sorted(judged))})")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xticks(range(len(scores)))
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, frameon=False, fontsize=8, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def judge_agreement(rows: list[dict]):
    """The LLM judge against exact match, one 2x2 table per task: how many answers each passed
    or failed (from the agreement rate, the judge's pass rate and exact match's rate on n
    answers); a task without the pass rates is drawn as its agreement rate alone."""
    fig, axes = plt.subplots(1, max(1, len(rows)), figsize=(0.6 + 3.0 * max(1, len(rows)), 3.0), squeeze=False)
    if not rows:
        axes[0][0].text(0.5, 0.5, "no task with answers", ha="center", va="center")
        return fig
    for ax, r in zip(axes[0], rows):
        n = r["n"]
        if r.get("judge_pass_rate") is None or r.get("exact_rate") is None:
            ax.text(0.5, 0.5, f"agreement {r['agreement']:.2f}\n(n={n})", ha="center", va="center")
            ax.set_axis_off()
            continue
        passed, right, agree = round(r["judge_pass_rate"] * n), round(r["exact_rate"] * n), round(r["agreement"] * n)
        both = (passed + right - n + agree) // 2
        table = [[both, passed - both], [right - both, n - passed - right + both]]
        if min(min(row) for row in table) < 0:  # unparseable verdicts make the rates' denominators differ
            ax.text(0.5, 0.5, f"agreement {r['agreement']:.2f}\n(n={n})", ha="center", va="center")
            ax.set_axis_off()
            continue
        sns.heatmap(table, annot=True, fmt="d", cbar=False, cmap="Blues", ax=ax,
                    xticklabels=["exact: right", "exact: wrong"], yticklabels=["judge: pass", "judge: fail"])
        ax.set_title(f"{r['task']} (n={n})", fontsize=9)
    fig.tight_layout()
    return fig
