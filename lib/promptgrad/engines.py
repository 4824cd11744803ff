"""One chat interface for every engine: batches of message lists in, texts out.

``engine.chat(conversations, n=, temperature=, max_tokens=)`` returns, for each
conversation, a list of ``n`` completions. Every engine counts its usage (model calls,
prompt and completion tokens, wall time) and goes through the persistent response
cache first, so a rerun with the same parameters makes no model call. Sampled
completions carry their sample index in the cache key, so samples stay distinct.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import random
import time
from typing import Iterator, Protocol

import torch
from tqdm.auto import tqdm

from .cache import ResponseCache, cache_key
from .models import EMBEDDED_MODEL, check_model_name, load_model

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]


class PromptInputs(Protocol):
    """Something that turns rendered chat texts into model inputs (a soft prompt does)."""

    def fingerprint(self) -> str: ...
    def build_inputs(self, texts: list[str], tokenizer, model) -> dict[str, torch.Tensor]: ...


@dataclasses.dataclass
class Usage:
    """What an engine or a method spent. ``model_calls`` counts completions requested from the
    model (cache hits are counted apart and cost nothing); ``train_examples`` counts examples
    through a forward and backward pass (the embedding methods' budget)."""

    model_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hits: int = 0
    wall_seconds: float = 0.0
    train_examples: int = 0

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def __add__(self, other: "Usage") -> "Usage":
        return Usage(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


@contextlib.contextmanager
def metered(engine: "Engine") -> Iterator[Usage]:
    """The usage ``engine`` spends inside the block, filled in on exit (one engine object may
    serve several roles, so each role meters its own calls)."""
    spent = Usage()
    before = dataclasses.replace(engine.usage)
    try:
        yield spent
    finally:
        for field in dataclasses.fields(Usage):
            setattr(spent, field.name, getattr(engine.usage, field.name) - getattr(before, field.name))


class Engine:
    """Base class: validation, caching and usage; subclasses implement ``_generate``."""

    kind = "base"

    def __init__(self, model: str, cache: ResponseCache | None = None, system_prompt: str | None = None):
        self.model = model
        self.cache = cache if cache is not None else ResponseCache(None)
        self.system_prompt = system_prompt
        self.usage = Usage()

    def prepare(self, conversation: Conversation) -> Conversation:
        """The conversation as sent: with the engine's system prompt unless it has one
        (``system_prompt=None`` leaves the model's own default in place)."""
        if self.system_prompt is None or conversation[0]["role"] == "system":
            return conversation
        return [{"role": "system", "content": self.system_prompt}, *conversation]

    def chat(
        self,
        conversations: list[Conversation],
        *,
        n: int = 1,
        temperature: float = 0.0,
        max_tokens: int = 256,
        seed: int = 0,
        soft_prompt: PromptInputs | None = None,
        desc: str | None = None,
    ) -> list[list[str]]:
        if n < 1 or max_tokens < 1:
            raise ValueError(f"n and max_tokens must be at least 1, got n={n}, max_tokens={max_tokens}.")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}.")
        if soft_prompt is not None and not self.supports_soft_prompts:
            raise TypeError(f"{type(self).__name__} cannot take soft prompts; use a TransformersEngine.")
        conversations = [self.prepare(c) for c in conversations]
        params = dict(engine=self.kind, model=self.model, temperature=temperature, max_tokens=max_tokens,
                      seed=seed if temperature > 0 else None,
                      soft_prompt=soft_prompt.fingerprint() if soft_prompt is not None else None,
                      **self.cache_params(n, temperature, soft_prompt))
        keys = [[cache_key(messages=conv, sample=i, **params) for i in range(n)] for conv in conversations]
        return self._through_cache(conversations, keys, lambda todo: self._generate(
            todo, n=n, temperature=temperature, max_tokens=max_tokens, seed=seed, soft_prompt=soft_prompt, desc=desc))

    def choose(self, conversations: list[Conversation], options: list[str], *, desc: str | None = None) \
            -> list[str | None]:
        """For each conversation, the option the model likes best as its reply: decoding
        constrained to ``options`` (greedy), for verdicts and labels that a small model will not
        write in the asked format. Options must differ in their first token. ``None`` where the
        engine cannot tell (an OpenAI-compatible server whose top log-probs hold no option)."""
        if len(options) < 2 or len(set(options)) != len(options) or not all(o.strip() for o in options):
            raise ValueError(f"choose needs at least two distinct, non-blank options, got {options!r}.")
        conversations = [self.prepare(c) for c in conversations]
        keys = [[cache_key(messages=conv, engine=self.kind, model=self.model, choose=list(options))]
                for conv in conversations]
        found = self._through_cache(conversations, keys, lambda todo: [[c or ""] for c in self._choose(
            todo, list(options), desc=desc)])
        return [row[0] or None for row in found]

    def cache_params(self, n: int, temperature: float, soft_prompt) -> dict:
        """What else tells this engine's answers apart in the response cache."""
        return {}

    def _through_cache(self, conversations, keys: list[list[str]], run) -> list[list]:
        """Cached values per conversation; ``run`` computes the rows of the conversations missing."""
        found = [[self.cache.get(k) for k in row] for row in keys]
        missing = [i for i, row in enumerate(found) if any(v is None for v in row)]
        computed = sum(len(keys[i]) for i in missing)
        self.usage.cache_hits += sum(map(len, keys)) - computed
        if missing:
            start = time.perf_counter()
            outputs = run([conversations[i] for i in missing])
            self.usage.wall_seconds += time.perf_counter() - start
            self.usage.model_calls += computed
            new = {}
            for i, values in zip(missing, outputs):
                found[i] = list(values)
                new.update(zip(keys[i], values))
            self.cache.put_many(new)
        return found

    supports_soft_prompts = False

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        raise NotImplementedError

    def _choose(self, conversations, options, *, desc) -> list[str | None]:
        raise NotImplementedError(f"{type(self).__name__} cannot constrain its output to options.")


DECODERS = ("fast", "reference")


class TransformersEngine(Engine):
    """Local generation with transformers: batched, left padding, greedy or sampled."""

    kind = "transformers"
    supports_soft_prompts = True

    def __init__(self, model: str = EMBEDDED_MODEL, cache: ResponseCache | None = None,
                 batch_size: int = 32, device: str | None = None, system_prompt: str | None = None,
                 max_batch_tokens: int | None = 8192, dtype: str | None = None, decoder: str = "fast",
                 fast_limits: dict | None = None):
        if batch_size < 1 or (max_batch_tokens is not None and max_batch_tokens < 1):
            raise ValueError(f"batch_size and max_batch_tokens must be at least 1, got {batch_size}, "
                             f"{max_batch_tokens}.")
        if decoder not in DECODERS:
            raise ValueError(f"Unknown decoder '{decoder}'; expected one of {DECODERS}.")
        super().__init__(model, cache, system_prompt)
        self.decoder = decoder
        self.fast_limits = fast_limits or {}  # fastgen.greedy's max_rows, max_tokens, wave_tokens
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.hf_model, self.tokenizer = load_model(model, device, dtype)
        self.end_token_ids = end_token_ids(self.hf_model, self.tokenizer)

    def render(self, conversation: Conversation) -> str:
        """The chat template applied, ready for the assistant's turn."""
        return self.tokenizer.apply_chat_template(self.prepare(conversation), tokenize=False, add_generation_prompt=True)

    def cache_params(self, n: int, temperature: float, soft_prompt) -> dict:
        """The fast decoder's answers get keys of their own (they may differ from the reference's
        in a near-tied token); the reference keeps the keys it always had."""
        return {"decoder": "fast"} if self._fast(n, temperature, soft_prompt) else {}

    def _fast(self, n: int, temperature: float, soft_prompt) -> bool:
        return self.decoder == "fast" and n == 1 and temperature == 0 and soft_prompt is None

    @torch.no_grad()
    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        if self._fast(n, temperature, soft_prompt):
            return self._generate_fast(conversations, max_tokens)
        texts = [self.render(c) for c in conversations]
        batches = self._batches(texts)
        outputs: list[list[str]] = [[] for _ in texts]
        decoding = self.decoding(temperature)
        for b, batch in enumerate(tqdm(batches, desc=desc or "generate", disable=len(batches) < 2, leave=False)):
            batch_texts = [texts[i] for i in batch]
            if soft_prompt is not None:
                inputs = soft_prompt.build_inputs(batch_texts, self.tokenizer, self.hf_model)
            else:
                inputs = self.tokenizer(batch_texts, return_tensors="pt", padding=True, add_special_tokens=False)
            inputs = {k: v.to(self.hf_model.device) for k, v in inputs.items()}
            if temperature > 0:
                torch.manual_seed(seed * 1_000_003 + b)
            out = self.hf_model.generate(**inputs, max_new_tokens=max_tokens, num_return_sequences=n, **decoding)
            new_tokens = out if "inputs_embeds" in inputs else out[:, inputs["input_ids"].shape[1]:]
            self.usage.prompt_tokens += int(inputs["attention_mask"].sum()) * n
            self.usage.completion_tokens += int(_completion_lengths(new_tokens, self.end_token_ids).sum())
            decoded = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
            for j, i in enumerate(batch):
                outputs[i] = [s.strip() for s in decoded[j * n:(j + 1) * n]]
        return outputs

    def _generate_fast(self, conversations, max_tokens: int) -> list[list[str]]:
        from .fastgen import greedy

        rows = self.tokenizer([self.render(c) for c in conversations], add_special_tokens=False).input_ids
        new = greedy(self.hf_model, rows, max_tokens, self.end_token_ids, self.tokenizer.pad_token_id,
                     **self.fast_limits)
        self.usage.prompt_tokens += sum(map(len, rows))
        self.usage.completion_tokens += sum(map(len, new))
        return [[text.strip()] for text in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def decoding(self, temperature: float = 0.0) -> dict:
        """Every setting of ``generate`` that changes which tokens come out, stated here rather than
        inherited from the model's ``generation_config`` (Qwen2.5-Instruct's sets a repetition
        penalty, which acts on the prompt's ids for a text prompt and on nothing for a soft prompt
        given as embeddings): one decoding for text and soft prompts alike."""
        stated = dict(repetition_penalty=1.0, no_repeat_ngram_size=0, encoder_repetition_penalty=1.0,
                      length_penalty=1.0, min_new_tokens=0, bad_words_ids=None, suppress_tokens=None,
                      begin_suppress_tokens=None, sequence_bias=None, eos_token_id=self.end_token_ids,
                      pad_token_id=self.tokenizer.pad_token_id)
        if temperature > 0:
            return {**stated, "do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0, "min_p": None,
                    "typical_p": 1.0}
        return {**stated, "do_sample": False, "temperature": None, "top_p": None, "top_k": None}

    def _batches(self, texts: list[str]) -> list[list[int]]:
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids]
        return length_batches(lengths, self.batch_size, self.max_batch_tokens)

    @torch.no_grad()
    def _choose(self, conversations, options, *, desc):
        ids = first_tokens(options, lambda o: self.tokenizer.encode(o, add_special_tokens=False))
        texts = [self.render(c) for c in conversations]
        chosen: list[str | None] = [None] * len(texts)
        batches = self._batches(texts)
        for batch in tqdm(batches, desc=desc or "choose", disable=len(batches) < 2, leave=False):
            inputs = self.tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True,
                                    add_special_tokens=False)
            inputs = {k: v.to(self.hf_model.device) for k, v in inputs.items()}
            positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp(min=0)  # left padding
            logits = self.hf_model(**inputs, position_ids=positions).logits[:, -1, ids]
            self.usage.prompt_tokens += int(inputs["attention_mask"].sum())
            self.usage.completion_tokens += len(batch)
            for i, j in zip(batch, logits.argmax(-1).tolist()):
                chosen[i] = options[j]
        return chosen


def length_batches(lengths: list[int], batch_size: int, max_tokens: int | None = None) -> list[list[int]]:
    """Indices, longest first, cut into batches of at most ``batch_size`` rows whose padded size
    (rows x their longest) stays within ``max_tokens``; a longer row goes alone. Left padding
    gives every row of a batch the longest one's length, so long prompts go in smaller batches:
    on 2 cores, 32 BBH causal-judgement prompts of ~600 tokens took 100 s as one batch of 32 and
    60 s as two of 16, while 20 GSM8K prompts decoding 192 tokens took 50 s as one batch and 74 s
    as two."""
    batches: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True):
        last = batches[-1] if batches else None
        if last and len(last) < batch_size and (len(last) + 1) * lengths[last[0]] <= (max_tokens or float("inf")):
            last.append(i)
        else:
            batches.append([i])
    return batches


def first_tokens(options: list[str], tokenize) -> list[int]:
    """Each option's first token id; ``choose`` tells options apart by it, so they must differ."""
    ids = [tokenize(o)[0] for o in options]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Options {options!r} share their first token; choose tells them apart by it.")
    return ids


def end_token_ids(model, tokenizer) -> list[int]:
    """The tokens that end a reply: the tokenizer's end-of-sequence token and those the model's
    generation config names (a chat template's end of turn, such as ``<|im_end|>``)."""
    configured = model.generation_config.eos_token_id
    configured = configured if isinstance(configured, list) else [configured]
    return sorted({i for i in (tokenizer.eos_token_id, *configured) if i is not None})


def _completion_lengths(tokens: torch.Tensor, end_ids: list[int]) -> torch.Tensor:
    """Tokens up to and including the first end token, per row."""
    is_eos = torch.isin(tokens, torch.tensor(end_ids, device=tokens.device))
    first = torch.where(is_eos.any(1), is_eos.int().argmax(1) + 1, torch.full_like(is_eos[:, 0], tokens.shape[1],
                                                                                      dtype=torch.long))
    return first


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

    def _complete(self, conversation, n, temperature, max_tokens, seed) -> list[str]:
        texts: list[str] = []
        while len(texts) < n:  # some servers (llama.cpp) return one choice whatever n is
            resp = self._request(conversation, n=n - len(texts), temperature=temperature, max_tokens=max_tokens,
                                 seed=seed + len(texts) if temperature > 0 else None)
            self._count(resp)
            texts += [(c.message.content or "").strip() for c in resp.choices]
            if not resp.choices:
                raise EngineError(f"{self.base_url or 'OpenAI'} returned no choices for model {self.model}.")
        return texts[:n]

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

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        return self._concurrently(lambda c: self._complete(c, n, temperature, max_tokens, seed), conversations, desc)

    def _choose(self, conversations, options, *, desc):
        return self._concurrently(lambda c: self._choose_one(c, options), conversations, desc)

    def _concurrently(self, call, conversations, desc) -> list:
        with concurrent.futures.ThreadPoolExecutor(self.concurrency) as pool:
            futures = [pool.submit(call, c) for c in conversations]
            for _ in tqdm(concurrent.futures.as_completed(futures), total=len(futures), desc=desc or self.model,
                          disable=len(futures) < 8, leave=False):
                pass
            return [f.result() for f in futures]


def make_engine(spec: str | dict, cache: ResponseCache | None = None, **defaults) -> Engine:
    """An engine from a notebook parameter.

    ``"smollm2-135m-instruct"`` or any hub id / folder: local transformers engine.
    ``"openai:gpt-4o-mini"``: OpenAI. ``{"kind": "openai", "model": ..., "base_url": ...}``:
    any OpenAI-compatible server. ``{"kind": "transformers", "model": ..., "batch_size": 16}``.
    ``defaults`` (``system_prompt``, ``batch_size``...) fill what the spec leaves out, where
    that kind of engine takes them.
    """
    import inspect

    if isinstance(spec, str):
        spec = {"kind": "openai", "model": spec[len("openai:"):]} if spec.startswith("openai:") else \
            {"kind": "transformers", "model": spec}
    spec = dict(spec)
    kind = spec.pop("kind", "transformers")
    engines = {"transformers": TransformersEngine, "openai": OpenAIEngine}
    if kind == "llamacpp":
        from .llamacpp import LlamaCppEngine
        engines["llamacpp"] = LlamaCppEngine
    if kind not in engines:
        raise ValueError(f"Unknown engine kind '{kind}'; expected one of {sorted(engines) + ['llamacpp']}.")
    if kind == "transformers":
        check_model_name(spec.get("model", EMBEDDED_MODEL))
    accepted = inspect.signature(engines[kind]).parameters
    spec = {**{k: v for k, v in defaults.items() if k in accepted}, **spec}
    return engines[kind](cache=cache, **spec)
