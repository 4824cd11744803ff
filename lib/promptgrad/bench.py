"""Benchmarks (speed, not behaviour): ratios from one run on this machine.

    python -m promptgrad.bench generate        # local engine: one-at-a-time vs batched tokens/s
    python -m promptgrad.bench embedgrad-step  # EmbedGrad train step vs PEFT prompt tuning, same batch

Run them on an otherwise idle machine; other processes on the same cores distort both sides.
"""

from __future__ import annotations

import argparse
import sys
import time

from .engines import TransformersEngine
from .models import EMBEDDED_MODEL, local_model_path
from .tasks import get_task, make_splits

QUESTIONS = ["Name three fruits.", "What is the capital of France?", "Give me a synonym for happy.",
             "Count from one to five.", "What colour is the sky?", "Write a haiku about rain.",
             "What is 12 times 3?", "Describe a cat in one sentence."]


def bench_generate(model: str, n_prompts: int, max_tokens: int, batch_size: int) -> dict:
    """Tokens/s generating the same prompts one at a time and batched (greedy, no cache;
    every completion forced to max_tokens so both sides produce the same token count)."""
    conversations = [[{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)] + f" ({i})"}]
                     for i in range(n_prompts)]
    rates = {}
    for label, size in (("one_at_a_time", 1), ("batched", batch_size)):
        engine = TransformersEngine(model, batch_size=size, system_prompt="You are a helpful assistant.")
        engine.hf_model.generation_config.min_new_tokens = max_tokens
        start = time.perf_counter()
        engine.chat(conversations, max_tokens=max_tokens)
        seconds = time.perf_counter() - start
        engine.hf_model.generation_config.min_new_tokens = None
        rates[label] = engine.usage.completion_tokens / seconds
    return {"tokens_per_second": {k: round(v, 1) for k, v in rates.items()},
            "batched_over_one_at_a_time": round(rates["batched"] / rates["one_at_a_time"], 2),
            "prompts": n_prompts, "max_tokens": max_tokens, "batch_size": batch_size}


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
