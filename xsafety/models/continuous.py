"""Continuous batching for a transformers causal LM: rows that finish stop costing.

``model.generate`` on a padded batch keeps decoding every row until the last one ends: in the
default run every batch of 32 ran all 96 steps because one row reached the limit, and 16% of the
decode row-steps came after their answer had ended. Here a finished row leaves the batch at once
(its slice of the KV cache is dropped) and, once enough rows have left, waiting prompts are
prefilled and joined to the running batch, so the batch stays full and no step is spent on a row
that has ended.

Why a loop of our own: transformers' own continuous batching (``model.generate_batch``, paged
attention) is built for CUDA; on this CPU it ran 1.6x slower than padded ``generate`` (measured:
11.9 vs 19.4 tok/s, 8 prompts, 1 thread), while this loop reuses the model's own forward pass,
``DynamicCache`` and attention kernels, so each step costs what a step of ``generate`` costs.

How rows of different lengths share one cache: every row is left-padded, the attention mask
hides the padding, and each row's position ids count only its real tokens, exactly as
``generate`` does for a left-padded batch. Joining two groups left-pads the shorter group's
cache and mask to the longer one's length; columns that are padding for every row are dropped.
Greedy output therefore matches one-at-a-time decoding up to float rounding, as padded batches
do. Models whose cache is not a plain ``DynamicCache`` of full-attention layers (sliding-window,
linear-attention or encoder-decoder models) are not handled here: ``supports`` says so and the
caller falls back to ``generate``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# next-token choice: (logits of the active rows [rows, vocab], their request indices) -> token ids [rows]
Chooser = Callable[[Any, list[int]], Any]


@dataclass
class DecodeStats:
    """What a run cost. ``row_steps`` counts every (row, step) computed, the prefill's last
    position included (it yields each answer's first token); ``useful`` the tokens that ended up
    in an answer (EOS included). ``prefill_tokens`` are real prompt tokens, ``prefill_slots`` the
    padded slots computed for them (a shared prefix counted once); ``columns`` sums, over decode
    steps, the cache columns attended per row, and ``real_columns`` those that hold a real token."""

    row_steps: int = 0
    useful: int = 0
    prefill_tokens: int = 0
    prefill_slots: int = 0
    prefills: int = 0
    steps: int = 0
    columns: int = 0
    real_columns: int = 0
    prefix_saved: int = 0  # prompt tokens not computed because every prompt shared them

    @property
    def waste(self) -> float:
        """Share of row-steps that produced no answer token."""
        return 1.0 - self.useful / self.row_steps if self.row_steps else 0.0

    def add(self, other: "DecodeStats") -> None:
        """Accumulate another run's counts into this one."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Finished:
    """One answer: its request index, generated tokens (EOS included when it stopped) and why it ended."""

    index: int
    tokens: list[int]
    stopped: bool


@dataclass
class _Batch:
    """The running rows: request indices, tokens so far, and the tensors the next step needs."""

    rows: list[int] = field(default_factory=list)
    tokens: list[list[int]] = field(default_factory=list)
    prompt_lengths: list[int] = field(default_factory=list)
    cache: Any = None  # DynamicCache, [rows, heads, columns, dim] per layer
    mask: Any = None  # [rows, columns]: 1 for a real token
    last: Any = None  # [rows] the token each row feeds next (not yet in the cache)


def _growing_layer_class() -> type:
    """A ``DynamicLayer`` that appends into a buffer with room to spare instead of ``torch.cat``.

    ``DynamicLayer.update`` concatenates, copying the layer's whole cache at every step: at 32
    rows x 150 columns that is ~220 MB of fp32 copied per step for SmolLM2, a large share of the
    step on a CPU. Here a step writes its one column in place and returns a view; the buffer
    grows by doubling (rare copies). ``set`` replaces the contents after rows leave or join.
    """
    import torch
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """Keys and values in preallocated buffers; ``keys``/``values`` are views of the used part."""

        def lazy_initialization(self, key_states: Any, value_states: Any) -> None:
            super().lazy_initialization(key_states, value_states)
            self.used = 0
            self.key_buffer: Any = None
            self.value_buffer: Any = None

        def set(self, keys: Any, values: Any, room: int = 32) -> None:
            """Replace the cache by ``keys``/``values`` [rows, heads, columns, dim], with ``room`` spare columns."""
            if not self.is_initialized:
                self.lazy_initialization(keys, values)
            rows, heads, columns, dim = keys.shape
            self.key_buffer = keys.new_empty((rows, heads, columns + room, dim))
            self.value_buffer = values.new_empty((rows, heads, columns + room, values.shape[-1]))
            self.key_buffer[:, :, :columns] = keys
            self.value_buffer[:, :, :columns] = values
            self.used = columns
            self._expose()

        def _expose(self) -> None:
            self.keys = self.key_buffer[:, :, : self.used]
            self.values = self.value_buffer[:, :, : self.used]

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            """Write the new columns in place (growing the buffers when full); return the used part."""
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            new = key_states.shape[-2]
            if self.key_buffer is None:
                self.set(key_states, value_states)
                return self.keys, self.values
            if self.used + new > self.key_buffer.shape[2]:
                self.set(self.keys, self.values, room=max(32, self.used, new))
            self.key_buffer[:, :, self.used : self.used + new] = key_states
            self.value_buffer[:, :, self.used : self.used + new] = value_states
            self.used += new
            self._expose()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            """Columns in use."""
            return self.used if self.is_initialized else 0

    return GrowingLayer


_GROWING: list[type] = []


def _new_cache(config: Any) -> Any:
    """A ``DynamicCache`` for ``config`` whose layers append in place (see ``_growing_layer_class``)."""
    from transformers.cache_utils import DynamicCache

    if not _GROWING:
        _GROWING.append(_growing_layer_class())
    cache = DynamicCache(config=config)
    cache.layers = [_GROWING[0]() for _ in cache.layers]
    return cache


def supports(model: Any) -> bool:
    """Whether ``model`` is a decoder-only LM whose cache is a ``DynamicCache`` of full-attention layers."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    config = model.config
    if getattr(config, "is_encoder_decoder", False):
        return False
    try:
        cache = DynamicCache(config=config)
    except Exception:  # noqa: BLE001 - a model type the cache cannot describe: use generate
        return False
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def generate(
    model: Any,
    prompts: Sequence[list[int]],
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    max_rows: int,
    token_budget: int,
    choose: Chooser,
    on_finish: Callable[[Finished], None],
    refill_at: float = 0.5,
    share_prefix: bool = True,
) -> DecodeStats:
    """Decode every prompt (token ids) greedily or with ``choose``; ``on_finish`` gets each answer
    as its row ends. Prompts are taken in the order given (sort them by length for less padding).

    At most ``max_rows`` rows run at once, and a group joins only while rows x (longest prompt +
    ``max_new_tokens``) stays within ``token_budget``. New prompts join when the running batch has
    fallen to ``refill_at`` x ``max_rows`` rows: prefilling a group at a time keeps the prefill
    efficient and the cache copies rare.

    With ``share_prefix``, the tokens every prompt starts with (a chat template's header and
    default system prompt: 24 of SmolLM2's 58 prompt tokens in the default run) are run through
    the model once and their keys and values copied into every row, as servers' prefix caches do.
    """
    import torch

    stats = DecodeStats()
    device = model.device
    waiting = deque(range(len(prompts)))
    batch = _Batch()
    with torch.inference_mode():
        prefix = _Prefix.compute(model, prompts, device, stats) if share_prefix else None
        while waiting or batch.rows:
            if waiting and (not batch.rows or len(batch.rows) <= refill_at * max_rows):
                longest = max(batch.prompt_lengths, default=0)
                group = _take_group(waiting, prompts, len(batch.rows), longest, max_rows, token_budget, max_new_tokens)
                if group:
                    joined = _prefill(model, [prompts[i] for i in group], group, pad_id, device, stats, prefix)
                    stats.row_steps += len(group)
                    first = choose(joined.last_logits, group)
                    joined.batch.last = first
                    batch = _join(batch, joined.batch)
                    start = len(batch.rows) - len(group)
                    _append_and_retire(batch, first, start, eos_ids, max_new_tokens, on_finish, stats)
                    continue
            logits = _step(model, batch)
            stats.steps += 1
            stats.row_steps += len(batch.rows)
            stats.columns += int(batch.mask.numel())
            stats.real_columns += int(batch.mask.sum())
            chosen = choose(logits, batch.rows)
            batch.last = chosen
            _append_and_retire(batch, chosen, 0, eos_ids, max_new_tokens, on_finish, stats)
    return stats


def _take_group(
    waiting: deque[int],
    prompts: Sequence[list[int]],
    running: int,
    running_longest: int,
    max_rows: int,
    budget: int,
    max_new: int,
) -> list[int]:
    """The next waiting prompts that fit beside ``running`` rows whose longest prompt is
    ``running_longest``: none when the first does not fit, at least one when no row runs (a
    prompt over the budget still gets decoded, alone)."""
    group: list[int] = []
    longest = running_longest
    while waiting and running + len(group) < max_rows:
        grown = max(longest, len(prompts[waiting[0]]))
        if (group or running) and (running + len(group) + 1) * (grown + max_new) > budget:
            break
        group.append(waiting.popleft())
        longest = grown
    if not group and not running:
        group.append(waiting.popleft())
    return group


@dataclass
class _Joined:
    batch: _Batch
    last_logits: Any


# A common prefix shorter than this is not worth a pass of its own.
MIN_SHARED_PREFIX = 4


@dataclass
class _Prefix:
    """The tokens every prompt starts with, and their keys and values per layer ([1, heads, length, dim])."""

    length: int
    keys: list[Any]
    values: list[Any]

    @staticmethod
    def compute(model: Any, prompts: Sequence[list[int]], device: Any, stats: DecodeStats) -> "_Prefix | None":
        """Run the prompts' common prefix through the model once; ``None`` when it is too short.

        Every prompt keeps at least one token of its own, whose logits give its first answer token.
        """
        import torch

        if len(prompts) < 2:
            return None
        length = min(len(os.path.commonprefix(list(prompts))), min(len(p) for p in prompts) - 1)
        if length < MIN_SHARED_PREFIX:
            return None
        cache = _new_cache(model.config)
        ids = torch.tensor([prompts[0][:length]], dtype=torch.long, device=device)
        model(input_ids=ids, use_cache=True, **_logits_kept(model), **{_cache_argument(model): cache})
        stats.prefills += 1
        stats.prefill_tokens += length
        stats.prefill_slots += length
        stats.prefix_saved += length * (len(prompts) - 1)
        return _Prefix(length, [layer.keys for layer in cache.layers], [layer.values for layer in cache.layers])

    def cache_for(self, model: Any, rows: int) -> Any:
        """A cache holding the prefix for ``rows`` rows, ready to be continued."""
        cache = _new_cache(model.config)
        for layer, keys, values in zip(cache.layers, self.keys, self.values):
            layer.set(keys.expand(rows, -1, -1, -1), values.expand(rows, -1, -1, -1))
        return cache


def left_pad(rows: Sequence[list[int]], pad_id: int) -> tuple[Any, Any]:
    """Token id rows as one left-padded ``[rows, longest]`` tensor and its attention mask (1 for a
    real token), on the CPU."""
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        ids[r, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[r, width - len(row) :] = 1
    return ids, mask


def _logits_kept(model: Any) -> dict[str, int]:
    """Ask for the last position's logits only, where the model allows it (all of them would be
    rows x width x vocab floats)."""
    return {"logits_to_keep": 1} if _accepts(model, "logits_to_keep") else {}


def _prefill(
    model: Any,
    prompts: list[list[int]],
    rows: list[int],
    pad_id: int,
    device: Any,
    stats: DecodeStats,
    prefix: _Prefix | None = None,
) -> _Joined:
    """Run a left-padded group of prompts through the model, keeping its cache and last logits.

    With a ``prefix``, the cache starts as the prefix's and only each prompt's remainder is run;
    the remainders are left-padded after the prefix, which the mask hides as it hides any padding.
    """
    import torch

    skip = prefix.length if prefix else 0
    tails = [p[skip:] for p in prompts]
    ids, mask = left_pad(tails, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    # Positions count real tokens only (what generate does for left padding); padding gets 1 and is masked.
    positions = (mask.cumsum(-1) - 1 + skip).masked_fill(mask == 0, 1)
    cache = prefix.cache_for(model, len(tails)) if prefix else _new_cache(model.config)
    if prefix:
        mask_all = torch.cat([torch.ones((len(tails), skip), dtype=mask.dtype, device=device), mask], dim=1)
    else:
        mask_all = mask
    out = model(
        input_ids=ids, attention_mask=mask_all, position_ids=positions, use_cache=True,
        **_logits_kept(model), **{_cache_argument(model): cache},
    )
    stats.prefills += 1
    stats.prefill_tokens += int(mask.sum())
    stats.prefill_slots += int(mask.numel())
    batch = _Batch(
        rows=list(rows),
        tokens=[[] for _ in rows],
        prompt_lengths=[len(p) for p in prompts],
        cache=cache,  # updated in place by the forward pass
        mask=mask_all,
    )
    return _Joined(batch=batch, last_logits=out.logits[:, -1, :])


def _accepts(model: Any, name: str) -> bool:
    """Whether the model's forward takes keyword ``name`` (looked up once per model class)."""
    cls = type(model)
    if cls not in _FORWARD_PARAMETERS:
        import inspect

        _FORWARD_PARAMETERS[cls] = frozenset(inspect.signature(cls.forward).parameters)
    return name in _FORWARD_PARAMETERS[cls]


_FORWARD_PARAMETERS: dict[type, frozenset[str]] = {}


def _cache_argument(model: Any) -> str:
    """The forward keyword for the KV cache: ``cache`` in recent transformers, ``past_key_values`` before."""
    return "cache" if _accepts(model, "cache") else "past_key_values"


def _step(model: Any, batch: _Batch) -> Any:
    """One decode step for every running row; returns the next-token logits [rows, vocab]."""
    import torch

    ones = torch.ones((len(batch.rows), 1), dtype=batch.mask.dtype, device=batch.mask.device)
    batch.mask = torch.cat([batch.mask, ones], dim=1)
    positions = batch.mask.sum(-1, keepdim=True) - 1
    out = model(
        input_ids=batch.last.view(-1, 1),
        attention_mask=batch.mask,
        position_ids=positions,
        use_cache=True,
        **{_cache_argument(model): batch.cache},
    )
    return out.logits[:, -1, :]


def _append_and_retire(
    batch: _Batch,
    chosen: Any,
    start: int,
    eos_ids: set[int],
    max_new: int,
    on_finish: Callable[[Finished], None],
    stats: DecodeStats,
) -> None:
    """Append each row's chosen token (rows ``start`` onwards of the batch) and drop rows that ended."""
    import torch

    keep: list[int] = list(range(start))
    for offset, token in enumerate(chosen.tolist()):
        r = start + offset
        tokens = batch.tokens[r]
        tokens.append(int(token))
        stats.useful += 1
        stopped = token in eos_ids
        if stopped or len(tokens) >= max_new:
            on_finish(Finished(index=batch.rows[r], tokens=tokens, stopped=stopped))
        else:
            keep.append(r)
    if len(keep) == len(batch.rows):
        return
    if not keep:
        batch.rows, batch.tokens, batch.prompt_lengths = [], [], []
        batch.cache = batch.mask = batch.last = None
        return
    index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
    batch.rows = [batch.rows[r] for r in keep]
    batch.tokens = [batch.tokens[r] for r in keep]
    batch.prompt_lengths = [batch.prompt_lengths[r] for r in keep]
    batch.last = batch.last.index_select(0, index)
    batch.mask = batch.mask.index_select(0, index)
    # Columns that are padding for every remaining row cost attention time for nothing: drop them.
    lead = int((batch.mask.cumsum(-1) == 0).sum(-1).min())
    for layer in batch.cache.layers:
        layer.set(layer.keys[:, :, lead:].index_select(0, index), layer.values[:, :, lead:].index_select(0, index))
    batch.mask = batch.mask[:, lead:]


def _join(running: _Batch, new: _Batch) -> _Batch:
    """One batch holding the running rows then the new ones, caches left-padded to one length."""
    import torch

    if not running.rows:
        return new
    width = max(running.mask.shape[1], new.mask.shape[1])

    def pad(t: Any, dim: int) -> Any:
        missing = width - t.shape[dim]
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)

    for old, extra in zip(running.cache.layers, new.cache.layers):
        old.set(torch.cat([pad(old.keys, 2), pad(extra.keys, 2)], dim=0), torch.cat([pad(old.values, 2), pad(extra.values, 2)], dim=0))
    return _Batch(
        rows=running.rows + new.rows,
        tokens=running.tokens + new.tokens,
        prompt_lengths=running.prompt_lengths + new.prompt_lengths,
        cache=running.cache,
        mask=torch.cat([pad(running.mask, 1), pad(new.mask, 1)], dim=0),
        last=torch.cat([running.last, new.last], dim=0),
    )
