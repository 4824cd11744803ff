import nbformat
import pytest

from promptgrad.runner import ROOT, main, resolve_parameters


def _notebook(path, tagged=True, body=None):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell("PROFILE = 'cpu'\nRESULTS_DIR = 'x'\nSTEPS = 3")
    if tagged:
        cell.metadata["tags"] = ["parameters"]
    nb.cells.append(cell)
    if body:
        nb.cells.append(nbformat.v4.new_code_cell(body))
    nbformat.write(nb, path)
    return path


def test_a_run_replaces_the_earlier_results_of_its_notebook(tmp_path):
    notebooks, results = tmp_path / "notebooks", tmp_path / "results"
    notebooks.mkdir()
    _notebook(notebooks / "09_demo.ipynb", body="from pathlib import Path\n"
              "Path(RESULTS_DIR).mkdir(parents=True, exist_ok=True)\n"
              "Path(RESULTS_DIR, 'metrics.json').write_text(str(STEPS))")
    stale = results / "09_demo" / "records" / "gsm8k__old_method__test.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    args = ["--profile", "smoke", "--notebooks", str(notebooks), "--results", str(results)]
    assert main(args + ["-p", "STEPS", "5"]) == 0
    assert not stale.exists()
    assert (results / "09_demo" / "metrics.json").read_text() == "5"
    assert (results / "09_demo" / "09_demo.ipynb").is_file()
    assert main(args + ["-p", "RESULTS_DIR", str(mine)]) == 0  # a directory the user named is not emptied
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "metrics.json").read_text() == "3"


def test_unknown_parameter_is_an_error(tmp_path):
    nb = _notebook(tmp_path / "09_demo.ipynb")
    params = resolve_parameters(nb, "smoke", tmp_path, {"STEPS": 1}, tmp_path)
    assert params == {"PROFILE": "smoke", "RESULTS_DIR": str(tmp_path / "09_demo"), "STEPS": 1}
    with pytest.raises(ValueError, match=r"does not declare parameter\(s\) \['STPES'\]"):
        resolve_parameters(nb, "smoke", tmp_path, {"STPES": 1}, tmp_path)


def test_missing_parameters_cell_is_an_error(tmp_path):
    nb = _notebook(tmp_path / "09_demo.ipynb", tagged=False)
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        resolve_parameters(nb, "cpu", tmp_path, {}, tmp_path)


def test_unknown_profile_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="Unknown profile"):
        resolve_parameters(_notebook(tmp_path / "09_demo.ipynb"), "gpu", tmp_path, {}, tmp_path)


def test_every_notebook_and_profile_resolves(tmp_path):
    notebooks = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert notebooks
    for nb in notebooks:
        source = nbformat.read(nb, as_version=4)
        assert not any(c.get("outputs") for c in source.cells if c.cell_type == "code"), f"{nb.name} has outputs"
        for profile in ("smoke", "cpu", "paper"):
            resolve_parameters(nb, profile, tmp_path, {}, ROOT / "notebooks" / "profiles")
