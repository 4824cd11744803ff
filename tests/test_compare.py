"""Notebook 04's reuse rule: a row from another notebook is taken only when it matches, decided
from that notebook's metrics.json alone."""

import json

import pytest

from promptgrad import methods
from promptgrad.compare import Source, find_reusable
from promptgrad.evaluation import Evaluation, summarize
from promptgrad.results import Results, notebook_parameters
from promptgrad.methods import examples_fingerprint
from promptgrad.tasks import Example, Splits

TRAINED = {"steps": 4, "lr": [0.01]}  # a method's settings, as a notebook asks for them
SETTINGS = {**TRAINED, "examples": examples_fingerprint(Splits([], [], []))}  # as the row keeps them
HERE = {"MODEL": "m", "MAX_TOKENS": {"gsm8k": 8}}


def _source(tmp_path, forced=False, parameters=None):
    directory = tmp_path / "01_embedgrad"
    params = notebook_parameters({"MODEL": "m", "MAX_TOKENS": {"gsm8k": 8}, "STEPS": {"sst2": 4}, "lower": 1,
                                  "OBJECT": object()}) if parameters is None else parameters
    results = Results(directory, "cpu", "m", 0, params)
    records = [{"id": f"t-{i}", "parsed": "a", "gold": "a", "correct": i % 2 == 0, **({"forced_output": "a"} if forced
                                                                                    else {})} for i in range(6)]
    evaluation = Evaluation(records, summarize(records))
    results.add("sst2", "EmbedGrad", evaluation, "soft prompt", lr=0.01, steps=4, settings=SETTINGS)
    results.add("sst2", "text prompt", evaluation, "please reason step by step")
    results.write({})
    return Source(directory)


def test_parameters_are_the_upper_case_literals_and_metrics_json_keeps_them(tmp_path):
    source = _source(tmp_path)
    assert source.params == {"MODEL": "m", "MAX_TOKENS": {"gsm8k": 8}, "STEPS": {"sst2": 4}}
    assert json.loads((source.dir / "metrics.json").read_text())["parameters"] == source.params


def test_matching_row_is_rescored_on_exactly_the_examples_asked_for(tmp_path):
    evaluation, row = _source(tmp_path).reuse("sst2", "EmbedGrad", None, SETTINGS, ["t-0", "t-2", "t-1"], HERE)
    assert [r["id"] for r in evaluation.records] == ["t-0", "t-2", "t-1"]
    assert evaluation.summary["correct"] == 2 and evaluation.summary["n"] == 3
    assert row["lr"] == 0.01


def test_a_text_baseline_is_found_by_its_prompt_whatever_its_method_name(tmp_path):
    evaluation, row = _source(tmp_path).reuse("sst2", "please reason", "please reason step by step", None, ["t-0"],
                                              HERE)
    assert row["method"] == "text prompt" and evaluation.summary["n"] == 1


def test_any_difference_refuses_the_row_and_says_why(tmp_path):
    source = _source(tmp_path)
    assert source.reuse("sst2", "EmbedGrad", None, {"steps": 8, "lr": [0.01]}, ["t-0"], HERE) == \
        (None, "trained with other settings")
    assert source.reuse("sst2", "EmbedGrad", None, SETTINGS, ["t-0"], {"MODEL": "other"}) == \
        (None, "differs: MODEL='m' (here 'other')")
    assert source.reuse("gsm8k", "text prompt", "please reason step by step", None, ["t-0"],
                        {"MAX_TOKENS": {"gsm8k": 16}})[1] == "no row for 'text prompt' on gsm8k"
    assert source.reuse("sst2", "EmbedGrad", None, SETTINGS, ["t-0"], {"MAX_TOKENS": {"sst2": 8}}) == \
        (None, "differs: MAX_TOKENS=None (here 8)")
    assert source.reuse("gsm8k", "EmbedGrad", None, SETTINGS, ["t-0"], HERE)[1] == "no row for 'EmbedGrad' on gsm8k"
    assert source.reuse("sst2", "EmbedGrad", None, SETTINGS, ["t-0", "t-9"], HERE)[1].startswith("1 of the 2 test")
    assert source.reuse("sst2", "EmbedGrad", None, SETTINGS, ["t-0"], HERE, protocol="forced")[1] == \
        "protocol is not 'forced'"
    assert source.reuse("sst2", "x", "another prompt", None, ["t-0"], HERE)[1] == "no row for 'x' on sst2"


def test_a_source_without_parameters_is_never_reused(tmp_path):
    source = _source(tmp_path, parameters={})
    metrics = json.loads((source.dir / "metrics.json").read_text())
    del metrics["parameters"]
    (source.dir / "metrics.json").write_text(json.dumps(metrics))
    assert Source(source.dir).reuse("sst2", "EmbedGrad", None, SETTINGS, ["t-0"], HERE) == \
        (None, "its metrics.json records no parameters (written by older code)")


def test_find_reusable_says_where_each_row_comes_from(tmp_path):
    source = _source(tmp_path)
    test = [Example("q", "a", id=f"t-{i}") for i in range(3)]
    splits = {"sst2": Splits(train=[], dev=[], test=test)}
    wanted = {("sst2", "EmbedGrad"): (None, TRAINED), ("sst2", "PEFT prompt tuning"): (None, TRAINED)}
    found, decisions = find_reusable([source], splits, wanted, HERE)
    assert list(found) == [("sst2", "EmbedGrad")]
    assert [d["from"] for d in decisions] == ["01_embedgrad", "run here"]
    assert "no row for 'PEFT prompt tuning'" in decisions[1]["why not reused"]
    other_train = {"sst2": Splits(train=[Example("q", "a", id="x")], dev=[], test=test)}  # learned from other rows
    found, decisions = find_reusable([source], other_train, {("sst2", "EmbedGrad"): (None, TRAINED)}, HERE)
    assert not found and "trained with other settings" in decisions[0]["why not reused"]


def test_methods_are_chosen_by_name_with_a_suggestion():
    from promptgrad import GPO, GradSum

    chosen = methods.choose([GPO(), GPO(strategy="OPRO"), GradSum()], ["GRAD-SUM", "GPO"])
    assert list(chosen) == ["GRAD-SUM", "GPO"] and isinstance(chosen["GPO"], GPO)
    with pytest.raises(ValueError, match="did you mean 'OPRO'"):
        methods.choose([GPO(), GPO(strategy="OPRO")], ["OPR0"])


def test_the_seed_study_reuses_the_main_run_for_its_own_seed():
    import dataclasses

    from promptgrad.engines import Usage
    from promptgrad.methods import Engines, Found, Method, across_seeds
    from promptgrad.tasks import get_task
    from fakes import ScriptedEngine

    trained = []

    @dataclasses.dataclass
    class Counted(Method):
        name = "counted"
        seed: int = 0

        def optimize(self, task, splits, engines, checkpoint_dir=None):
            trained.append(self.seed)
            return Found(self.name, task.name, f"prompt {self.seed}", Usage(), [])

    task = get_task("bbh/navigate")
    splits = Splits([], [], [Example("Do you return?", "yes", id="x0")])
    engines = Engines(task=ScriptedEngine(lambda c, i: "Yes."))
    main = Counted(seed=0)
    baseline = methods.score_on_test(engines.task, task, {"b": "x"}, splits.test)["b"]
    rows = across_seeds([main], task, splits, engines, [0, 1, 2], baseline,
                        done={"counted": main.optimize(task, splits, engines)})
    assert trained == [0, 1, 2] and [r["seed"] for r in rows] == [0, 1, 2]  # seed 0 trained once, by the main run


def test_only_baselines_and_embedding_methods_are_looked_for_elsewhere():
    from promptgrad import GPO, EmbedGrad
    from promptgrad.compare import wanted
    from promptgrad.tasks import get_task

    tasks = {"sst2": get_task("sst2")}
    asked = wanted(tasks, {"step by step": "Let's think step by step."},
                   {"EmbedGrad": EmbedGrad(steps={"sst2": 3, "*": 8}), "GPO": GPO()})
    assert list(asked) == [("sst2", "step by step"), ("sst2", "EmbedGrad")]  # a text optimizer always runs here
    assert asked["sst2", "step by step"] == ("Let's think step by step.", None)
    prompt, settings = asked["sst2", "EmbedGrad"]
    assert prompt is None and settings == EmbedGrad(steps=3).settings()  # resolved for the task


def test_only_the_parameters_that_decide_every_answer_are_compared(tmp_path):
    source = _source(tmp_path)
    test = [Example("q", "a", id="t-0")]
    splits = {"sst2": Splits(train=[], dev=[], test=test)}
    asked = {("sst2", "EmbedGrad"): (None, TRAINED)}
    notebook = {**HERE, "TASKS": ["sst2", "gsm8k"], "STEPS": {"sst2": 20}, "RESULTS_DIR": "elsewhere"}
    found, _ = find_reusable([source], splits, asked, notebook)  # its other parameters may differ
    assert list(found) == [("sst2", "EmbedGrad")]
    found, decisions = find_reusable([source], splits, asked, {**HERE, "SYSTEM_PROMPT": "Be brief."})
    assert not found and "SYSTEM_PROMPT=None (here 'Be brief.')" in decisions[0]["why not reused"]
    other = _source(tmp_path / "other", parameters={**HERE, "PLACEMENT": "before"})
    found, decisions = find_reusable([other], splits, asked, HERE)  # one missing here is None, not a match
    assert not found and "PLACEMENT='before' (here None)" in decisions[0]["why not reused"]
