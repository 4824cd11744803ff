"""Notebook 04's reuse rule: a row from another notebook is taken only when it matches; and
the text methods it accepts."""

import json

import nbformat
import pytest

from promptgrad.compare import Source, check_text_methods, executed_parameters
from promptgrad.evaluation import Evaluation, summarize
from promptgrad.results import Results


def _source(tmp_path, forced=False):
    directory = tmp_path / "01_embedgrad"
    results = Results(directory, "cpu", "m", 0)
    records = [{"id": f"t-{i}", "parsed": "a", "gold": "a", "correct": i % 2 == 0, **({"forced_output": "a"} if forced
                                                                                    else {})} for i in range(6)]
    results.add("sst2", "EmbedGrad", Evaluation(records, summarize(records)), "p", lr=0.01, steps=4)
    results.write({})
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('MODEL = "m"\nSTEPS = {"sst2": 4}\nPROFILE = "cpu"'),
                nbformat.v4.new_code_cell('PROFILE = "smoke"')]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.cells[1].metadata["tags"] = ["injected-parameters"]
    nbformat.write(nb, directory / "01_embedgrad.ipynb")
    return Source(directory)


def test_executed_parameters_apply_the_injected_cell_last(tmp_path):
    _source(tmp_path)
    params = executed_parameters(tmp_path / "01_embedgrad" / "01_embedgrad.ipynb")
    assert params == {"MODEL": "m", "STEPS": {"sst2": 4}, "PROFILE": "smoke"}


def test_matching_row_is_rescored_on_exactly_the_examples_asked_for(tmp_path):
    evaluation, row = _source(tmp_path).reuse("sst2", "EmbedGrad", ["t-0", "t-2", "t-1"], {"MODEL": "m", "STEPS": 4})
    assert [r["id"] for r in evaluation.records] == ["t-0", "t-2", "t-1"]
    assert evaluation.summary["correct"] == 2 and evaluation.summary["n"] == 3
    assert row["lr"] == 0.01


def test_any_difference_refuses_the_row_and_says_why(tmp_path):
    source = _source(tmp_path)
    assert source.reuse("sst2", "EmbedGrad", ["t-0"], {"STEPS": 8}) == (None, "differs: STEPS=4 (here 8)")
    assert source.reuse("sst2", "EmbedGrad", ["t-0", "t-9"], {})[1].startswith("1 of the 2 test examples")
    assert source.reuse("sst2", "EmbedGrad", ["t-0"], {}, protocol="forced")[1] == "protocol is not 'forced'"
    assert source.reuse("sst2", "GPO", ["t-0"], {})[1] == "no 'GPO' row for sst2"
    assert json.loads((tmp_path / "01_embedgrad" / "metrics.json").read_text())["rows"][0]["n"] == 6


def test_without_the_executed_notebook_nothing_is_reused(tmp_path):
    source = _source(tmp_path)
    (source.dir / "01_embedgrad.ipynb").unlink()
    assert Source(source.dir).reuse("sst2", "EmbedGrad", ["t-0"], {}) == \
        (None, "no executed notebook to read its parameters from")


def test_text_methods_are_checked_before_anything_runs():
    check_text_methods(["GPO", "GRAD-SUM"], hybrid=True)
    with pytest.raises(ValueError, match="Unknown text method"):
        check_text_methods(["GPO", "APE"])
    with pytest.raises(ValueError, match="add \"GPO\" to TEXT_METHODS"):
        check_text_methods(["GRAD-SUM"], hybrid=True)
