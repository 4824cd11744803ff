import json
import math

import pytest

from promptgrad import Results, evaluate_prompt, get_task, paired_difference, wilson_interval
from promptgrad.evaluation import Evaluation, summarize
from promptgrad.tasks import Example

from fakes import ScriptedEngine


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(8, 10)  # reference values from statsmodels proportion_confint(method="wilson")
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(20, 20)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    narrow, wide = wilson_interval(436, 872), wilson_interval(50, 100)
    assert (narrow[1] - narrow[0]) < (wide[1] - wide[0])


def test_paired_difference():
    a = [True] * 60 + [False] * 40
    b = [True] * 40 + [False] * 60
    diff = paired_difference(a, b)
    assert diff["difference"] == pytest.approx(0.2)
    assert diff["ci95"][0] > 0  # A is right on every item B is right on, and 20 more
    same = paired_difference(a, a)
    assert same["difference"] == 0 and same["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError):
        paired_difference([True], [True, False])


def test_format_failures_are_reported_apart():
    records = [{"parsed": "yes", "correct": True}, {"parsed": "no", "correct": False},
               {"parsed": None, "correct": False}, {"parsed": None, "correct": False}]
    s = summarize(records)
    assert s["accuracy"] == 0.25 and s["format_failure_rate"] == 0.5 and s["accuracy_parsed"] == 0.5
    assert s["ci95"][0] <= s["accuracy"] <= s["ci95"][1]


EXAMPLES = [Example("Is 4 even?", "yes", id="a"), Example("Is 3 even?", "no", id="b"),
            Example("Is 7 even?", "no", id="c")]


def test_evaluate_prompt_direct_and_forced():
    task = get_task("bbh/navigate")
    answers = {"Is 4 even?\nThink.": "Yes.", "Is 3 even?\nThink.": "Yes!", "Is 7 even?\nThink.": "Hmm."}
    engine = ScriptedEngine(lambda c, i: answers.get(c[-1]["content"], "No"))
    ev = evaluate_prompt(engine, task, "Think.", EXAMPLES)
    assert [r["parsed"] for r in ev.records] == ["yes", "yes", None]
    assert [r["correct"] for r in ev.records] == [True, False, False]
    assert ev.summary["format_failures"] == 1
    forced = evaluate_prompt(engine, task, "Think.", EXAMPLES, protocol="forced")
    assert engine.sent[-1][-1]["content"] == task.answer_format
    assert [r["parsed"] for r in forced.records] == ["no", "no", "no"]  # the second turn is extracted
    assert forced.records[2]["output"] == "Hmm." and forced.records[2]["forced_output"] == "No"


def test_prompt_sensitivity_names_the_tasks_whose_answers_follow_the_prompt():
    from promptgrad.evaluation import prompt_sensitivity

    even = [Example(f"Is {k} even?", "yes" if k % 2 == 0 else "no", id=str(k)) for k in range(20)]

    def reply(conversation, _):  # "Answer." makes it right; without an instruction it says "yes" to all
        text = conversation[-1]["content"]
        if text.endswith("Answer."):
            return "yes" if int(text.split()[1]) % 2 == 0 else "no"
        return "yes"

    rows = prompt_sensitivity(ScriptedEngine(reply), {"bbh/navigate": even, "bbh/snarks": even[:10]},
                              {"none": "", "answer": "Answer."})
    navigate, snarks = rows
    assert navigate["none"] == 0.5 and navigate["answer"] == 1.0 and navigate["constant prompts"] == 1
    assert navigate["best"] == "answer" and navigate["best - worst"] == 0.5 and navigate["answers change"] == 0.5
    assert navigate["prompt-sensitive"] is True and navigate["sensitive among answering prompts"] is True
    assert navigate["most format failures"] == "none 0%"
    assert snarks["n"] == 10
    same = prompt_sensitivity(ScriptedEngine(lambda c, i: "yes"), {"bbh/navigate": even}, {"a": "", "b": "X."})
    assert same[0]["prompt-sensitive"] is False and same[0]["answers change"] == 0
    mute = prompt_sensitivity(ScriptedEngine(lambda c, i: "yes" if c[-1]["content"].endswith("?") else "hmm"),
                              {"bbh/navigate": even}, {"none": "", "think": "Think."})[0]
    assert mute["prompt-sensitive"] is True and mute["sensitive among answering prompts"] is None  # format alone
    assert mute["most format failures"] == "think 100%"


def test_evaluate_prompt_rejects_open_tasks_and_bad_protocols():
    engine = ScriptedEngine(lambda c, i: "x")
    with pytest.raises(ValueError, match="judge"):
        evaluate_prompt(engine, get_task("mt_bench"), "", EXAMPLES)
    with pytest.raises(ValueError, match="protocol"):
        evaluate_prompt(engine, get_task("bbh/navigate"), "", EXAMPLES, protocol="three-turn")


def test_results_follow_the_schema(tmp_path):
    engine = ScriptedEngine(lambda c, i: "Yes")
    ev = evaluate_prompt(engine, get_task("bbh/navigate"), "", EXAMPLES)
    results = Results(tmp_path / "00_demo", "smoke", "scripted", 0)
    results.add("bbh/navigate", "text", ev, "")
    results.add("bbh/navigate", "text", ev, "")  # re-adding replaces, never duplicates
    results.save_table(results.table(), "table")
    metrics = json.loads(results.write(engine.usage).read_text())
    assert metrics["notebook"] == "00_demo" and metrics["profile"] == "smoke"
    assert set(metrics["cost"]) >= {"model_calls", "prompt_tokens", "completion_tokens", "wall_seconds"}
    (row,) = metrics["rows"]
    assert {"task", "method", "prompt", "split", "n", "accuracy", "ci95", "format_failure_rate"} <= set(row)
    assert row["n"] == 3 and math.isclose(row["accuracy"], 1 / 3)
    assert (tmp_path / "00_demo" / "table.md").read_text().startswith("| task")
    assert len((tmp_path / "00_demo" / "records" / "bbh_navigate__text__test.jsonl").read_text().splitlines()) == 3


def test_answers_cut_at_their_token_budget_are_counted(local_engine, data_dir):
    """The embedded model asked to explain, with 6 tokens to do it in: every answer is cut there;
    asked nothing, with 256 tokens, its answers end on their own. An engine that cannot
    count tokens (a served model) reports no rate rather than a wrong one."""
    task = get_task("sst2")
    examples = [Example("Review: a gorgeous, witty, seductive movie.", "positive", id="0"),
                Example("Review: the plot is nothing but boilerplate clichés.", "negative", id="1")]
    prompt = "Explain your reasoning in detail, then answer."
    short = evaluate_prompt(local_engine, task, prompt, examples, max_tokens=6)
    assert [r["truncated"] for r in short.records] == [True, True] and short.summary["truncation_rate"] == 1.0
    brief = evaluate_prompt(local_engine, task, "", examples, max_tokens=256)  # no instruction: a shorter answer
    lengths = local_engine.count_tokens([r["output"] for r in brief.records])
    assert max(lengths) < 255 and [r["truncated"] for r in brief.records] == [False, False]
    served = evaluate_prompt(ScriptedEngine(lambda c, i: "positive"), task, prompt, examples, max_tokens=6)
    assert [r["truncated"] for r in served.records] == [None, None] and served.summary["truncation_rate"] is None


def test_the_forced_protocol_gives_each_turn_its_own_budget(data_dir):
    """GPO's code gives the answer turn 256 tokens and the turn forcing the format 100."""
    budgets = []

    class Recording(ScriptedEngine):
        def _generate(self, conversations, *, max_tokens, **kwargs):
            budgets.append(max_tokens)
            return super()._generate(conversations, max_tokens=max_tokens, **kwargs)

    task = get_task("bbh/navigate")
    examples = [Example("Take 1 step. Turn around. Take 1 step.\nOptions:\n- Yes\n- No", "yes", id="0")]
    evaluation = evaluate_prompt(Recording(lambda c, i: "Yes"), task, "Think.", examples, protocol="forced",
                                 max_tokens=256, forced_max_tokens=100)
    assert budgets == [256, 100] and evaluation.records[0]["correct"]


def test_seed_table_summarizes_each_method_across_its_seeds():
    from promptgrad.results import seed_table

    rows = [{"task": "sst2", "method": "EmbedGrad", "seed": s, "n": 10, "accuracy": a, "ci95": [0, 1],
             "minus_baseline": d, "minus_baseline_ci95": ci}
            for s, a, d, ci in ((0, 0.7, 0.2, [0.05, 0.35]), (1, 0.5, 0.0, [-0.1, 0.1]), (2, 0.6, 0.1, [0.01, 0.2]))]
    table = seed_table(rows + [{**rows[0], "method": "PEFT prompt tuning", "minus_baseline_ci95": [-0.2, -0.01]}])
    embedgrad, peft = table.to_dict("records")
    assert embedgrad["seeds"] == [0, 1, 2] and embedgrad["accuracy_per_seed"] == [0.7, 0.5, 0.6]
    assert embedgrad["mean"] == 0.6 and embedgrad["sd"] == 0.1
    assert embedgrad["mean_minus_baseline"] == 0.1 and embedgrad["seeds_gain_ci_excludes_zero"] == "2/3"
    assert peft["seeds_gain_ci_excludes_zero"] == "1/1"  # an interval below zero excludes it too


def test_paired_tables_print_the_interval_their_text_gives():
    """The Markdown of a paired table prints ci95_low/ci95_high with 3 decimals: the same digits as
    the interval written as text (a value rounded twice could differ in its last digit)."""
    import random

    from promptgrad.results import paired_table

    rng = random.Random(0)
    evaluations = {}
    for n in range(20, 140):
        for method in ("a", "b"):
            records = [{"parsed": "x", "correct": rng.random() < 0.5} for _ in range(n)]
            evaluations[f"t{n}", method] = Evaluation(records, summarize(records))
    frame = paired_table(evaluations, [("a", "b")], [f"t{n}" for n in range(20, 140)])
    lines = frame.to_markdown(index=False, floatfmt="+.3f").splitlines()[2:]  # as the notebooks print it
    printed = [[cell.strip() for cell in line.strip("|").split("|")][-2:] for line in lines]
    assert [f"[{lo}, {hi}]" for lo, hi in printed] == list(frame["ci95"])
