"""One chat interface for every engine: batches of message lists in, texts out.

``engine.chat(conversations, n=, temperature=, max_tokens=)`` returns, for each
conversation, a list of ``n`` completions. Every engine counts its usage (model calls,
prompt and completion tokens, wall time) and goes through the persistent response
cache first, so a rerun with the same parameters makes no model call. Sampled
completions carry their sample index in the cache key, so samples stay distinct.

The package: ``base`` (the interface), ``transformers``, ``openai``, ``llamacpp`` (one module per
kind of engine, each importing only ``base``), and ``make_engine`` here.
"""

from __future__ import annotations

from ..cache import ResponseCache
from ..models import EMBEDDED_MODEL, check_model_name
from .base import Conversation, Engine, PromptInputs, Usage, first_tokens, metered
from .llamacpp import LlamaCppEngine
from .openai import EngineError, OpenAIEngine
from .transformers import DECODERS, TransformersEngine, end_token_ids, length_batches

__all__ = ["Conversation", "DECODERS", "Engine", "EngineError", "LlamaCppEngine", "OpenAIEngine", "PromptInputs",
           "TransformersEngine", "Usage", "end_token_ids", "first_tokens", "length_batches", "make_engine", "metered"]


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
    engines = {"transformers": TransformersEngine, "openai": OpenAIEngine, "llamacpp": LlamaCppEngine}
    if kind not in engines:
        raise ValueError(f"Unknown engine kind '{kind}'; expected one of {sorted(engines)}.")
    if kind == "transformers":
        check_model_name(spec.get("model", EMBEDDED_MODEL))
    accepted = inspect.signature(engines[kind]).parameters
    spec = {**{k: v for k, v in defaults.items() if k in accepted}, **spec}
    return engines[kind](cache=cache, **spec)
