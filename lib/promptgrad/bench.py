"""Benchmarks (speed, not behaviour): ratios from one run on this machine.

    python -m promptgrad.bench evaluate        # notebook 00's evaluation mix: fast decoder vs batched reference
    python -m promptgrad.bench evaluate --kernels int8 bf16   # and the fast decoder in int8 / bf16, with agreement
    python -m promptgrad.bench generate        # tokens/s: transformers one at a time and batched, llama.cpp
    python -m promptgrad.bench embedgrad-step  # EmbedGrad train step vs PEFT prompt tuning, same batch

Run them on an otherwise idle machine; other processes on the same cores distort both sides.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time

from .engines import TransformersEngine
from .models import EMBEDDED_MODEL, local_model_path
from .tasks import get_task, make_splits

QUESTIONS = ["Name three fruits.", "What is the capital of France?", "Give me a synonym for happy.",
             "Count from one to five.", "What colour is the sky?", "Write a haiku about rain.",
             "What is 12 times 3?", "Describe a cat in one sentence."]


def bench_generate(model: str, n_prompts: int, max_tokens: int, batch_size: int) -> dict:
    """Tokens/s generating the same prompts with transformers' ``generate`` one at a time,
    batched, and llama.cpp in process one at a time (greedy, no cache, the same thread count).
    Every completion runs to max_tokens on all three; ``completion_tokens`` shows the counts
    the rates are computed from."""
    import torch

    from .engines import LlamaCppEngine

    conversations = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" ({i})"}]
                     for i in range(n_prompts)]
    system = "You are a helpful assistant."
    threads = torch.get_num_threads()
    engines = {
        "transformers_one_at_a_time": lambda: TransformersEngine(model, batch_size=1, system_prompt=system,
                                                                 decoder="reference"),
        "transformers_batched": lambda: TransformersEngine(model, batch_size=batch_size, system_prompt=system,
                                                           decoder="reference"),
        "llamacpp_one_at_a_time": lambda: LlamaCppEngine(model, system_prompt=system, n_threads=threads),
    }
    tokens, rates = {}, {}
    for label, make in engines.items():
        engine = make()
        with _full_length(engine, max_tokens):
            start = time.perf_counter()
            engine.chat(conversations, max_tokens=max_tokens)
            seconds = time.perf_counter() - start
        tokens[label] = engine.usage.completion_tokens
        rates[label] = tokens[label] / seconds
    one, batched, llamacpp = rates.values()
    return {"tokens_per_second": {k: round(v, 1) for k, v in rates.items()}, "completion_tokens": tokens,
            "batched_over_one_at_a_time": round(batched / one, 2),
            "llamacpp_over_one_at_a_time": round(llamacpp / one, 2),
            "llamacpp_over_batched": round(llamacpp / batched, 2),
            "prompts": n_prompts, "max_tokens": max_tokens, "batch_size": batch_size, "threads": threads}


@contextlib.contextmanager
def _full_length(engine, max_tokens: int):
    """End of sequence suppressed, so every completion is ``max_tokens`` long (the
    transformers model is shared within the process: its setting is restored after)."""
    if isinstance(engine, TransformersEngine):
        stated = engine.decoding
        engine.decoding = lambda temperature=0.0: {**stated(temperature), "min_new_tokens": max_tokens}
        try:
            yield
        finally:
            del engine.decoding
    else:  # llama.cpp: no min_tokens option, so the end-of-sequence token gets a -inf logit bias
        engine.llm.create_chat_completion = functools.partial(
            engine.llm.create_chat_completion, logit_bias={engine.llm.token_eos(): float("-inf")})
        yield


# Notebook 00's evaluation mix: its prompts, tasks and answer budgets (rows per task scaled down).
MIX_PROMPTS = {"no instruction": "", "step by step": "Let's think step by step.",
               "reason step by step": "please reason step by step"}
MIX_TASKS = {"sst2": None, "bbh/causal_judgement": None, "gsm8k": 192}  # max tokens (None: the kind's default)


def compute_limit(model) -> dict:
    """The compute ceiling of a forward pass: fp32 matmul GFLOP/s measured here, over 2 FLOPs per
    weight a token meets (every matrix but the input embedding, which is a lookup)."""
    import torch

    a, b = torch.randn(1024, 576), torch.randn(576, 1536)
    a @ b
    start, reps = time.perf_counter(), 200
    for _ in range(reps):
        a @ b
    gflops = 2 * 1024 * 576 * 1536 * reps / (time.perf_counter() - start) / 1e9
    weights = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if model.config.tie_word_embeddings:  # the output layer reuses the embedding matrix
        weights += model.get_input_embeddings().weight.numel()
    return {"matmul_gflops": round(gflops, 1), "gflop_per_token": round(2 * weights / 1e9, 3),
            "tokens_per_second_limit": round(gflops / (2 * weights / 1e9))}


KERNELS = ("int8", "bf16")


def with_kernel(model, kernel: str):
    """A copy of ``model`` computing in other kernels: "int8" (torch's dynamic int8 linears,
    weights quantized per output channel, activations per batch) or "bf16" (every weight and
    activation in bfloat16). For measuring only: torch.ao's quantization is deprecated in favour
    of torchao, and the committed results stay in fp32."""
    import copy

    import torch

    if kernel not in KERNELS:
        raise ValueError(f"Unknown kernel '{kernel}'; expected one of {KERNELS}.")
    if kernel == "bf16":
        return copy.deepcopy(model).to(torch.bfloat16)
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


def bench_evaluate(model: str, rows: dict[str, int], kernels: tuple[str, ...] = ()) -> dict:
    """Wall time of notebook 00's evaluation (``score_prompts``: its three prompts on each task,
    greedy, its answer budgets) with the reference decoder (transformers ``generate``, batched by
    length as the engine does) and the fast one, on the same examples; no response cache. Also
    how many answers are identical, and tokens/s (prompt + completion, as the reference counts
    them) against the compute limit. Each of ``kernels`` adds the fast decoder on a copy of the
    model in that kernel (``with_kernel``): its speed, and how many of its answers are the
    reference's, word for word and in verdict (correct or not), and its accuracy."""
    from .evaluation import score_prompts

    system = "You are a helpful assistant."
    engines = {decoder: TransformersEngine(model, batch_size=32, system_prompt=system, decoder=decoder)
               for decoder in ("reference", "fast")}
    for kernel in kernels:
        engines[f"fast_{kernel}"] = TransformersEngine(model, batch_size=32, system_prompt=system)
        engines[f"fast_{kernel}"].hf_model = with_kernel(engines["fast"].hf_model, kernel)
    seconds, tokens, records = {}, {}, {}
    for label, engine in engines.items():
        seconds[label], records[label] = {}, []
        for name, max_tokens in MIX_TASKS.items():
            task = get_task(name)
            examples = make_splits(task, 0, 0, rows[name], seed=0).test
            start = time.perf_counter()
            found = score_prompts(engine, task, MIX_PROMPTS, examples, max_tokens=max_tokens)
            seconds[label][name] = round(time.perf_counter() - start, 1)
            records[label] += [r for ev in found.values() for r in ev.records]
        tokens[label] = engine.usage.prompt_tokens + engine.usage.completion_tokens
    total = {label: round(sum(v.values()), 1) for label, v in seconds.items()}
    limit = compute_limit(engines["fast"].hf_model)
    rates = {d: round(tokens["reference"] / total[d], 1) for d in ("reference", "fast")}

    def same(label: str, field: str) -> str:
        return f"{sum(a[field] == b[field] for a, b in zip(records['reference'], records[label]))}/{len(records[label])}"

    result = {"rows_per_task": rows, "seconds": seconds, "total_seconds": total,
              "fast_over_batched": round(total["reference"] / total["fast"], 2),
              "identical_answers": same("fast", "output"),
              "tokens_per_second": rates, **limit,
              "share_of_limit": {d: round(r / limit["tokens_per_second_limit"], 2) for d, r in rates.items()}}
    for label in (f"fast_{kernel}" for kernel in kernels):
        result[f"{label}_over_batched"] = round(total["reference"] / total[label], 2)
        result[f"{label}_identical_answers"] = same(label, "output")
        result[f"{label}_same_verdicts"] = same(label, "correct")
    if kernels:
        result["accuracy"] = {label: round(sum(r["correct"] for r in found) / len(found), 3)
                              for label, found in records.items()}
    return result


def bench_embedgrad_step(model: str, batch_size: int, steps: int) -> dict:
    """Seconds per training step on the same SST-2 batches: EmbedGrad and PEFT prompt tuning, each
    as trained now (EmbedGrad: the part before the prompt read without gradients; PEFT: logits only
    where a label is) and as before (one pass with gradients through the whole rows; PEFT's own
    loss with logits on every position). ``*_now_over_before`` > 1 means faster now."""
    from .embedgrad import SoftPrompt, TrainConfig, train_peft_prompt_tuning, train_soft_prompt

    engine = TransformersEngine(model, system_prompt="You are a helpful assistant.")
    task = get_task("sst2")
    train = make_splits(task, batch_size * steps, 0, 0, seed=0).train
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-2)
    init = "please reason step by step"
    path = local_model_path(model)
    seconds = {}
    for label, one_pass in (("embedgrad_before", True), ("embedgrad_now", False)):
        soft = SoftPrompt(init, engine.tokenizer, engine.hf_model, "after", model)
        seconds[label] = train_soft_prompt(soft, engine, task, train, config, one_pass=one_pass).seconds_per_step
    for label, peft_loss in (("peft_before", True), ("peft_now", False)):
        seconds[label] = train_peft_prompt_tuning(init, engine, task, train, config, path,
                                                  peft_loss=peft_loss)[1].seconds_per_step
    return {"seconds_per_step": {k: round(v, 3) for k, v in seconds.items()},
            "embedgrad_now_over_before": round(seconds["embedgrad_before"] / seconds["embedgrad_now"], 2),
            "peft_now_over_before": round(seconds["peft_before"] / seconds["peft_now"], 2),
            "embedgrad_over_peft_now": round(seconds["embedgrad_now"] / seconds["peft_now"], 3),
            "batch_size": batch_size, "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["evaluate", "generate", "embedgrad-step"])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, nargs=3, default=[64, 16, 8], metavar=("SST2", "CAUSAL", "GSM8K"),
                        help="evaluate: test rows per task of the mix")
    parser.add_argument("--kernels", nargs="*", default=[], choices=KERNELS,
                        help="evaluate: also the fast decoder in these kernels (numerics change: agreement reported)")
    args = parser.parse_args(argv)
    if args.which == "evaluate":
        result = bench_evaluate(args.model, dict(zip(MIX_TASKS, args.rows)), tuple(args.kernels))
    elif args.which == "generate":
        result = bench_generate(args.model, args.prompts, args.max_tokens, args.batch_size)
    else:
        result = bench_embedgrad_step(args.model, args.batch_size, args.steps)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
