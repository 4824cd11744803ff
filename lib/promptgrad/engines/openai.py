"""Any OpenAI-compatible endpoint: OpenAI, vLLM, a llama.cpp server, Ollama."""

from __future__ import annotations

import concurrent.futures
import logging
import os
import random
import time

from tqdm.auto import tqdm

from ..cache import ResponseCache, cache_key
from .base import Conversation, Engine

log = logging.getLogger(__name__)

class EngineError(RuntimeError):
    """A request failed for good (after retries, or on an error that retrying cannot fix)."""


class OpenAIEngine(Engine):
    """Any OpenAI-compatible endpoint: OpenAI itself, a vLLM or a llama.cpp server.

    Requests run concurrently; 429, 5xx, connection errors and timeouts are retried with
    exponential backoff; 400/401/403/404 are not. ``api_key`` defaults to the environment
    variable named by ``api_key_env``; a local ``base_url`` needs no key. ``base_url`` is not
    part of the cache key, so a run resumes against a restarted or moved server.

    A llama.cpp server reuses the previous request's KV cache: the same prompt sent twice in
    a row is re-decoded from its last token, which can change a greedy answer.

    Whether an answer ran into its token budget is the server's finish reason ("length"), kept
    in the response cache beside the answer, so a rerun from the cache still knows it (in memory
    when the cache is off: one entry per answer for the engine's life, so keep the cache on for
    long runs).
    """

    kind = "openai"

    def __init__(self, model: str, base_url: str | None = None, api_key: str | None = None,
                 api_key_env: str = "OPENAI_API_KEY", cache: ResponseCache | None = None,
                 system_prompt: str | None = None, concurrency: int = 8, max_retries: int = 5,
                 timeout: float = 120.0, backoff_seconds: float = 1.0):
        import openai

        super().__init__(model, cache, system_prompt)
        api_key = api_key or os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise ValueError(
                    f"No API key for OpenAI: set the environment variable {api_key_env}, pass api_key=, "
                    f"or give base_url= of a local OpenAI-compatible server (vLLM, llama.cpp).")
            api_key = "EMPTY"
        self.base_url = base_url
        self.concurrency = concurrency
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self._cut: dict[str, bool] = {}  # finish reasons "length" by answer and budget, when the cache is off
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=0)
        self._retryable = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError,
                           openai.APITimeoutError)

    def _request(self, conversation: Conversation, **params):
        for attempt in range(self.max_retries + 1):
            try:
                return self.client.chat.completions.create(model=self.model, messages=conversation, **params)
            except self._retryable as err:
                if attempt == self.max_retries:
                    raise EngineError(
                        f"{self.base_url or 'OpenAI'} did not answer after {self.max_retries + 1} attempts: "
                        f"{type(err).__name__}: {err}. Is the server up? A rerun resumes from the cache.") from err
                delay = self.backoff_seconds * 2 ** attempt * (1 + random.random() / 2)
                log.warning("%s (attempt %d), retrying in %.1fs", type(err).__name__, attempt + 1, delay)
                time.sleep(delay)
            except Exception as err:  # 400, 401, 404...: retrying cannot help
                raise EngineError(f"Request to {self.base_url or 'OpenAI'} failed: {type(err).__name__}: {err}") \
                    from err

    def _count(self, resp) -> None:
        if resp.usage is not None:
            self.usage.prompt_tokens += resp.usage.prompt_tokens
            self.usage.completion_tokens += resp.usage.completion_tokens

    def _complete(self, conversation, n, temperature, max_tokens, seed, cut: dict[str, bool]) -> list[str]:
        texts: list[str] = []
        while len(texts) < n:  # some servers (llama.cpp) return one choice whatever n is
            resp = self._request(conversation, n=n - len(texts), temperature=temperature, max_tokens=max_tokens,
                                 seed=seed + len(texts) if temperature > 0 else None)
            self._count(resp)
            if not resp.choices:
                raise EngineError(f"{self.base_url or 'OpenAI'} returned no choices for model {self.model}.")
            answers = [(c.message.content or "").strip() for c in resp.choices]
            cut.update({self._cut_key(a, max_tokens): c.finish_reason == "length"
                        for a, c in zip(answers, resp.choices)})
            texts += answers
        return texts[:n]

    def _cut_key(self, answer: str, max_tokens: int) -> str:
        return cache_key(cut_at_budget=answer, engine=self.kind, model=self.model, max_tokens=max_tokens)

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        cut: dict[str, bool] = {}
        texts = self._concurrently(lambda c: self._complete(c, n, temperature, max_tokens, seed, cut), conversations,
                                   desc)
        if self.cache.path:
            self.cache.put_many(cut)
        else:
            self._cut.update(cut)
        return texts

    def cut_at_budget(self, outputs: list[str], max_tokens: int) -> list[bool | None]:
        """From the server's finish reason of each answer (None for an answer this engine and its
        cache never saw)."""
        keys = [self._cut_key(o, max_tokens) for o in outputs]
        return [self._cut[k] if k in self._cut else self.cache.get(k) for k in keys]

    def _choose_one(self, conversation, options) -> str | None:
        """The option with the highest log-prob among the first token's top 20 (servers give no
        more); None when none of them is an option."""
        resp = self._request(conversation, max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=20)
        self._count(resp)
        content = resp.choices[0].logprobs.content if resp.choices and resp.choices[0].logprobs else None
        if not content:
            return None
        scores = {t.token.strip(): t.logprob for t in content[0].top_logprobs}
        known = [o for o in options if o.strip() in scores]
        return max(known, key=lambda o: scores[o.strip()]) if known else None

    def _choose(self, conversations, options, *, desc):
        return self._concurrently(lambda c: self._choose_one(c, options), conversations, desc)

    def _concurrently(self, call, conversations, desc) -> list:
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(call, c) for c in conversations]
            for _ in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc=desc or self.model,
                          disable=len(futures) < 8, leave=False):
                pass
            return [f.result() for f in futures]
