import json

import pytest

from promptgrad import tasks
from promptgrad.tasks import DataNotFoundError, format_prompt, get_task, make_splits

EXPECTED_SIZES = {  # pool sizes of the offline copies (shared/data/README.md)
    "gsm8k": {"train": 7473, "test": 1319},
    "sst2": {"train": 67349, "test": 872},
    "bbh/causal_judgement": {"all": 187},
    "mmlu/anatomy": {"train": 5, "test": 135},
    "hellaswag": {"all": 1000},
    "hotpotqa": {"all": 100},
    "mt_bench": {"all": 80},
    "vicuna_bench": {"all": 80},
    "gpo/bbh/causal_judgement": {"train": 35, "dev": 35, "test": 107, "format": 5},
    "gpo/gsm8k": {"train": 100, "dev": 100, "test": 300, "format": 5},
}


@pytest.mark.parametrize("name", sorted(EXPECTED_SIZES))
def test_loaders_on_shared_data(data_dir, name):
    pools = get_task(name).pools()
    sizes = {k: len(v) for k, v in pools.items()}
    expected = EXPECTED_SIZES[name]
    if name == "sst2":  # README counts data lines; the file has a header and a few quoted rows
        assert sizes["test"] == expected["test"] and sizes["train"] > 60000
    else:
        assert sizes == expected
    task = get_task(name)
    for pool in pools.values():
        example = pool[0]
        assert example.input and example.id
        assert bool(example.target) == task.has_answers


def test_registry_covers_all_bbh_and_mmlu():
    assert sum(n.startswith("bbh/") for n in tasks.TASKS) == 27
    assert sum(n.startswith("mmlu/") for n in tasks.TASKS) == 57
    assert sum(n.startswith("gpo/bbh/") for n in tasks.TASKS) == 27


def test_targets_are_canonical(data_dir):
    assert get_task("gsm8k").pools()["test"][0].target == "18"
    assert {e.target for e in get_task("bbh/causal_judgement").pools()["all"]} == {"yes", "no"}
    assert {e.target for e in get_task("sst2").pools()["test"]} == {"positive", "negative"}
    assert get_task("gpo/mmlu/anatomy").pools()["train"][0].target in "ABCD"
    assert "(A)" in get_task("mmlu/anatomy").pools()["test"][0].input


def test_unknown_task_suggests_a_name():
    with pytest.raises(KeyError, match="did you mean 'bbh/causal_judgement'"):
        get_task("bbh/causal_judgment")


def test_loaders_on_small_files(tmp_path, monkeypatch):
    (tmp_path / "gsm8k").mkdir()
    for split in ("train", "test"):
        rows = [{"question": f"{split} q{i}?", "answer": f"step\n#### {i},000"} for i in range(5)]
        (tmp_path / "gsm8k" / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "bbh").mkdir()
    (tmp_path / "bbh" / "navigate.json").write_text(json.dumps(
        {"examples": [{"input": f"walk {i}", "target": "Yes" if i % 2 else "No"} for i in range(10)]}))
    monkeypatch.setenv("PROMPTGRAD_DATA_DIR", str(tmp_path))
    tasks._cached_pools.cache_clear()
    try:
        gsm = get_task("gsm8k").pools()
        assert [e.target for e in gsm["test"]] == ["0", "1000", "2000", "3000", "4000"]
        splits = make_splits("bbh/navigate", 3, 2, 4, seed=1)
        assert splits.sizes() == {"train": 3, "dev": 2, "test": 4}
        assert {e.target for e in splits.train + splits.dev + splits.test} <= {"yes", "no"}
    finally:
        tasks._cached_pools.cache_clear()


def test_missing_data_names_dataset_and_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTGRAD_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(tasks, "_hub_rows", lambda *a, **k: (_ for _ in ()).throw(ConnectionError("offline")))
    tasks._cached_pools.cache_clear()
    try:
        with pytest.raises(DataNotFoundError, match=r"'gsm8k'.*PROMPTGRAD_DATA_DIR.*hub"):
            get_task("gsm8k").pools()
        with pytest.raises(DataNotFoundError, match=r"gpo/bbh/navigate.*PROMPTGRAD_DATA_DIR"):
            get_task("gpo/bbh/navigate").pools()
        with pytest.raises(DataNotFoundError, match="orca_math"):
            get_task("orca_math").pools()
    finally:
        tasks._cached_pools.cache_clear()


def test_splits_are_deterministic_and_disjoint(data_dir):
    for name in ("bbh/causal_judgement", "sst2", "gsm8k"):
        a = make_splits(name, 20, 10, 30, seed=0)
        b = make_splits(name, 20, 10, 30, seed=0)
        assert a == b
        ids = [set(e.id for e in part) for part in (a.train, a.dev, a.test)]
        assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
        assert make_splits(name, 20, 10, 30, seed=1).test != a.test


def test_test_split_does_not_depend_on_train_size(data_dir):
    small = make_splits("bbh/causal_judgement", 10, 5, 50, seed=0)
    large = make_splits("bbh/causal_judgement", 60, 30, 50, seed=0)
    assert small.test == large.test


def test_full_test_pool_and_gpo_splits(data_dir):
    assert len(make_splits("sst2", 100, 50, None).test) == 872
    gpo = make_splits("gpo/bbh/causal_judgement", 5, 5, None)
    assert gpo.sizes() == {"train": 5, "dev": 5, "test": 107}


def test_a_short_train_pool_borrows_from_the_far_end_of_the_test_pool(data_dir):
    # MMLU keeps 5 rows per subject apart; GRAD-SUM's 30 train + 20 validation come from the test pool
    splits = make_splits("mmlu/anatomy", 30, 20, None, seed=0)
    assert splits.sizes() == {"train": 30, "dev": 20, "test": 135 + 5 - 50, "borrowed_from_test": 45}
    ids = [e.id for e in splits.train + splits.dev]
    assert len(set(ids)) == 50 and not set(ids) & {e.id for e in splits.test}
    fixed = make_splits("mmlu/anatomy", 30, 20, 40, seed=0)
    assert fixed.test == make_splits("mmlu/anatomy", 2, 1, 40, seed=0).test  # test rows as without borrowing
    with pytest.raises(ValueError, match="after 45 rows lent to train/dev"):
        make_splits("mmlu/anatomy", 30, 20, 100, seed=0)


def test_none_sizes_take_all_that_is_left(data_dir):
    assert make_splits("gpo/bbh/navigate", None, None, None).sizes() == {"train": 48, "dev": 48, "test": 144}
    gsm8k = make_splits("gsm8k", None, 200, 10)
    assert gsm8k.sizes() == {"train": 7273, "dev": 200, "test": 10}
    assert make_splits("bbh/causal_judgement", None, 20, 100).sizes() == {"train": 67, "dev": 20, "test": 100}


def test_sizes_resolved_from_the_others_never_go_below_zero(data_dir):
    with pytest.raises(ValueError, match="ask for more than its 187 examples"):
        make_splits("bbh/causal_judgement", None, 100, 100)  # test rows would leak into dev
    with pytest.raises(ValueError, match="ask for more than"):
        make_splits("mmlu/anatomy", None, 20, 10)


def test_per_task_settings_fall_back_by_answer_kind_then_star():
    from promptgrad.tasks import for_tasks, per_task, task_splits

    steps = {"sst2": 20, "yesno": 8, "*": 4}
    assert per_task(steps, "sst2") == 20
    assert per_task(steps, "bbh/navigate") == 8  # a yes/no task
    assert per_task(steps, "gsm8k") == 4
    assert per_task(7, "gsm8k") == 7
    assert for_tasks({"gsm8k": 192}, ["gsm8k", "sst2"], "MAX_TOKENS", default=None) == {"gsm8k": 192, "sst2": None}
    with pytest.raises(KeyError, match="STEPS has no entry for task 'gsm8k'.*answer kind 'number'"):
        per_task({"sst2": 20}, "gsm8k", "STEPS")
    with pytest.raises(KeyError, match="did you mean 'sst2'"):
        task_splits(["sst3"], 1, 1, 1)


@pytest.mark.parametrize("sizes,message", [
    ((-1, 0, 5), "n_train for 'bbh/causal_judgement' must be a non-negative integer"),
    ((0, 0, 200), "n_test=200 is larger than"),
    ((170, 10, 30), "n_train=170 is larger than"),
    ((150, 10, 30), "n_dev=10 is larger than .* at most 7"),
    ((1, 1, 2.5), "n_test for .* must be"),
])
def test_bad_split_sizes(data_dir, sizes, message):
    with pytest.raises(ValueError, match=message):
        make_splits("bbh/causal_judgement", *sizes)


def test_prompt_placement_and_templates():
    assert format_prompt("Think.", "Q?") == "Q?\nThink."
    assert format_prompt("Think.", "Q?", "before") == "Think.\nQ?"
    assert format_prompt("", "Q?") == "Q?"
    assert format_prompt("Solve: {question} Answer:", "Q?") == "Solve: Q? Answer:"
    with pytest.raises(ValueError, match="placement"):
        format_prompt("x", "Q?", "middle")
