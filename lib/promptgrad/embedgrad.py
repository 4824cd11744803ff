"""EmbedGrad: optimize the token embeddings of a text prompt, model frozen.

A ``SoftPrompt`` starts as the input embeddings E0 (k x d) of an init text such as
"please reason step by step"; it is its own fp32 parameter (never the shared
embedding matrix, which small Qwen2.5 models tie to the output layer). It is spliced
in where the text prompt sits inside the chat template (``after`` the question by
default, or ``before`` it), or at position 0 (``prefix``: PEFT prompt tuning's place).
Training minimises cross-entropy on the target tokens only, optionally with an L2
penalty ``lambda * ||E - E0||^2`` and/or a per-token trust region ``||e_i - e0_i|| <= eps``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import random
import re
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .checkpoints import CheckpointError, corrupt, fingerprint
from .evaluation import answer_budget, build_conversations
from .methods import Demand, Found, Method, answering, timed
from .tasks import Example, Task

log = logging.getLogger(__name__)

SLOT = "<<soft prompt>>"
PLACEMENTS = ("after", "before", "prefix")


class SoftPrompt(torch.nn.Module):
    def __init__(self, init_text: str, tokenizer, model, placement: str = "after", model_name: str = ""):
        super().__init__()
        if placement not in PLACEMENTS:
            raise ValueError(f"Unknown placement '{placement}'; expected one of {PLACEMENTS}.")
        ids = tokenizer(init_text, add_special_tokens=False).input_ids
        if not ids:
            raise ValueError("The init text of a soft prompt must not be empty.")
        start = model.get_input_embeddings().weight[ids].detach().float().clone()
        self.init_text, self.placement, self.model_name = init_text, placement, model_name
        self.init_ids = list(ids)
        self.embeddings = torch.nn.Parameter(start.clone())
        self.register_buffer("start", start)

    @property
    def k(self) -> int:
        return self.embeddings.shape[0]

    def fingerprint(self) -> str:
        data = self.embeddings.detach().cpu().contiguous().numpy().tobytes()
        return hashlib.sha256(data + self.placement.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return f"[{self.k} optimized vectors from '{self.init_text}', {self.placement}]"

    def slot_text(self) -> str:
        """What the text prompt's place holds before splicing ('' for prefix)."""
        return "" if self.placement == "prefix" else SLOT

    def split_ids(self, text: str, tokenizer) -> tuple[list[int], list[int]]:
        """A rendered chat text (holding the slot) -> the token ids before and after the vectors;
        every path (decoding, the reference's inputs, the training loss) tokenizes through here."""
        if self.placement == "prefix":
            pre, post = "", text
        elif text.count(SLOT) != 1:
            raise ValueError("A soft prompt's slot must appear exactly once in the rendered text.")
        else:
            pre, post = text.split(SLOT)
        return (tokenizer(pre, add_special_tokens=False).input_ids if pre else [],
                tokenizer(post, add_special_tokens=False).input_ids)

    def token_rows(self, texts: list[str], tokenizer) -> list[list[int]]:
        """Rendered chat texts (holding the slot) -> token ids with -1 ... -k where the k vectors
        go (the fast decoder's rows: ``fastgen.greedy(..., soft=self.embeddings.detach())``)."""
        return [pre + [-(j + 1) for j in range(self.k)] + post
                for pre, post in (self.split_ids(text, tokenizer) for text in texts)]

    def build_inputs(self, texts: list[str], tokenizer, model, targets: list[list[int]] | None = None,
                     padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Rendered chat texts (holding the slot) -> inputs_embeds, attention_mask, position_ids
        (and labels when ``targets`` are given: -100 everywhere but the target tokens)."""
        embed = model.get_input_embeddings()
        device, dtype = embed.weight.device, embed.weight.dtype
        soft = self.embeddings.to(device=device, dtype=dtype)
        rows, labels = [], []
        for i, text in enumerate(texts):
            pre_ids, post_ids = self.split_ids(text, tokenizer)
            target = targets[i] if targets is not None else []
            after = torch.tensor(post_ids + target, dtype=torch.long, device=device)
            before = torch.tensor(pre_ids, dtype=torch.long, device=device)
            rows.append(torch.cat([embed(before), soft, embed(after)]))
            labels.append([-100] * (len(pre_ids) + self.k + len(post_ids)) + list(target))
        length = max(r.shape[0] for r in rows)
        batch = torch.zeros(len(rows), length, soft.shape[1], device=device, dtype=dtype)
        mask = torch.zeros(len(rows), length, dtype=torch.long, device=device)
        label_tensor = torch.full((len(rows), length), -100, dtype=torch.long, device=device)
        for i, row in enumerate(rows):
            span = slice(length - row.shape[0], length) if padding_side == "left" else slice(0, row.shape[0])
            batch[i, span] = row
            mask[i, span] = 1
            label_tensor[i, span] = torch.tensor(labels[i], device=device)
        out = {"inputs_embeds": batch, "attention_mask": mask}
        if targets is not None:
            out["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            out["labels"] = label_tensor
        return out

    # ------------------------------------------------------------ save / load

    def save(self, path: str | Path, **hyperparameters) -> Path:
        """``<path>.safetensors`` (the vectors and their start) + ``<path>.json`` (how to use them)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({"embeddings": self.embeddings.detach().cpu().contiguous(),
                   "start": self.start.cpu().contiguous()}, str(path.with_suffix(".safetensors")))
        meta = {"model": self.model_name, "init_text": self.init_text, "init_ids": self.init_ids,
                "placement": self.placement, "k": self.k, "dim": int(self.embeddings.shape[1]),
                "hyperparameters": hyperparameters}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
        return path.with_suffix(".safetensors")

    @classmethod
    def load(cls, path: str | Path, tokenizer, model) -> "SoftPrompt":
        from safetensors.torch import load_file

        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        tensors = load_file(str(path.with_suffix(".safetensors")))
        soft = cls(meta["init_text"], tokenizer, model, meta["placement"], meta["model"])
        if tuple(tensors["embeddings"].shape) != tuple(soft.embeddings.shape):
            raise ValueError(f"{path} holds {tuple(tensors['embeddings'].shape)} vectors but the init text gives "
                             f"{tuple(soft.embeddings.shape)} for this model; was it saved for another model?")
        with torch.no_grad():
            soft.embeddings.copy_(tensors["embeddings"])
            soft.start.copy_(tensors["start"])
        return soft

    def export_peft(self, directory: str | Path, model, base_model_path: str) -> Path:
        """Save as a PEFT prompt-tuning adapter (placement 'prefix' only: PEFT always
        prepends), loadable with ``PeftModel.from_pretrained(model, directory)``."""
        from peft import PromptTuningConfig, TaskType, get_peft_model

        if self.placement != "prefix":
            raise ValueError(f"PEFT prompt tuning always prepends its vectors; a soft prompt placed "
                             f"'{self.placement}' has no PEFT equivalent. Train with placement='prefix' to export.")
        config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=self.k,
                                    base_model_name_or_path=base_model_path)
        peft_model = get_peft_model(model, config)
        with torch.no_grad():
            peft_model.prompt_encoder["default"].embedding.weight.copy_(self.embeddings)
        peft_model.save_pretrained(str(directory))
        peft_model.unload() if hasattr(peft_model, "unload") else None
        return Path(directory)

    # ------------------------------------------------------------ interpretation

    @torch.no_grad()
    def drift(self, tokenizer, model) -> list[dict]:
        """Per vector: cosine and L2 distance to its start, and the nearest vocabulary token
        (by cosine). Nearest-token readings of soft prompts can be arbitrary (Khashabi et
        al. 2022, "Prompt Waywardness"): read them as a hint, not a translation."""
        vocab = model.get_input_embeddings().weight.float()
        current = self.embeddings.detach().to(vocab.device)
        start = self.start.to(vocab.device)
        nearest = (F.normalize(current, dim=-1) @ F.normalize(vocab, dim=-1).T).argmax(-1)
        return [{"position": i, "start_token": tokenizer.decode([self.init_ids[i]]),
                 "cosine_to_start": float(F.cosine_similarity(current[i], start[i], dim=0)),
                 "l2_to_start": float((current[i] - start[i]).norm()),
                 "start_norm": float(start[i].norm()),
                 "nearest_token": tokenizer.decode([int(nearest[i])])} for i in range(self.k)]


# ---------------------------------------------------------------- targets


def clean_rationale(answer: str) -> str:
    """GSM8K reference without calculator annotations: '<<48/2=24>>' removed."""
    return re.sub(r"<<[^>]*>>", "", answer).strip()


def training_target(task: Task, example: Example, gsm8k_target: str = "rationale") -> str:
    """The assistant text the loss is computed on. Label tasks: the label word.
    Math: the reference rationale ending in '#### N', or just 'The answer is N.'."""
    if task.kind == "number":
        if gsm8k_target == "rationale" and example.reference:
            return clean_rationale(example.reference)
        if gsm8k_target not in ("rationale", "answer"):
            raise ValueError(f"gsm8k_target must be 'rationale' or 'answer', got '{gsm8k_target}'.")
        return f"The answer is {example.target}."
    if task.kind == "choice":
        return f"({example.target})"
    if task.kind == "open":
        raise ValueError(f"Task '{task.name}' has no reference answers to train on.")
    return example.target


# ---------------------------------------------------------------- training


KEEP_TOKENS = "keep_tokens"  # trust_radius: each vector stays nearest (L2) to its own start token


@dataclasses.dataclass
class TrainConfig:
    steps: int = 100
    batch_size: int = 16
    lr: float = 1e-2
    weight_decay: float = 0.0
    l2_penalty: float = 0.0          # lambda in lambda * ||E - E0||^2 (summed over vectors)
    trust_radius: float | str | None = None  # eps: each vector stays within eps of its start, or KEEP_TOKENS
    seed: int = 0
    gsm8k_target: str = "rationale"
    max_target_tokens: int = 256

    def __post_init__(self):
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be at least 1, got {self.steps}, {self.batch_size}.")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}.")
        if self.l2_penalty < 0 or not (self.trust_radius in (None, KEEP_TOKENS) or (
                isinstance(self.trust_radius, (int, float)) and self.trust_radius > 0)):
            raise ValueError(f"l2_penalty must be >= 0 and trust_radius positive, '{KEEP_TOKENS}' or None; got "
                             f"{self.l2_penalty} and {self.trust_radius!r}.")


@dataclasses.dataclass
class TrainLog:
    losses: list[float]
    seconds: float           # training wall time of every step in ``losses``, earlier sessions' included
    config: dict
    resumed_from: int = 0

    @property
    def seconds_per_step(self) -> float:
        return self.seconds / max(1, len(self.losses))


def batch_schedule(n_examples: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Example indices for every step: seeded permutations, epoch after epoch."""
    order: list[int] = []
    rng = random.Random(seed)
    while len(order) < steps * batch_size:
        perm = list(range(n_examples))
        rng.shuffle(perm)
        order += perm
    return [order[s * batch_size:(s + 1) * batch_size] for s in range(steps)]


def encode_examples(engine, task: Task, prompt_text: str, examples: list[Example], placement: str,
                    config: TrainConfig) -> tuple[list[str], list[list[int]]]:
    """Rendered chat texts (with the prompt's slot) and target token ids (ending in EOS)."""
    tok = engine.tokenizer
    texts = [engine.render(c) for c in build_conversations(task, prompt_text, examples, placement)]
    targets = [tok(training_target(task, ex, config.gsm8k_target), add_special_tokens=False).input_ids
               [:config.max_target_tokens] + [tok.eos_token_id] for ex in examples]
    return texts, targets


def _config_hash(config: TrainConfig, soft: SoftPrompt, examples: list[Example], method: str) -> str:
    settings = {k: v for k, v in dataclasses.asdict(config).items() if k != "steps"}  # batches do not depend on it
    return fingerprint(settings, soft.init_text, soft.placement, method, soft.model_name, [e.id for e in examples])


def _load_checkpoint(path: Path, expected: str) -> dict | None:
    """The saved state, None when there is none; ``CheckpointError`` (the one policy of
    ``promptgrad.checkpoints``) when it cannot be read or holds other settings."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, weights_only=False)
    except Exception as err:  # truncated or corrupt: never used silently
        raise corrupt(path, f"{type(err).__name__}: {err}") from err
    if not isinstance(state, dict) or state.get("config_hash") != expected:
        raise CheckpointError(f"Checkpoint {path} belongs to other settings; it was not used. Delete it, or pass "
                              f"another checkpoint path.")
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


@contextlib.contextmanager
def checkpointed(model, on: bool):
    """Gradient checkpointing while training, when ``on``: the activations inside each layer are
    recomputed in the backward pass; only each layer's input is kept, so activation memory falls
    from all of a layer's intermediates to one hidden state per layer and token. Only the layers
    are put in training mode (the switch transformers checks), so no dropout turns on; the model
    is as it was after."""
    if not on:
        yield
        return
    from transformers.modeling_layers import GradientCheckpointingLayer

    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer in layers:
            layer.training = False
        model.activation_checkpointing_disable()


def train_soft_prompt(soft: SoftPrompt, engine, task: Task, train: list[Example], config: TrainConfig,
                      checkpoint: str | Path | None = None, checkpoint_every: int = 10,
                      desc: str = "EmbedGrad", stop_after: int | None = None, one_pass: bool = False,
                      gradient_checkpointing: bool = False) -> TrainLog:
    """Optimize ``soft`` on ``train``: AdamW on the k vectors, the model frozen.

    With ``checkpoint``, state is saved every ``checkpoint_every`` steps and a rerun
    resumes there with the same batches (``stop_after`` stops early, for tests). ``one_pass``:
    gradients through the whole rows (``target_loss``), the slower way the benchmark compares with;
    ``gradient_checkpointing`` (:func:`checkpointed`) implies it (a checkpointed layer reads no
    cached prefix).
    """
    one_pass = one_pass or gradient_checkpointing
    model, tok = engine.hf_model, engine.tokenizer
    soft.to(model.device)
    texts, targets = encode_examples(engine, task, soft.slot_text(), train, soft.placement, config)
    schedule = batch_schedule(len(train), config.steps, config.batch_size, config.seed)
    optimizer = torch.optim.AdamW([soft.embeddings], lr=config.lr, weight_decay=config.weight_decay)
    radius = token_radii(soft, model) if config.trust_radius == KEEP_TOKENS else config.trust_radius
    losses: list[float] = []
    first_step = 0
    ckpt_path = Path(checkpoint) if checkpoint else None
    expected = _config_hash(config, soft, train, "embedgrad")
    state = _load_checkpoint(ckpt_path, expected) if ckpt_path else None
    if state:
        with torch.no_grad():
            soft.embeddings.copy_(state["embeddings"])
        optimizer.load_state_dict(state["optimizer"])
        losses, first_step = state["losses"], state["step"]
    earlier = state.get("seconds", 0.0) if state else 0.0
    start_time = time.perf_counter()
    with checkpointed(model, gradient_checkpointing):
        for step in tqdm(range(first_step, config.steps), desc=desc, initial=first_step, total=config.steps):
            idx = schedule[step]
            batch_texts, batch_targets = [texts[i] for i in idx], [targets[i] for i in idx]
            loss = target_loss(model, soft.build_inputs(batch_texts, tok, model, batch_targets)) if one_pass else \
                soft_prompt_loss(soft, batch_texts, batch_targets, tok, model)
            total = loss + config.l2_penalty * (soft.embeddings - soft.start).pow(2).sum() if config.l2_penalty \
                else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if radius is not None:
                project_to_ball(soft, radius)
            losses.append(float(loss.detach()))
            done = step + 1
            if ckpt_path and (done % checkpoint_every == 0 or done == config.steps):
                _save_checkpoint(ckpt_path, {"config_hash": expected, "step": done, "losses": losses,
                                             "seconds": earlier + time.perf_counter() - start_time,
                                             "embeddings": soft.embeddings.detach().cpu(),
                                             "optimizer": optimizer.state_dict()})
            if stop_after is not None and done >= stop_after:
                break
    return TrainLog(losses, earlier + time.perf_counter() - start_time, dataclasses.asdict(config), first_step)


def soft_prompt_loss(soft: SoftPrompt, texts: list[str], targets: list[list[int]], tokenizer, model) \
        -> torch.Tensor:
    """``target_loss`` of the soft prompt on rendered texts, the part before the prompt read once
    without gradients (``fastgen.read_prefixes``): nothing there depends on the prompt, so the
    forward pass with gradients and the backward pass cover only the prompt, what follows it and
    the target (with the prompt after the question: a seventh of an SST-2 row). Same arithmetic
    as one pass over the whole rows, but for the order of floating-point sums."""
    from .fastgen import batch_cache, read_prefixes

    if soft.placement == "prefix":  # nothing before the prompt
        return target_loss(model, soft.build_inputs(texts, tokenizer, model, targets))
    embed = model.get_input_embeddings()
    device, dtype = embed.weight.device, embed.weight.dtype
    split = [soft.split_ids(text, tokenizer) for text in texts]
    cached = read_prefixes(model, [pre for pre, _ in split], tokenizer.pad_token_id)
    rows = [post + list(target) for (_, post), target in zip(split, targets)]
    width = soft.k + max(map(len, rows))
    suffix = torch.zeros(len(rows), width, embed.weight.shape[1], device=device, dtype=dtype)
    suffix_mask = torch.zeros(len(rows), width, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long, device=device)
    prompt = soft.embeddings.to(device=device, dtype=dtype)
    for i, (row, target) in enumerate(zip(rows, targets)):
        start = width - soft.k - len(row)
        suffix[i, start:] = torch.cat([prompt, embed(torch.tensor(row, device=device))])
        suffix_mask[i, start:] = 1
        labels[i, width - len(target):] = torch.tensor(target, device=device)
    cache, mask, positions = batch_cache(cached, suffix_mask, None)
    keep = max(map(len, targets)) + 1
    logits = model(inputs_embeds=suffix, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=keep).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, -keep + 1:].reshape(-1), ignore_index=-100)


def target_loss(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy over target tokens. Rows are left padded, so every target sits at
    the end: only the last T+1 positions need logits (the 49k-word output layer is a
    quarter of the model's compute per position)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keep = int((labels != -100).sum(-1).max()) + 1
    logits = model(**inputs, logits_to_keep=keep).logits[:, :-1].float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels[:, -keep + 1:].reshape(-1),
                           ignore_index=-100)


@torch.no_grad()
def token_radii(soft: SoftPrompt, model) -> torch.Tensor:
    """Per vector, just under half the L2 distance from its start to the nearest other vocabulary
    embedding, as a ``(k, 1)`` tensor. Inside that ball the nearest token (by L2) is still the start
    token, so the trained prompt still reads as its text: our reading of "preserving the meaning"."""
    vocab = model.get_input_embeddings().weight
    distances = torch.cdist(soft.start.to(vocab.device, vocab.dtype).float(), vocab.float(),
                            compute_mode="donot_use_mm_for_euclid_dist")  # exact, not via a matrix product
    distances[torch.arange(soft.k), torch.tensor(soft.init_ids)] = float("inf")  # the start token itself,
    distances[distances == 0] = float("inf")  # and exact copies of it (distances are exact here)
    return 0.49 * distances.min(dim=-1).values[:, None].to(soft.embeddings.device)


@torch.no_grad()
def project_to_ball(soft: SoftPrompt, radius: float | torch.Tensor) -> None:
    """Trust region: move each vector back to within ``radius`` (L2) of its start (one radius,
    or one per vector: a ``(k, 1)`` tensor)."""
    delta = soft.embeddings - soft.start
    norms = delta.norm(dim=-1, keepdim=True)
    scale = torch.clamp(radius / norms.clamp(min=1e-12), max=1.0)
    soft.embeddings.copy_(soft.start + delta * scale)


# ---------------------------------------------------------------- the PEFT baseline


def train_peft_prompt_tuning(init_text: str, engine, task: Task, train: list[Example], config: TrainConfig,
                             base_model_path: str, desc: str = "PEFT prompt tuning",
                             checkpoint: str | Path | None = None, checkpoint_every: int = 10,
                             stop_after: int | None = None, peft_loss: bool = False,
                             gradient_checkpointing: bool = False) -> tuple[SoftPrompt, TrainLog]:
    """What users would pick instead: PEFT ``PromptTuningConfig(prompt_tuning_init=TEXT)``
    with the same init text, batches, steps and learning rate. PEFT prepends the vectors
    at position 0; the result is returned as a ``prefix`` SoftPrompt so it is evaluated by
    the same engine and protocol as everything else. ``peft_loss``: PEFT's own loss, logits on
    every position (the slower way the benchmark compares with). ``gradient_checkpointing``: as in
    :func:`train_soft_prompt`."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    model, tok = engine.hf_model, engine.tokenizer
    k = len(tok(init_text, add_special_tokens=False).input_ids)
    peft_config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=k,
                                     prompt_tuning_init=PromptTuningInit.TEXT, prompt_tuning_init_text=init_text,
                                     tokenizer_name_or_path=base_model_path)
    peft_model = get_peft_model(model, peft_config)
    soft = SoftPrompt(init_text, tok, model, "prefix", engine.model)
    texts, targets = encode_examples(engine, task, "", train, "after", config)
    prompt_ids = [tok(t, add_special_tokens=False).input_ids for t in texts]
    schedule = batch_schedule(len(train), config.steps, config.batch_size, config.seed)
    prompt_weight = peft_model.prompt_encoder["default"].embedding.weight
    optimizer = torch.optim.AdamW([prompt_weight], lr=config.lr, weight_decay=config.weight_decay)
    losses, first_step = [], 0
    ckpt_path = Path(checkpoint) if checkpoint else None
    expected = _config_hash(config, soft, train, "peft")
    state = _load_checkpoint(ckpt_path, expected) if ckpt_path else None
    if state:
        with torch.no_grad():
            prompt_weight.copy_(state["embeddings"])
        optimizer.load_state_dict(state["optimizer"])
        losses, first_step = state["losses"], state["step"]
    earlier = state.get("seconds", 0.0) if state else 0.0
    start_time = time.perf_counter()
    try:
        with checkpointed(model, gradient_checkpointing):
            for step in tqdm(range(first_step, config.steps), desc=desc, initial=first_step, total=config.steps):
                idx = schedule[step]
                seqs = [prompt_ids[i] + targets[i] for i in idx]
                length = max(map(len, seqs))
                input_ids = torch.full((len(idx), length), tok.pad_token_id, dtype=torch.long)
                mask = torch.zeros_like(input_ids)
                labels = torch.full_like(input_ids, -100)
                for row, (i, seq) in enumerate(zip(idx, seqs)):
                    input_ids[row, :len(seq)] = torch.tensor(seq)
                    mask[row, :len(seq)] = 1
                    labels[row, len(prompt_ids[i]):len(seq)] = torch.tensor(targets[i])
                inputs = input_ids.to(model.device), mask.to(model.device), labels.to(model.device)
                loss = peft_model(input_ids=inputs[0], attention_mask=inputs[1], labels=inputs[2]).loss if peft_loss \
                    else peft_target_loss(peft_model, model, *inputs)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                done = step + 1
                if ckpt_path and (done % checkpoint_every == 0 or done == config.steps):
                    _save_checkpoint(ckpt_path, {"config_hash": expected, "step": done, "losses": losses,
                                                 "seconds": earlier + time.perf_counter() - start_time,
                                                 "embeddings": prompt_weight.detach().cpu(),
                                                 "optimizer": optimizer.state_dict()})
                if stop_after is not None and done >= stop_after:
                    break
        with torch.no_grad():
            soft.embeddings.copy_(peft_model.get_prompt_embedding_to_save("default").float())
    finally:
        peft_model.unload() if hasattr(peft_model, "unload") else None
    return soft, TrainLog(losses, earlier + time.perf_counter() - start_time, dataclasses.asdict(config), first_step)


def peft_target_loss(peft_model, model, input_ids, mask, labels) -> torch.Tensor:
    """The loss ``peft_model(..., labels=labels).loss`` computes (PEFT's virtual tokens before
    the rows, cross-entropy on the label tokens), with the output layer applied only where a
    label is: on every other position its 49k-word logits would be computed and thrown away."""
    prompts = peft_model.get_prompt(batch_size=input_ids.shape[0])
    embeds = torch.cat([prompts.to(model.dtype), model.get_input_embeddings()(input_ids)], 1)
    mask = torch.cat([torch.ones(mask.shape[0], prompts.shape[1], dtype=mask.dtype, device=mask.device), mask], 1)
    hidden = model.get_decoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    labels = torch.cat([torch.full((labels.shape[0], prompts.shape[1]), -100, dtype=labels.dtype,
                                   device=labels.device), labels], 1)
    rows, cols = (labels[:, 1:] != -100).nonzero(as_tuple=True)  # position t predicts the label at t + 1
    logits = model.get_output_embeddings()(hidden[rows, cols]).float()
    return F.cross_entropy(logits, labels[rows, cols + 1])


# ---------------------------------------------------------------- learning-rate choice


@dataclasses.dataclass
class Fit:
    soft: SoftPrompt
    log: TrainLog
    learning_rate: float
    sweep: list[dict]          # one row per learning rate: dev accuracy after the short run
    runs: list[TrainLog]       # every distinct training run, the sweep's included (its budget)

    @property
    def train_steps(self) -> int:
        return sum(len(run.losses) for run in self.runs)

    @property
    def budget_seconds(self) -> float:
        """Training and the sweep's dev scoring."""
        return sum(run.seconds for run in self.runs) + sum(row["dev_seconds"] for row in self.sweep)


def fit(method: str, engine, task: Task, train: list[Example], dev: list[Example], config: TrainConfig,
        learning_rates: list[float], sweep_steps: int, init_text: str, placement: str = "after",
        base_model_path: str | None = None, checkpoint_dir: str | Path | None = None,
        max_tokens: int | None = None, gradient_checkpointing: bool = False) -> Fit:
    """Choose the learning rate on the dev split, then train with it.

    Each rate gets a short run of ``sweep_steps``; the rate with the best dev accuracy (ties:
    the smaller rate) is trained for ``config.steps``. With ``checkpoint_dir`` that run
    continues the sweep's run at the same rate (same batches: the same result as starting
    over, for less compute). ``method`` is ``"embedgrad"`` or ``"peft"`` (PEFT prompt tuning,
    prefix). The test split is never seen here.
    """
    from .evaluation import evaluate_prompt

    if method not in ("embedgrad", "peft"):
        raise ValueError(f"Unknown method '{method}'; expected 'embedgrad' or 'peft'.")
    if not learning_rates:
        raise ValueError("learning_rates must name at least one rate.")
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
    runs: dict[object, TrainLog] = {}  # by checkpoint: the final run continues the sweep's at its rate

    def train_once(lr: float, steps: int, tag: str) -> tuple[SoftPrompt, TrainLog]:
        run = dataclasses.replace(config, lr=lr, steps=steps)
        label = f"{method} {task.name} lr={lr:g}{tag}"
        path = ckpt / f"{task.name.replace('/', '_')}_lr{lr:g}.pt" if ckpt else None
        if method == "peft":
            soft, log = train_peft_prompt_tuning(init_text, engine, task, train, run, base_model_path, desc=label,
                                                 checkpoint=path, gradient_checkpointing=gradient_checkpointing)
        else:
            soft = SoftPrompt(init_text, engine.tokenizer, engine.hf_model, placement, engine.model)
            log = train_soft_prompt(soft, engine, task, train, run, checkpoint=path, desc=label,
                                    gradient_checkpointing=gradient_checkpointing)
        runs[path or len(runs)] = log
        return soft, log

    sweep = []
    for lr in learning_rates:
        if len(learning_rates) == 1:
            break
        soft, log = train_once(lr, sweep_steps, " (sweep)")
        start = time.perf_counter()
        dev_eval = evaluate_prompt(engine, task, soft, dev, max_tokens=max_tokens, desc=f"dev lr={lr:g}")
        sweep.append({"method": method, "task": task.name, "lr": lr, "steps": sweep_steps,
                      "dev_accuracy": dev_eval.summary["accuracy"], "final_loss": log.losses[-1],
                      "dev_seconds": time.perf_counter() - start})
    best = max(sweep, key=lambda r: (r["dev_accuracy"], -r["lr"]))["lr"] if sweep else learning_rates[0]
    soft, log = train_once(best, config.steps, "")
    return Fit(soft, log, best, sweep, list(runs.values()))


# ---------------------------------------------------------------- the method contract

METHOD_NAMES = {"text": "text prompt", "embedgrad": "EmbedGrad", "peft": "PEFT prompt tuning"}


@dataclasses.dataclass
class EmbedGrad(Method):
    """EmbedGrad, or PEFT prompt tuning (``peft=True``: a prefix of virtual tokens through the
    peft library), under the method contract: :func:`fit` on the task engine (the learning rate
    on dev when ``learning_rates`` lists several, then training on train). Its budget: training
    examples (steps x batch) and training wall time."""

    PER_TASK = ("steps", "batch_size", "max_tokens")
    HOW = ("gradient_checkpointing",)

    peft: bool = False
    initial_prompt: str = "please reason step by step"
    placement: str = "after"
    steps: int | dict = 100
    batch_size: int | dict = 16
    learning_rates: tuple[float, ...] | list[float] = (1e-2,)
    sweep_steps: int = 8
    l2_penalty: float = 0.0
    trust_radius: float | str | None = None  # or KEEP_TOKENS
    gsm8k_target: str = "rationale"
    max_tokens: int | dict | None = None   # answer budget of the dev sweep
    seed: int = 0
    gradient_checkpointing: bool = False   # less memory, more compute; the same training

    @property
    def name(self) -> str:
        return METHOD_NAMES["peft" if self.peft else "embedgrad"]

    def optimize(self, task: Task, splits, engines, checkpoint_dir: str | Path | None = None) -> Found:
        from .models import local_model_path

        c = self.for_task(task)
        config = TrainConfig(steps=c.steps, batch_size=c.batch_size, l2_penalty=c.l2_penalty,
                             trust_radius=c.trust_radius, seed=c.seed, gsm8k_target=c.gsm8k_target)
        engine = engines.task
        result, spent = timed([engine], lambda: fit(
            "peft" if c.peft else "embedgrad", engine, task, splits.train, splits.dev, config,
            list(c.learning_rates), c.sweep_steps, c.initial_prompt, c.placement, local_model_path(engine.model),
            c.checkpoint(checkpoint_dir, task, splits, engines, suffix=""), c.max_tokens, c.gradient_checkpointing))
        steps = len(result.log.losses)
        trajectory = [{"step": i + 1, "prompt": None, "score": None, "loss": loss}
                      for i, loss in enumerate(result.log.losses)]
        details = {"lr": result.learning_rate, "steps": steps,
                   "seconds_per_step": round(result.log.seconds_per_step, 3),
                   "train_seconds": round(result.log.seconds, 1)}
        # the budget: every training run (the sweep's too) and the sweep's dev scoring, earlier sessions included
        budget = dataclasses.replace(spent, train_examples=result.train_steps * c.batch_size,
                                     wall_seconds=result.budget_seconds)
        return Found(self.name, task.name, result.soft, budget, trajectory, details, result, c.run_settings(splits))

    def demand(self, task: Task, splits, loop_judge=None) -> dict:
        """Training examples (steps x batch, the sweep's short runs too) and the sweep's dev answers,
        all on the task model."""
        c = self.for_task(task)
        sweep = len(c.learning_rates) if len(c.learning_rates) > 1 else 0
        dev = answering(sweep * len(splits.dev), answer_budget(task, c.max_tokens))
        return {"task": dev + Demand(train_examples=(c.steps + sweep * c.sweep_steps) * c.batch_size)}


# ---------------------------------------------------------------- one step, shown


def one_step(soft: SoftPrompt, engine, task: Task, examples: list[Example], lr: float,
             gsm8k_target: str = "rationale") -> dict:
    """One EmbedGrad update of ``soft`` on ``examples``, with its numbers, for a reader to see:
    the loss (mean cross-entropy of the target tokens, the model frozen), the gradient's norm at
    each prompt vector, one AdamW step on the vectors alone, how far each vector moved, and the
    loss after the step on the same examples. ``soft`` is updated in place (pass a fresh one)."""
    config = TrainConfig(steps=1, batch_size=len(examples), lr=lr, gsm8k_target=gsm8k_target)
    model, tok = engine.hf_model, engine.tokenizer
    soft.to(model.device)
    texts, targets = encode_examples(engine, task, soft.slot_text(), examples, soft.placement, config)
    optimizer = torch.optim.AdamW([soft.embeddings], lr=lr, weight_decay=0.0)
    before = soft.embeddings.detach().clone()
    loss = soft_prompt_loss(soft, texts, targets, tok, model)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad = soft.embeddings.grad.detach().clone()
    optimizer.step()
    with torch.no_grad():
        after = soft_prompt_loss(soft, texts, targets, tok, model)
    frozen = all(p.grad is None for p in model.parameters())
    return {"loss": float(loss), "loss_after": float(after), "examples": len(examples),
            "target_tokens": sum(len(t) for t in targets), "model_frozen": frozen,
            "vectors": [{"position": i, "token": tok.decode([soft.init_ids[i]]), "norm": float(before[i].norm()),
                         "grad_norm": float(grad[i].norm()),
                         "moved": float((soft.embeddings[i].detach() - before[i]).norm())} for i in range(soft.k)]}
