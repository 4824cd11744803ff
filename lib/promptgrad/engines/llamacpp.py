"""A llama.cpp engine: the same GGUF run in process by ``llama-cpp-python``.

About 5x faster than transformers one at a time on 2 cores for the embedded model, but
0.7x transformers batched at 16 (``python -m promptgrad.bench generate``), and no gradients or
soft prompts: use it for sequential calls in the text optimizers' loops (optimizer samples,
judges), and keep every evaluation that compares methods on one engine.
"""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

from ..cache import ResponseCache
from ..models import EMBEDDED_MODEL, embedded_gguf_path
from .base import Engine, first_tokens


class LlamaCppEngine(Engine):
    kind = "llamacpp"

    def __init__(self, model: str = EMBEDDED_MODEL, cache: ResponseCache | None = None,
                 system_prompt: str | None = None, n_ctx: int = 4096, n_threads: int | None = None):
        from llama_cpp import Llama

        path = embedded_gguf_path() if model == EMBEDDED_MODEL else Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file '{path}' does not exist; give the path of a .gguf file or "
                                    f"'{EMBEDDED_MODEL}'.")
        super().__init__(model, cache, system_prompt)
        # Default: every core this process may use (llama-cpp-python's own default is half of them;
        # on 2 idle cores, 2 threads measured 1.6x faster than 1, with the same greedy answers).
        # A given n_threads holds for prompt processing too: while another process holds a core,
        # all-core prompt processing measured 20x slower than one thread, so pass n_threads=1 there.
        n_threads = n_threads or len(os.sched_getaffinity(0))
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                         verbose=False)

    def _reply(self, conversation, **params) -> str:
        """One completion from a fresh context, its usage counted."""
        self.llm.reset()
        response = self.llm.create_chat_completion(messages=conversation, **params)
        usage = response.get("usage") or {}
        self.usage.prompt_tokens += usage.get("prompt_tokens", 0)
        self.usage.completion_tokens += usage.get("completion_tokens", 0)
        return response["choices"][0]["message"]["content"] or ""

    def count_tokens(self, texts: list[str]) -> list[int | None]:
        return [len(self.llm.tokenize(t.encode(), add_bos=False, special=False)) for t in texts]

    def _each(self, conversations, desc):
        return tqdm(conversations, desc=desc or "llama.cpp", disable=len(conversations) < 8, leave=False)

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        return [[self._reply(conversation, max_tokens=max_tokens, temperature=temperature, seed=seed + i, top_p=1.0,
                             top_k=0).strip() for i in range(n)] for conversation in self._each(conversations, desc)]

    def _choose(self, conversations, options, *, desc):
        # As TransformersEngine: the option whose first token the model likes best. A bias of
        # +100 on those tokens leaves their order as it was and rules out every other token.
        firsts = first_tokens(options, lambda o: self.llm.tokenize(o.encode(), add_bos=False, special=False))
        by_text = {self.llm.detokenize([t]).decode(errors="replace"): o for t, o in zip(firsts, options)}
        bias = {t: 100.0 for t in firsts}
        return [by_text.get(self._reply(conversation, max_tokens=1, temperature=0.0, logit_bias=bias))
                for conversation in self._each(conversations, desc)]
