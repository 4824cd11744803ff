"""LlamaCppEngine: the embedded GGUF in process."""

import pytest

from promptgrad.engines import Usage
from promptgrad.engines import LlamaCppEngine

CONVS = [[{"role": "user", "content": "What is the capital of France?"}],
         [{"role": "user", "content": "Invent a name for a cat."}]]


@pytest.fixture(scope="module")
def engine():
    return LlamaCppEngine(n_ctx=1024, n_threads=1)


def test_greedy_answers_are_deterministic(engine):
    first = engine.chat(CONVS, max_tokens=12)  # no cache: both calls run the model
    assert all(len(row) == 1 and row[0] for row in first)
    assert engine.chat(CONVS, max_tokens=12) == first


def test_samples_are_distinct_and_usage_is_counted(engine):
    engine.usage = Usage()
    samples = engine.chat(CONVS[1:], n=3, temperature=1.0, max_tokens=12, seed=3)[0]
    assert len(samples) == 3 and len(set(samples)) > 1
    usage = engine.usage
    assert usage.model_calls == 3 and usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 3 * 12


def test_choose_agrees_with_the_transformers_engine(engine, local_engine):
    """The same GGUF, decoding constrained to the options (a logit bias here, the logits there)."""
    convs = [[{"role": "user", "content": q}] for q in (
        "What is the capital of France? Answer with one word.", "Is fire hot? Answer Yes or No.",
        "Is the moon made of cheese? Answer Yes or No.")]  # clear calls: Q4 and fp32 logits agree on them
    engine.usage = Usage()
    for options in (["London", "Paris"], ["Yes", "No"]):
        assert engine.choose(convs, options) == local_engine.choose(convs, options)
    assert engine.choose(convs[:1], ["London", "Paris"]) == ["Paris"]
    assert engine.usage.model_calls == 7 and engine.usage.completion_tokens == 7


def test_missing_gguf_fails_before_loading(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        LlamaCppEngine(str(tmp_path / "no-such-model.gguf"))
