"""GRAD-SUM: the five modules, the beam search, the ablation, judge parsing and checkpoints.

A scripted engine (a real ``Engine`` subclass) answers every role deterministically:
a prompt's quality is the number of '+' in it; on example ``Qi`` the task model answers
correctly iff ``i < quality``; the judge passes a response iff it holds the expected answer.
"""

from __future__ import annotations

import json
import re

import pytest

from promptgrad import gradsum
from promptgrad.engines import Engine
from promptgrad.tasks import Example, Task


def make_task(kind="number", n=12):
    examples = [Example(f"Q{i}: what is {i} + 1?", str(i + 1) if kind != "open" else "", id=f"toy-{i}")
                for i in range(n)]
    return Task(f"toy_{kind}", kind, "Add one to a number.", lambda: {"all": examples}), examples


class Scripted(Engine):
    """Recognises the role from the module templates and answers by script."""

    kind = "scripted"

    def __init__(self, editor=None, judge=None, fail_after=None):
        super().__init__("scripted")
        self.seen = {role: [] for role in ("generation", "judge", "gradient", "summary", "editor")}
        self.editor = editor or (lambda prompt, feedback, n: [f"<prompt>{prompt} +</prompt>"] * n)
        self.judge = judge
        self.fail_after = fail_after
        self.calls = 0

    @staticmethod
    def role(text):
        for marker, role in (("strict grader", "judge"), (gradsum.VERDICT_TURN, "judge"), ("A grader judged", "gradient"),
                             ("Here are critiques", "summary"), ("Write one improved version", "editor")):
            if marker in text:
                return role
        return "generation"

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        out = []
        for conv in conversations:
            self.calls += 1
            if self.fail_after is not None and self.calls > self.fail_after:
                raise RuntimeError("simulated crash")
            text = conv[-1]["content"]
            role = self.role(text)
            self.seen[role].append(text)
            out.append(self.answer(role, text, n))
        return out

    def _choose(self, conversations, options, *, desc):
        """A scripted reply that is one of the options; anything else stands for a server whose
        top log-probs hold none of them."""
        replies = [self._generate([conv], n=1, temperature=0, max_tokens=1, seed=0, soft_prompt=None, desc=desc)[0][0]
                   for conv in conversations]
        return [r if r in options else None for r in replies]

    def answer(self, role, text, n):
        if role == "generation":
            i = int(re.search(r"Q(\d+):", text).group(1))
            quality = text.count("+") - 1  # the question itself holds one '+'
            return [f"The answer is {i + 1}." if i < quality else "The answer is 0."] * n
        if role == "judge":
            if self.judge:
                return [self.judge(text)] * n
            expected = re.search(r"Expected answer: (\S+)", text).group(1)
            response = text.split("Response:\n", 1)[1].split("\n\nFirst explain")[0]
            return [f"Reasoning here.\nScore: {int(expected + '.' in response)}"] * n
        if role == "gradient":
            i = re.search(r"asked:\nQ(\d+):", text).group(1)
            return [f"critique of example {i}"] * n
        if role == "summary":
            return ["SUMMARY: be more careful."] * n
        prompt = re.search(r"Current prompt:\n<prompt>(.*?)</prompt>", text, re.DOTALL).group(1)
        feedback = text.split("Feedback on the current prompt:\n", 1)[1].split("\n\nWrite one improved")[0]
        return self.editor(prompt, feedback, n)


def run(engine, task, examples, **kwargs):
    params = dict(initial_prompt="{question}\nAnswer.", generator=engine, beam=3, children=2, iterations=1,
                  minibatch=4, seed=0)
    params.update(kwargs)
    return gradsum.optimize(task, examples[:4], examples[4:10], **params)


def test_candidate_that_lost_the_question_slot_is_rejected_and_counted():
    task, examples = make_task()
    engine = Scripted(editor=lambda p, f, n: ["<prompt>Answer carefully. +</prompt>",
                                              f"<prompt>{p} +</prompt>"][:n])
    result = run(engine, task, examples)
    assert result.counts["candidates_rejected_lost_slot"] == 1
    candidates = [c["prompt"] for c in result.history[1]["candidates"]]
    assert candidates == ["{question}\nAnswer. +"]
    assert all("{question}" in b["prompt"] for b in result.beam)


def test_summarization_receives_every_critique_of_a_prompt():
    task, examples = make_task()
    engine = Scripted()
    result = run(engine, task, examples, minibatch=4)
    assert len(engine.seen["summary"]) == 1  # one prompt in the beam, one summary
    summary_request = engine.seen["summary"][0]
    for i in range(4):  # the initial prompt fails every training example
        assert f"critique of example {i}" in summary_request
    assert len(engine.seen["gradient"]) == 4
    # the editor got the summary, not the raw critiques
    assert len(engine.seen["editor"]) == 1 and "SUMMARY: be more careful." in engine.seen["editor"][0]
    assert "critique of example" not in engine.seen["editor"][0]
    assert result.history[1]["feedback"][0]["failures"] == 4


def test_no_summarization_sends_each_raw_critique_to_the_editor():
    task, examples = make_task()
    def editor(prompt, feedback, n):
        extra = "+" * int(re.search(r"(\d+)", feedback).group(1))
        return [f"<prompt>{prompt} +{extra}</prompt>"] * n

    engine = Scripted(editor=editor)
    result = run(engine, task, examples, summarize=False, children=2)
    assert engine.seen["summary"] == []
    assert len(engine.seen["editor"]) == 4
    for i in range(4):
        assert sum(f"critique of example {i}" in request for request in engine.seen["editor"]) == 1
    # four distinct candidates were written; both arms score `children` of them
    assert len(result.history[1]["candidates"]) == 2


def test_beam_keeps_the_best_three_by_validation_score():
    task, examples = make_task()
    pluses = [1, 4, 2, 5, 3]
    engine = Scripted(editor=lambda p, f, n: [f"<prompt>{p} {'+' * k}</prompt>" for k in pluses][:n])
    result = run(engine, task, examples, children=5)
    # validation is Q4..Q9: a prompt with k '+' passes Q4..Q(k-1)
    scores = {c["prompt"].count("+"): c["score"] for c in result.history[1]["candidates"]}
    assert scores == {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0, 5: 1 / 6}
    engine2 = Scripted(editor=lambda p, f, n: [f"<prompt>{p} {'+' * (k + 5)}</prompt>" for k in pluses][:n])
    result = run(engine2, task, examples, children=5)
    beam = [b["prompt"].count("+") for b in result.beam]
    assert beam == [10, 9, 8]
    assert [b["score"] for b in result.beam] == sorted([b["score"] for b in result.beam], reverse=True)
    assert result.beam_scores()[1] == [b["score"] for b in result.beam]
    assert all(c["score"] <= result.beam[-1]["score"] for c in result.history[1]["candidates"]
               if c["prompt"] not in [b["prompt"] for b in result.beam])


def test_judge_verdict_parsing_and_malformed_outputs_are_counted():
    assert gradsum.parse_verdict("The answer is right.\nScore: 1") == 1
    assert gradsum.parse_verdict("score = 0.") == 0
    assert gradsum.parse_verdict("**Score:** 1") == 1
    assert gradsum.parse_verdict("Score: 1. Wait, Score: 0") == 0
    assert gradsum.parse_verdict("1") == 1
    assert gradsum.parse_verdict("Score: 10") is None
    assert gradsum.parse_verdict("I think it is good") is None
    assert gradsum.parse_verdict("") is None
    task, examples = make_task()
    outputs = iter(["Score: 1", "no idea", "", "Score: 0", "1", "maybe"])  # then the two constrained verdict turns
    engine = Scripted(judge=lambda text: next(outputs))
    tracker = gradsum.Tracker()
    verdicts = gradsum.judge_outputs(engine, task, examples[:4], ["a", "b", "c", "d"], tracker=tracker)
    assert [v.score for v in verdicts] == [1, 1, None, 0]
    assert verdicts[1].reasoning == "no idea\n[verdict turn, constrained to 0/1] 1"
    assert tracker.counts == {"judge_verdict_turn": 2, "judge_unparseable": 1}
    assert tracker.usage["judge"].model_calls == 6 and tracker.usage["generation"].model_calls == 0
    assert "Expected answer: 1" in engine.seen["judge"][0]


def test_malformed_editor_outputs_are_counted_not_fatal():
    task, examples = make_task()
    engine = Scripted(editor=lambda p, f, n: ["just some text", ""][:n])
    result = run(engine, task, examples, iterations=2)
    assert result.counts["editor_missing_markers"] == 2 and result.counts["editor_empty"] == 2
    assert result.best_prompt == "{question}\nAnswer."


def test_lenient_parse_takes_unmarked_text_and_puts_the_slot_back_but_still_rejects_a_partial_loss():
    task, examples = make_task()
    engine = Scripted(editor=lambda p, f, n: ["New prompt: Answer with care. ++++++++\nmore text",
                                              "<prompt>Use {context}. +</prompt>"][:n])
    result = run(engine, task, examples, parse="lenient")
    assert [c["prompt"] for c in result.history[1]["candidates"]] == ["{question}\nAnswer with care. ++++++++"]
    assert result.best_prompt == "{question}\nAnswer with care. ++++++++"  # quality 8: passes validation examples 4-7
    assert result.counts == {"editor_unmarked": 1, "candidates_slot_reattached": 1,
                             "candidates_rejected_lost_slot": 1}
    with pytest.raises(ValueError, match="parse mode"):
        run(engine, task, examples, parse="fuzzy")


def test_per_role_usage_with_one_shared_engine():
    task, examples = make_task()
    engine = Scripted()
    result = run(engine, task, examples)
    assert result.usage["judge"].model_calls == len(engine.seen["judge"])
    assert result.usage["editor"].model_calls == 2  # one request, two samples
    assert sum(u.model_calls for u in result.usage.values()) == engine.usage.model_calls


def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path):
    task, examples = make_task()
    editor = lambda p, f, n: [f"<prompt>{p} {'+' * (k + 1)}</prompt>" for k in range(n)]  # noqa: E731
    whole = run(Scripted(editor=editor), task, examples, iterations=3, checkpoint=tmp_path / "a.json")
    one = Scripted(editor=editor)
    run(one, task, examples, iterations=1)
    crashing = Scripted(editor=editor, fail_after=one.calls + 5)  # crashes inside iteration 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(crashing, task, examples, iterations=3, checkpoint=tmp_path / "b.json")
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["completed"] == 1
    fresh = Scripted(editor=editor)
    resumed = run(fresh, task, examples, iterations=3, checkpoint=tmp_path / "b.json")
    assert resumed.beam == whole.beam
    assert resumed.history == json.loads(json.dumps(whole.history))
    assert resumed.counts == whole.counts and resumed.agreement == whole.agreement
    assert not (tmp_path / "b.json.tmp").exists()
    # the resumed run did not redo the saved iterations: the initial prompt's validation was not rescored
    val_requests = [t for t in fresh.seen["generation"] if "Q9:" in t and t.endswith("Answer.")]
    assert val_requests == []


def test_corrupt_or_foreign_checkpoint_is_reported_not_used(tmp_path):
    task, examples = make_task()
    path = tmp_path / "c.json"
    path.write_text('{"fingerprint": "x", "beam": [')
    with pytest.raises(gradsum.CheckpointError, match="corrupt"):
        run(Scripted(), task, examples, checkpoint=path)
    path.write_text(json.dumps({"fingerprint": "x"}))
    with pytest.raises(gradsum.CheckpointError, match="missing"):
        run(Scripted(), task, examples, checkpoint=path)
    path.unlink()
    run(Scripted(), task, examples, checkpoint=path)
    with pytest.raises(gradsum.CheckpointError, match="another configuration"):
        run(Scripted(), task, examples, checkpoint=path, children=3)


def test_judge_only_mode_on_an_open_task():
    task, examples = make_task("open")
    assert not task.has_answers
    engine = Scripted(judge=lambda text: "Helpful.\nScore: 1" if "The answer is" in text.split("Response:")[1]
                      and "Expected answer" not in text else "Score: 0")
    result = run(engine, task, examples, iterations=2)
    assert all("Expected answer" not in t for t in engine.seen["judge"])
    assert all(gradsum.DEFAULT_CRITERIA[False] in t for t in engine.seen["judge"])
    assert result.agreement == {"agree": 0, "n": 0} and result.agreement_rate is None
    assert result.history[0]["beam_scores"] == [1.0]  # every response holds "The answer is"
    evaluation = gradsum.evaluate_with_judge(engine, engine, task, result.best_prompt, examples[10:])
    assert evaluation.summary["n"] == 2 and evaluation.summary["accuracy"] == 1.0


def test_the_test_split_scored_by_the_judge_as_the_paper_does_with_exact_match_beside_it():
    """A judge that passes every answer: the judge's accuracy is 1.0, exact match of the same answers
    (the prompt gets questions 0-1 right, the rest wrong) is told beside it."""
    from promptgrad.methods import score_on_test

    task, examples = make_task("number")
    engine = Scripted(judge=lambda text: "Fine.\nScore: 1")
    prompt = "{question} ++"  # answers questions 0 and 1 right
    scored = score_on_test(engine, task, {"p": prompt}, examples[:4], judge=engine, scored_by="judge")["p"]
    assert scored.summary["scored_by"] == "judge" and scored.summary["accuracy"] == 1.0
    assert scored.summary["exact_accuracy"] == 0.5 and [r["exact"] for r in scored.records] == [1, 1, 0, 0]
    exact = score_on_test(engine, task, {"p": prompt}, examples[:4])["p"]
    assert exact.summary["scored_by"] == "exact" and exact.summary["accuracy"] == 0.5
    with pytest.raises(ValueError, match="scored_by"):
        score_on_test(engine, task, {"p": prompt}, examples[:4], scored_by="gold")


def test_the_demand_before_a_run_is_what_a_run_of_failures_asks():
    """``GradSum.demand``: with every answer failing and every child new, a run with a beam of one
    asks exactly that of each role (answers, verdicts; critiques, summaries and edits); with a
    summary the editor writes ``children`` per prompt, without one an edit per critique."""
    from promptgrad.tasks import Splits

    task, examples = make_task("number")
    for summarize in (True, False):
        counter = iter(range(1000))
        engine = Scripted(judge=lambda text: "Wrong.\nScore: 0",
                          editor=lambda p, f, n: [f"<prompt>{{question}} v{next(counter)}</prompt>" for _ in range(n)])
        method = gradsum.GradSum(summarize=summarize, beam=1, children=2, iterations=2, minibatch=4, max_failures=3)
        demand = method.demand(task, Splits(train=examples[:4], dev=examples[4:10], test=[]))
        result = run(engine, task, examples, beam=1, children=2, iterations=2, minibatch=4, max_failures=3,
                     summarize=summarize, initial_prompt="{question}\nAnswer.")
        used = {role: u.model_calls for role, u in result.usage.items()}
        assert demand["loop"].calls == used["generation"]
        assert demand["judge"].calls == 2 * used["judge"]  # every verdict parsed: no second verdict turn
        assert demand["optimizer"].calls == used["gradient"] + used["summary"] + used["editor"]


def test_agreement_between_judge_and_exact_match():
    task, examples = make_task()
    result = run(Scripted(), task, examples, iterations=1)
    # the scripted judge agrees with the extractor on every example it judged
    assert result.agreement["n"] > 0 and result.agreement_rate == 1.0
    liar = Scripted(judge=lambda text: "Score: 1")
    result = run(liar, task, examples, iterations=1)
    assert result.agreement_rate < 1.0


def test_initial_prompt_must_hold_the_question_slot():
    task, examples = make_task()
    with pytest.raises(ValueError, match="question"):
        run(Scripted(), task, examples, initial_prompt="Let's think step by step.")


def test_small_run_on_the_embedded_model():
    import promptgrad as pg

    engine = pg.make_engine(pg.EMBEDDED_MODEL, system_prompt="You are a helpful assistant.")
    task = pg.get_task("gpo/bbh/navigate")
    splits = pg.make_splits(task, n_train=2, n_dev=1, n_test=0)
    result = gradsum.optimize(task, splits.train, splits.dev, initial_prompt="{question}\nAnswer Yes or No.",
                              generator=engine, beam=2, children=1, iterations=1, minibatch=2, max_tokens=8,
                              judge_max_tokens=16, gradient_max_tokens=16, summary_max_tokens=16,
                              editor_max_tokens=24)
    assert result.completed == 1 and len(result.beam) >= 1
    assert all("{question}" in b["prompt"] for b in result.beam)
    assert result.usage["generation"].model_calls >= 3 and result.usage["judge"].model_calls >= 3
    assert all(isinstance(v, int) for v in result.counts.values())


def test_iteration_tables_show_failures_critiques_summary_and_edits():
    task, examples = make_task()
    engine = Scripted(editor=lambda p, f, n: [f"<prompt>{p} +</prompt>"] * n)
    result = run(engine, task, examples, max_failures=2)
    [iteration] = gradsum.iteration_tables(result)
    [first] = iteration["prompts"]
    assert len(first["failed"]) == 2 and set(first["failed"]["judge"]) == {0}
    assert all(r.startswith("Reasoning here.") for r in first["failed"]["reasoning"])
    assert len(first["critiques"]) == 2 and all(c.startswith("critique of example") for c in first["critiques"])
    assert first["feedback"] == ["SUMMARY: be more careful."]
    assert first["edits"] and all("{question}" in e for e in first["edits"])
    assert list(iteration["candidates"]["kept in beam"]) == [True]  # both children alike: one, kept beside the start
    assert iteration["beam"][0][0] == result.beam[0]["prompt"]


def test_exact_judge_scores_without_a_model_and_the_llm_judge_is_measured_apart():
    from promptgrad import Engines
    from promptgrad.tasks import Splits

    task, examples = make_task()
    engine = Scripted(editor=lambda p, f, n: [f"<prompt>{p} ++++++</prompt>"] * n)
    method = gradsum.GradSum(initial_prompt="{question}\nAnswer.", beam=3, children=2, iterations=1, minibatch=4)
    found = method.optimize(task, Splits(examples[:4], examples[4:10], []), Engines(engine, loop_judge="exact"))
    result = found.run
    assert engine.seen["judge"] == [] and result.usage["judge"].model_calls == 0
    assert result.agreement == {"agree": 0, "n": 0}  # exact vs exact says nothing
    assert result.beam[0]["score"] > result.history[0]["beam_scores"][0]  # '+' candidates pass more
    assert result.config["engines"]["judge"] == "exact"
    assert found.prompt == result.best_prompt and found.trajectory[0]["prompt"] == "{question}\nAnswer."
    assert found.budget.model_calls == sum(u.model_calls for u in result.usage.values()) > 0
    verdicts = gradsum.judge_outputs("exact", task, examples[:2], ["The answer is 1.", "The answer is 7."])
    assert [v.score for v in verdicts] == [1, 0] and "expected '2'" in verdicts[1].reasoning

    always_pass = Scripted(judge=lambda text: "Score: 1")
    row = gradsum.measure_agreement(engine, always_pass, task, "{question}\nAnswer. +++", examples[:6])
    assert row["judge_pass_rate"] == 1.0 and row["exact_rate"] == 0.5 and row["agreement"] == 0.5
    assert row["n"] == 6 and row["judge_unparseable"] == 0

    open_task, _ = make_task("open")
    with pytest.raises(ValueError, match="needs a task with answers"):
        gradsum.judge_outputs("exact", open_task, examples[:1], ["x"])
    with pytest.raises(ValueError, match="loop_judge must be"):
        Engines(engine, loop_judge="oracle")
