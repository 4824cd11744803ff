"""GEPA: reflective prompt evolution with Pareto selection, under the method contract.

GEPA (Agrawal et al., "GEPA: Reflective Prompt Evolution Can Outperform Reinforcement Learning",
arXiv 2507.19457; the ``gepa`` package) keeps a pool of candidate prompts. Each iteration it
picks a parent from the Pareto front (a candidate that is best on at least one dev example, drawn
in proportion to how many), runs it on a minibatch of train examples, shows a reflection model
the questions, the answers and feedback on them, and asks for a new prompt (in ``` blocks). A
child that scores strictly better than its parent on that minibatch is scored on the whole dev
set (GEPA's valset) and joins the pool. The prompt found is the candidate with the best dev score.

Here one candidate is ``{"instruction": prompt}``; the task model is ``engines.loop`` and answers
with our answer protocol (``evaluation.score_prompts``: placement, direct or forced, extraction,
exact match), so a score is 1.0 for a correct answer and 0.0 otherwise, and the feedback names
the gold answer and the answer parsed. The reflection model is ``engines.optimizer``, sampled at
temperature 1.0 with a new seed on every call.

Budget: GEPA stops on ``max_metric_calls``, its count of task-model rollouts (one per example
answered: dev evaluations of the seed and accepted children, and the parent's and the child's
minibatch each iteration); it checks the count only before an iteration, so a run may end up to
``2 * minibatch + len(dev) - 1`` past it, and the seed's dev evaluation is spent whatever the
budget. ``Found.budget`` counts the model calls and tokens of both engines together (cache hits
cost nothing). With a checkpoint directory GEPA saves its state in its own run directory after
each iteration and resumes from it; the spending of earlier runs is saved there too and counted.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from pathlib import Path

from gepa import EvaluationBatch, GEPAAdapter, GEPAResult
from gepa import optimize as gepa_optimize

from .engines import Usage
from .evaluation import FORCED_MAX_TOKENS, answer_budget, score_prompts
from .methods import Demand, Engines, Found, Method, answering, timed
from .tasks import Example, Splits, Task

log = logging.getLogger(__name__)

COMPONENT = "instruction"  # the one text GEPA evolves
CANDIDATE_SELECTIONS = ("pareto", "current_best", "epsilon_greedy", "top_k_pareto")


class _Logging:
    """GEPA's logger protocol on Python logging, at debug level: GEPA writes a dozen lines per
    iteration, and its default prints them to stdout (or tees stdout and stderr into its run
    directory)."""

    def log(self, *message, **_):
        log.debug(" ".join(map(str, message)))


class PromptAdapter(GEPAAdapter):
    """GEPA's adapter over our engines: ``evaluate`` answers a batch of :class:`Example` with the
    candidate's instruction as prompt, ``make_reflective_dataset`` turns the answers into GEPA's
    records, ``reflect`` is the reflection model. Its state (reflection count, spending so far)
    goes into GEPA's checkpoint."""

    def __init__(self, task: Task, engines: Engines, *, placement: str = "after", protocol: str = "direct",
                 max_tokens: int | None = None, forced_max_tokens: int = FORCED_MAX_TOKENS,
                 reflection_max_tokens: int = 256, seed: int = 0):
        self.task, self.engines = task, engines
        self.placement, self.protocol, self.max_tokens = placement, protocol, max_tokens
        self.forced_max_tokens = forced_max_tokens
        self.reflection_max_tokens, self.seed = reflection_max_tokens, seed
        self.reflections = 0
        self.resumed = Usage()  # what earlier runs of this run directory spent
        self._start = time.perf_counter()
        distinct = {id(e): e for e in (engines.loop, engines.optimizer)}.values()
        self._before = [(e, dataclasses.replace(e.usage)) for e in distinct]

    def evaluate(self, batch: list[Example], candidate: dict[str, str], capture_traces: bool = False) \
            -> EvaluationBatch:
        records = score_prompts(self.engines.loop, self.task, {"candidate": candidate[COMPONENT]}, batch,
                                placement=self.placement, protocol=self.protocol, max_tokens=self.max_tokens,
                                forced_max_tokens=self.forced_max_tokens,
                                desc=f"{self.task.name} GEPA")["candidate"].records
        return EvaluationBatch(outputs=[r["output"] for r in records],
                               scores=[1.0 if r["correct"] else 0.0 for r in records],
                               trajectories=[{**r, "question": ex.input} for r, ex in zip(records, batch)]
                               if capture_traces else None)

    def make_reflective_dataset(self, candidate: dict[str, str], eval_batch: EvaluationBatch,
                                components_to_update: list[str]) -> dict[str, list[dict]]:
        return {name: [reflective_record(r) for r in eval_batch.trajectories] for name in components_to_update}

    def reflect(self, prompt) -> str:
        """GEPA's reflection LM: the prompt (text, or chat messages) to ``engines.optimizer``; a
        new seed each call, so a cached engine does not repeat one reflection."""
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        self.reflections += 1
        return self.engines.optimizer.chat([messages], max_tokens=self.reflection_max_tokens, temperature=1.0,
                                           seed=self.seed * 1_000_003 + self.reflections, desc="GEPA reflection")[0][0]

    def spent(self) -> Usage:
        """Both engines' spending since this adapter was made, plus earlier runs'."""
        usage = sum((e.usage - before for e, before in self._before), Usage())
        usage.wall_seconds = time.perf_counter() - self._start
        return self.resumed + usage

    def get_adapter_state(self) -> dict:
        return {"reflections": self.reflections, "usage": self.spent().as_dict()}

    def set_adapter_state(self, state: dict) -> None:
        self.reflections = state.get("reflections", 0)
        self.resumed = Usage(**state.get("usage", {}))


def reflective_record(record: dict) -> dict:
    """One GEPA reflective record from one of our scored records."""
    output = record["output"]
    if "forced_output" in record:
        output += f"\n\n(asked for the answer alone:) {record['forced_output']}"
    if record["correct"]:
        feedback = "Correct."
    else:
        parsed = record["parsed"] if record["parsed"] is not None else "None: no answer could be read"
        feedback = (f"Incorrect: the expected answer is {record['gold']}; the answer parsed from the response "
                    f"was {parsed}.")
    return {"Inputs": record["question"], "Generated Outputs": output, "Feedback": feedback}


@dataclasses.dataclass
class GEPA(Method):
    """GEPA under the method contract: the seed candidate is ``initial_prompt``, the first
    ``train`` train examples feed reflection (minibatches of ``minibatch``), the first ``dev`` dev
    examples are GEPA's valset; ``max_metric_calls`` task-model rollouts in all (see the module
    docstring on overshoot)."""

    name = "GEPA"
    PER_TASK = ("max_metric_calls", "dev", "train", "max_tokens")

    initial_prompt: str = "Let's think step by step."
    max_metric_calls: int | dict = 150
    minibatch: int = 3
    dev: int | dict | None = None     # dev examples in GEPA's valset (None: all)
    train: int | dict | None = None   # train examples in GEPA's trainset (None: all)
    placement: str = "after"
    protocol: str = "direct"
    max_tokens: int | dict | None = None
    forced_max_tokens: int = FORCED_MAX_TOKENS  # the forced answer turn (protocol "forced")
    reflection_max_tokens: int = 256
    candidate_selection: str = "pareto"
    seed: int = 0

    def __post_init__(self):
        if self.candidate_selection not in CANDIDATE_SELECTIONS:
            raise ValueError(f"Unknown candidate_selection '{self.candidate_selection}'; expected one of "
                             f"{CANDIDATE_SELECTIONS}.")

    def optimize(self, task: Task, splits: Splits, engines: Engines, checkpoint_dir: str | Path | None = None) \
            -> Found:
        c = self.for_task(task)
        train = splits.train[:c.train] if c.train else splits.train
        dev = c.dev_examples(splits)
        if not train or not dev:
            raise ValueError(f"{task.name}: GEPA needs train and dev examples, got {len(train)} and {len(dev)}.")
        run_dir = c.checkpoint(checkpoint_dir, task, splits, engines, suffix="")
        if run_dir is not None:
            run_dir.mkdir(parents=True, exist_ok=True)  # GEPA only makes it when it logs there itself
        adapter = PromptAdapter(task, engines, placement=c.placement, protocol=c.protocol, max_tokens=c.max_tokens,
                                forced_max_tokens=c.forced_max_tokens, reflection_max_tokens=c.reflection_max_tokens,
                                seed=c.seed)
        result, usage = timed([engines.loop, engines.optimizer], lambda: gepa_optimize(
            seed_candidate={COMPONENT: c.initial_prompt}, trainset=train, valset=dev, adapter=adapter,
            reflection_lm=adapter.reflect, max_metric_calls=c.max_metric_calls, reflection_minibatch_size=c.minibatch,
            candidate_selection_strategy=c.candidate_selection, seed=c.seed, logger=_Logging(),
            run_dir=str(run_dir) if run_dir else None))
        trajectory = [{"step": i, "prompt": cand[COMPONENT], "score": score,
                       "parent": next(iter(_parents(result, i)), None)}  # one parent each: merges are off
                      for i, (cand, score) in enumerate(zip(result.candidates, result.val_aggregate_scores))]
        details = {"dev_accuracy": result.val_aggregate_scores[result.best_idx], "candidates": result.num_candidates,
                   "metric_calls": result.total_metric_calls}
        return Found(self.name, task.name, result.best_candidate[COMPONENT], adapter.resumed + usage, trajectory,
                     details, run=result, settings=c.run_settings(splits))

    def demand(self, task: Task, splits: Splits, loop_judge=None) -> dict:
        """``max_metric_calls`` rollouts and one iteration's overshoot (parent and child on a
        minibatch, the child on dev); a reflection per iteration, each iteration at least one
        minibatch of rollouts (the parent's, when the child is not better)."""
        c = self.for_task(task)
        dev = len(c.dev_examples(splits))
        rollouts = c.max_metric_calls + 2 * c.minibatch + dev
        loop = answering(rollouts, answer_budget(task, c.max_tokens))
        if c.protocol == "forced":
            loop = loop + answering(rollouts, c.forced_max_tokens)
        reflections = math.ceil(max(0, c.max_metric_calls - dev) / c.minibatch) + 1
        return {"loop": loop, "optimizer": answering(reflections, c.reflection_max_tokens), "judge": Demand()}


def _parents(result: GEPAResult, i: int) -> list[int]:
    return [p for p in result.parents[i] if p is not None]


def frontier_table(found: Found) -> list[dict]:
    """One row per GEPA candidate: its index, parents, dev score, the number of dev examples it is
    best on (ties count for each candidate tied), the rollouts spent when it was found, its prompt."""
    result: GEPAResult = found.run
    return [{"index": i, "parents": _parents(result, i), "val_score": result.val_aggregate_scores[i],
             "best_on": sum(i in front for front in result.per_val_instance_best_candidates.values()),
             "metric_calls_at_discovery": result.discovery_eval_counts[i], "prompt": cand[COMPONENT]}
            for i, cand in enumerate(result.candidates)]
