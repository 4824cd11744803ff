"""GEPA under the method contract, with scripted engines: a task model that is right exactly when
the prompt mentions zebras, and a reflection model that proposes such a prompt in ``` blocks (as
GEPA's default proposer reads it). One short run uses a served llama.cpp model as reflection model."""

import re

import pytest

from promptgrad.dryrun import LlamaServer
from promptgrad.engines import OpenAIEngine
from promptgrad.gepa_search import GEPA, PromptAdapter, frontier_table, reflective_record
from promptgrad.methods import Engines
from promptgrad.models import EMBEDDED_MODEL
from promptgrad.tasks import Example, Splits, get_task

from fakes import ScriptedEngine

TASK = get_task("bbh/navigate")  # yes/no answers
WORD = "zebra"
BETTER = f"Think like a {WORD}: answer yes or no."


def example(i: int, split: str) -> Example:
    gold = "yes" if i % 2 else "no"
    return Example(f"item {i} gold {gold}: do you return to the start?", gold, id=f"{split}{i}")


SPLITS = Splits(train=[example(i, "t") for i in range(6)], dev=[example(i, "d") for i in range(4)],
                test=[example(i, "x") for i in range(2)])


def task_answer(conversation, i):
    """Right when the prompt mentions the word; otherwise the wrong answer, or no answer at all."""
    text = conversation[-1]["content"]
    item, gold = re.search(r"item (\d+) gold (\w+)", text).groups()
    if WORD in text:
        return gold.capitalize() + "."
    return "Hmm." if int(item) % 3 == 0 else ("No." if gold == "yes" else "Yes.")


class Reflector(ScriptedEngine):
    """The reflection model: proposes ``BETTER`` in a fenced block; records each call's seed."""

    def __init__(self, **kwargs):
        super().__init__(lambda conversation, i: f"Here is a better instruction:\n```\n{BETTER}\n```", **kwargs)
        self.seeds = []

    def _generate(self, conversations, *, seed, **kwargs):
        self.seeds.append(seed)
        return super()._generate(conversations, seed=seed, **kwargs)


def engines():
    return Engines(task=ScriptedEngine(task_answer, model="scripted-task"), optimizer=Reflector(model="reflector"))


def overshoot(method: GEPA, n_dev: int) -> int:
    """How far past ``max_metric_calls`` GEPA may go: it checks the budget before an iteration,
    which spends the parent's and the child's minibatch and, if the child is accepted, the dev set."""
    return 2 * method.minibatch + n_dev - 1


def test_gepa_finds_the_prompt_and_counts_both_engines(capsys):
    e = engines()
    found = GEPA(max_metric_calls=30).optimize(TASK, SPLITS, e)
    assert found.method == "GEPA" and found.task == TASK.name
    assert found.prompt == BETTER and found.details["dev_accuracy"] == 1.0
    assert found.trajectory[0] == {"step": 0, "prompt": "Let's think step by step.", "score": 0.0, "parent": None}
    assert found.trajectory[1] == {"step": 1, "prompt": BETTER, "score": 1.0, "parent": 0}
    assert found.details["candidates"] == len(found.trajectory) == 2
    reflections = len(e.optimizer.sent)
    assert reflections >= 1 and found.budget.model_calls == found.details["metric_calls"] + reflections
    assert found.budget.model_calls == e.task.usage.model_calls + e.optimizer.usage.model_calls
    assert len(set(e.optimizer.seeds)) == len(e.optimizer.seeds)  # a new seed per reflection
    shown = e.optimizer.sent[0][-1]["content"]  # what GEPA's reflection prompt showed
    assert "Let's think step by step." in shown and "do you return to the start?" in shown
    assert "Incorrect: the expected answer is" in shown
    assert "Iteration" not in capsys.readouterr().out  # GEPA's log goes to logging, not stdout


def test_metric_call_budget_is_respected():
    for budget in (4, 12, 25):
        method = GEPA(max_metric_calls=budget)
        found = method.optimize(TASK, SPLITS, engines())
        assert found.details["metric_calls"] <= max(budget, len(SPLITS.dev)) + overshoot(method, len(SPLITS.dev))
    assert found.details["metric_calls"] >= 25


def test_per_task_settings_are_resolved():
    method = GEPA(max_metric_calls={TASK.name: 10, "*": 1000}, dev={"yesno": 2}, train={"*": 3})
    resolved = method.for_task(TASK)
    assert (resolved.max_metric_calls, resolved.dev, resolved.train) == (10, 2, 3)
    found = method.optimize(TASK, SPLITS, engines())
    assert found.run.num_val_instances == 2
    assert found.details["metric_calls"] <= 10 + overshoot(method, 2)


def test_frontier_table_has_one_row_per_candidate():
    found = GEPA(max_metric_calls=30).optimize(TASK, SPLITS, engines())
    rows = frontier_table(found)
    assert len(rows) == found.details["candidates"]
    assert [r["index"] for r in rows] == list(range(len(rows)))
    assert rows[0]["parents"] == [] and rows[0]["prompt"] == "Let's think step by step."
    best = max(rows, key=lambda r: r["val_score"])
    assert best["prompt"] == found.prompt and best["best_on"] == len(SPLITS.dev)


def test_resumes_from_its_run_directory(tmp_path):
    method = GEPA(max_metric_calls=20)
    first = method.optimize(TASK, SPLITS, engines(), checkpoint_dir=tmp_path)
    run_dir = method.checkpoint(tmp_path, TASK, SPLITS, engines(), suffix="")
    assert (run_dir / "gepa_state.bin").exists()
    e = engines()
    again = method.optimize(TASK, SPLITS, e, checkpoint_dir=tmp_path)
    assert not e.optimizer.sent  # nothing left to do: no reflection
    assert again.prompt == first.prompt and again.trajectory == first.trajectory
    # the first run's spending is counted, plus the seed's dev evaluation GEPA repeats before loading its state
    assert again.budget.model_calls == first.budget.model_calls + len(SPLITS.dev)


def test_reflective_records_and_settings():
    records = [{"question": "q1", "output": "Yes.", "parsed": "yes", "gold": "yes", "correct": True},
               {"question": "q2", "output": "Hmm.", "parsed": None, "gold": "no", "correct": False},
               {"question": "q3", "output": "Yes.", "parsed": "yes", "gold": "no", "correct": False,
                "forced_output": "Yes"}]
    got = [reflective_record(r) for r in records]
    assert got[0] == {"Inputs": "q1", "Generated Outputs": "Yes.", "Feedback": "Correct."}
    assert "expected answer is no" in got[1]["Feedback"] and "None: no answer could be read" in got[1]["Feedback"]
    assert "was yes." in got[2]["Feedback"] and "Yes" in got[2]["Generated Outputs"].splitlines()[-1]
    batch = PromptAdapter(TASK, engines()).evaluate(SPLITS.dev, {"instruction": BETTER}, capture_traces=False)
    assert batch.scores == [1.0] * len(SPLITS.dev) and batch.trajectories is None
    with pytest.raises(ValueError, match="candidate_selection"):
        GEPA(candidate_selection="best")


def test_the_forced_turn_gets_its_own_budget_and_the_plan_counts_it():
    budgets = []

    class Budgeted(ScriptedEngine):
        def _generate(self, conversations, *, max_tokens, **kwargs):
            budgets.append(max_tokens)
            return super()._generate(conversations, max_tokens=max_tokens, **kwargs)

    adapter = PromptAdapter(TASK, Engines(task=Budgeted(lambda c, i: "Yes.")), protocol="forced", max_tokens=40,
                            forced_max_tokens=100)
    adapter.evaluate(SPLITS.dev, {"instruction": BETTER})
    assert budgets == [40, 100]
    method = GEPA(protocol="forced", forced_max_tokens=100, max_tokens=40, max_metric_calls=12, dev=4)
    loop = method.demand(TASK, SPLITS)["loop"]
    rollouts = 12 + 2 * method.minibatch + 4
    assert loop.calls == 2 * rollouts and loop.completion_tokens == rollouts * (40 + 100)


# ---------------------------------------------------------------- a served reflection model


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    with LlamaServer(tmp_path_factory.mktemp("llama_server") / "server.log") as server:
        yield OpenAIEngine(EMBEDDED_MODEL, base_url=server.url)


def test_gepa_with_a_served_reflection_model(served):
    """A tiny budget: the seed on 2 dev examples, then one iteration (parent and child on a
    minibatch of 3), with the reflection written by the served model."""
    task_model = ScriptedEngine(task_answer, model="scripted-task")
    splits = Splits(train=SPLITS.train[:3], dev=SPLITS.dev[:2], test=[])
    found = GEPA(max_metric_calls=8, reflection_max_tokens=32).optimize(
        TASK, splits, Engines(task=task_model, optimizer=served))
    assert served.usage.model_calls >= 1
    assert found.budget.model_calls == task_model.usage.model_calls + served.usage.model_calls
    assert found.details["metric_calls"] >= 8 and found.details["candidates"] >= 1
    best = max(s["score"] for s in found.trajectory)  # the prompt found: a candidate with the best dev score
    assert found.details["dev_accuracy"] == best
    assert found.prompt in [s["prompt"] for s in found.trajectory if s["score"] == best]
