import sqlite3

import pytest

from promptgrad import ResponseCache, make_engine
from promptgrad.engines import OpenAIEngine, length_batches
from promptgrad.models import check_model_name

from fakes import ScriptedEngine

CONV = [{"role": "user", "content": "Is 2 even?"}]


def test_second_identical_call_makes_no_model_call(tmp_path):
    engine = ScriptedEngine(lambda c, i: f"yes {i}", cache=ResponseCache(tmp_path / "c.sqlite"))
    first = engine.chat([CONV, CONV], n=2, temperature=1.0)
    assert engine.usage.model_calls == 4
    again = ScriptedEngine(lambda c, i: "different", cache=ResponseCache(tmp_path / "c.sqlite"))
    assert again.chat([CONV, CONV], n=2, temperature=1.0) == first == [["yes 0", "yes 1"]] * 2
    assert again.usage.model_calls == 0 and again.usage.cache_hits == 4 and again.sent == []


def test_cache_keys_separate_parameters_and_samples(tmp_path):
    engine = ScriptedEngine(lambda c, i: f"s{i}", cache=ResponseCache(tmp_path / "c.sqlite"))
    engine.chat([CONV], n=1, temperature=0.0)
    engine.chat([CONV], n=1, temperature=0.0, max_tokens=7)   # other max_tokens: a miss
    engine.chat([CONV], n=3, temperature=1.0)                 # samples 1 and 2 are new: a miss
    engine.chat([CONV], n=3, temperature=1.0, seed=5)         # another seed: a miss
    assert engine.usage.model_calls == 1 + 1 + 3 + 3


def test_cache_off_always_calls():
    engine = ScriptedEngine(lambda c, i: "x", cache=ResponseCache(None))
    engine.chat([CONV])
    engine.chat([CONV])
    assert engine.usage.model_calls == 2


def test_corrupt_cache_is_moved_aside_not_used(tmp_path, caplog):
    path = tmp_path / "c.sqlite"
    ScriptedEngine(lambda c, i: "x", cache=ResponseCache(path)).chat([CONV])
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\x00garbage" * 200)  # truncated / overwritten
    cache = ResponseCache(path)
    assert (tmp_path / "c.sqlite.corrupt").exists()
    assert "corrupt" in caplog.text
    assert len(cache) == 0
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"


def test_system_prompt_is_part_of_the_conversation(tmp_path):
    engine = ScriptedEngine(lambda c, i: c[0]["content"])
    engine.system_prompt = "Be brief."
    assert engine.chat([CONV])[0][0] == "Be brief."


@pytest.mark.parametrize("kwargs,message", [
    (dict(n=0), "n and max_tokens"), (dict(max_tokens=0), "n and max_tokens"), (dict(temperature=-1), "temperature"),
])
def test_bad_generation_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ScriptedEngine(lambda c, i: "x").chat([CONV], **kwargs)


def test_openai_engine_without_key_says_what_to_do(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIEngine("gpt-4o-mini")
    engine = OpenAIEngine("local-model", base_url="http://127.0.0.1:9/v1")  # a local server needs no key
    assert engine.client.api_key == "EMPTY"


def test_bad_model_and_engine_names_fail_before_loading():
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_name("./no/such/model")
    with pytest.raises(ValueError, match="Unknown engine kind 'vllm'"):
        make_engine({"kind": "vllm", "model": "x"})
    with pytest.raises(ValueError, match="non-empty"):
        check_model_name("")


def test_batched_greedy_generation_matches_one_at_a_time(local_engine):
    convs = [[{"role": "user", "content": q}] for q in
             ("What is 2+2?", "Name a colour.", "Write the word 'cat' backwards, then explain in one line.")]
    batched = local_engine.chat(convs, max_tokens=12)
    singles = [local_engine.chat([c], max_tokens=12)[0] for c in convs]
    assert batched == singles
    assert local_engine.usage.completion_tokens > 0 and local_engine.usage.prompt_tokens > 0


def test_sampling_gives_distinct_samples(local_engine):
    out = local_engine.chat([[{"role": "user", "content": "Invent a name for a cat."}]], n=3, temperature=1.0,
                            max_tokens=8, seed=3)[0]
    assert len(out) == 3 and len(set(out)) > 1


CHOICES = [("What is the capital of France? Answer with one word.", ["London", "Paris"]),
           ("Is fire hot? Answer Yes or No.", ["Yes", "No"]),  # the 135M model answers "No."
           ("Is the moon made of cheese? Answer Yes or No.", ["Yes", "No"])]


def test_choose_matches_the_greedy_first_word_in_batches_and_caches_it(tmp_path):
    from promptgrad import TransformersEngine

    engine = TransformersEngine(batch_size=2, system_prompt="You are a helpful assistant.",
                                cache=ResponseCache(tmp_path / "c.sqlite"))
    convs = [[{"role": "user", "content": q}] for q, _ in CHOICES]
    together = engine.choose(convs, ["Yes", "No"])  # left-padded batches of two
    assert engine.usage.model_calls == 3
    assert engine.choose(convs, ["Yes", "No"]) == together and engine.usage.cache_hits == 3
    engine.cache = ResponseCache(None)
    assert together == [engine.choose([c], ["Yes", "No"])[0] for c in convs]
    greedy = [row[0] for row in engine.chat(convs, max_tokens=4)]
    assert not greedy[0].startswith("Paris") and engine.choose(convs[:1], ["London", "Paris"]) == ["Paris"]
    for conv, (_, options), text in list(zip(convs, CHOICES, greedy))[1:]:
        first = [o for o in options if text.startswith(o)]
        assert first, text  # the questions were picked so that the greedy reply starts with an option
        assert engine.choose([conv], options) == first == engine.choose([conv], options[::-1])
    with pytest.raises(ValueError, match="distinct"):
        engine.choose(convs, ["Yes", "Yes"])
    with pytest.raises(ValueError, match="share their first token"):
        engine.choose(convs, ["1", "10"])  # digits are single tokens


def test_length_batches_keep_long_prompts_in_small_batches():
    lengths = [100, 600, 90, 580, 110, 590]
    assert length_batches(lengths, batch_size=32) == [[1, 5, 3, 4, 0, 2]]  # longest first
    assert length_batches(lengths, batch_size=4) == [[1, 5, 3, 4], [0, 2]]
    # 2 x 600 > 1000: each long prompt alone; the short ones share a batch (3 x 110 <= 1000)
    assert length_batches(lengths, batch_size=32, max_tokens=1000) == [[1], [5], [3], [4, 0, 2]]
    assert length_batches([5000], batch_size=8, max_tokens=1000) == [[0]]  # too long for the budget: alone
    assert length_batches([], batch_size=8, max_tokens=1000) == []


def test_text_and_untrained_soft_prompt_decode_alike_whatever_the_generation_config(tmp_path):
    """A model whose generation_config sets a repetition penalty (as Qwen2.5-Instruct's does):
    the penalty would act on a text prompt's ids and not on a soft prompt's embeddings; the
    engine states its decoding, so the untrained soft prompt answers as its text does."""
    from promptgrad import TransformersEngine, evaluate_prompt
    from promptgrad.dryrun import tiny_model
    from promptgrad.embedgrad import SoftPrompt
    from promptgrad.tasks import Example, get_task

    folder = tiny_model(tmp_path / "tiny-qwen2", "qwen2", generation={"repetition_penalty": 3.0})
    engine = TransformersEngine(str(folder), batch_size=4, system_prompt="You are a helpful assistant.")
    assert engine.hf_model.generation_config.repetition_penalty == 3.0
    task = get_task("sst2")
    examples = [Example(f"Review: {text}\nIs this review positive or negative?", "positive", id=str(i))
                for i, text in enumerate(["great great great fun", "a dull, dull film", "fine", "I loved it"])]
    text = "please reason step by step"
    as_text = evaluate_prompt(engine, task, text, examples, max_tokens=12)
    as_soft = evaluate_prompt(engine, task, SoftPrompt(text, engine.tokenizer, engine.hf_model), examples,
                              max_tokens=12)
    assert [r["output"] for r in as_text.records] == [r["output"] for r in as_soft.records]
    # the test can fail: decoding with the model's own generation_config gives other text answers
    rendered = [engine.render([{"role": "user", "content": r["input"]}]) for r in as_text.records]
    inputs = engine.tokenizer(rendered, return_tensors="pt", padding=True, add_special_tokens=False)
    inherited = engine.hf_model.generate(**inputs, max_new_tokens=12, do_sample=False,
                                         pad_token_id=engine.tokenizer.pad_token_id)
    inherited = engine.tokenizer.batch_decode(inherited[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert [o.strip() for o in inherited] != [r["output"] for r in as_text.records]


def test_memory_is_estimated_from_the_config_before_loading(tmp_path):
    from promptgrad.dryrun import tiny_model
    from promptgrad.models import memory_estimate

    folder = tiny_model(tmp_path / "tiny-llama", "llama")
    estimate = memory_estimate(str(folder), "bfloat16")
    from transformers import AutoModelForCausalLM

    loaded = AutoModelForCausalLM.from_pretrained(folder)
    assert estimate["parameters"] == sum(p.numel() for p in loaded.parameters())
    assert estimate["gib"] == estimate["parameters"] * 2 / 2**30


def test_usage_by_engine_names_each_engine_once_by_every_role_it_served():
    from promptgrad import Engines

    task, loop, writer = (ScriptedEngine(lambda c, i: "yes", model=m) for m in ("task", "loop", "writer"))
    loop.chat([[{"role": "user", "content": "q"}]] * 3, max_tokens=4)
    writer.chat([[{"role": "user", "content": "q"}]], max_tokens=4)
    spent = Engines(task=task, loop=loop, optimizer=writer).usage_by_engine()
    assert list(spent) == ["task", "loop", "optimizer and judge"]
    assert [s["model_calls"] for s in spent.values()] == [0, 3, 1]
    assert list(Engines(task=task).usage_by_engine()) == ["task and loop and optimizer and judge"]


def test_engines_from_notebook_specs_share_one_cache_and_settings(tmp_path):
    from promptgrad import Engines

    served = {"kind": "openai", "model": "served", "base_url": "http://127.0.0.1:9"}  # never called here
    engines = Engines.from_specs(served, optimizer={**served, "model": "writer"}, cache=str(tmp_path / "c.sqlite"),
                                 system_prompt="Be brief.")
    assert engines.loop is engines.task and engines.judge is engines.optimizer  # None: the role's default
    assert (engines.task.model, engines.optimizer.model) == ("served", "writer")
    assert engines.optimizer.cache is engines.task.cache and engines.task.cache.path == tmp_path / "c.sqlite"
    later = engines.make({**served, "model": "second"})  # a second task model, on the same cache and settings
    assert later.cache is engines.task.cache and later.system_prompt == "Be brief." and later.model == "second"
    assert Engines.from_specs(served, cache="").task.cache.path is None  # "" (a notebook's CACHE_PATH): no cache
    assert Engines(task=engines.task).make(served).cache is engines.task.cache  # built by hand: the task's cache
