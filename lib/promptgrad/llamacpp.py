"""A llama.cpp engine: the same GGUF run in process by ``llama-cpp-python``.

About 5x faster than transformers one at a time on 2 cores for the embedded model, but
0.7x transformers batched at 16 (``python -m promptgrad.bench generate``), and no gradients or
soft prompts: use it for sequential calls in the text optimizers' loops (optimizer samples,
judges), and keep every evaluation that compares methods on one engine.
"""

from __future__ import annotations

from pathlib import Path

from tqdm.auto import tqdm

from .cache import ResponseCache
from .engines import Engine
from .models import EMBEDDED_MODEL, embedded_gguf_path


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
        # A given n_threads holds for prompt processing too; llama.cpp would use every core there,
        # which measured 20x slower than one thread while another process held a core.
        self.llm = Llama(model_path=str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                         verbose=False)

    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        outputs = []
        for conversation in tqdm(conversations, desc=desc or "llama.cpp", disable=len(conversations) < 8,
                                 leave=False):
            samples = []
            for i in range(n):
                self.llm.reset()
                response = self.llm.create_chat_completion(messages=conversation, max_tokens=max_tokens,
                                                           temperature=temperature, seed=seed + i,
                                                           top_p=1.0, top_k=0)
                usage = response.get("usage") or {}
                self.usage.prompt_tokens += usage.get("prompt_tokens", 0)
                self.usage.completion_tokens += usage.get("completion_tokens", 0)
                samples.append((response["choices"][0]["message"]["content"] or "").strip())
            outputs.append(samples)
        return outputs

    def _choose(self, conversations, options, *, desc):
        # As TransformersEngine: the option whose first token the model likes best. A bias of
        # +100 on those tokens leaves their order as it was and rules out every other token.
        firsts = [self.llm.tokenize(o.encode(), add_bos=False, special=False)[0] for o in options]
        if len(set(firsts)) != len(firsts):
            raise ValueError(f"Options {options!r} share their first token; choose tells them apart by it.")
        by_text = {self.llm.detokenize([t]).decode(errors="replace"): o for t, o in zip(firsts, options)}
        chosen = []
        for conversation in tqdm(conversations, desc=desc or "llama.cpp", disable=len(conversations) < 8,
                                 leave=False):
            self.llm.reset()
            response = self.llm.create_chat_completion(messages=conversation, max_tokens=1, temperature=0.0,
                                                       logit_bias={t: 100.0 for t in firsts})
            usage = response.get("usage") or {}
            self.usage.prompt_tokens += usage.get("prompt_tokens", 0)
            self.usage.completion_tokens += usage.get("completion_tokens", 0)
            chosen.append(by_text.get(response["choices"][0]["message"]["content"] or ""))
        return chosen
