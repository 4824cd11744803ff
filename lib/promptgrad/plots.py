"""Figures the notebooks share. Each returns the matplotlib Figure."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

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
        ax.xaxis.set_major_locator(LogLocator(base=10))
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
