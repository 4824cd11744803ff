"""GRAD-SUM (Austin & Chartock, arXiv 2407.12865): prompt optimization with an LLM judge,
natural-language gradients, gradient summarization and a beam search.

Five modules, each a function with its own prompt template (a module-level constant
you can read, and override through the function's ``template=`` parameter):

1. :func:`generate` - the task model answers a minibatch with the prompt (a template
   holding ``{question}``, see ``promptgrad.tasks.format_prompt``);
2. :func:`judge_outputs` - an LLM judge, given the task description, the evaluation
   criteria and the expected answer when there is one, returns 0/1 and its reasoning
   (temperature 0); unparseable verdicts are counted, never fatal;
3. :func:`compute_gradients` - a natural-language critique of the prompt for each failed
   example;
4. :func:`summarize_gradients` - all critiques of one prompt condensed into one general
   paragraph;
5. :func:`edit_prompt` - new candidate prompts from prompt + feedback (temperature 0.5);
   candidates that lost a template slot such as ``{question}`` are rejected and counted.

:func:`optimize` runs the beam search; ``summarize=False`` is the paper's ablation (each raw
critique goes to the editor, ProTeGi-style) through the same code path. Runs checkpoint
after every iteration (JSON, atomic write) and resume from it.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from pathlib import Path

from .checkpoints import CheckpointError, fingerprint, read_json_checkpoint, write_json_atomic
from .engines import Engine, Usage, metered
from .evaluation import Evaluation, answer_budget, build_conversations, follow_up, shorten, summarize
from .extraction import marked_text
from .methods import Demand, Found, Method, answering
from .tasks import Example, Task

log = logging.getLogger(__name__)
PARSES = ("strict", "lenient")  # the editor's output (``extraction.marked_text``; "release" is GPO's rule)

ROLES = ("generation", "judge", "gradient", "summary", "editor")
DEFAULT_CRITERIA = {
    True: "The response is correct: its final answer matches the expected answer.",
    False: "The response is helpful, relevant, accurate, detailed and clearly written.",
}

JUDGE_TEMPLATE = """You are a strict grader of an AI assistant's response.
Task: {task_description}
Evaluation criteria: {criteria}

Question:
{input}
{expected}
Response:
{output}

First explain in one or two sentences whether the response meets the criteria. Then, on the last line, write "Score: 1" if it does or "Score: 0" if it does not."""

JUDGE_EXPECTED = "\nExpected answer: {target}\n"

EXACT_JUDGE = "exact"  # a judge spec: the task's extractor against the expected answer, no model

VERDICT_TURN = "Now give only your score: 1 if the response meets the criteria, 0 if it does not."

GRADIENT_TEMPLATE = """You are improving a prompt for a language model.
Task: {task_description}
The prompt was:
<prompt>{prompt}</prompt>

With this prompt, the model was asked:
{input}

It answered:
{output}
{expected}
A grader judged the answer a failure and said: {reasoning}

In two or three sentences, explain what is wrong or missing in the prompt that led to this failure, and how the prompt should change."""

GRADIENT_EXPECTED = "\nThe expected answer was: {target}\n"

SUMMARY_TEMPLATE = """You are improving a prompt for a language model.
Task: {task_description}
The prompt was:
<prompt>{prompt}</prompt>

Here are critiques of this prompt, each written after a different failed example:
{critiques}

Summarize these critiques into one short, general paragraph of advice on how to improve the prompt. Do not mention specific examples."""

EDIT_TEMPLATE = """You are improving a prompt for a language model.
Task: {task_description}
Current prompt:
<prompt>{prompt}</prompt>

Feedback on the current prompt:
{feedback}

Write one improved version of the prompt that follows the feedback. Keep the placeholder {question} exactly as written: it is where each question is inserted. Write the new prompt between <prompt> and </prompt>."""

_VERDICT = re.compile(r"score\s*[:=]?\s*\**\s*([01])(?!\d|\.\d|/[2-9])", re.IGNORECASE)
_SLOT = re.compile(r"\{(\w+)\}")


def fill(template: str, **slots: str) -> str:
    """Replace ``{name}`` for the given names in one pass (inserted text is not rescanned, and
    slots not given, such as a literal ``{question}`` meant for the model, stay as they are)."""
    return _SLOT.sub(lambda m: str(slots[m.group(1)]) if m.group(1) in slots else m.group(0), template)


def template_slots(prompt: str) -> set[str]:
    return set(_SLOT.findall(prompt))


# ---------------------------------------------------------------- bookkeeping


class Tracker:
    """Per-role usage (works when roles share one engine object) and malformed-output counts."""

    def __init__(self):
        self.usage = {role: Usage() for role in ROLES}
        self.counts: dict[str, int] = {}
        self.malformed: list[dict] = []

    def chat(self, role: str, engine: Engine, conversations, **kwargs) -> list[list[str]]:
        return self._metered(role, engine, engine.chat, conversations, **kwargs)

    def choose(self, role: str, engine: Engine, conversations, options: list[str], **kwargs) -> list[str | None]:
        return self._metered(role, engine, engine.choose, conversations, options, **kwargs)

    def _metered(self, role, engine, call, conversations, *args, **kwargs) -> list:
        if not conversations:
            return []
        with metered(engine) as spent:
            out = call(conversations, *args, **kwargs)
        self.usage[role] = self.usage[role] + spent
        return out

    def count(self, what: str, text: str = "", k: int = 1) -> None:
        self.counts[what] = self.counts.get(what, 0) + k
        if text is not None and k:
            self.malformed.append({"what": what, "text": text[:300]})
            log.warning("gradsum: %s: %r", what, text[:120])

    def state(self) -> dict:
        return {"usage": {r: u.as_dict() for r, u in self.usage.items()}, "counts": dict(self.counts),
                "malformed": self.malformed[-200:]}

    def load(self, state: dict) -> None:
        self.usage = {r: Usage(**state["usage"].get(r, {})) for r in ROLES}
        self.counts = dict(state["counts"])
        self.malformed = list(state["malformed"])


# ---------------------------------------------------------------- the five modules


def generate(engine: Engine, task: Task, prompt: str, examples: list[Example], *, max_tokens: int | None = None,
             tracker: Tracker | None = None) -> list[str]:
    """Module 1: the task model answers each example with the prompt (greedy)."""
    tracker = tracker or Tracker()
    conversations = build_conversations(task, prompt, examples)
    outputs = tracker.chat("generation", engine, conversations, max_tokens=answer_budget(task, max_tokens),
                           desc=f"{task.name} / generate")
    return [o[0] for o in outputs]


@dataclasses.dataclass
class Verdict:
    score: int | None   # 1 pass, 0 fail, None: the judge's output could not be parsed
    reasoning: str      # the judge's text


def parse_verdict(text: str) -> int | None:
    """The last 'Score: 0/1' in the judge's text; a bare '0'/'1' answer also counts. None otherwise."""
    found = _VERDICT.findall(text)
    if found:
        return int(found[-1])
    bare = text.strip().strip(".*").strip()
    return int(bare) if bare in ("0", "1") else None


def judge_outputs(judge: Engine | str, task: Task, examples: list[Example], outputs: list[str], *,
                  criteria: str | None = None, template: str = JUDGE_TEMPLATE, use_expected: bool = True,
                  max_tokens: int = 96, verdict_turn: bool = True,
                  tracker: Tracker | None = None) -> list[Verdict]:
    """Module 2: an LLM judge scores each output 0/1 (temperature 0), keeping its reasoning.

    The judge sees the task description, the criteria and, where the task has answers, the
    expected answer (``use_expected``); for open tasks (MT-Bench) it judges by the criteria only.
    When its text holds no verdict (a small judge, or reasoning cut at ``max_tokens``) and
    ``verdict_turn`` is on, a second turn asks for the score alone and decodes it constrained
    to "0" or "1" (``Engine.choose``: the likelier of the two; our choice, counted as
    ``judge_verdict_turn``). A verdict still missing (a server whose top log-probs hold
    neither) gives ``Verdict(None, text)`` and is counted as ``judge_unparseable``.

    ``judge=EXACT_JUDGE`` ("exact") scores by exact match instead, no model: our option for
    small models, whose judge carries no signal (see :func:`measure_agreement`).
    """
    if len(examples) != len(outputs):
        raise ValueError(f"judge_outputs needs one output per example, got {len(outputs)} for {len(examples)}.")
    if judge == EXACT_JUDGE:
        if not task.has_answers:
            raise ValueError(f"The exact-match judge needs a task with answers; {task.name} has none: "
                             f"give an LLM judge.")
        extracted = [task.extract(out, ex) for out, ex in zip(outputs, examples)]
        return [Verdict(int(got == ex.target), f"Exact match: extracted {got!r}, expected {ex.target!r}.")
                for got, ex in zip(extracted, examples)]
    tracker = tracker or Tracker()
    criteria = criteria or DEFAULT_CRITERIA[task.has_answers]
    conversations = []
    for ex, out in zip(examples, outputs):
        expected = fill(JUDGE_EXPECTED, target=ex.target) if use_expected and task.has_answers else ""
        content = fill(template, task_description=task.description, criteria=criteria, input=ex.input,
                       expected=expected, output=out or "(empty response)")
        conversations.append([{"role": "user", "content": content}])
    texts = [o[0] for o in tracker.chat("judge", judge, conversations, temperature=0.0, max_tokens=max_tokens,
                                        desc=f"{task.name} / judge")]
    scores = [parse_verdict(text) for text in texts]
    missing = [i for i, score in enumerate(scores) if score is None] if verdict_turn else []
    if missing:
        follow_ups = [follow_up(conversations[i], texts[i], VERDICT_TURN) for i in missing]
        answers = tracker.choose("judge", judge, follow_ups, ["0", "1"], desc=f"{task.name} / verdict")
        tracker.count("judge_verdict_turn", None, len(missing))
        for i, answer in zip(missing, answers):
            scores[i] = None if answer is None else int(answer)
            texts[i] = f"{texts[i]}\n[verdict turn, constrained to 0/1] {answer}"
    for score, text in zip(scores, texts):
        if score is None:
            tracker.count("judge_unparseable", text)
    return [Verdict(score, text) for score, text in zip(scores, texts)]


def compute_gradients(engine: Engine, task: Task, prompt: str, failures: list[tuple[Example, str, Verdict]], *,
                      template: str = GRADIENT_TEMPLATE, max_tokens: int = 96,
                      tracker: Tracker | None = None) -> list[str]:
    """Module 3: one natural-language critique of the prompt per failed example.
    Empty critiques are counted and dropped."""
    tracker = tracker or Tracker()
    conversations = []
    for ex, out, verdict in failures:
        expected = fill(GRADIENT_EXPECTED, target=ex.target) if task.has_answers else ""
        content = fill(template, task_description=task.description, prompt=prompt, input=ex.input,
                       output=out or "(empty response)", expected=expected,
                       reasoning=verdict.reasoning or "(no reasoning given)")
        conversations.append([{"role": "user", "content": content}])
    texts = [o[0] for o in tracker.chat("gradient", engine, conversations, max_tokens=max_tokens,
                                        desc=f"{task.name} / gradients")]
    critiques = []
    for text in texts:
        if text.strip():
            critiques.append(text.strip())
        else:
            tracker.count("gradient_empty", text)
    return critiques


def summarize_gradients(engine: Engine, task: Task, prompt: str, critiques: list[str], *,
                        template: str = SUMMARY_TEMPLATE, max_tokens: int = 128,
                        tracker: Tracker | None = None) -> str | None:
    """Module 4: every critique of one prompt condensed into one general paragraph.
    Returns None (counted) when the summary comes back empty."""
    tracker = tracker or Tracker()
    numbered = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(critiques))
    content = fill(template, task_description=task.description, prompt=prompt, critiques=numbered)
    text = tracker.chat("summary", engine, [[{"role": "user", "content": content}]], max_tokens=max_tokens,
                        desc=f"{task.name} / summarize")[0][0].strip()
    if not text:
        tracker.count("summary_empty", text)
        return None
    return text


def fit_slots(candidate: str, prompt: str, reattach: bool = False) -> tuple[str | None, str]:
    """``candidate`` checked for every template slot of ``prompt`` (``{question}``): (candidate,
    'ok') or (None, 'rejected_lost_slot'). With ``reattach`` (the lenient parse), a candidate
    without any slot is taken as new instruction text and put where ``prompt``'s own text was,
    around its slots: after them when the prompt's text follows its slots (``"{question}\\nLet's
    think step by step."`` gives ``"{question}\\n" + candidate``), else before ('slot_reattached')."""
    if template_slots(prompt) <= template_slots(candidate):
        return candidate, "ok"
    if not reattach or template_slots(candidate):
        return None, "rejected_lost_slot"
    slots = list(_SLOT.finditer(prompt))
    first, last = slots[0].start(), slots[-1].end()
    head, tail = prompt[:first], prompt[last:]
    if len(tail.strip()) >= len(head.strip()):
        gap = tail[:len(tail) - len(tail.lstrip())] or "\n"
        return prompt[:last] + gap + candidate, "slot_reattached"
    gap = head[len(head.rstrip()):] or "\n"
    return candidate + gap + prompt[first:], "slot_reattached"


def edit_prompt(engine: Engine, task: Task, prompt: str, feedback: list[str], *, n: int = 2,
                temperature: float = 0.5, template: str = EDIT_TEMPLATE, max_tokens: int = 128, seed: int = 0,
                parse: str = "strict", tracker: Tracker | None = None) -> list[str]:
    """Module 5: new candidate prompts, ``n`` per feedback text (sampled at ``temperature``).

    ``parse``: strict (the paper's) takes the text between ``<prompt>`` and ``</prompt>`` and
    rejects a candidate that lost a template slot of ``prompt``; lenient (our choice for a 135M
    editor, as GPO's) also takes an unclosed marker or the first line of unmarked text, and
    puts the slots back into a candidate that has none (:func:`fit_slots`). Every output that was
    not a clean marked prompt is counted (``editor_<status>``, ``candidates_<fit>``) and logged;
    duplicates and the prompt itself are dropped.
    """
    tracker = tracker or Tracker()
    conversations = [[{"role": "user", "content": fill(template, task_description=task.description, prompt=prompt,
                                                       feedback=f)}] for f in feedback]
    outputs = tracker.chat("editor", engine, conversations, n=n, temperature=temperature, max_tokens=max_tokens,
                           seed=seed, desc=f"{task.name} / edit")
    candidates: list[str] = []
    for texts in outputs:
        for text in texts:
            body, status = marked_text(text, "<prompt>", "</prompt>", parse)
            if status != "ok":
                tracker.count(f"editor_{status}", text)
            if body is None:
                continue
            candidate, fit = fit_slots(body, prompt, reattach=parse == "lenient")
            if fit != "ok":
                tracker.count(f"candidates_{fit}", body)
            if candidate is not None and candidate != prompt and candidate not in candidates:
                candidates.append(candidate)
    return candidates


# ---------------------------------------------------------------- scoring


@dataclasses.dataclass
class Scored:
    """A prompt's outputs on examples, with the judge's verdicts and (where answers exist) exact match."""

    outputs: list[str]
    verdicts: list[Verdict]
    exact: list[bool] | None

    @property
    def judge_score(self) -> float:
        return sum(v.score or 0 for v in self.verdicts) / len(self.verdicts) if self.verdicts else 0.0

    @property
    def exact_score(self) -> float | None:
        return sum(self.exact) / len(self.exact) if self.exact else None

    def agreement(self) -> tuple[int, int]:
        """(verdicts that match exact match, verdicts given) where the task has answers."""
        pairs = [(v.score == 1) == e for v, e in zip(self.verdicts, self.exact or []) if v.score is not None]
        return sum(pairs), len(pairs)


def score_prompt(generator: Engine, judge: Engine | str, task: Task, prompt: str, examples: list[Example], *,
                 criteria: str | None = None, max_tokens: int | None = None, judge_max_tokens: int = 96,
                 judge_template: str = JUDGE_TEMPLATE, tracker: Tracker | None = None) -> Scored:
    """Generation + judge on examples; exact match too where the task has answers."""
    tracker = tracker or Tracker()
    outputs = generate(generator, task, prompt, examples, max_tokens=max_tokens, tracker=tracker)
    verdicts = judge_outputs(judge, task, examples, outputs, criteria=criteria, template=judge_template,
                             max_tokens=judge_max_tokens, tracker=tracker)
    exact = None
    if task.has_answers:
        exact = [task.extract(o, ex) == ex.target for o, ex in zip(outputs, examples)]
    return Scored(outputs, verdicts, exact)


def evaluate_with_judge(generator: Engine, judge: Engine, task: Task, prompt: str, examples: list[Example], *,
                        criteria: str | None = None, max_tokens: int | None = None, judge_max_tokens: int = 96,
                        tracker: Tracker | None = None) -> Evaluation:
    """An ``Evaluation`` scored by the judge (for tasks without answers, e.g. MT-Bench):
    ``accuracy`` is the mean judge score; unparseable verdicts are the format failures."""
    scored = score_prompt(generator, judge, task, prompt, examples, criteria=criteria, max_tokens=max_tokens,
                          judge_max_tokens=judge_max_tokens, tracker=tracker)
    cut = generator.cut_at_budget(scored.outputs, answer_budget(task, max_tokens))
    records = [{"id": ex.id, "input": task.format(ex, prompt), "output": out, "parsed": v.score, "gold": ex.target,
                "correct": v.score == 1, "judge_reasoning": v.reasoning, "truncated": was_cut}
               for ex, out, v, was_cut in zip(examples, scored.outputs, scored.verdicts, cut)]
    summary = {**summarize(records), "scored_by": "judge"}
    if scored.exact is not None:  # exact match of the same answers, beside the judge's verdicts
        for record, exact in zip(records, scored.exact):
            record["exact"] = exact
        summary["exact_accuracy"] = scored.exact_score if records else float("nan")
    return Evaluation(records, summary)


# ---------------------------------------------------------------- beam search


@dataclasses.dataclass
class GradSumRun:
    """What :func:`optimize` returns (and what its checkpoint holds)."""

    config: dict
    beam: list[dict]            # [{"prompt", "score"}], best first
    history: list[dict]         # per iteration: beam scores, candidates and their validation scores
    counts: dict                # malformed outputs and rejections, by kind
    usage: dict                 # per role: Usage
    agreement: dict             # judge vs exact match: {"agree", "n"} over every judged example with answers
    malformed: list[dict]
    completed: int              # iterations done

    @property
    def best_prompt(self) -> str:
        return self.beam[0]["prompt"]

    @property
    def agreement_rate(self) -> float | None:
        return self.agreement["agree"] / self.agreement["n"] if self.agreement["n"] else None

    def beam_scores(self) -> list[list[float]]:
        """Validation scores of the beam, per iteration (iteration 0: the initial prompt)."""
        return [h["beam_scores"] for h in self.history]

    def summary(self) -> dict:
        """JSON-ready facts for metrics.json."""
        return {"best_prompt": self.best_prompt, "beam": self.beam, "beam_scores": self.beam_scores(),
                "agreement_rate": self.agreement_rate, "agreement_n": self.agreement["n"],
                "counts": self.counts, "usage": {r: u.as_dict() for r, u in self.usage.items()},
                "iterations": self.completed}


def _load_checkpoint(path: Path, expected: str) -> dict | None:
    state = read_json_checkpoint(path, {"fingerprint", "completed", "beam", "history", "val_scores", "tracker",
                                        "agreement"})
    if state is not None and state["fingerprint"] != expected:
        raise CheckpointError(
            f"Checkpoint {path} belongs to another configuration (task, prompt, models, sizes or templates "
            f"differ); it was not used. Delete it, or pass another checkpoint path.")
    return state


def _engine_name(engine: Engine | str) -> str:
    if isinstance(engine, str):
        return engine
    return f"{engine.kind}:{engine.model}"


def optimize(task: Task, train: list[Example], val: list[Example], *, initial_prompt: str,
             generator: Engine, judge: Engine | str | None = None, gradient_engine: Engine | None = None,
             editor: Engine | None = None, summarizer: Engine | None = None, criteria: str | None = None,
             beam: int = 3, children: int = 2, iterations: int = 10, minibatch: int = 30, summarize: bool = True,
             editor_temperature: float = 0.5, max_tokens: int | None = None, judge_max_tokens: int = 96,
             gradient_max_tokens: int = 96, summary_max_tokens: int = 128, editor_max_tokens: int = 128,
             max_failures: int | None = None, parse: str = "strict", seed: int = 0,
             checkpoint: str | Path | None = None, templates: dict[str, str] | None = None) -> GradSumRun:
    """GRAD-SUM's beam search.

    Each iteration, for each prompt in the beam: generate on a training minibatch, judge,
    write a critique per failed example (at most ``max_failures``), then either summarize all
    critiques into one paragraph and ask the editor for ``children`` candidates from it
    (``summarize=True``, GRAD-SUM), or send each raw critique to the editor (``summarize=False``,
    the paper's ablation, ProTeGi-style) and keep ``children`` of the resulting candidates (seeded
    draw) so both arms score the same number of candidates. Candidates are scored on ``val`` by
    the judge's mean score; the best ``beam`` prompts of beam + candidates survive.

    ``judge``, ``gradient_engine``, ``summarizer`` and ``editor`` default to ``generator``;
    ``judge=EXACT_JUDGE`` scores by exact match (tasks with answers).
    ``parse``: how the editor's text becomes a candidate, strict or lenient (:func:`edit_prompt`).
    ``templates`` overrides module templates by name: judge, gradient, summary, edit.
    ``checkpoint``: a JSON file written after every iteration; an existing one is resumed (a
    corrupt one, or one from another configuration, raises :class:`CheckpointError`).
    """
    if not initial_prompt or "{question}" not in initial_prompt:
        raise ValueError(f"initial_prompt must be a template holding the slot {{question}}, got {initial_prompt!r}; "
                         f"for example \"{{question}}\\nLet's think step by step.\"")
    if beam < 1 or children < 1 or iterations < 0 or minibatch < 1:
        raise ValueError(f"beam, children and minibatch must be >= 1 and iterations >= 0; got beam={beam}, "
                         f"children={children}, minibatch={minibatch}, iterations={iterations}.")
    if parse not in PARSES:
        raise ValueError(f"Unknown parse mode '{parse}'; expected one of {PARSES}.")
    if not train or not val:
        raise ValueError(f"optimize needs training and validation examples; got {len(train)} and {len(val)}.")
    judge = judge or generator
    gradient_engine = gradient_engine or generator
    summarizer = summarizer or gradient_engine
    editor = editor or generator
    t = {"judge": JUDGE_TEMPLATE, "gradient": GRADIENT_TEMPLATE, "summary": SUMMARY_TEMPLATE, "edit": EDIT_TEMPLATE,
         **(templates or {})}
    unknown = set(t) - {"judge", "gradient", "summary", "edit"}
    if unknown:
        raise ValueError(f"Unknown template name(s) {sorted(unknown)}; expected judge, gradient, summary, edit.")
    criteria = criteria or DEFAULT_CRITERIA[task.has_answers]

    config = dict(task=task.name, initial_prompt=initial_prompt, beam=beam, children=children, minibatch=minibatch,
                  summarize=summarize, editor_temperature=editor_temperature, max_tokens=max_tokens,
                  judge_max_tokens=judge_max_tokens, gradient_max_tokens=gradient_max_tokens,
                  summary_max_tokens=summary_max_tokens, editor_max_tokens=editor_max_tokens,
                  max_failures=max_failures, parse=parse, seed=seed, criteria=criteria,
                  engines={"generation": _engine_name(generator), "judge": _engine_name(judge),
                           "gradient": _engine_name(gradient_engine), "summary": _engine_name(summarizer),
                           "editor": _engine_name(editor)},
                  train=[ex.id for ex in train], val=[ex.id for ex in val], templates=t)
    settings_hash = fingerprint(config)
    config["iterations"] = iterations

    tracker = Tracker()
    agreement = {"agree": 0, "n": 0}
    val_scores: dict[str, float] = {}
    path = Path(checkpoint) if checkpoint else None
    state = _load_checkpoint(path, settings_hash) if path else None

    def score_val(prompt: str) -> float:
        if prompt not in val_scores:
            scored = score_prompt(generator, judge, task, prompt, val, criteria=criteria, max_tokens=max_tokens,
                                  judge_max_tokens=judge_max_tokens, judge_template=t["judge"], tracker=tracker)
            record_agreement(scored)
            val_scores[prompt] = scored.judge_score
        return val_scores[prompt]

    def record_agreement(scored: Scored) -> None:
        if judge != EXACT_JUDGE:
            agree, n = scored.agreement()
            agreement["agree"] += agree
            agreement["n"] += n

    if state is not None:
        tracker.load(state["tracker"])
        agreement.update(state["agreement"])
        val_scores.update(state["val_scores"])
        current = [b["prompt"] for b in state["beam"]]
        history = state["history"]
        start = state["completed"]
        log.info("gradsum: resumed %s from %s after iteration %d", task.name, path, start)
    else:
        current = [initial_prompt]
        history = [{"iteration": 0, "beam": current, "beam_scores": [score_val(initial_prompt)], "candidates": []}]
        start = 0

    def save(completed: int) -> None:
        if path is None:
            return
        write_json_atomic(path, {"fingerprint": settings_hash, "config": config, "completed": completed,
                                  "beam": [{"prompt": p, "score": val_scores[p]} for p in current],
                                  "history": history, "val_scores": val_scores, "tracker": tracker.state(),
                                  "agreement": agreement})

    for iteration in range(start + 1, iterations + 1):
        rng = random.Random(f"{seed}-{task.name}-minibatch-{iteration}")
        batch = rng.sample(train, min(minibatch, len(train)))
        candidates: list[str] = []
        feedback_log = []
        for k, prompt in enumerate(current):
            scored = score_prompt(generator, judge, task, prompt, batch, criteria=criteria, max_tokens=max_tokens,
                                  judge_max_tokens=judge_max_tokens, judge_template=t["judge"], tracker=tracker)
            record_agreement(scored)
            failures = [(ex, out, v) for ex, out, v in zip(batch, scored.outputs, scored.verdicts) if v.score != 1]
            if max_failures is not None:
                failures = failures[:max_failures]
            failed = [{"id": ex.id, "question": ex.input, "output": out, "score": v.score, "reasoning": v.reasoning}
                      for ex, out, v in failures]  # what the judge saw and said, for a reader
            if not failures:
                feedback_log.append({"prompt": prompt, "failures": 0, "failed": [], "feedback": []})
                continue
            critiques = compute_gradients(gradient_engine, task, prompt, failures, template=t["gradient"],
                                          max_tokens=gradient_max_tokens, tracker=tracker)
            if not critiques:
                feedback_log.append({"prompt": prompt, "failures": len(failures), "failed": failed, "critiques": [],
                                     "feedback": [], "edits": []})
                continue
            edit_seed = seed * 1000 + iteration * 10 + k
            if summarize:
                summary = summarize_gradients(summarizer, task, prompt, critiques, template=t["summary"],
                                              max_tokens=summary_max_tokens, tracker=tracker)
                feedback = [summary] if summary else []
                new = edit_prompt(editor, task, prompt, feedback, n=children, temperature=editor_temperature,
                                  template=t["edit"], max_tokens=editor_max_tokens, seed=edit_seed, parse=parse,
                                  tracker=tracker) if feedback else []
            else:
                feedback = critiques
                new = edit_prompt(editor, task, prompt, feedback, n=1, temperature=editor_temperature,
                                  template=t["edit"], max_tokens=editor_max_tokens, seed=edit_seed, parse=parse,
                                  tracker=tracker)
                if len(new) > children:
                    new = random.Random(f"{seed}-{task.name}-pick-{iteration}-{k}").sample(new, children)
            feedback_log.append({"prompt": prompt, "failures": len(failures), "failed": failed,
                                 "critiques": critiques, "feedback": feedback, "edits": new})
            candidates += [c for c in new if c not in candidates and c not in current]
        pool = list(dict.fromkeys(current + candidates))
        scores = {p: score_val(p) for p in pool}
        current = sorted(pool, key=lambda p: -scores[p])[:beam]  # stable: earlier prompts win ties
        history.append({"iteration": iteration, "beam": current, "beam_scores": [scores[p] for p in current],
                        "candidates": [{"prompt": c, "score": scores[c]} for c in candidates],
                        "feedback": feedback_log})
        save(iteration)
        log.info("gradsum: %s iteration %d: best %.3f", task.name, iteration, scores[current[0]])

    if path is not None and start == 0 and iterations == 0:
        save(0)
    return GradSumRun(config=config, beam=[{"prompt": p, "score": val_scores[p]} for p in current],
                      history=history, counts=dict(tracker.counts), usage=dict(tracker.usage),
                      agreement=dict(agreement), malformed=list(tracker.malformed),
                      completed=max(start, iterations))


def baseline_templates(template: str) -> dict[str, str]:
    """What notebook 03 scores on test beside its arms: the initial template, and the question
    alone ("no instruction") where that template adds to it."""
    alone = "{question}"
    return {"initial": template, **({} if template == alone else {"no instruction": alone})}


@dataclasses.dataclass
class GradSum(Method):
    """GRAD-SUM (``summarize=True``) or its no-summarization ablation under the method contract:
    :func:`optimize` with the loop engine generating, ``engines.judge`` judging (exact match
    instead where ``engines.loop_judge`` says so and the task has answers), the optimizer writing
    critiques, summaries and edits; candidates scored on the first ``dev`` dev examples.
    ``initial_prompt`` is a template holding ``{question}``."""

    PER_TASK = ("iterations", "dev", "max_tokens", "initial_prompt", "criteria")

    summarize: bool = True
    initial_prompt: str | dict = "{question}\nLet's think step by step."
    criteria: str | dict | None = None
    beam: int = 3
    children: int = 2
    iterations: int | dict = 10
    minibatch: int = 30
    editor_temperature: float = 0.5
    max_tokens: int | dict | None = None
    judge_max_tokens: int = 96
    gradient_max_tokens: int = 96
    summary_max_tokens: int = 128
    editor_max_tokens: int = 128
    max_failures: int | None = None
    parse: str = "strict"
    seed: int = 0
    dev: int | dict | None = None     # dev examples scoring candidates (None: all)

    @property
    def name(self) -> str:
        return "GRAD-SUM" if self.summarize else "GRAD-SUM (no summarization)"

    def for_task(self, task: Task):
        c = super().for_task(task)
        return dataclasses.replace(c, criteria=c.criteria or None)

    def optimize(self, task: Task, splits, engines, checkpoint_dir: str | Path | None = None) -> Found:
        c = self.for_task(task)
        judge = EXACT_JUDGE if engines.loop_judge == EXACT_JUDGE and task.has_answers else engines.judge
        settings = {k: v for k, v in dataclasses.asdict(c).items() if k != "dev"}
        run = optimize(task, splits.train, c.dev_examples(splits), generator=engines.loop,
                       judge=judge, gradient_engine=engines.optimizer, summarizer=engines.optimizer,
                       editor=engines.optimizer, checkpoint=c.checkpoint(checkpoint_dir, task, splits, engines),
                       **settings)
        trajectory = [{"step": h["iteration"], "prompt": h["beam"][0], "score": h["beam_scores"][0]}
                      for h in run.history]
        return Found(self.name, task.name, run.best_prompt, sum(run.usage.values(), Usage()), trajectory,
                     {"dev_accuracy": run.beam[0]["score"]}, run, c.run_settings(splits))

    def demand(self, task: Task, splits, loop_judge=None) -> dict:
        """Per iteration and beam prompt: a minibatch answered and judged, a critique per failure
        (at most ``max_failures``), a summary and ``children`` edits (the ablation: an edit per
        critique); each child answered and judged on dev; the start too. Every answer failing is
        the most a run can ask, with a second, one-token verdict turn for each judgement (asked only
        where the judge's text holds no verdict)."""
        c = self.for_task(task)
        dev = len(c.dev_examples(splits))
        batch = min(c.minibatch, len(splits.train))
        failures = batch if c.max_failures is None else min(c.max_failures, batch)
        per_prompt = {"answers": batch + c.children * dev, "critiques": failures,
                      "summaries": 1 if c.summarize else 0, "edits": c.children if c.summarize else failures}
        prompts = c.beam * c.iterations
        answers = dev + prompts * per_prompt["answers"]
        budget = answer_budget(task, c.max_tokens)
        judged = not (loop_judge == EXACT_JUDGE and task.has_answers)
        optimizer = (answering(prompts * per_prompt["critiques"], c.gradient_max_tokens)
                     + answering(prompts * per_prompt["summaries"], c.summary_max_tokens)
                     + answering(prompts * per_prompt["edits"], c.editor_max_tokens))
        verdicts = answering(answers, c.judge_max_tokens) + answering(answers, 1)
        return {"loop": answering(answers, budget), "optimizer": optimizer, "judge": verdicts if judged else Demand()}


# ---------------------------------------------------------------- test-split evaluation


def usage_by_role(trackers_and_runs) -> dict[str, dict]:
    """Per-role usage summed over runs (GradSumRun) and trackers, as JSON-ready dicts."""
    total = {role: Usage() for role in ROLES}
    for item in trackers_and_runs:
        usage = item.usage
        for role in ROLES:
            total[role] = total[role] + usage.get(role, Usage())
    return {role: u.as_dict() for role, u in total.items()}


# ---------------------------------------------------------------- notebook helpers



def iteration_tables(run: GradSumRun, width: int = 110) -> list[dict]:
    """Each iteration of a run as a reader follows it, per beam prompt: the failed examples with
    the judge's verdict and reasoning, each critique (the "gradients"), the feedback the editor
    got (the summary, or the raw critiques in the ablation), the editor's candidates; then every
    candidate with its validation score and the beam kept. One dict per iteration."""
    import pandas as pd

    tables = []
    for h in run.history[1:]:
        prompts = []
        for f in h.get("feedback", []):
            prompts.append({"prompt": f["prompt"],
                            "failed": pd.DataFrame([{"question": shorten(x["question"], width),
                                                     "answer": shorten(x["output"], width), "judge": x["score"],
                                                     "reasoning": shorten(x["reasoning"], width)}
                                                    for x in f.get("failed", [])]),
                            "critiques": [shorten(c, width) for c in f.get("critiques", [])],
                            "feedback": [shorten(c, width) for c in f.get("feedback", [])],
                            "edits": [shorten(c, width) for c in f.get("edits", [])]})
        scored = pd.DataFrame([{"candidate": shorten(c["prompt"], width), "validation": c["score"],
                                "kept in beam": c["prompt"] in h["beam"]} for c in h["candidates"]])
        tables.append({"iteration": h["iteration"], "prompts": prompts, "candidates": scored,
                       "beam": list(zip(h["beam"], h["beam_scores"]))})
    return tables


def agreement_table(runs: dict[str, dict[str, GradSumRun]]) -> list[dict]:
    """Judge vs exact match, per task (both arms together) - tasks with answers only."""
    rows = []
    for task, arms in runs.items():
        agree = sum(r.agreement["agree"] for r in arms.values())
        n = sum(r.agreement["n"] for r in arms.values())
        if n:
            rows.append({"task": task, "agreement": agree / n, "n": n,
                         "judge_unparseable": sum(r.counts.get("judge_unparseable", 0) for r in arms.values())})
    return rows


def measure_agreement(generator: Engine, judge: Engine, task: Task, prompt: str, examples: list[Example], *,
                      criteria: str | None = None, max_tokens: int | None = None, judge_max_tokens: int = 96,
                      tracker: Tracker | None = None) -> dict:
    """The LLM judge against exact match on one prompt's outputs, outside any loop (for runs
    whose loop judged by exact match): agreement, and how often each passes an output."""
    if not task.has_answers:
        raise ValueError(f"{task.name} has no answers to agree with.")
    scored = score_prompt(generator, judge, task, prompt, examples, criteria=criteria, max_tokens=max_tokens,
                          judge_max_tokens=judge_max_tokens, tracker=tracker)
    agree, n = scored.agreement()
    passed = sum(v.score == 1 for v in scored.verdicts)
    return {"task": task.name, "agreement": agree / n if n else None, "n": n, "judge_unparseable": len(examples) - n,
            "judge_pass_rate": passed / n if n else None, "exact_rate": scored.exact_score}
