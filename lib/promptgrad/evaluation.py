"""The one evaluation protocol every method goes through.

``evaluate_prompt`` formats each example with the prompt, asks the engine (greedy),
extracts the answer and scores it. Unparseable answers are *format failures*: they
count as not correct in ``accuracy`` and are reported apart in
``format_failure_rate`` (and ``accuracy_parsed`` is the accuracy among parsed ones).
"""

from __future__ import annotations

import collections
import dataclasses
import math

from .engines import Engine
from .tasks import Example, Task

# Generation budget per answer kind (tokens); a parameter of evaluate_prompt.
DEFAULT_MAX_TOKENS = {"number": 256, "choice": 64, "text": 48, "brackets": 48, "open": 384,
                      "yesno": 48, "validity": 48, "truefalse": 48, "sentiment": 24}
PROTOCOLS = ("direct", "forced")
FORCED_MAX_TOKENS = 32  # the forced answer turn's budget (our CPU choice; GPO's code: 100)


def answer_budget(task: Task, max_tokens: int | None) -> int:
    """``max_tokens``, or the default budget of the task's answer kind (``DEFAULT_MAX_TOKENS``)."""
    return max_tokens or DEFAULT_MAX_TOKENS[task.kind]


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (well-behaved at 0, 1 and small n)."""
    if n == 0:
        return (0.0, 1.0)
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def paired_difference(correct_a: list[bool], correct_b: list[bool], z: float = 1.96) -> dict:
    """Accuracy of A minus accuracy of B on the same items, with a 95% CI (normal
    approximation on the per-item differences)."""
    if len(correct_a) != len(correct_b) or not correct_a:
        raise ValueError("paired_difference needs two equally long, non-empty lists of per-item results.")
    diffs = [float(a) - float(b) for a, b in zip(correct_a, correct_b)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1)) if n > 1 else 0.0
    half = z * sd / math.sqrt(n)
    return {"difference": mean, "ci95": [mean - half, mean + half], "n": n}


@dataclasses.dataclass
class Evaluation:
    records: list[dict]
    summary: dict

    @property
    def correct(self) -> list[bool]:
        return [r["correct"] for r in self.records]


CONSTANT_SHARE = 0.95  # a prompt whose parsed answers are more than this share one answer is "constant"


def summarize(records: list[dict]) -> dict:
    n = len(records)
    correct = sum(r["correct"] for r in records)
    failures = sum(r["parsed"] is None for r in records)
    parsed = n - failures
    return {"n": n, "correct": correct, "accuracy": correct / n if n else float("nan"),
            "ci95": list(wilson_interval(correct, n)), "format_failures": failures,
            "format_failure_rate": failures / n if n else float("nan"),
            "accuracy_parsed": correct / parsed if parsed else float("nan"),
            "truncation_rate": truncation_rate(records), **answer_profile(records)}


def truncation_rate(records: list[dict]) -> float | None:
    """The share of answers cut at their token budget (None where no engine could tell)."""
    known = [r["truncated"] for r in records if r.get("truncated") is not None]
    return sum(known) / len(known) if known else None


def answer_profile(records: list[dict], top: int = 10) -> dict:
    """What the answers were: counts of the ``top`` most frequent parsed answers (the rest summed
    under "(other)"; format failures are counted apart), the most frequent answer and its share of
    the parsed answers, whether that share makes the prompt ``constant`` (over 95%), and the
    accuracy of always giving this test set's most frequent gold answer (``majority_accuracy``)."""
    answers = collections.Counter(str(r["parsed"]) for r in records if r["parsed"] is not None)
    golds = collections.Counter(str(r["gold"]) for r in records if r.get("gold") not in (None, ""))
    parsed = sum(answers.values())
    counts = dict(answers.most_common(top))
    if len(answers) > top:
        counts["(other)"] = parsed - sum(counts.values())
    top_answer, top_count = answers.most_common(1)[0] if answers else (None, 0)
    return {"answers": counts, "top_answer": top_answer,
            "top_answer_share": top_count / parsed if parsed else float("nan"),
            "constant": bool(parsed) and top_count / parsed > CONSTANT_SHARE,
            "majority_answer": golds.most_common(1)[0][0] if golds else None,
            "majority_accuracy": golds.most_common(1)[0][1] / len(records) if golds else float("nan")}


def answers_label(row: dict) -> str:
    """A table cell on what a row's answers were: 'yes 32/32, constant' or 'positive 61%'."""
    if row.get("top_answer") is None:
        return "no parsed answer"
    share = row["top_answer_share"]
    parsed = round(row["n"] * (1 - row["format_failure_rate"]))
    text = f"{row['top_answer']} {round(share * parsed)}/{parsed}" if parsed <= 100 else \
        f"{row['top_answer']} {share:.0%}"
    return text + (", constant" if row.get("constant") else "")


def shorten(text, width: int) -> str:
    """``text`` on one line, cut to ``width`` characters with an ellipsis (tables and figures)."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"


def prompt_label(prompt) -> str:
    """The prompt as text for tables: the text itself, or a soft prompt's description."""
    return prompt if isinstance(prompt, str) else prompt.describe()


def build_conversations(task: Task, prompt, examples: list[Example], placement: str = "after") -> list[list[dict]]:
    """User turns for each example. A soft prompt provides its own slot text and placement."""
    if not isinstance(prompt, str):
        text, placement = prompt.slot_text(), prompt.placement
    else:
        text = prompt
    return [[{"role": "user", "content": task.format(ex, text, placement)}] for ex in examples]


def follow_up(conversation: list[dict], answer: str, question: str) -> list[dict]:
    """The conversation continued: the model's answer, then one more user turn."""
    return conversation + [{"role": "assistant", "content": answer}, {"role": "user", "content": question}]


def evaluate_prompt(engine: Engine, task: Task, prompt, examples: list[Example], *, placement: str = "after",
                    protocol: str = "direct", max_tokens: int | None = None, forced_max_tokens: int = FORCED_MAX_TOKENS,
                    desc: str | None = None) -> Evaluation:
    """Score a prompt (text, or a soft prompt from ``promptgrad.embedgrad``) on examples.

    protocol ``direct``: one turn, extraction on the answer. ``forced`` (GPO's): the answer
    turn (``max_tokens``), then a second turn with the task's answer-format sentence
    (``forced_max_tokens``; GPO's code gives 256 and 100); extraction on that.
    """
    return score_prompts(engine, task, {"prompt": prompt}, examples, placement=placement, protocol=protocol,
                         max_tokens=max_tokens, forced_max_tokens=forced_max_tokens, desc=desc)["prompt"]


def score_prompts(engine: Engine, task: Task, prompts: dict[str, object], examples: list[Example], *,
                  placement: str = "after", protocol: str = "direct", max_tokens: int | None = None,
                  forced_max_tokens: int = FORCED_MAX_TOKENS, desc: str | None = None) -> dict[str, Evaluation]:
    """``evaluate_prompt`` for several prompts on the same examples. The text prompts go to the
    engine in one call, so a fast engine reads each question once for all of them; each soft
    prompt is a call of its own."""
    if not task.has_answers:
        raise ValueError(f"Task '{task.name}' has no reference answers; score it with a judge "
                         f"(promptgrad.gradsum.judge_outputs).")
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol '{protocol}'; expected one of {PROTOCOLS}.")
    max_tokens = answer_budget(task, max_tokens)
    texts = [name for name, prompt in prompts.items() if isinstance(prompt, str)]
    calls = ([texts] if texts else []) + [[name] for name in prompts if name not in texts]
    evaluations = {}
    for names in calls:
        soft = None if names == texts else prompts[names[0]]
        conversations = [c for name in names for c in build_conversations(task, prompts[name], examples, placement)]
        first = [o[0] for o in engine.chat(conversations, max_tokens=max_tokens, soft_prompt=soft, desc=desc)]
        final = first
        if protocol == "forced":
            follow_ups = [follow_up(c, out, task.answer_format) for c, out in zip(conversations, first)]
            final = [o[0] for o in engine.chat(follow_ups, max_tokens=forced_max_tokens, soft_prompt=soft, desc=desc)]
        for k, name in enumerate(names):
            part = slice(k * len(examples), (k + 1) * len(examples))
            evaluations[name] = _scored(task, examples, conversations[part], first[part], final[part], protocol,
                                        engine.cut_at_budget(first[part], max_tokens))
    return {name: evaluations[name] for name in prompts}


def _scored(task: Task, examples, conversations, first, final, protocol: str, cut: list[bool | None]) -> Evaluation:
    records = []
    for ex, conv, out, fin, was_cut in zip(examples, conversations, first, final, cut):
        parsed = task.extract(fin, ex)
        record = {"id": ex.id, "input": conv[0]["content"], "output": out, "parsed": parsed, "gold": ex.target,
                  "correct": parsed is not None and parsed == ex.target, "truncated": was_cut}
        if protocol == "forced":
            record["forced_output"] = fin
        records.append(record)
    return Evaluation(records, {**summarize(records), "scored_by": "exact"})


def sample_records(evaluations: dict[str, Evaluation], k: int = 2, seed: int = 0, width: int = 160):
    """A few answers per method, the same items for each, as a table to read."""
    import random

    import pandas as pd

    first = next(iter(evaluations.values()))
    picks = random.Random(seed).sample(range(len(first.records)), min(k, len(first.records)))
    rows = [{"method": m, "id": ev.records[i]["id"], "output": ev.records[i]["output"][:width],
             "parsed": ev.records[i]["parsed"], "gold": ev.records[i]["gold"]}
            for i in picks for m, ev in evaluations.items()]
    return pd.DataFrame(rows)


def describe_rows(rows: list[dict]) -> str:
    """One line per row: the measured numbers, then the ranking per task (``rank_rows``),
    for the notebook's closing text."""
    lines = []
    for r in rows:
        lo, hi = r["ci95"]
        cut = r.get("truncation_rate")
        lines.append(f"- {r['task']} · {r['method']}: accuracy {r['accuracy']:.1%} (95% CI {lo:.1%}-{hi:.1%}, "
                     f"n={r['n']}), format failures {r['format_failure_rate']:.1%}"
                     + (f", answers cut at their token budget {cut:.1%}" if cut is not None else ""))
    return "\n".join(lines) + "\n\n" + rank_rows(rows)


def rank_rows(rows: list[dict]) -> str:
    """Per task, the methods ranked by accuracy; a method whose 95% CI overlaps the best
    one's is named a tie with it, not a loser."""
    lines = []
    for task in dict.fromkeys(r["task"] for r in rows):
        ranked = sorted((r for r in rows if r["task"] == task), key=lambda r: -r["accuracy"])
        best = ranked[0]
        ties = [r["method"] for r in ranked[1:] if r["ci95"][1] >= best["ci95"][0]]
        behind = [r["method"] for r in ranked[1:] if r["ci95"][1] < best["ci95"][0]]
        line = f"- **{task}**: best {best['method']} ({best['accuracy']:.1%})"
        if ties:
            line += f"; tied with it (overlapping 95% CIs): {', '.join(ties)}"
        if behind:
            line += f"; clearly behind: {', '.join(behind)}"
        lines.append(line + ".")
    return "\n".join(lines)


ANSWERING = 0.1  # a prompt whose format failure rate is at most this "answers" (prompt_sensitivity)


def prompt_sensitivity(engine: Engine, examples: dict[str, list[Example]], prompts: dict[str, str], *,
                       placement: str = "after", max_tokens: dict | None = None) -> list[dict]:
    """Does the model's answer depend on the prompt? For each task (``{task name: examples}``),
    every prompt scored on the same examples (one call per task), then: each prompt's accuracy
    and whether it is a constant classifier, the share of questions whose parsed answer changes
    with the prompt, and the best prompt minus the worst with the paired 95% interval of that
    difference. A task is *prompt-sensitive* where that interval excludes zero: there, a prompt
    optimizer has something to find. A difference made by format failures alone (a prompt that
    keeps the model from answering within the budget) is told apart: the same test among the
    prompts whose format failure rate is at most ``ANSWERING`` (None: fewer than two of them)."""
    from .tasks import get_task, per_task

    rows = []
    for name, items in examples.items():
        task = get_task(name)
        scored = score_prompts(engine, task, prompts, items, placement=placement,
                               max_tokens=per_task(max_tokens or {}, task, default=None), desc=f"{name} probe")
        accuracy = {p: ev.summary["accuracy"] for p, ev in scored.items()}
        best, worst = max(accuracy, key=accuracy.get), min(accuracy, key=accuracy.get)
        gap = paired_difference(scored[best].correct, scored[worst].correct)
        answers = list(zip(*[[r["parsed"] for r in ev.records] for ev in scored.values()]))
        failing = max(scored, key=lambda p: scored[p].summary["format_failure_rate"])
        answering = [p for p, ev in scored.items() if ev.summary["format_failure_rate"] <= ANSWERING]
        content = None  # the same test among the prompts that answer: is it the answers, not the format?
        if len(answering) > 1:
            hi, lo = max(answering, key=accuracy.get), min(answering, key=accuracy.get)
            content = paired_difference(scored[hi].correct, scored[lo].correct)["ci95"][0] > 0
        rows.append({"task": name, "n": len(items), **{p: round(a, 3) for p, a in accuracy.items()},
                     "constant prompts": sum(bool(ev.summary["constant"]) for ev in scored.values()),
                     "most format failures": f"{failing} {scored[failing].summary['format_failure_rate']:.0%}",
                     "answers change": round(sum(len(set(a)) > 1 for a in answers) / len(answers), 3),
                     "best": best, "worst": worst, "best - worst": round(gap["difference"], 3),
                     "ci95": f"[{gap['ci95'][0]:+.3f}, {gap['ci95'][1]:+.3f}]",
                     "prompt-sensitive": gap["ci95"][0] > 0, "sensitive among answering prompts": content})
    return rows
