"""OpenAIEngine against a real llama.cpp server: chat, samples, usage, concurrency, and
the faults a long run meets (a server killed mid-run, a hung server, a rejected request)."""

import logging
import socket

import pytest

from promptgrad.dryrun import LlamaServer
from promptgrad import ResponseCache
from promptgrad.engines import EngineError, OpenAIEngine
from promptgrad.models import EMBEDDED_MODEL


QUESTIONS = ["What is the capital of France?", "Name three fruits.", "What is 12 times 3?",
             "Give me a synonym for happy.", "What colour is the sky?", "Count from one to five."]
CONVS = [[{"role": "user", "content": q}] for q in QUESTIONS]  # only where answers are compared
CAT = [{"role": "user", "content": "Invent a name for a cat."}]
MAX_TOKENS = 12

# Greedy answers are compared only where no prompt directly follows itself: the server then
# re-decodes it from the last token, which can change the answer (see OpenAIEngine).


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with LlamaServer(tmp_path_factory.mktemp("llama_server") / "server.log") as server:
        yield server


def engine_for(url, cache=None, **kwargs):
    return OpenAIEngine(EMBEDDED_MODEL, base_url=url, cache=ResponseCache(cache), **kwargs)


def test_chat_answers_and_a_repeat_is_a_cache_hit(server, tmp_path):
    engine = engine_for(server.url, tmp_path / "c.sqlite")
    first = engine.chat([CAT], max_tokens=MAX_TOKENS)
    assert isinstance(first[0][0], str) and first[0][0]
    assert engine.chat([CAT], max_tokens=MAX_TOKENS) == first
    assert engine.usage.model_calls == 1 and engine.usage.cache_hits == 1


def test_n_samples_loop_over_single_choice_responses_and_usage_counts_them(server):
    engine = engine_for(server.url)
    samples = engine.chat([CAT], n=3, temperature=0.8, max_tokens=MAX_TOKENS)[0]
    assert len(samples) == 3 and all(isinstance(s, str) for s in samples)
    usage = engine.usage
    assert usage.model_calls == 3 and usage.prompt_tokens > 0
    assert 0 < usage.completion_tokens <= MAX_TOKENS * usage.model_calls


def test_concurrent_requests_give_the_sequential_answers(server):
    sequential = engine_for(server.url, concurrency=1).chat(CONVS, max_tokens=MAX_TOKENS)
    concurrent = engine_for(server.url, concurrency=3).chat(CONVS, max_tokens=MAX_TOKENS)  # starts with 0-2
    assert all(len(row) == 1 and row[0] for row in concurrent)
    assert concurrent == sequential


def test_choose_reads_the_top_log_probs(server):
    engine = engine_for(server.url)
    convs = [[{"role": "user", "content": "What is the capital of France? Answer with one word."}],
             [{"role": "user", "content": "Is fire hot? Answer yes or no."}]]
    assert engine.choose(convs, ["London", "Paris"])[0] == "Paris"
    assert engine.choose(convs[1:], ["no", "yes"]) == ["yes"]
    assert engine.choose(convs[1:], ["zebra", "xylophone"]) == [None]  # in no top-20 list
    assert engine.usage.model_calls == 4 and engine.usage.completion_tokens == 4


def test_server_killed_mid_run_then_restarted_resumes_from_the_cache(tmp_path):
    cache = tmp_path / "run.sqlite"
    with LlamaServer(tmp_path / "server.log") as server:
        reference = engine_for(server.url, concurrency=1).chat(CONVS, max_tokens=MAX_TOKENS)
        engine = engine_for(server.url, cache, max_retries=2, backoff_seconds=0.1)
        for conv in CONVS[:3]:
            engine.chat([conv], max_tokens=MAX_TOKENS)
        server.kill()
        with pytest.raises(EngineError, match="did not answer after 3 attempts"):
            engine.chat([CONVS[3]], max_tokens=MAX_TOKENS)

        server.start()  # same port, same model name: the same cache keys
        resumed = engine_for(server.url, cache)
        outputs = [resumed.chat([conv], max_tokens=MAX_TOKENS)[0] for conv in CONVS]
    assert resumed.usage.cache_hits == 3 and resumed.usage.model_calls == 3
    assert outputs == reference
    # the server's address is not in the cache key: an engine pointed elsewhere (here: at
    # nothing) resumes from the same cache
    moved = engine_for("http://127.0.0.1:9/v1", cache, max_retries=0)
    assert moved.chat(CONVS, max_tokens=MAX_TOKENS) == reference and moved.usage.model_calls == 0


def test_hung_server_times_out_with_an_engine_error():
    with socket.socket() as hung:  # listens, so connections succeed, but never accepts or answers
        hung.bind(("127.0.0.1", 0))
        hung.listen()
        url = f"http://127.0.0.1:{hung.getsockname()[1]}/v1"
        engine = engine_for(url, timeout=0.5, max_retries=1, backoff_seconds=0.05)
        with pytest.raises(EngineError, match="did not answer after 2 attempts.*Timeout"):
            engine.chat([CAT], max_tokens=MAX_TOKENS)


def test_rejected_request_is_not_retried(server, caplog):
    too_long = [{"role": "user", "content": "word " * 3000}]  # beyond the server's 2048-token context
    engine = engine_for(server.url, max_retries=3, backoff_seconds=0.01)
    with caplog.at_level(logging.WARNING), pytest.raises(EngineError, match="failed: BadRequestError"):
        engine.chat([too_long], max_tokens=MAX_TOKENS)
    assert "retrying" not in caplog.text


def test_an_answer_cut_at_its_budget_is_known_from_the_finish_reason_also_after_a_rerun(server, tmp_path):
    story = [{"role": "user", "content": "Write a long story about a cat who sails around the world."}]
    word = [{"role": "user", "content": "Reply with the single word: yes"}]
    engine = engine_for(server.url, tmp_path / "c.sqlite")
    answers = [row[0] for row in engine.chat([story, word], max_tokens=24)]
    assert engine.cut_at_budget(answers, 24) == [True, False]
    rerun = engine_for("http://127.0.0.1:9/v1", tmp_path / "c.sqlite")  # no server: answers and reasons from the cache
    assert [row[0] for row in rerun.chat([story, word], max_tokens=24)] == answers
    assert rerun.cut_at_budget(answers, 24) == [True, False] and rerun.usage.model_calls == 0
    assert rerun.cut_at_budget(answers, 48) == [None, None]  # another budget: never seen
    uncached = engine_for(server.url)  # no cache: the reasons stay in memory, through later calls
    first = [row[0] for row in uncached.chat([story, word], max_tokens=24)]
    uncached.chat([CAT], max_tokens=MAX_TOKENS)  # as a forced second turn would, before the first turn's check
    assert uncached.cut_at_budget(first, 24) == [True, False]
