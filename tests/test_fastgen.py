"""The fast decoder against the reference (transformers ``generate``): same greedy answers on a
fixed set of prompts of every answer kind and several lengths, text and soft prompts, same usage,
same cache."""

import dataclasses

import pytest

from promptgrad import ResponseCache, TransformersEngine, get_task, make_splits
from promptgrad.evaluation import build_conversations
from promptgrad.fastgen import prefix_groups

SYSTEM = "You are a helpful assistant."
PROMPTS = ["", "Let's think step by step.", "please reason step by step", "Answer briefly.\n{question}"]
# answer kind -> task, rows, answer budget: sentiment, yes/no, number, option letter, free text,
# short (SST-2, ~70 tokens) to long (causal judgement, ~600) prompts
MIX = [("sst2", 6, 24), ("bbh/causal_judgement", 3, 48), ("gsm8k", 2, 64), ("bbh/date_understanding", 3, 32),
       ("bbh/word_sorting", 2, 32)]


@pytest.fixture(scope="module")
def engines():
    return {d: TransformersEngine(batch_size=8, system_prompt=SYSTEM, decoder=d) for d in ("reference", "fast")}


def _conversations():
    conversations = []
    for name, n, _ in MIX:
        task = get_task(name)
        examples = make_splits(task, 0, 0, n, seed=3).test
        conversations.append([c for p in PROMPTS for c in build_conversations(task, p, examples)])
    return conversations


def test_fast_and_reference_give_identical_greedy_answers(engines, data_dir):
    for conversations, (name, _, max_tokens) in zip(_conversations(), MIX):
        reference = engines["reference"].chat(conversations, max_tokens=max_tokens)
        fast = engines["fast"].chat(conversations + conversations[:1], max_tokens=max_tokens)  # and a duplicate
        assert fast[:-1] == reference, name
        assert fast[-1] == reference[0]


def test_usage_and_cache_are_the_same_on_the_fast_path(engines, data_dir, tmp_path):
    conversations = _conversations()[0]
    spent = {}
    for decoder in ("reference", "fast"):
        engine = TransformersEngine(batch_size=8, system_prompt=SYSTEM, decoder=decoder,
                                    cache=ResponseCache(tmp_path / f"{decoder}.sqlite"))
        engine.chat(conversations, max_tokens=24)
        spent[decoder] = engine.usage
        engine.chat(conversations, max_tokens=24)
        assert engine.usage.model_calls == len(conversations) and engine.usage.cache_hits == len(conversations)
    assert spent["fast"].prompt_tokens == spent["reference"].prompt_tokens
    assert spent["fast"].completion_tokens == spent["reference"].completion_tokens


def test_sampling_and_choose_keep_the_reference_path(engines, data_dir, monkeypatch):
    from promptgrad import fastgen

    def refuse(*args, **kwargs):
        raise AssertionError("the fast decoder was used")

    fast = engines["fast"]
    monkeypatch.setattr(fastgen, "greedy", refuse)
    conversation = [{"role": "user", "content": "Is the sky blue? Answer yes or no."}]
    assert fast.chat([conversation], max_tokens=4, temperature=0.7, n=2)  # sampling: the reference path
    assert fast.choose([conversation], ["yes", "no"]) == engines["reference"].choose([conversation], ["yes", "no"])
    with pytest.raises(AssertionError, match="fast decoder was used"):
        fast.chat([conversation], max_tokens=4)  # greedy text: the fast path


@pytest.mark.parametrize("placement", ["after", "before", "prefix"])
def test_soft_prompts_get_the_reference_answers_on_the_fast_path(engines, data_dir, placement, monkeypatch):
    """A soft prompt moved off its tokens (as training moves it), every placement, short and
    long prompts: the fast decoder splices the vectors in as the reference does, and counts the
    same prompt and completion tokens."""
    import torch

    from promptgrad import evaluate_prompt, fastgen
    from promptgrad.embedgrad import SoftPrompt

    calls = []
    greedy = fastgen.greedy
    monkeypatch.setattr(fastgen, "greedy", lambda *a, **k: calls.append(k["soft"]) or greedy(*a, **k))
    fast, reference = engines["fast"], engines["reference"]
    before = {e.decoder: dataclasses.replace(e.usage) for e in (fast, reference)}
    soft = SoftPrompt("please reason step by step", fast.tokenizer, fast.hf_model, placement)
    with torch.no_grad():
        soft.embeddings += 0.02 * torch.randn(soft.embeddings.shape, generator=torch.Generator().manual_seed(1))
    for name, n, max_tokens in MIX[:3]:
        task = get_task(name)
        examples = make_splits(task, 0, 0, n, seed=3).test
        answers = {engine.decoder: [r["output"] for r in evaluate_prompt(engine, task, soft, examples,
                                                                          max_tokens=max_tokens).records]
                   for engine in (reference, fast)}
        assert answers["fast"] == answers["reference"], name
        assert len(set(answers["fast"])) > 1 or n == 1  # not one empty answer for all
    assert len(calls) == len(MIX[:3]) and all(soft is not None for soft in calls)  # the fast decoder ran
    spent = {e.decoder: e.usage - before[e.decoder] for e in (fast, reference)}
    assert spent["fast"].prompt_tokens == spent["reference"].prompt_tokens
    assert spent["fast"].completion_tokens == spent["reference"].completion_tokens


def test_small_limits_split_waves_and_batches_and_keep_the_answers(engines, data_dir):
    """Many waves of prefixes, many decoding batches, rows dropped as they finish: still the
    reference's answers."""
    conversations = _conversations()[0][:12]
    reference = engines["reference"].chat(conversations, max_tokens=24)
    small = TransformersEngine(batch_size=8, system_prompt=SYSTEM, fast_limits={"max_rows": 3, "max_tokens": 400,
                                                                               "wave_tokens": 100})
    assert small.chat(conversations, max_tokens=24) == reference


def test_rows_that_share_most_of_their_tokens_are_grouped():
    header, q1, q2 = [1, 2, 3], list(range(10, 40)), list(range(50, 80))
    rows = [header + q1 + [7], header + q1 + [8, 9], header + q2 + [7], header + q1 + [7]]
    groups = sorted((length, sorted(members)) for length, members in prefix_groups(rows))
    assert groups == [(33, [0, 1, 3]), (33, [2])]  # the header alone is not enough to share
    assert all(length < min(len(rows[i]) for i in members) for length, members in groups)


def test_other_kernels_are_copies_and_the_names_are_checked(engines):
    """The bench's int8 / bf16 variants leave the engines' fp32 model as it was."""
    import torch

    from promptgrad.bench import with_kernel

    model = engines["fast"].hf_model
    before = model.lm_head.weight.clone()
    int8, bf16 = with_kernel(model, "int8"), with_kernel(model, "bf16")
    assert not isinstance(int8.lm_head, torch.nn.Linear) and isinstance(model.lm_head, torch.nn.Linear)
    assert bf16.lm_head.weight.dtype == torch.bfloat16 and model.lm_head.weight.dtype == torch.float32
    assert torch.equal(model.lm_head.weight, before)
    with pytest.raises(ValueError, match="Unknown kernel 'fp8'"):
        with_kernel(model, "fp8")
