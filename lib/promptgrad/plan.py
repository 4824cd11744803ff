"""Plan before paying: what a profile's notebooks will ask of each model, before anything loads.

    python -m promptgrad.plan --profile paper
    python -m promptgrad.plan --profile paper --only 02 --tokens-per-second 2500

Per notebook and role (``task``: the test answers and the embedding methods' training; ``loop``:
the task model inside the text optimizers; ``optimizer``; ``judge``; ``second``: notebook 04's
transfer model), the model and, at most, the calls it will answer and the tokens they may write:

- the test split answered by every prompt the notebook scores (two turns each where the protocol
  forces the answer format; an LLM judge's verdict on each where the test is judged);
- each method's own demand (``Method.demand``): every candidate answered, every answer failing
  where failures ask for more (GRAD-SUM's critiques), GEPA's overshoot of its budget;
- the training examples of EmbedGrad and PEFT prompt tuning.

Calls and completion tokens are upper bounds: deduplicated candidates, answers that end before
their budget and responses already in the cache all make the real run cheaper. Prompt tokens are
estimated for answering calls only (the questions as formatted, by the embedded model's
tokenizer, a stand-in for each model's own); the prompts of optimizer and judge calls are not
estimated. Dollars use ``PRICES`` for the OpenAI models named there; GPU hours appear only with a
measured ``--tokens-per-second`` (of completion tokens, for your model on your card).

A second table estimates the GPU memory of each model a notebook runs on a GPU (transformers, or a
vLLM server), from its config (``models.memory_estimate``): bf16 weights, the key/value cache of
its largest evaluation batch, the activations of its largest soft-prompt training batch, and the
peak (``memory_table``).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from pathlib import Path

from .compare import head_to_head_methods
from .methods import Demand, answering

# USD per million tokens (input, output): OpenAI's published list prices when this table was
# written (2025-06); check them before relying on a total.
PRICES = {"gpt-3.5-turbo": (0.50, 1.50), "gpt-4o": (2.50, 10.00), "gpt-4o-mini": (0.15, 0.60)}
PRICES_DATE = "2025-06"
PROMPT_MARGIN = 256  # tokens around a question: chat template, system prompt, instruction or soft prompt
ROLE_MODELS = {"task": "MODEL", "loop": "LOOP_MODEL", "optimizer": "OPTIMIZER_MODEL", "judge": "JUDGE_MODEL",
               "second": "SECOND_MODEL"}


@functools.cache
def _tokenizer():
    """The embedded model's tokenizer, a stand-in for each model's own."""
    from transformers import AutoTokenizer

    from .models import EMBEDDED_MODEL, local_model_path

    return AutoTokenizer.from_pretrained(local_model_path(EMBEDDED_MODEL))


@functools.cache
def question_tokens(task_name: str) -> float:
    """Mean tokens of the task's test questions as formatted (up to 200 of them), by the embedded
    model's tokenizer."""
    from .tasks import get_task, make_splits

    task = get_task(task_name)
    rows = make_splits(task, 0, 0, None, seed=0).test[:200]
    return statistics.fmean(len(_tokenizer()(task.format(e), add_special_tokens=False).input_ids) for e in rows)


@functools.cache
def longest_question(task_name: str) -> int | None:
    """Tokens of the task's longest question as formatted, in any of its pools, by the embedded
    model's tokenizer; None where its data is not here."""
    from .tasks import DataNotFoundError, get_task

    task = get_task(task_name)
    try:
        questions = [task.format(e) for pool in task.pools().values() for e in pool]
    except DataNotFoundError:
        return None
    return max(map(len, _tokenizer()(questions, add_special_tokens=False).input_ids))


def _scoring(task, rows: int, prompts: int, params: dict, protocol: str = "direct",
             judged: bool = False) -> dict[str, Demand]:
    """Every prompt answering the test rows once (twice when forced), judged where ``judged``
    (a judged answer is one turn)."""
    from .evaluation import FORCED_MAX_TOKENS, answer_budget
    from .tasks import per_task

    budget = answer_budget(task, per_task(params.get("MAX_TOKENS"), task, default=None))
    calls = rows * prompts
    out = {"task": answering(calls, budget)}
    if protocol == "forced" and not judged:
        out["task"] = out["task"] + answering(calls, params.get("FORCED_MAX_TOKENS", FORCED_MAX_TOKENS))
    if judged:
        out["judge"] = answering(calls, params.get("JUDGE_MAX_TOKENS", 96))
    return out


def _embedding(params: dict, **extra) -> list:
    from . import EmbedGrad

    settings = dict(steps=params["STEPS"], batch_size=params["BATCH_SIZE"], learning_rates=params["LEARNING_RATES"],
                    sweep_steps=params["SWEEP_STEPS"], max_tokens=params["MAX_TOKENS"], **extra)
    return [EmbedGrad(**settings), EmbedGrad(peft=True, **settings)]


def _gpo(params: dict) -> list:
    from . import GPO

    return [GPO(strategy=strategy, steps=params["STEPS"], epochs=params["EPOCHS"], batch=params["BATCH"],
                candidates=params["CANDIDATES"], protocol=params["PROTOCOL"], max_tokens=params["MAX_TOKENS"],
                forced_max_tokens=params["FORCED_MAX_TOKENS"], optimizer_max_tokens=params["OPTIMIZER_MAX_TOKENS"])
            for strategy in params["METHODS"]]


def _gradsum(params: dict) -> list:
    from . import GradSum

    settings = dict(initial_prompt=params["INITIAL_PROMPT"], beam=params["BEAM"], children=params["CHILDREN"],
                    iterations=params["ITERATIONS"], minibatch=params["MINIBATCH"], max_tokens=params["MAX_TOKENS"],
                    judge_max_tokens=params["JUDGE_MAX_TOKENS"], gradient_max_tokens=params["GRADIENT_MAX_TOKENS"],
                    summary_max_tokens=params["SUMMARY_MAX_TOKENS"], editor_max_tokens=params["EDITOR_MAX_TOKENS"],
                    max_failures=params["MAX_FAILURES"])
    return [GradSum(**settings), GradSum(summarize=False, **settings)]


def _task_demand(stem: str, params: dict, task, splits) -> dict[str, Demand]:
    """What one notebook asks for one task: its methods' demand and the test split's answers."""
    rows, total = len(splits.test), {}
    if stem.startswith("00"):
        methods, scored, protocol, judged = [], len(params["PROMPTS"]), "direct", False
    elif stem.startswith("01"):  # the text prompt and both methods; both again under each further seed
        from .tasks import per_task

        seeds = [s for s in per_task(params.get("TRAIN_SEEDS") or {}, task, default=[]) if s != params.get("SEED", 0)]
        methods, protocol, judged = _embedding(params), "direct", False
        methods, scored = methods * (1 + len(seeds)), 1 + len(methods) * (1 + len(seeds))
    elif stem.startswith("02"):  # the initial prompt, no instruction and each method's
        methods, scored, protocol, judged = _gpo(params), 2 + len(params["METHODS"]), params["PROTOCOL"], False
    elif stem.startswith("03"):  # both arms and the templates scored beside them
        from .gradsum import baseline_templates

        judged = params.get("TEST_SCORED_BY") == "judge" or not task.has_answers
        methods, protocol = _gradsum(params), params["PROTOCOL"]
        scored = len(methods) + len(baseline_templates(methods[0].for_task(task).initial_prompt))
    else:  # 04: three baselines, every method, the hybrid (EmbedGrad once more, from GPO's prompt), transfer
        chosen = head_to_head_methods(params)
        hybrid = task.name in (params.get("HYBRID_TASKS") or [])
        methods = list(chosen.values()) + ([chosen["EmbedGrad"]] if hybrid else [])
        scored, protocol, judged = 3 + len(methods), params["PROTOCOL"], False
        if params.get("SECOND_MODEL"):
            text = [m for m in params["METHODS"] if m not in ("EmbedGrad", "PEFT prompt tuning")]
            total["second"] = _scoring(task, rows, 3 + len(text), params, protocol)["task"]
    for demand in [m.demand(task, splits, params.get("LOOP_JUDGE")) for m in methods] + \
            [_scoring(task, rows, scored, params, protocol, judged)]:
        for role, d in demand.items():
            total[role] = total.get(role, Demand()) + d
    return total


def _add(total: dict, task_name: str, demands: dict[str, Demand]) -> None:
    for role, demand in demands.items():
        if demand.calls or demand.train_examples:
            total.setdefault(role, {})[task_name] = total.get(role, {}).get(task_name, Demand()) + demand


def notebook_demand(stem: str, params: dict, missing: list[str]) -> dict[str, dict[str, Demand]]:
    """role -> task -> Demand for one notebook with resolved parameters; tasks whose data is not
    here are added to ``missing``."""
    from .checks import SIZE_NAMES, size_parameters
    from .tasks import DataNotFoundError, get_task, make_splits, per_task

    def splits_of(task, sizes):
        return make_splits(task, seed=params.get("SEED", 0),
                           **{arg: per_task(v, task, SIZE_NAMES[arg][0]) for arg, v in sizes.items()})

    total: dict[str, dict[str, Demand]] = {}
    for name in params["TASKS"]:
        task = get_task(name)
        try:
            splits = splits_of(task, size_parameters(params))
        except DataNotFoundError:
            missing.append(f"{stem}: {name}")
            continue
        _add(total, name, _task_demand(stem, params, task, splits))
    if stem.startswith("00"):  # the prompt-sensitivity probe, on dev rows
        for name in params["PROBE_TASKS"]:
            task = get_task(name)
            dev = splits_of(task, {"n_train": 0, "n_dev": params["PROBE_N"], "n_test": 0}).dev
            _add(total, name, _scoring(task, len(dev), len(params["PROBE_PROMPTS"]), params))
    if stem.startswith("01"):  # each model size and scale task: EmbedGrad trained and scored beside its text
        for name in params.get("SCALE_TASKS") or []:
            task = get_task(name)
            splits = splits_of(task, size_parameters(params))
            trained = _embedding(params)[0].demand(task, splits)["task"]
            scored = _scoring(task, len(splits.test), 2, params)["task"]
            _add(total, name, {f"scale: {model}": trained + scored for model in params.get("SCALE_MODELS") or []})
    return total


def model_of(params: dict, role: str):
    """The model spec answering ``role`` (the notebooks' fallbacks: loop -> MODEL, optimizer ->
    LOOP_MODEL, judge -> OPTIMIZER_MODEL)."""
    chain = {"task": ["MODEL"], "loop": ["LOOP_MODEL", "MODEL"],
             "optimizer": ["OPTIMIZER_MODEL", "LOOP_MODEL", "MODEL"],
             "judge": ["JUDGE_MODEL", "OPTIMIZER_MODEL", "LOOP_MODEL", "MODEL"], "second": ["SECOND_MODEL"]}
    if role.startswith("scale: "):
        return role.removeprefix("scale: ")
    return next((params[k] for k in chain[role] if params.get(k)), None)


def _label(spec) -> str:
    if isinstance(spec, dict):
        return f"{spec.get('kind', 'transformers')}:{spec.get('model', '')}"
    return str(spec)


def _openai_model(spec) -> str | None:
    if isinstance(spec, str) and spec.startswith("openai:"):
        return spec.removeprefix("openai:")
    if isinstance(spec, dict) and spec.get("kind") == "openai" and not spec.get("base_url"):
        return spec.get("model")
    return None


def table(stem: str, params: dict, missing: list[str], tokens_per_second: float | None = None) -> list[dict]:
    """One row per role: model, calls, completion tokens (at most), prompt tokens of answering calls
    (estimated), training examples, and dollars or GPU hours where they can be told."""
    rows = []
    for role, by_task in notebook_demand(stem, params, missing).items():
        spec = model_of(params, role)
        total = sum(by_task.values(), Demand())
        answering_role = role in ("task", "loop", "second") or role.startswith("scale: ")
        prompt = round(sum(d.calls * question_tokens(t) for t, d in by_task.items())) if answering_role else None
        row = {"notebook": stem, "role": role, "model": _label(spec), "calls": total.calls,
               "completion_tokens_max": total.completion_tokens, "prompt_tokens_est": prompt,
               "train_examples": total.train_examples}
        api = _openai_model(spec)
        if api in PRICES:
            price_in, price_out = PRICES[api]
            row["usd_max"] = round((prompt or 0) / 1e6 * price_in + total.completion_tokens / 1e6 * price_out, 2)
        elif tokens_per_second and not api:
            row["gpu_hours_max"] = round(total.completion_tokens / tokens_per_second / 3600, 2)
        rows.append(row)
    return rows


def _gpu_model(spec) -> str | None:
    """The model a spec runs on a GPU of the user's: the hub id or folder transformers loads, or the
    hub id a server on this machine answers as (``base_url`` on localhost: vLLM, as 02's paper
    profile); None for the OpenAI API, llama.cpp, a server elsewhere (a hosted provider's card is
    not the user's) and servers that name their models otherwise (Ollama's "qwen2.5:7b-instruct")."""
    from urllib.parse import urlparse

    from .models import EMBEDDED_MODEL

    if isinstance(spec, dict):
        kind, model = spec.get("kind", "transformers"), spec.get("model")
        if kind == "transformers":
            return model or EMBEDDED_MODEL
        local = urlparse(spec.get("base_url") or "").hostname in ("localhost", "127.0.0.1", "::1", "0.0.0.0")
        return model if kind == "openai" and local and "/" in (model or "") else None
    return spec if isinstance(spec, str) and not spec.startswith("openai:") else None


def _local_models(stem: str, params: dict) -> dict[str, tuple[list[str], list[str], bool, int | None]]:
    """Hub id or folder -> (the tasks it answers, the tasks it trains soft prompts on, whether it is
    one of SCALE_MODELS: loaded one at a time, on SCALE_TASKS only; for a served model the requests
    in flight, its engine's ``concurrency``, else None) for every model the notebook runs on a GPU of
    the user's (``_gpu_model``)."""
    import inspect

    from .embedgrad import METHOD_NAMES
    from .engines import OpenAIEngine

    in_flight = inspect.signature(OpenAIEngine).parameters["concurrency"].default
    answers = list(params["TASKS"]) + list(params.get("PROBE_TASKS") or [])
    soft = {METHOD_NAMES["embedgrad"], METHOD_NAMES["peft"]}
    trains = stem.startswith("01") or (stem.startswith("04") and bool(soft & set(params["METHODS"])))
    models = {}
    for role in ROLE_MODELS:
        spec = model_of(params, role)
        name = _gpu_model(spec)
        if name and name not in models:
            served = spec.get("concurrency", in_flight) if isinstance(spec, dict) and spec.get("base_url") else None
            models[name] = (answers, list(params["TASKS"]) if role == "task" and trains else [], False, served)
    for name in params.get("SCALE_MODELS") or []:
        models.setdefault(name, (list(params["SCALE_TASKS"]), list(params["SCALE_TASKS"]), True, None))
    return models


def _answer_tokens(task, params: dict) -> int:
    """A task's longest answer: its budget, and the forced turn's after it under the forced protocol."""
    from .evaluation import FORCED_MAX_TOKENS, answer_budget
    from .tasks import per_task

    budget = answer_budget(task, per_task(params.get("MAX_TOKENS"), task, default=None))
    return budget + (params.get("FORCED_MAX_TOKENS", FORCED_MAX_TOKENS) if params.get("PROTOCOL") == "forced" else 0)


def _target_tokens(task, params: dict) -> int:
    """A training target's tokens, EOS included: GSM8K's rationale cut at ``max_target_tokens``,
    elsewhere at most the answer budget."""
    from .embedgrad import TrainConfig

    cap = TrainConfig.max_target_tokens
    return 1 + (cap if task.kind == "number" else min(_answer_tokens(task, params), cap))


def kv_cache_bytes(size: dict, tokens: int) -> int:
    """Keys and values of every layer for ``tokens`` tokens, bf16 (``size``: ``models.memory_estimate``)."""
    return 2 * size["layers"] * size["kv_width"] * tokens * 2


def activation_bytes(size: dict, tokens: int, target_tokens: int, checkpointing: bool) -> int:
    """What training a soft prompt keeps for the backward pass, bf16: per layer and token 8
    hidden-size vectors (the two norms' fp32 copies and outputs; queries, keys and values repeated
    to every head, and the attention output) and 3 intermediate-size ones (the MLP's gate, activation
    and up; the weights are frozen, so no linear layer keeps its input), as counted by autograd's
    saved tensors of a small Qwen2 on CPU; with checkpointing only each layer's input, and one layer
    recomputed. Plus the logits of the target tokens: bf16, then fp32 twice (the copy and the
    log-softmax)."""
    layer = 2 * tokens * (8 * size["hidden"] + 3 * size["intermediate"])
    kept = size["layers"] * 2 * tokens * size["hidden"] + layer if checkpointing else size["layers"] * layer
    return kept + 10 * target_tokens * size["vocab"]


def memory_table(stem: str, params: dict, notes: list[str]) -> list[dict]:
    """One row per model the notebook runs on a GPU (``_local_models``): GiB of bf16 weights, of the
    key/value cache of its largest evaluation batch (a served model's: its requests in flight), of
    the activations of its largest training batch (where it trains soft prompts) and the peak; estimated from the configs. What it cannot tell, and what
    its models need together, go to ``notes``."""
    from .models import memory_estimate
    from .tasks import get_task, per_task

    checkpointing = bool(params.get("GRADIENT_CHECKPOINTING"))
    eval_rows = params.get("EVAL_BATCH_SIZE") or params["BATCH_SIZE"]
    train_rows = functools.partial(per_task, params["BATCH_SIZE"], name="BATCH_SIZE")
    answer, target = (functools.partial(f, params=params) for f in (_answer_tokens, _target_tokens))

    def batches(task_names, after_prompt):
        """(task, tokens per row) of each task whose data is here."""
        for task in map(get_task, task_names):
            if longest_question(task.name) is not None:
                yield task, longest_question(task.name) + PROMPT_MARGIN + after_prompt(task)

    rows, together, served = [], [], []  # together: (one of SCALE_MODELS, weights, peak) on the notebook's card
    for name, (answers, trains, one_at_a_time, in_flight) in _local_models(stem, params).items():
        if in_flight is not None:
            served.append(name)
        try:
            size = memory_estimate(name, "bfloat16")
        except Exception as err:  # noqa: BLE001 - no config to read: say so and go on
            notes.append(f"{stem}: {name} left out, its config cannot be read here ({type(err).__name__})")
            continue
        batch = in_flight or eval_rows
        kv, eval_batch = max(((kv_cache_bytes(size, batch * n), f"{batch} x {n:,}")
                              for _, n in batches(answers, answer)), default=(0, "-"))
        train, train_batch = max(((activation_bytes(size, train_rows(t) * n, train_rows(t) * target(t), checkpointing),
                                   f"{train_rows(t)} x {n:,}") for t, n in batches(trains, target)), default=(0, "-"))
        peak = size["gib"] + max(kv, train) / 2**30
        rows.append({"notebook": stem, "model": name,
                     "config": f"published {size['published']}" if size["published"] else "its own",
                     "weights_gib": size["gib"], "eval_batch": eval_batch, "kv_cache_gib": kv / 2**30,
                     "train_batch": train_batch, "checkpointing": ("yes" if checkpointing else "no") if trains else "-",
                     "train_activations_gib": train / 2**30 if trains else None, "peak_gib": peak})
        if in_flight is None:  # a served model sits on its server's card
            together.append((one_at_a_time, size["gib"], peak))
    elsewhere: dict[str, set] = {}  # how it runs -> models
    for spec in map(functools.partial(model_of, params), ROLE_MODELS):
        if spec and not _gpu_model(spec):
            llamacpp = isinstance(spec, dict) and spec.get("kind") == "llamacpp"
            served_elsewhere = isinstance(spec, dict) and spec.get("base_url")
            how = "run by llama.cpp" if llamacpp else "served at its base_url" if served_elsewhere else \
                "answered by the OpenAI API"
            elsewhere.setdefault(how, set()).add(_label(spec).rstrip(":"))
    notes += [f"{stem}: {', '.join(sorted(names))} left out, {how}: no GPU here" for how, names in elsewhere.items()]
    notes += [f"{stem}: {name} is served at its base_url: its row is for the serving card, with the engine's "
              f"requests in flight (concurrency) as its batch; vLLM takes 90% of a card by default "
              f"(--gpu-memory-utilization) and fills what its weights leave with its cache"
              for name in sorted(served)]
    if len(together) > 1:  # every model stays loaded but SCALE_MODELS, released one at a time
        need = sum(gib for one, gib, _ in together if not one) + \
            max(peak - (0 if one else gib) for one, gib, peak in together)
        notes.append(f"{stem}: about {need:,.1f} GiB at most on one card, its models loaded together"
                     + (" (SCALE_MODELS one at a time)" if any(one for one, _, _ in together) else ""))
    return rows


def memory_notes() -> list[str]:
    """What the GPU memory table counts, and with which numbers."""
    from .embedgrad import TrainConfig

    return [
        "Estimates from each model's config (`models.memory_estimate`: its own, or the published copy in "
        "`models.PUBLISHED_CONFIGS` where its own cannot load), all in bf16; not measured on a card.",
        f"Batches (rows x tokens): the notebook's task batch that takes the most; a row's tokens are its task's "
        f"longest question as formatted (any pool; the embedded model's tokenizer, a stand-in for each model's "
        f"own) + {PROMPT_MARGIN} (chat template, system prompt, instruction), then the answer budget (MAX_TOKENS "
        f"or the answer kind's; under the forced protocol + FORCED_MAX_TOKENS) or the training target (GSM8K's "
        f"rationale: {TrainConfig.max_target_tokens} + EOS; other tasks: their answer budget + EOS).",
        "KV cache: keys and values of every layer for one evaluation batch (EVAL_BATCH_SIZE, else BATCH_SIZE).",
        "Training activations (EmbedGrad and PEFT prompt tuning, BATCH_SIZE per task): per layer and token 8 "
        "hidden-size and 3 intermediate-size vectors (the model frozen); with GRADIENT_CHECKPOINTING each layer's "
        "input and one layer recomputed; plus the target tokens' logits (bf16 and twice fp32). Whole rows are "
        "counted, though EmbedGrad without checkpointing reads the part before its prompt without gradients.",
        "Peak: weights + the larger of KV cache and training activations. Not counted: the CUDA context, the "
        "allocator's slack, the prefill's transient per-layer buffers.",
    ]


def _memory_markdown(memory: list[dict]) -> str:
    import pandas as pd

    if not memory:
        return "No model runs on a GPU here."
    frame = pd.DataFrame(memory)
    for column in [c for c in frame.columns if c.endswith("_gib")]:
        frame[column] = [f"{v:,.1f}" if v is not None and v == v else "-" for v in frame[column]]
    return frame.to_markdown(index=False, colalign=["left"] * 3 + ["right"] * (len(frame.columns) - 3),
                             disable_numparse=True)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from .runner import PROFILES, ROOT, declared_defaults, default_results, parse_value, resolve_parameters, \
        select_notebooks

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="paper", choices=PROFILES)
    parser.add_argument("--only", nargs="*", default=None, help="notebook stems or their number prefixes")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    parser.add_argument("--out", type=Path, default=None, help="also write the table and notes to this file")
    parser.add_argument("--tokens-per-second", type=float, default=None,
                        help="your measured completion tokens per second on a local model: GPU hours from it")
    args = parser.parse_args(argv)
    overrides = {name: parse_value(value) for name, value in args.parameter}
    notebooks = ROOT / "notebooks"
    paths = select_notebooks(notebooks, args.only)
    rows, missing, memory, notes = [], [], [], []
    for path in paths:
        params = {**declared_defaults(path), **resolve_parameters(path, args.profile, default_results(args.profile),
                                                                   overrides, notebooks / "profiles")}
        rows += table(path.stem, params, missing, args.tokens_per_second)
        memory += memory_table(path.stem, params, notes)
    frame = pd.DataFrame(rows)
    shown = frame.copy()
    for column in shown.columns[3:]:  # counts with thousands separators; "-" where a figure cannot be told
        digits = 2 if column in ("usd_max", "gpu_hours_max") else 0
        shown[column] = [f"{v:,.{digits}f}" if v is not None and v == v else "-" for v in frame[column]]
    lines = [shown.to_markdown(index=False, colalign=["left"] * 3 + ["right"] * (len(shown.columns) - 3)), ""]
    lines += [f"- not counted: {name} (its data is not here; it loads from the Hugging Face hub)" for name in missing]
    if "usd_max" in frame:
        lines.append(f"- API dollars at most about ${frame['usd_max'].sum():,.2f} at {PRICES_DATE} list prices, output "
                     f"at each call's full budget; optimizer and judge prompts are not counted in them.")
    lines += ["", "## GPU memory: GiB per notebook and model, estimated from the configs (not measured on a card)",
              "", _memory_markdown(memory), ""]
    lines += [f"- {note}" for note in memory_notes() + notes]
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        header = f"# `python -m promptgrad.plan --profile {args.profile}`: at most, per notebook and role\n\n"
        args.out.write_text(header + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
