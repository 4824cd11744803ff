import json

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


def _demo(tmp_path, body="Path(RESULTS_DIR, 'metrics.json').write_text(str(STEPS))"):
    notebooks, results = tmp_path / "notebooks", tmp_path / "results"
    notebooks.mkdir(exist_ok=True)
    _notebook(notebooks / "09_demo.ipynb", body="from pathlib import Path\n"
              "Path(RESULTS_DIR).mkdir(parents=True, exist_ok=True)\n" + body)
    return notebooks, results, ["--profile", "smoke", "--notebooks", str(notebooks), "--results", str(results)]


def _tree(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_run_replaces_the_earlier_results_of_its_notebook(tmp_path):
    notebooks, results, args = _demo(tmp_path)
    stale = results / "09_demo" / "records" / "gsm8k__old_method__test.jsonl"
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    assert main(args + ["-p", "STEPS", "5"]) == 0
    assert not stale.exists()
    assert (results / "09_demo" / "metrics.json").read_text() == "5"
    assert (results / "09_demo" / "09_demo.ipynb").is_file()
    assert not (results / ".running" / "09_demo").exists()
    assert main(args + ["-p", "RESULTS_DIR", str(mine)]) == 0  # a directory the user named is not emptied
    assert (mine / "notes.txt").read_text() == "keep" and (mine / "metrics.json").read_text() == "3"


def test_a_failing_run_leaves_the_results_byte_identical(tmp_path, capsys):
    notebooks, results, args = _demo(tmp_path, body="Path(RESULTS_DIR, 'metrics.json').write_text('half')\n"
                                     "raise ValueError('Unknown task sst3')")
    _notebook(notebooks / "10_after.ipynb", body="from pathlib import Path\n"
              "Path(RESULTS_DIR).mkdir(parents=True, exist_ok=True)\nPath(RESULTS_DIR, 'done').write_text('1')")
    committed = results / "09_demo"
    (committed / "records").mkdir(parents=True)
    (committed / "metrics.json").write_text('{"rows": []}')
    (committed / "records" / "sst2__x__test.jsonl").write_bytes(b"{}\n")
    before = _tree(committed)
    assert main(args) == 1
    assert _tree(committed) == before
    assert (results / ".failed" / "09_demo" / "metrics.json").read_text() == "half"  # kept to look at
    assert (results / "10_after" / "done").is_file()  # the next notebook ran all the same
    out = capsys.readouterr().out
    assert "09_demo" in out and "ValueError: Unknown task sst3" in out and "1 of 2 notebooks failed" in out


def test_only_the_cpu_profile_writes_to_results_by_default():
    from promptgrad.runner import default_results

    assert default_results("cpu") == ROOT / "results"
    assert default_results("smoke") == ROOT / "runs" / "smoke"
    assert default_results("paper") == ROOT / "runs" / "paper"


@pytest.mark.parametrize("profile", ["smoke", "cpu", "paper"])
def test_every_profile_passes_its_check(profile, data_dir, capsys):
    assert main(["--profile", profile, "--check"]) == 0, capsys.readouterr().out


def test_the_check_reports_every_problem_at_once(data_dir, capsys):
    code = main(["--profile", "smoke", "--check", "--only", "01", "-p", "TASKS", '["sst3", "bbh/navigate"]',
                 "-p", "N_TEST", '{"bbh/navigate": 5000}', "-p", "N_TRAIN", "4", "-p", "N_DEV", "2",
                 "-p", "MODEL", '{"kind": "vllm"}', "-p", "STEPS", '{"sst2": 1}'])
    out = capsys.readouterr().out
    assert code == 1
    assert "did you mean 'sst2'" in out
    assert "n_test=5000 is larger than what 'bbh/navigate' has left" in out
    assert "unknown engine kind 'vllm'" in out
    assert "STEPS has no entry for task 'bbh/navigate'" in out


def test_a_scale_task_outside_tasks_is_a_problem_only_when_scale_models_are_listed(data_dir, capsys):
    args = ["--profile", "cpu", "--check", "--only", "01"]
    assert main(args) == 0  # the cpu profile lists no scale models, and GSM8K is not in its TASKS
    capsys.readouterr()
    assert main([*args, "-p", "SCALE_MODELS", '["smollm2-135m-instruct"]']) == 1
    assert "SCALE_TASKS names ['gsm8k'], which are not in TASKS" in capsys.readouterr().out


# a task no profile names: each notebook needs only TASKS (and the settings that name a task themselves)
UNNAMED = {"00": [], "01": ["-p", "SCALE_TASKS", '["bbh/snarks"]'], "02": [], "03": [], "04": ["-p", "HYBRID_TASKS", "[]"]}


@pytest.mark.parametrize("stem", sorted(UNNAMED))
def test_any_registered_task_is_one_parameter_away(stem, data_dir, capsys):
    """Every per-task setting falls back to the task's answer kind or "*"."""
    code = main(["--profile", "smoke", "--check", "--only", stem, "-p", "TASKS", '["bbh/snarks"]', *UNNAMED[stem]])
    assert code == 0, capsys.readouterr().out


def test_the_embedgrad_notebook_runs_on_a_task_no_profile_names(data_dir, tmp_path):
    assert main(["--profile", "smoke", "--only", "01", "--results", str(tmp_path), "-p", "TASKS", '["bbh/snarks"]',
                 *UNNAMED["01"]]) == 0
    metrics = json.loads((tmp_path / "01_embedgrad" / "metrics.json").read_text())
    assert {r["task"] for r in metrics["rows"]} == {"bbh/snarks"}
    assert {r["method"] for r in metrics["rows"]} == {"text prompt", "EmbedGrad", "PEFT prompt tuning"}


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


def test_executed_copies_keep_no_progress_bars_or_warnings(tmp_path):
    notebooks, results, args = _demo(tmp_path, body="import sys, warnings\n"
                                     "sys.stderr.write('generate:  50%|#####     | 1/2 [00:01<00:01]\\r')\n"
                                     "warnings.warn('a library warning')\nprint('the table')")
    assert main(args) == 0
    executed = nbformat.read(results / "09_demo" / "09_demo.ipynb", as_version=4)
    outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
    assert [o.get("text") for o in outputs] == ["the table\n"]


def test_the_check_states_the_weights_memory_of_a_local_model(data_dir, capsys):
    assert main(["--profile", "cpu", "--check", "--only", "00"]) == 0
    assert "0.13B parameters: 0.3 GiB of weights in bf16 (cuda), 0.5 GiB in fp32 (cpu)" in capsys.readouterr().out
