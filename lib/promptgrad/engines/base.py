"""The engine interface: ``Engine`` (chat, choose, the response cache, usage), ``Usage``, ``metered``."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Iterator, Protocol

import torch

from ..cache import ResponseCache, cache_key

Conversation = list[dict[str, str]]


class PromptInputs(Protocol):
    """Something that turns rendered chat texts into model inputs (a soft prompt does): its
    vectors, the embeddings spliced in (``build_inputs``), or token rows marking where they go
    (``token_rows``, for the fast decoder)."""

    embeddings: torch.Tensor

    def fingerprint(self) -> str: ...
    def build_inputs(self, texts: list[str], tokenizer, model) -> dict[str, torch.Tensor]: ...
    def token_rows(self, texts: list[str], tokenizer) -> list[list[int]]: ...


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

    def __sub__(self, other: "Usage") -> "Usage":
        return Usage(*(a - b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other))))


@contextlib.contextmanager
def metered(engine: "Engine") -> Iterator[Usage]:
    """The usage ``engine`` spends inside the block, filled in on exit (one engine object may
    serve several roles, so each role meters its own calls)."""
    spent = Usage()
    before = dataclasses.replace(engine.usage)
    try:
        yield spent
    finally:
        for field, value in zip(dataclasses.fields(Usage), dataclasses.astuple(engine.usage - before)):
            setattr(spent, field.name, value)


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

    def release(self) -> None:
        """Free what the engine holds (a local model's memory); nothing for a served one."""

    def count_tokens(self, texts: list[str]) -> list[int | None]:
        """Each text's length in this model's tokens; None where the engine has no tokenizer at hand
        (an OpenAI-compatible server)."""
        return [None] * len(texts)

    def cut_at_budget(self, outputs: list[str], max_tokens: int) -> list[bool | None]:
        """Whether each answer ran into its token budget: its text re-tokenized reaches the budget
        less one (stripping a text can lose a token); None where the engine cannot tell."""
        return [None if n is None else n >= max_tokens - 1 for n in self.count_tokens(outputs)]

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        raise NotImplementedError

    def _choose(self, conversations, options, *, desc) -> list[str | None]:
        raise NotImplementedError(f"{type(self).__name__} cannot constrain its output to options.")


def first_tokens(options: list[str], tokenize) -> list[int]:
    """Each option's first token id; ``choose`` tells options apart by it, so they must differ."""
    ids = [tokenize(o)[0] for o in options]
    if len(set(ids)) != len(ids):
        raise ValueError(f"Options {options!r} share their first token; choose tells them apart by it.")
    return ids
