"""The method contract: every optimizer, in embedding or in text space, is one dataclass.

Its fields are its settings (a field named in ``PER_TASK`` may be a per-task dict, resolved
with ``tasks.per_task``); ``optimize(task, splits, engines)`` runs it on one task and returns a
:class:`Found`: the prompt (text, or a soft prompt), the budget it spent (one :class:`Usage`:
model calls, tokens, training examples, seconds) and its trajectory (the prompt it held after
each step, with its dev score). :func:`score_on_test` scores what the methods found on the test
split, on one engine and one answer protocol; :func:`record` adds the row to ``Results``.

Adding a method means one class implementing this contract (``gpo.GPO``, ``gradsum.GradSum``,
``embedgrad.EmbedGrad``, ``gepa_search.GEPA``) and one entry where a notebook lists its methods.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path
from typing import ClassVar

from .cache import ResponseCache
from .checkpoints import checkpoint_path, fingerprint
from .engines import Engine, Usage, make_engine, metered
from .evaluation import FORCED_MAX_TOKENS, Evaluation, evaluate_prompt, prompt_label, score_prompts
from .tasks import Splits, Task, per_task


@dataclasses.dataclass
class Engines:
    """The engines a method may use. ``task`` answers every test question and gives the embedding
    methods their gradients; ``loop`` is the task model inside the text optimizers' loops
    (default: ``task``); ``optimizer`` writes prompts: GPO's and OPRO's optimizer, GRAD-SUM's
    critic, summarizer and editor, GEPA's reflection model (default: ``loop``); ``judge`` is
    GRAD-SUM's LLM judge (default: ``optimizer``). ``loop_judge="exact"`` scores GRAD-SUM's loop
    by exact match instead wherever the task has answers."""

    task: Engine
    loop: Engine | None = None
    optimizer: Engine | None = None
    judge: Engine | None = None
    loop_judge: str | None = None
    settings: dict = dataclasses.field(default_factory=dict, repr=False)  # what :meth:`make` gives an engine

    @classmethod
    def from_specs(cls, task, loop=None, optimizer=None, judge=None, loop_judge: str | None = None,
                   cache: str | ResponseCache | None = None, **settings) -> "Engines":
        """Each role's engine from its notebook parameter (an engine spec, see ``make_engine``; None:
        the role's default above), all on one response cache (a path, or None / "" for none) and
        ``settings`` (``batch_size``, ``system_prompt``), which :meth:`make` gives later engines too."""
        settings = {"cache": cache if isinstance(cache, ResponseCache) else ResponseCache(cache or None), **settings}
        made = {role: make_engine(spec, **settings) if spec else None
                for role, spec in {"task": task, "loop": loop, "optimizer": optimizer, "judge": judge}.items()}
        return cls(**made, loop_judge=loop_judge, settings=settings)

    def make(self, spec) -> Engine:
        """Another engine (a second task model, say) with the cache and settings of :meth:`from_specs`
        (of an ``Engines`` built by hand: the task engine's cache only)."""
        return make_engine(spec, **(self.settings or {"cache": self.task.cache}))

    def __post_init__(self):
        self.loop = self.loop or self.task
        self.optimizer = self.optimizer or self.loop
        self.judge = self.judge or self.optimizer
        if self.loop_judge not in (None, "exact"):
            raise ValueError(f'loop_judge must be None (the LLM judge) or "exact", got {self.loop_judge!r}.')

    ROLES = ("task", "loop", "optimizer", "judge")

    def distinct(self) -> list[Engine]:
        """Each engine object once (one object may serve several roles)."""
        return list({id(e): e for e in (getattr(self, role) for role in self.ROLES)}.values())

    def usage(self) -> Usage:
        """What all of them spent, together."""
        return sum((e.usage for e in self.distinct()), Usage())

    def usage_by_engine(self) -> dict[str, dict]:
        """What each engine spent, named by the roles it served ("optimizer and judge" where one
        engine did both; the judge defaults to the optimizer, so a method without a judge still
        reads "optimizer and judge")."""
        return {" and ".join(r for r in self.ROLES if getattr(self, r) is e): e.usage.as_dict()
                for e in self.distinct()}


@dataclasses.dataclass
class Found:
    """What a method found on one task, and what finding it cost."""

    method: str
    task: str
    prompt: object                 # the text, or a SoftPrompt
    budget: Usage                  # calls and tokens of text loops; training examples; wall seconds
    trajectory: list[dict]         # {"step", "prompt", "score"}: the prompt held after each step, dev score
    details: dict = dataclasses.field(default_factory=dict)  # the method's own row columns (lr, steps, ...)
    run: object = None             # the method's full record (gpo.Run, gradsum.GradSumRun, embedgrad.Fit...)
    settings: dict = dataclasses.field(default_factory=dict)  # the method's settings on this task, as it ran

    def columns(self) -> dict:
        """The budget columns of a results row, then the method's own. ``model_calls`` and
        ``tokens`` count calls the model answered; ``cache_hits``, calls the response cache
        answered (free here, paid on a first run)."""
        b = self.budget
        return {"model_calls": b.model_calls, "cache_hits": b.cache_hits,
                "tokens": b.prompt_tokens + b.completion_tokens, "train_examples": b.train_examples,
                "optimize_seconds": round(b.wall_seconds, 1), **self.details}

    def row(self) -> dict:
        """One line to show: task, method, the prompt found (its first 100 characters), budget columns."""
        return {"task": self.task, "method": self.method, "prompt found": prompt_label(self.prompt)[:100],
                **self.columns()}


@dataclasses.dataclass
class Demand:
    """What a run asks of one role, at most: model calls (samples counted one by one), the tokens
    those calls may write (each call's budget), and training examples (the embedding methods)."""

    calls: int = 0
    completion_tokens: int = 0
    train_examples: int = 0

    def __add__(self, other: "Demand") -> "Demand":
        return Demand(self.calls + other.calls, self.completion_tokens + other.completion_tokens,
                      self.train_examples + other.train_examples)


def answering(calls: int, budget: int) -> Demand:
    return Demand(calls, calls * budget)


def examples_fingerprint(splits: Splits) -> str:
    """A fingerprint of the train and dev examples a method learns from and selects on."""
    return fingerprint([e.id for e in splits.train], [e.id for e in splits.dev])


class Method:
    """Base of every method's dataclass: ``name`` (class-level default, a field where one class
    serves several methods), ``PER_TASK`` fields resolved per task, ``optimize``."""

    name: ClassVar[str] = ""
    PER_TASK: ClassVar[tuple[str, ...]] = ()
    HOW: ClassVar[tuple[str, ...]] = ()  # fields that change how a run computes, not what it finds

    def for_task(self, task: Task):
        """This method's settings for one task: each per-task dict field resolved."""
        optional = {f.name for f in dataclasses.fields(self) if f.default is None}  # a missing entry means None
        return dataclasses.replace(self, **{f: per_task(getattr(self, f), task, f"{self.name}.{f}",
                                                        default=None if f in optional else KeyError)
                                            for f in self.PER_TASK})

    def dev_examples(self, splits: Splits) -> list:
        """The dev examples that score candidates: the first ``dev`` (a resolved per-task field,
        where the method has one), else all."""
        n = getattr(self, "dev", None)
        return splits.dev[:n] if n else splits.dev

    def starting_from(self, prompt: str):
        """The same method, started from another prompt (every method has an ``initial_prompt``)."""
        return dataclasses.replace(self, initial_prompt=prompt)

    def settings(self) -> dict:
        """The settings as JSON-ready values (checkpoint fingerprints, metrics.json), ``HOW`` fields
        left out (a checkpoint or a row is the same run with them or without)."""
        settings = {k: v for k, v in dataclasses.asdict(self).items() if k not in self.HOW}
        return json.loads(json.dumps(settings, default=str))

    def run_settings(self, splits: Splits) -> dict:
        """What decides a run on one task's splits: the settings and a fingerprint of the train and
        dev examples (kept with each row, so another notebook reuses a row only when both match)."""
        return {**self.settings(), "examples": examples_fingerprint(splits)}

    def checkpoint(self, directory: str | Path | None, task: Task, splits: Splits, engines: Engines,
                   suffix: str = ".json") -> Path | None:
        """This run's checkpoint under ``directory`` (None: no checkpoint): other settings, models
        or examples, another file."""
        models = [e.model for e in engines.distinct()]
        examples = [[e.id for e in splits.train], [e.id for e in splits.dev]]
        return checkpoint_path(directory, task.name, self.name, [self.settings(), models, examples], suffix)

    def optimize(self, task: Task, splits: Splits, engines: Engines, checkpoint_dir: str | Path | None = None) \
            -> Found:
        raise NotImplementedError

    def demand(self, task: Task, splits: Splits, loop_judge: str | None = None) -> dict[str, Demand]:
        """What :meth:`optimize` asks of each role (``loop``, ``optimizer``, ``judge``, ``task``) at
        most, before it runs (``promptgrad.plan``)."""
        raise NotImplementedError


def timed(engines: list[Engine], run):
    """``(run(), Usage)``: what the distinct ``engines`` spent during ``run``, with its wall time."""
    with contextlib.ExitStack() as stack:
        spent = [stack.enter_context(metered(e)) for e in {id(e): e for e in engines}.values()]
        start = time.perf_counter()
        value = run()
        seconds = time.perf_counter() - start
    total = sum(spent, Usage())
    total.wall_seconds = seconds
    return value, total


def score_on_test(engine: Engine, task: Task, prompts: dict[str, object], test: list, *, placement: str = "after",
                  protocol: str = "direct", max_tokens: int | None = None, judge: Engine | None = None,
                  criteria: str | None = None, judge_max_tokens: int = 96, scored_by: str = "exact",
                  forced_max_tokens: int = FORCED_MAX_TOKENS, desc: str | None = None) -> dict[str, Evaluation]:
    """Every named prompt (text, template, or soft) scored on ``test`` with one engine and one
    protocol. Tasks with answers: exact match after the protocol's answer turn(s); text prompts go
    in one call, so a fast engine reads each question once. Tasks without answers (open
    questions): ``judge``'s verdicts, as GRAD-SUM scores them. ``scored_by="judge"``: the judge
    scores every task, as GRAD-SUM's paper does, with exact match of the same answers beside it
    (``exact_accuracy``) where the task has answers. A judged answer is one turn of a text
    template (GRAD-SUM's generation): ``placement``, ``protocol`` and ``forced_max_tokens`` apply
    to exact scoring only. Each summary says which (``scored_by``)."""
    if scored_by not in ("exact", "judge"):
        raise ValueError(f'scored_by must be "exact" or "judge", got {scored_by!r}.')
    if scored_by == "judge" or not task.has_answers:
        if judge is None:
            raise ValueError(f"Task '{task.name}' is scored by a judge here: pass a judge engine.")
        if not all(isinstance(p, str) for p in prompts.values()):
            raise ValueError("A judge scores text prompts only; score soft prompts by exact match.")
        from .gradsum import evaluate_with_judge

        return {name: evaluate_with_judge(engine, judge, task, prompt, test, criteria=criteria, max_tokens=max_tokens,
                                          judge_max_tokens=judge_max_tokens) for name, prompt in prompts.items()}
    texts = {n: p for n, p in prompts.items() if isinstance(p, str)}
    distinct = dict.fromkeys(texts.values())  # a prompt two methods found is scored once
    by_text = score_prompts(engine, task, {p: p for p in distinct}, test, placement=placement, protocol=protocol,
                            max_tokens=max_tokens, forced_max_tokens=forced_max_tokens,
                            desc=desc or f"{task.name} test") if distinct else {}
    return {name: by_text[prompt] if isinstance(prompt, str) else
            evaluate_prompt(engine, task, prompt, test, protocol=protocol, max_tokens=max_tokens,
                            forced_max_tokens=forced_max_tokens, desc=f"{task.name} / {name}")
            for name, prompt in prompts.items()}


def record(results, task: str, method: str, evaluation: Evaluation, prompt, found: Found | None = None, **extra):
    """A results row: the evaluation, and the budget, details and settings of what found the
    prompt (the settings let another notebook decide whether it can reuse the row)."""
    columns = {**found.columns(), "settings": found.settings} if found else {}
    return results.add(task, method, evaluation, prompt, **columns, **extra)


def across_seeds(methods: list[Method], task: Task, splits: Splits, engines: Engines, seeds: list[int],
                 baseline: Evaluation, checkpoint_dir: str | Path | None = None, done: dict[str, Found] | None = None,
                 **scoring) -> list[dict]:
    """Each method (a dataclass with a ``seed`` field) run once per seed (the seed moves the
    method's own randomness, such as the order of training batches; the splits stay) and its
    prompt scored on the test split (:func:`score_on_test` with ``scoring``): a row per method and
    seed, with the paired difference from ``baseline`` (an evaluation of the same test rows).
    ``done``: runs already made, by method name, reused for the method's own seed."""
    from .evaluation import paired_difference

    def run(method: Method, seed: int) -> Found:
        if done and method.name in done and method.seed == seed:
            return done[method.name]
        return dataclasses.replace(method, seed=seed).optimize(task, splits, engines, checkpoint_dir)

    rows = []
    for seed in seeds:
        found = {m.name: run(m, seed) for m in methods}
        scored = score_on_test(engines.task, task, {n: f.prompt for n, f in found.items()}, splits.test, **scoring)
        for name, evaluation in scored.items():
            gain = paired_difference(evaluation.correct, baseline.correct)
            rows.append({"task": task.name, "method": name, "seed": seed, "n": evaluation.summary["n"],
                         "accuracy": evaluation.summary["accuracy"], "ci95": evaluation.summary["ci95"],
                         "minus_baseline": gain["difference"], "minus_baseline_ci95": gain["ci95"]})
    return rows


NAMES = ("EmbedGrad", "PEFT prompt tuning", "GPO", "OPRO", "APE", "GRAD-SUM", "GRAD-SUM (no summarization)", "GEPA")


def unknown_names(names: list[str], known) -> str:
    """The names not in ``known``, each with a "did you mean" where one is close; "" if none."""
    import difflib

    hints = []
    for name in (n for n in names if n not in known):
        close = difflib.get_close_matches(name, list(known), 1, 0.5)
        hints.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return ", ".join(hints)


def choose(available: list[Method], names: list[str]) -> dict[str, Method]:
    """The methods named (by ``Method.name``), in the order named; a misspelt name fails with a
    suggestion, before any model loads."""
    by_name = {m.name: m for m in available}
    unknown = unknown_names(names, by_name)
    if unknown:
        raise ValueError(f"Unknown method {unknown}; choose from {list(by_name)}.")
    return {n: by_name[n] for n in names}


def found_by(first: Found, then: Found, method: str) -> Found:
    """Two searches in a row (``then`` started from ``first``'s prompt) as one: ``then``'s prompt,
    both budgets, both trajectories."""
    return dataclasses.replace(then, method=method, budget=first.budget + then.budget,
                               trajectory=first.trajectory + then.trajectory,
                               settings={"first": first.settings, "then": then.settings})
