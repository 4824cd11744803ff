"""Benchmarks (speed, not behaviour): ratios from one run on this machine.

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
    """Tokens/s generating the same prompts with transformers one at a time, transformers
    batched and llama.cpp in process one at a time (greedy, no cache, the same thread count).
    Every completion runs to max_tokens on all three; ``completion_tokens`` shows the counts
    the rates are computed from."""
    import torch

    from .llamacpp import LlamaCppEngine

    conversations = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" ({i})"}]
                     for i in range(n_prompts)]
    system = "You are a helpful assistant."
    threads = torch.get_num_threads()
    engines = {
        "transformers_one_at_a_time": lambda: TransformersEngine(model, batch_size=1, system_prompt=system),
        "transformers_batched": lambda: TransformersEngine(model, batch_size=batch_size, system_prompt=system),
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
        config = engine.hf_model.generation_config
        config.min_new_tokens = max_tokens
        try:
            yield
        finally:
            config.min_new_tokens = None
    else:  # llama.cpp: no min_tokens option, so the end-of-sequence token gets a -inf logit bias
        engine.llm.create_chat_completion = functools.partial(
            engine.llm.create_chat_completion, logit_bias={engine.llm.token_eos(): float("-inf")})
        yield


def bench_embedgrad_step(model: str, batch_size: int, steps: int) -> dict:
    """Seconds per training step, EmbedGrad vs PEFT prompt tuning, same SST-2 batches."""
    from .embedgrad import SoftPrompt, TrainConfig, train_peft_prompt_tuning, train_soft_prompt

    engine = TransformersEngine(model, system_prompt="You are a helpful assistant.")
    task = get_task("sst2")
    train = make_splits(task, batch_size * steps, 0, 0, seed=0).train
    config = TrainConfig(steps=steps, batch_size=batch_size, lr=1e-2)
    init = "please reason step by step"
    soft = SoftPrompt(init, engine.tokenizer, engine.hf_model, "after", model)
    ours = train_soft_prompt(soft, engine, task, train, config).seconds_per_step
    _, peft_log = train_peft_prompt_tuning(init, engine, task, train, config, local_model_path(model))
    return {"seconds_per_step": {"embedgrad": round(ours, 3), "peft_prompt_tuning": round(peft_log.seconds_per_step, 3)},
            "embedgrad_over_peft": round(ours / peft_log.seconds_per_step, 3), "batch_size": batch_size,
            "steps": steps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("which", choices=["generate", "embedgrad-step"])
    parser.add_argument("--model", default=EMBEDDED_MODEL)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.which == "generate":
        result = bench_generate(args.model, args.prompts, args.max_tokens, args.batch_size)
    else:
        result = bench_embedgrad_step(args.model, args.batch_size, args.steps)
    for key, value in result.items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
