"""Greedy generation for many prompts at once, near what 2 CPU cores can do.

What costs time on a CPU (measured with the embedded 135M model, 2 cores):
- reading the prompt (prefill) is compute-bound, about 500 tokens/s: every prompt token counts,
  padding tokens included;
- each decoding step reads all weights from memory whatever the batch size (about 0.1 s for
  1 to 32 rows), so decoding wants as many rows in one batch as memory allows.

So this path (``TransformersEngine(..., decoder="fast")``):
1. reads a prefix shared by several prompts once: rows whose token ids share at least half of
   their length (the same question under several instructions, or one dev question under many
   candidate prompts) form a group, and the group's common prefix is read once, without padding
   waste (groups of similar length are batched);
2. reads each row's own suffix in a batch on top of its group's cached keys and values;
3. decodes large batches greedily into preallocated key/value buffers (no copy per step).

A soft prompt (``embedgrad.SoftPrompt``) takes the same path: its rows hold negative ids where
its vectors go (-1 the first), and those positions are read from the vectors instead of the
embedding matrix.

The arithmetic is the reference's (same weights, fp32, explicit positions and masks); only the
order of floating-point sums differs with batch shapes, which can flip a near-tied greedy token.
``tests/test_fastgen.py`` measures the agreement with ``decoder="reference"`` (HF ``generate``).
"""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer

MIN_SHARED_FRACTION = 0.5  # a row joins a group when the common prefix is at least this share of it


class _BufferLayer(DynamicLayer):
    """A cache layer whose keys/values live in a preallocated buffer: appending a decoding step
    writes in place instead of concatenating the whole cache again."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int):
        super().__init__()
        self._k, self._v, self.length = keys, values, length
        self.dtype, self.device = keys.dtype, keys.device
        self.is_initialized = True
        self.keys, self.values = self._k[:, :, :length], self._v[:, :, :length]

    def update(self, key_states, value_states, *args, **kwargs):
        end = self.length + key_states.shape[-2]
        self._k[:, :, self.length:end], self._v[:, :, self.length:end] = key_states, value_states
        self.length = end
        self.keys, self.values = self._k[:, :, :end], self._v[:, :, :end]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length

    def select(self, rows: torch.Tensor) -> None:
        """Keep only these rows of the batch."""
        self._k, self._v = self._k[rows], self._v[rows]
        self.keys, self.values = self._k[:, :, :self.length], self._v[:, :, :self.length]


def prefix_groups(rows: list[list[int]], min_fraction: float = MIN_SHARED_FRACTION) -> list[tuple[int, list[int]]]:
    """(shared prefix length, row indices) per group; every row keeps at least one token of its own."""
    order = sorted(range(len(rows)), key=lambda i: rows[i])
    groups: list[tuple[int, list[int]]] = []
    for i in order:
        if groups:
            length, members = groups[-1]
            anchor = rows[members[0]]
            common = _common_prefix(anchor[:length], rows[i])
            if common >= min_fraction * len(rows[i]) and common >= min_fraction * length:
                groups[-1] = (min(common, len(rows[i]) - 1), members + [i])
                continue
        groups.append((len(rows[i]) - 1, [i]))
    return groups


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _left_pad(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        if row:
            ids[r, width - len(row):] = torch.tensor(row)
            mask[r, width - len(row):] = 1
    return ids, mask


def _chunks(lengths: list[int], max_rows: int, max_tokens: int, order: list[int] | None = None,
            max_order_tokens: int | None = None) -> list[list[int]]:
    """Indices in chunks whose padded size (rows x longest) stays within ``max_tokens``; taken
    longest first, or by ``order`` (a length per index, largest first), whose padded size then
    stays within ``max_order_tokens`` too."""
    chunks: list[list[int]] = []
    key = order or lengths

    def fits(rows: list[int], values: list[int], budget: int | None) -> bool:
        return budget is None or len(rows) * max(max(values[j] for j in rows), 1) <= budget

    for i in sorted(range(len(lengths)), key=lambda i: key[i], reverse=True):
        last = chunks[-1] if chunks else None
        if last and len(last) < max_rows and fits(last + [i], lengths, max_tokens) and \
                (order is None or fits(last + [i], order, max_order_tokens)):
            last.append(i)
        else:
            chunks.append([i])
    return chunks


MIN_HEAD = 8  # a head shared by every prefix is read once when it is at least this long


def _inputs(model, ids: torch.Tensor, soft: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """``input_ids``, or ``inputs_embeds`` where rows hold a soft prompt's positions (negative ids:
    -1 is ``soft``'s first vector)."""
    where = ids < 0
    if soft is None or not bool(where.any()):
        return {"input_ids": ids}
    embeds = model.get_input_embeddings()(ids.clamp(min=0))
    embeds[where] = soft.to(device=embeds.device, dtype=embeds.dtype)[-ids[where] - 1]
    return {"inputs_embeds": embeds}


@torch.no_grad()
def read_prefixes(model, prefixes: list[list[int]], pad: int, max_tokens: int = 1024,
                  soft: torch.Tensor | None = None) -> list[list[tuple]]:
    """Keys and values of each prefix, per layer ``(keys [H, L, D], values [H, L, D])``. A head
    that every prefix starts with (the system prompt and the template's opening) is read once;
    the rest is read in length-sorted batches of about ``max_tokens`` (small batches of like
    lengths waste little on padding; reading is compute-bound, so the batch size buys nothing)."""
    head = _common_prefix_all(prefixes) if len(prefixes) > 1 else 0
    head = head if head >= MIN_HEAD else 0
    head_kv = _read(model, [prefixes[0][:head]], pad, soft=soft)[0] if head else None
    rests = [p[head:] for p in prefixes]
    found: list[list[tuple] | None] = [None] * len(prefixes)
    for chunk in _chunks([len(r) for r in rests], 64, max_tokens):
        for i, kv in zip(chunk, _read(model, [rests[i] for i in chunk], pad, head_kv, soft)):
            found[i] = kv
    return found


def _common_prefix_all(rows: list[list[int]]) -> int:
    """The length every row shares, leaving each row at least one token of its own."""
    length = min(map(len, rows)) - 1
    for other in rows[1:]:
        length = min(length, _common_prefix(rows[0][:length], other))
    return max(length, 0)


def _read(model, rows: list[list[int]], pad: int, head: list[tuple] | None = None,
          soft: torch.Tensor | None = None) -> list[list[tuple]]:
    """One forward over left-padded rows (after ``head``'s keys/values, when given); each row's
    keys/values, head included, without the padding."""
    device = model.device
    ids, mask = _left_pad(rows, pad)
    ids, mask = ids.to(device), mask.to(device)
    cache, start = None, 0
    if head is not None:
        start = head[0][0].shape[1]
        cache, mask, positions = batch_cache([head] * len(rows), mask.cpu(), None)
        positions = positions.to(device)
    else:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(**_inputs(model, ids, soft), attention_mask=mask, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=1)
    width = ids.shape[1]
    found = []
    for b, row in enumerate(rows):
        keep = list(range(start)) + list(range(start + width - len(row), start + width))
        index = torch.tensor(keep, device=device)
        found.append([(layer.keys[b].index_select(1, index), layer.values[b].index_select(1, index))
                      for layer in out.past_key_values.layers])
    return found


def batch_cache(prefixes: list[list[tuple]], suffix_mask: torch.Tensor, room: int | None):
    """A batch's cache from each row's prefix keys/values (``read_prefixes``), left padded, with
    ``room`` for the suffix and what follows (None: a plain growing cache, through which gradients
    flow); the attention mask over prefix and suffix and the suffix's positions (each row's count
    of real tokens before it)."""
    width = max(p[0][0].shape[1] for p in prefixes)
    device = prefixes[0][0][0].device
    prefix_mask = torch.zeros(len(prefixes), width, dtype=torch.long)
    for b, prefix in enumerate(prefixes):
        prefix_mask[b, width - prefix[0][0].shape[1]:] = 1
    cache = DynamicCache()
    layers = []
    for layer in range(len(prefixes[0])):
        k0 = prefixes[0][layer][0]
        shape = (len(prefixes), k0.shape[0], width + (room or 0), k0.shape[2])
        keys, values = k0.new_empty(shape), k0.new_empty(shape)  # written once, row by row
        for b, prefix in enumerate(prefixes):
            k, v = prefix[layer]
            pad = width - k.shape[1]
            keys[b, :, pad:width], values[b, :, pad:width] = k, v
            keys[b, :, :pad], values[b, :, :pad] = 0, 0  # masked, but must be finite (0 x NaN is NaN)
        if room is None:  # a plain cache, through which gradients flow
            cache.update(keys, values, layer)
        else:
            layers.append(_BufferLayer(keys, values, width))
    if room is not None:
        cache.layers = layers
    lengths = prefix_mask.sum(-1)
    positions = (lengths[:, None] + suffix_mask.cumsum(-1) - 1).clamp(min=0)
    return cache, torch.cat([prefix_mask, suffix_mask], 1).to(device), positions.to(device)


@torch.no_grad()
def greedy(model, rows: list[list[int]], max_new_tokens: int, end_ids: list[int], pad: int,
           max_rows: int = 96, max_tokens: int = 24576, min_fraction: float = MIN_SHARED_FRACTION,
           wave_tokens: int = 65536, soft: torch.Tensor | None = None) -> list[list[int]]:
    """Greedy continuations of token rows: each row's new tokens up to and including its first
    end token (or ``max_new_tokens`` of them). Negative ids in a row are ``soft``'s vectors
    (``SoftPrompt.token_rows``). Memory: at most ``wave_tokens`` prefix tokens'
    keys/values are held at once, and a decoding batch holds about ``max_tokens`` tokens' worth
    (46 KB a token for the embedded model; lower both for a large model)."""
    outputs: list[list[int]] = [[] for _ in rows]
    wave: list[tuple[int, list[int]]] = []
    groups = prefix_groups(rows, min_fraction)
    for g, group in enumerate(groups):  # waves of groups, so the cached prefixes stay within memory
        wave.append(group)
        if g == len(groups) - 1 or sum(length for length, _ in wave) > wave_tokens:
            for i, out in _decode_wave(model, rows, wave, max_new_tokens, end_ids, pad, max_rows, max_tokens,
                                       soft).items():
                outputs[i] = out
            wave = []
    return outputs


SUFFIX_TOKENS = 2048  # padded suffix tokens read in one batch (rows x the longest suffix)


def _decode_wave(model, rows, groups, max_new_tokens, end_ids, pad, max_rows, max_tokens,
                 soft=None) -> dict[int, list[int]]:
    device = model.device
    group_of, prefix_len = {}, {}
    for g, (length, members) in enumerate(groups):
        for i in members:
            group_of[i], prefix_len[i] = g, length
    cached = read_prefixes(model, [rows[m[0]][:length] for length, m in groups], pad, soft=soft)
    ends = torch.tensor(end_ids, device=device)
    members = sorted(group_of)
    outputs: dict[int, list[int]] = {}
    # batches of like suffix length: padding a suffix costs a token's compute, padding a prefix only memory
    suffixes = [len(rows[i]) - prefix_len[i] for i in members]
    for chunk in _chunks([len(rows[i]) + max_new_tokens for i in members], max_rows, max_tokens, suffixes,
                         SUFFIX_TOKENS):
        batch = [members[j] for j in chunk]
        suffix_ids, suffix_mask = _left_pad([rows[i][prefix_len[i]:] for i in batch], pad)
        cache, mask, positions = batch_cache([cached[group_of[i]] for i in batch], suffix_mask,
                                             suffix_ids.shape[1] + max_new_tokens)
        logits = model(**_inputs(model, suffix_ids.to(device), soft), attention_mask=mask, position_ids=positions,
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1]
        layers = cache.layers
        active = list(batch)  # rows still decoding, in the cache's batch order
        position = positions[:, -1:]
        for i in batch:
            outputs[i] = []
        done = torch.zeros(len(batch), dtype=torch.bool, device=device)
        for step in range(max_new_tokens):
            token = logits.argmax(-1)
            done |= torch.isin(token, ends)
            for i, t in zip(active, token.tolist()):
                outputs[i].append(t)
            if step == max_new_tokens - 1 or bool(done.all()):
                break
            if int(done.sum()) * 4 >= len(active):  # drop finished rows: no compute is spent on them
                keep = (~done).nonzero().squeeze(1)
                active = [active[j] for j in keep.tolist()]
                token, mask, position, done = token[keep], mask[keep], position[keep], done[keep]
                for layer in layers:
                    layer.select(keep)
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=mask.dtype, device=device)], 1)
            position = position + 1
            logits = model(input_ids=token[:, None], attention_mask=mask, position_ids=position,
                           past_key_values=cache, use_cache=True).logits[:, -1]
        for i in batch:
            stop = next((j for j, t in enumerate(outputs[i]) if t in end_ids), None)
            outputs[i] = outputs[i][:stop + 1] if stop is not None else outputs[i]
    return outputs
