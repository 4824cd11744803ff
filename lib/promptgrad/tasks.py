"""Tasks: loader + prompt format + answer extraction + metric, and seeded splits.

Files are read from ``$PROMPTGRAD_DATA_DIR`` (the offline copies described in
``shared/data/README.md``); without it, from the Hugging Face hub through
``datasets``. When neither works the error names the dataset and the variable.

A text prompt is either an *instruction* placed after (default) or before the
question, or a *template* holding the slot ``{question}``.
"""

from __future__ import annotations

import csv
import dataclasses
import difflib
import functools
import json
import os
import random
from pathlib import Path
from typing import Callable

from .extraction import LABELS, canonical_target, extract_answer, extract_number, parse_options

BBH_TASKS = (
    "boolean_expressions", "causal_judgement", "date_understanding", "disambiguation_qa", "dyck_languages",
    "formal_fallacies", "geometric_shapes", "hyperbaton", "logical_deduction_five_objects",
    "logical_deduction_seven_objects", "logical_deduction_three_objects", "movie_recommendation",
    "multistep_arithmetic_two", "navigate", "object_counting", "penguins_in_a_table",
    "reasoning_about_colored_objects", "ruin_names", "salient_translation_error_detection", "snarks",
    "sports_understanding", "temporal_sequences", "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects", "tracking_shuffled_objects_three_objects", "web_of_lies",
    "word_sorting",
)
_BBH_KIND = {"boolean_expressions": "truefalse", "causal_judgement": "yesno", "navigate": "yesno",
             "web_of_lies": "yesno", "sports_understanding": "yesno", "formal_fallacies": "validity",
             "multistep_arithmetic_two": "number", "object_counting": "number",
             "dyck_languages": "brackets", "word_sorting": "text"}
MMLU_SUBJECTS = (
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine", "college_physics",
    "computer_security", "conceptual_physics", "econometrics", "electrical_engineering",
    "elementary_mathematics", "formal_logic", "global_facts", "high_school_biology", "high_school_chemistry",
    "high_school_computer_science", "high_school_european_history", "high_school_geography",
    "high_school_government_and_politics", "high_school_macroeconomics", "high_school_mathematics",
    "high_school_microeconomics", "high_school_physics", "high_school_psychology", "high_school_statistics",
    "high_school_us_history", "high_school_world_history", "human_aging", "human_sexuality",
    "international_law", "jurisprudence", "logical_fallacies", "machine_learning", "management", "marketing",
    "medical_genetics", "miscellaneous", "moral_disputes", "moral_scenarios", "nutrition", "philosophy",
    "prehistory", "professional_accounting", "professional_law", "professional_medicine",
    "professional_psychology", "public_relations", "security_studies", "sociology", "us_foreign_policy",
    "virology", "world_religions",
)

# The sentence that forces the answer format (GPO's second turn), per answer kind.
ANSWER_FORMATS = {
    "number": "Therefore, give the final answer with just one number.",
    "choice": "Therefore, give the final answer as one option letter in parentheses, like (A).",
    "yesno": "Therefore, answer with just Yes or No.",
    "validity": "Therefore, answer with just valid or invalid.",
    "truefalse": "Therefore, answer with just True or False.",
    "sentiment": "Therefore, answer with just positive or negative.",
    "text": "Therefore, give just the final answer, nothing else.",
    "brackets": "Therefore, give just the closing brackets, nothing else.",
    "open": "",
}


@dataclasses.dataclass(frozen=True)
class Example:
    input: str          # the question as the model sees it (options included)
    target: str         # gold answer in canonical form ('' when the task has none)
    reference: str = ""  # a longer reference: GSM8K rationale, MT-Bench reference answer
    id: str = ""


@dataclasses.dataclass(frozen=True)
class Task:
    name: str
    kind: str            # answer kind, see extraction.KINDS
    description: str     # one line on the task, for judges and optimizers
    loader: Callable[[], dict[str, list[Example]]] = dataclasses.field(repr=False, compare=False)

    @property
    def has_answers(self) -> bool:
        return self.kind != "open"

    @property
    def answer_format(self) -> str:
        return ANSWER_FORMATS[self.kind]

    @property
    def labels(self) -> tuple[str, ...] | None:
        return LABELS.get(self.kind)

    def pools(self) -> dict[str, list[Example]]:
        """The source pools: 'train' and 'test', or fixed 'train'/'dev'/'test' (GPO's splits)."""
        return _cached_pools(self.name)

    def extract(self, text: str, example: Example) -> str | None:
        """The answer ``text`` gives to ``example`` in canonical form, None for a format failure
        (an option's text counts as its letter, as in GPO's and OPRO's scorers)."""
        options = parse_options(example.input) if self.kind == "choice" else None
        return extract_answer(text, self.kind, options)

    def chance(self, question: str) -> float | None:
        """The accuracy of a uniform guess on one question: 1 / labels, or 1 / the options it
        lists; None for numbers and free text."""
        if self.labels:
            return 1 / len(self.labels)
        options = parse_options(question) if self.kind == "choice" else {}
        return 1 / len(options) if options else None

    def format(self, example: Example, prompt: str = "", placement: str = "after") -> str:
        """The user message: the prompt around the question."""
        return format_prompt(prompt, example.input, placement)


def format_prompt(prompt: str, question: str, placement: str = "after") -> str:
    if "{question}" in prompt:
        return prompt.replace("{question}", question)
    if not prompt:
        return question
    if placement == "after":
        return f"{question}\n{prompt}"
    if placement == "before":
        return f"{prompt}\n{question}"
    raise ValueError(f"Unknown placement '{placement}'; expected 'after' or 'before'.")


class DataNotFoundError(FileNotFoundError):
    pass


# ---------------------------------------------------------------- loading


def data_dir() -> Path | None:
    value = os.environ.get("PROMPTGRAD_DATA_DIR")
    return Path(value).expanduser() if value else None


def _local(relpath: str) -> Path | None:
    root = data_dir()
    if root is not None and (root / relpath).exists():
        return root / relpath
    return None


def _from_hub(name: str, relpath: str, hub: Callable[[], dict[str, list[Example]]] | None):
    """Local files missing: try the hub, else say what is missing and how to provide it."""
    hint = (f"Dataset '{name}' not found: set PROMPTGRAD_DATA_DIR to a folder holding '{relpath}' "
            f"(for example ../shared/data)")
    root = data_dir()
    if root is not None:
        hint += f"; PROMPTGRAD_DATA_DIR is '{root}' and has no '{relpath}'"
    if hub is None:
        raise DataNotFoundError(hint + ". This dataset has no Hugging Face hub source.")
    try:
        return hub()
    except Exception as err:  # offline, gated, renamed...
        raise DataNotFoundError(f"{hint}, or reach the Hugging Face hub (it failed: {type(err).__name__}: "
                                f"{str(err)[:200]}).") from err


def _read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _hub_rows(path: str, config: str | None, split: str) -> list[dict]:
    import datasets

    return list(datasets.load_dataset(path, config, split=split))


def _options(choices: list[str]) -> str:
    return "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(choices))


def _gsm8k_example(row: dict, i: int) -> Example:
    return Example(row["question"], canonical_target(row["answer"].split("####")[-1], "number"),
                   reference=row["answer"], id=f"gsm8k-{i}")


def _load_gsm8k():
    local = _local("gsm8k")
    if local is None:
        return _from_hub("gsm8k", "gsm8k/test.jsonl", lambda: {
            split: [_gsm8k_example(r, i) for i, r in enumerate(_hub_rows("openai/gsm8k", "main", split))]
            for split in ("train", "test")})
    return {split: [_gsm8k_example(r, i) for i, r in enumerate(_read_jsonl(local / f"{split}.jsonl"))]
            for split in ("train", "test")}


def _sst2_example(sentence: str, label, i: int) -> Example:
    question = f"Review: {sentence.strip()}\nIs this review positive or negative? Answer with one word."
    return Example(question, "positive" if int(label) == 1 else "negative", id=f"sst2-{i}")


def _load_sst2():
    local = _local("sst2")
    if local is None:
        return _from_hub("sst2", "sst2/validation.tsv", lambda: {
            mine: [_sst2_example(r["sentence"], r["label"], i)
                   for i, r in enumerate(_hub_rows("stanfordnlp/sst2", None, theirs))]
            for mine, theirs in (("train", "train"), ("test", "validation"))})
    pools = {}
    for mine, fname in (("train", "train.tsv"), ("test", "validation.tsv")):
        with open(local / fname, encoding="utf-8") as f:
            rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        pools[mine] = [_sst2_example(r["sentence"], r["label"], i) for i, r in enumerate(rows)]
    return pools


def _load_bbh(task: str):
    kind = _BBH_KIND.get(task, "choice")
    local = _local(f"bbh/{task}.json")
    if local is None:
        rows = _from_hub(f"bbh/{task}", f"bbh/{task}.json",
                         lambda: {"all": _hub_rows("lukaemon/bbh", task, "test")})["all"]
    else:
        rows = json.loads(local.read_text(encoding="utf-8"))["examples"]
    return {"all": [Example(r["input"], canonical_target(r["target"], kind), id=f"{task}-{i}")
                    for i, r in enumerate(rows)]}


def _mmlu_example(question: str, choices: list[str], answer, subject: str, i: int) -> Example:
    return Example(f"{question}\n{_options(choices)}", "ABCD"[int(answer)], id=f"{subject}-{i}")


def _load_mmlu(subject: str):
    local = _local("mmlu")
    if local is None:
        return _from_hub(f"mmlu/{subject}", f"mmlu/test/{subject}_test.csv", lambda: {
            mine: [_mmlu_example(r["question"], r["choices"], r["answer"], subject, i)
                   for i, r in enumerate(_hub_rows("cais/mmlu", subject, theirs))]
            for mine, theirs in (("train", "dev"), ("test", "test"))})
    pools = {}
    for mine, folder in (("train", "dev"), ("test", "test")):
        with open(local / folder / f"{subject}_{folder}.csv", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        pools[mine] = [_mmlu_example(r["question"], [r[f"choice{k}"] for k in range(4)], r["answer"], subject, i)
                       for i, r in enumerate(rows)]
    return pools


def _load_hellaswag():
    local = _local("hellaswag/validation_1000.jsonl")

    def example(r, i):
        question = f"Which ending completes the text best?\n{r['ctx']}\n{_options(r['endings'])}"
        return Example(question, "ABCD"[int(r["label"])], id=f"hellaswag-{r.get('ind', i)}")

    rows = _read_jsonl(local) if local else _from_hub(
        "hellaswag", "hellaswag/validation_1000.jsonl",
        lambda: {"all": _hub_rows("Rowan/hellaswag", None, "validation")})["all"]
    return {"all": [example(r, i) for i, r in enumerate(rows)]}


def _load_hotpotqa():
    """The distractor setting: the question with its ten context paragraphs."""
    local = _local("hotpotqa/dev_distractor_100.json")
    rows = json.loads(local.read_text(encoding="utf-8")) if local else _from_hub(
        "hotpotqa", "hotpotqa/dev_distractor_100.json",
        lambda: {"all": _hub_rows("hotpotqa/hotpot_qa", "distractor", "validation")})["all"]

    def example(r, i):
        ctx = r["context"]
        paragraphs = [f"{t}: {''.join(s)}" for t, s in zip(ctx["title"], ctx["sentences"])]
        question = "Context:\n" + "\n".join(paragraphs) + f"\n\nQuestion: {r['question']}"
        return Example(question, canonical_target(r["answer"], "text"), reference=r["answer"], id=r.get("id", str(i)))

    return {"all": [example(r, i) for i, r in enumerate(rows)]}


def _load_bench(folder: str):
    """MT-Bench / Vicuna-Bench: first turns, judged against criteria (GPT-4 reference kept)."""
    local = _local(f"{folder}/question.jsonl")
    if local is None:
        _from_hub(folder, f"{folder}/question.jsonl", None)
    refs = {}
    ref_file = local.parent / "reference_answer_gpt-4.jsonl"
    if ref_file.exists():
        refs = {r["question_id"]: r["choices"][0]["turns"][0] for r in _read_jsonl(ref_file)}
    rows = _read_jsonl(local)
    return {"all": [Example(r["turns"][0], "", reference=refs.get(r["question_id"], ""),
                            id=f"{folder}-{r['question_id']}") for r in rows]}


def _load_gpo(path: str, kind: str):
    """GPO's exact splits (RUCAIBox/GPO data/): train / eval (our dev) / test, and format (the
    release's meta-prompt exemplars)."""
    local = _local(f"gpo_splits/{path}")
    if local is None:
        _from_hub(f"gpo/{path}", f"gpo_splits/{path}/train.jsonl", None)
    pools = {}
    for mine, theirs in (("train", "train"), ("dev", "eval"), ("test", "test"), ("format", "format")):
        rows = _read_jsonl(local / f"{theirs}.jsonl")
        pools[mine] = [Example(r["input"], canonical_target(r.get("target", r.get("output")), kind),
                               reference=r.get("solution", ""), id=f"gpo/{path}-{theirs}-{i}")
                       for i, r in enumerate(rows)]
    return pools


def _load_hub_only(name: str, hub_id: str, to_example: Callable[[dict, int], Example]):
    rows = _from_hub(name, f"{name} (hub only)", lambda: {"all": _hub_rows(hub_id, None, "train")})["all"]
    return {"all": [to_example(r, i) for i, r in enumerate(rows)]}


# ---------------------------------------------------------------- registry


def _registry() -> dict[str, Task]:
    tasks = [
        Task("gsm8k", "number", "Solve grade-school math word problems; the answer is a number.", _load_gsm8k),
        Task("sst2", "sentiment", "Classify the sentiment of a movie review as positive or negative.", _load_sst2),
        Task("hellaswag", "choice", "Pick the most plausible continuation of a text.", _load_hellaswag),
        Task("hotpotqa", "text", "Answer a multi-hop question from the given context paragraphs with a short "
             "phrase.", _load_hotpotqa),
        Task("mt_bench", "open", "Answer open-ended user requests helpfully, accurately and in depth.",
             functools.partial(_load_bench, "mt_bench")),
        Task("vicuna_bench", "open", "Answer open-ended user requests helpfully, accurately and in depth.",
             functools.partial(_load_bench, "vicuna_bench")),
        Task("orca_math", "number", "Solve math word problems; the answer is a number.",
             functools.partial(_load_hub_only, "orca_math", "microsoft/orca-math-word-problems-200k",
                               lambda r, i: Example(r["question"], extract_number(r["answer"]) or "",
                                                    reference=r["answer"], id=f"orca-{i}"))),
        Task("neural_bridge_rag", "text", "Answer the question from the given context.",
             functools.partial(_load_hub_only, "neural_bridge_rag", "neural-bridge/rag-dataset-12000",
                               lambda r, i: Example(f"Context:\n{r['context']}\n\nQuestion: {r['question']}",
                                                    canonical_target(r["answer"], "text"), reference=r["answer"],
                                                    id=f"nbrag-{i}"))),
        Task("gpo/gsm8k", "number", "Solve grade-school math word problems; the answer is a number.",
             functools.partial(_load_gpo, "gsm8k", "number")),
        Task("gpo/wsc", "choice", "Resolve which entity a pronoun refers to.",
             functools.partial(_load_gpo, "wsc", "choice")),
    ]
    for name in BBH_TASKS:
        kind = _BBH_KIND.get(name, "choice")
        description = f"BIG-Bench Hard task '{name.replace('_', ' ')}'."
        tasks.append(Task(f"bbh/{name}", kind, description, functools.partial(_load_bbh, name)))
        tasks.append(Task(f"gpo/bbh/{name}", kind, description, functools.partial(_load_gpo, f"bbh/{name}", kind)))
    for subject in MMLU_SUBJECTS:
        description = f"Answer multiple-choice questions on {subject.replace('_', ' ')} (MMLU)."
        tasks.append(Task(f"mmlu/{subject}", "choice", description, functools.partial(_load_mmlu, subject)))
        tasks.append(Task(f"gpo/mmlu/{subject}", "choice", description,
                          functools.partial(_load_gpo, f"mmlu/{subject}", "choice")))
    return {t.name: t for t in tasks}


TASKS = _registry()


def get_task(name: str) -> Task:
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(name, TASKS, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else \
        "; see promptgrad.tasks.TASKS for the list (bbh/<task>, mmlu/<subject>, gpo/...)."
    raise KeyError(f"Unknown task '{name}'{hint}")


@functools.cache
def _cached_pools(name: str) -> dict[str, list[Example]]:
    """The loader's pools; train ids that repeat test ids (both numbered from 0 in their files)
    get ``@train``, so that an id names one example wherever train rows are lent to dev."""
    pools = TASKS[name].loader()
    test_ids = {e.id for e in pools.get("test", [])}
    if any(e.id in test_ids for e in pools.get("train", [])):
        pools["train"] = [dataclasses.replace(e, id=f"{e.id}@train") for e in pools["train"]]
    return pools


# ---------------------------------------------------------------- splits


@dataclasses.dataclass(frozen=True)
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    borrowed_from_test: int = 0  # train/dev rows taken from the test pool (never from the test rows)

    def sizes(self) -> dict[str, int]:
        sizes = {"train": len(self.train), "dev": len(self.dev), "test": len(self.test)}
        return {**sizes, "borrowed_from_test": self.borrowed_from_test} if self.borrowed_from_test else sizes


def make_splits(task: Task | str, n_train: int | None, n_dev: int | None, n_test: int | None,
                seed: int = 0) -> Splits:
    """Seeded, disjoint train / dev / test splits. ``None`` for a size: all that is left for it
    (for n_test: after train and dev in a single pool; the whole test pool otherwise).

    - Fixed splits (GPO's) are used as they are, each cut to its size in file order.
    - Separate train and test pools (SST-2, GSM8K, MMLU): test is drawn from the test pool,
      train and dev from the train pool. When the train pool is too small (MMLU keeps 5 rows
      per subject apart), the rows missing are taken from the far end of the shuffled test pool
      and the test rows from its front, so they never overlap (``borrowed_from_test``).
    - One pool (BBH, HellaSwag, ...): a seeded shuffle; test is taken first, so the test
      set for a given seed and ``n_test`` does not depend on the train and dev sizes.
    """
    task = get_task(task) if isinstance(task, str) else task
    for label, size in (("n_train", n_train), ("n_dev", n_dev), ("n_test", n_test)):
        if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
            raise ValueError(f"{label} for '{task.name}' must be a non-negative integer or None (all that is "
                             f"left), got {size!r}.")
    pools = task.pools()

    def take(pool: list[Example], n: int | None, label: str, start: int = 0) -> list[Example]:
        available = len(pool) - start
        n = available if n is None else n
        if n > available:
            raise ValueError(f"{label}={n} is larger than what '{task.name}' has left for it ({available} "
                             f"examples); ask for at most {available}.")
        return pool[start:start + n]

    def resolved(*sizes: int) -> None:  # a None size resolved from the others must not go below 0
        if min(sizes) < 0:
            raise ValueError(f"n_train, n_dev and n_test of '{task.name}' ask for more than its {total} examples.")

    total = sum(map(len, pools.values()))

    def shuffled(pool: list[Example], salt: str) -> list[Example]:
        pool = list(pool)
        random.Random(f"{seed}-{task.name}-{salt}").shuffle(pool)
        return pool

    if "dev" in pools:
        return Splits(take(pools["train"], n_train, "n_train"), take(pools["dev"], n_dev, "n_dev"),
                      take(pools["test"], n_test, "n_test"))
    if "test" in pools:
        test_pool, rest = shuffled(pools["test"], "test"), shuffled(pools["train"], "train")
        if n_train is None or n_dev is None:
            n_train = len(rest) - (n_dev or 0) if n_train is None else n_train
            n_dev = max(0, len(rest) - n_train) if n_dev is None else n_dev
            resolved(n_train, n_dev)
        short = max(0, n_train + n_dev - len(rest))
        if short:
            rest = rest + test_pool[len(test_pool) - short:][::-1]
            test_pool = test_pool[:len(test_pool) - short]
        test = take(test_pool, n_test, "n_test" + (f" (after {short} rows lent to train/dev)" if short else ""))
        return Splits(take(rest, n_train, "n_train"), take(rest, n_dev, "n_dev", n_train), test, short)
    pool = shuffled(pools["all"], "all")
    if n_train is None or n_dev is None:
        if n_test is None:
            raise ValueError(f"'{task.name}' has one pool: give n_test when n_train or n_dev is None.")
        n_train = len(pool) - n_test - (n_dev or 0) if n_train is None else n_train
        n_dev = len(pool) - n_test - n_train if n_dev is None else n_dev
        resolved(n_train, n_dev)
    n_test_ = len(pool) - n_train - n_dev if n_test is None else n_test
    test = take(pool, n_test_, "n_test")
    return Splits(take(pool, n_train, "n_train", len(test)), take(pool, n_dev, "n_dev", len(test) + n_train), test)


# ---------------------------------------------------------------- per-task settings


def per_task(setting, task: Task | str, name: str = "setting", default=KeyError):
    """One task's value of a notebook setting: the setting itself when it is not a dict; else its
    entry for the task's name, then for its answer kind (``"yesno"``, ``"number"``...), then ``"*"``.
    Without any, ``default``, or an error that says which entries would do."""
    if not isinstance(setting, dict):
        return setting
    task = get_task(task) if isinstance(task, str) else task
    for key in (task.name, task.kind, "*"):
        if key in setting:
            return setting[key]
    if default is not KeyError:
        return default
    raise KeyError(f"{name} has no entry for task '{task.name}': add one for '{task.name}', for its answer kind "
                   f"'{task.kind}', or '*' for every other task (it has {sorted(setting)}).")


def for_tasks(setting, names: list[str], name: str = "setting", default=KeyError) -> dict:
    """``per_task`` for each task: ``{task name: value}``."""
    return {n: per_task(setting, n, name, default) for n in names}


def task_splits(names: list[str], n_train, n_dev, n_test, seed: int = 0) -> dict[str, Splits]:
    """``make_splits`` for each task, each size a number, None or a per-task dict (``per_task``).
    Unknown task names fail first, with a suggestion."""
    tasks = [get_task(n) for n in names]
    return {t.name: make_splits(t, per_task(n_train, t, "N_TRAIN"), per_task(n_dev, t, "N_DEV"),
                                per_task(n_test, t, "N_TEST"), seed=seed) for t in tasks}
