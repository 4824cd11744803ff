"""The paper profile proven end to end before anyone rents a GPU: every notebook with the paper
profile's settings, on tiny Qwen2/Llama stand-ins and a llama.cpp server answering as the API
models (``promptgrad.dryrun``)."""

import json
from pathlib import Path

from promptgrad.dryrun import dry_parameters, scaled
from promptgrad.runner import ROOT, main, resolve_parameters

NOTEBOOKS = ROOT / "notebooks"
STEMS = sorted(p.stem for p in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _paper(stem: str, tmp_path: Path) -> dict:
    return resolve_parameters(NOTEBOOKS / f"{stem}.ipynb", "paper", tmp_path, {}, NOTEBOOKS / "profiles")


def test_stand_ins_replace_every_model_and_cut_every_size(data_dir, tmp_path):
    url = "http://127.0.0.1:1/v1"
    params, notes = dry_parameters(_paper("03_gradsum", tmp_path), tmp_path / "stand-ins", url, rows=2)
    assert all(params[m] == {"kind": "openai", "model": _paper("03_gradsum", tmp_path)[m]["model"], "base_url": url}
               for m in ("MODEL", "LOOP_MODEL", "JUDGE_MODEL", "OPTIMIZER_MODEL"))
    # one task per benchmark; the hub-only datasets are dropped, with a note each
    assert params["TASKS"] == ["gsm8k", "hellaswag", "hotpotqa", "mmlu/high_school_mathematics", "mt_bench",
                               "vicuna_bench"]
    assert sorted(n.split(":")[0] for n in notes) == ["neural_bridge_rag", "orca_math"]
    assert (params["N_TRAIN"], params["N_DEV"], params["MINIBATCH"], params["ITERATIONS"]) == (2, 2, 2, 2)
    assert params["N_TEST"] == {name: 2 for name in params["TASKS"]}  # None (the whole split) too
    assert params["MAX_TOKENS"] == {"gsm8k": 64, "mt_bench": 64, "vicuna_bench": 64}
    scale = dry_parameters(_paper("01_embedgrad", tmp_path), tmp_path / "stand-ins", url)[0]["SCALE_MODELS"]
    assert len(set(scale)) == 5 and all((Path(m) / "config.json").is_file() for m in scale)  # one model per id
    gpo = dry_parameters(_paper("02_gpo", tmp_path), tmp_path / "stand-ins", url)[0]
    assert gpo["TASKS"] == ["gpo/gsm8k", "gpo/wsc", "gpo/bbh/boolean_expressions", "gpo/mmlu/abstract_algebra"]
    assert gpo["MODEL"] == {**_paper("02_gpo", tmp_path)["MODEL"], "base_url": url}  # the server in vLLM's place
    second = dry_parameters(_paper("04_head_to_head", tmp_path), tmp_path / "stand-ins", url)[0]["SECOND_MODEL"]
    assert "llama" in json.loads((Path(second) / "config.json").read_text())["model_type"]
    assert (gpo["STEPS"], gpo["EPOCHS"], gpo["BATCH"]) == (None, 1, 64)  # each task's own steps: one epoch, 1-2 steps
    assert scaled("GEPA", {"max_metric_calls": {"sst2": 14500, "*": 3915}, "minibatch": 3}, 2) == \
        {"max_metric_calls": {"sst2": 40, "*": 40}, "minibatch": 2}


def test_the_paper_profile_runs_end_to_end_on_stand_ins(data_dir, tmp_path, capsys):
    assert main(["--profile", "paper", "--dry-run", "2", "--results", str(tmp_path)]) == 0
    assert "00_quickstart" in capsys.readouterr().out
    rows = {stem: json.loads((tmp_path / stem / "metrics.json").read_text())["rows"] for stem in STEMS}
    for stem in STEMS:
        assert (tmp_path / stem / f"{stem}.ipynb").is_file()
        dry = dry_parameters(_paper(stem, tmp_path), tmp_path / "stand-ins", "http://x")[0]
        assert {r["task"] for r in rows[stem]} == set(dry.get("TASKS") or dry["N_TEST"]), stem
    assert {r["scored_by"] for r in rows["03_gradsum"]} == {"judge"}  # the paper's test scores are its judge's
    assert all("exact_accuracy" in r for r in rows["03_gradsum"] if r["task"] not in ("mt_bench", "vicuna_bench"))
    methods = {r["method"] for r in rows["04_head_to_head"]}
    assert set(_paper("04_head_to_head", tmp_path)["METHODS"]) <= methods
    scale = (tmp_path / "01_embedgrad" / "scale.csv").read_text().splitlines()
    assert len(scale) == 1 + 5 * 2 * 2  # every model size and scale task, text prompt and EmbedGrad
    assert "POST /v1/chat/completions" in (tmp_path / "llama-server.log").read_text()  # the API models answered
