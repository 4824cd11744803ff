"""Local generation with transformers (the fast greedy decoder by default, ``generate`` as reference)."""

from __future__ import annotations


import torch
from tqdm.auto import tqdm

from ..cache import ResponseCache
from ..models import EMBEDDED_MODEL, load_model
from .base import Conversation, Engine, first_tokens

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

    def count_tokens(self, texts: list[str]) -> list[int | None]:
        return [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids] if texts else []

    def release(self) -> None:
        """Free this engine's model (``models.release_model``); the engine is unusable after."""
        from ..models import release_model

        self.hf_model = None
        release_model(self.model)

    def render(self, conversation: Conversation) -> str:
        """The chat template applied, ready for the assistant's turn."""
        return self.tokenizer.apply_chat_template(self.prepare(conversation), tokenize=False, add_generation_prompt=True)

    def cache_params(self, n: int, temperature: float, soft_prompt) -> dict:
        """The fast decoder's answers (text and soft prompts alike) get keys of their own (they may
        differ from the reference's in a near-tied token); the reference keeps the keys it always had."""
        return {"decoder": "fast"} if self._fast(n, temperature, soft_prompt) else {}

    def _fast(self, n: int, temperature: float, soft_prompt) -> bool:
        return self.decoder == "fast" and n == 1 and temperature == 0

    @torch.no_grad()
    def _generate(self, conversations, *, n, temperature, max_tokens, seed, soft_prompt, desc):
        if self._fast(n, temperature, soft_prompt):
            return self._generate_fast(conversations, max_tokens, soft_prompt)
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

    def _generate_fast(self, conversations, max_tokens: int, soft_prompt=None) -> list[list[str]]:
        from ..fastgen import greedy

        texts = [self.render(c) for c in conversations]
        if soft_prompt is None:
            rows, soft = self.tokenizer(texts, add_special_tokens=False).input_ids, None
        else:
            rows, soft = soft_prompt.token_rows(texts, self.tokenizer), soft_prompt.embeddings.detach()
        new = greedy(self.hf_model, rows, max_tokens, self.end_token_ids, self.tokenizer.pad_token_id,
                     soft=soft, **self.fast_limits)
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
