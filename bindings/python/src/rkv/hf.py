"""Hugging Face transformers (5.x) adapter: :class:`RkvCache` stores a model's
KV cache in librkv, which keeps a fixed budget per head, during ``generate``.

    import rkv.hf
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation="rkv")
    cache = rkv.hf.RkvCache(model, method="rkv", budget=512, buffer=128, cuda_graph=True)
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=2048)

How it plugs in. transformers calls ``past_key_values.update(k, v, layer)``
with post-RoPE K/V before attention, but the compression methods also need
the layer's post-RoPE queries, which only the attention function sees. So
``RkvLayer.update`` hands K/V through, and the attention implementation
registered as ``"rkv"`` does the work:
  - decode steps (one token per row, after the first call): per layer one
    ``rkv_append`` and one ``rkv_attend`` through an :class:`rkv.Batch` whose ids
    are the rows' sequence slots. Attention reads librkv's memory in place;
    lengths and ids stay on the device; shapes never change. Sequences that
    are full are compressed before the step, and ``rkv_batch_advance`` keeps
    the host bookkeeping after it, without a sync. With ``cuda_graph=True``
    the whole model step is captured once and replayed (``_hf_graph.py``).
  - prompts and other multi-token calls: attention in PyTorch over the new
    tokens (and over librkv's held tokens, read in place, when the rows hold
    some), then one ``rkv_append`` with host ids (left padding never enters
    librkv; a long prompt is compressed chunk by chunk as it goes in).

What transformers does with a cache works through librkv's sequence calls:
beam search reorders rows by forking (``rkv_seq_copy``) into free slots,
``num_return_sequences`` prefills each distinct prompt once and forks it,
assisted decoding rolls rejected drafts back (``rkv_seq_truncate``; allowed
while they were not compressed, and for the methods that keep queries up to
``max_rollback`` tokens: pass e.g. ``max_rollback=num_assistant_tokens``).
Tensor parallel (``tp_plan="auto"``): each rank's attention sees its own
heads, so each rank's RkvCache holds exactly those.

Models: decoder-only, every layer full attention, calling
``past_key_values.update`` and the attention interface (Llama, Qwen2, Qwen3,
...); anything else is refused with a ValueError saying why.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from transformers import AttentionInterface, PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface

from ._hf_attention import DecodeCalls, continued_attention, fresh_attention
from ._hf_graph import DecodeGraphs, install_forward
from ._hf_model import ATTENTION_NAME, TORCH_DTYPES, check_layer_call, check_model
from .batch import Batch
from .cache import Cache as NativeCache
from .enums import ALL, Method
from .errors import BadStateError, CapacityError

__all__ = ["RkvCache", "RkvLayer", "ATTENTION_NAME"]

# The layer whose update() came last on this thread: the attention call that
# follows it (the attention interface is not given the cache object).
_pending = threading.local()


def _padding_mask(batch_size: int, q_length: int, kv_length: int, attention_mask=None, **_):
    """The "rkv" mask: the 2D padding mask itself ([batch, seen + q], True =
    real token) or None. The attention builds what it needs from it."""
    return attention_mask


def rkv_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """The "rkv" attention implementation: an RkvCache's attention, or plain
    SDPA when the call was not fed by an RkvCache (e.g. a DynamicCache).
    Parameters in the order of transformers' own attention functions
    (sdpa_attention_forward): wrappers such as NVIDIA kvpress's pass `dropout`
    as the sixth positional argument."""
    entry = getattr(_pending, "entry", None)
    _pending.entry = None
    if entry is None:
        return _plain_sdpa(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
    cache, layer_idx = entry
    if getattr(module, "layer_idx", None) != layer_idx:
        raise ValueError(f"{type(module).__name__} has no layer_idx matching the cache layer it "
                         f"updated ({layer_idx}): the RkvCache adapter cannot serve this attention")
    if kwargs.get("s_aux") is not None or kwargs.get("sinks") is not None:
        raise ValueError(f"{type(module).__name__} has attention sinks: librkv's attention is a "
                         f"plain softmax over the held tokens; use DynamicCache for this model")
    if module.training and dropout:
        raise ValueError("RkvCache serves inference: call model.eval() first")
    return cache._attention(layer_idx, query, key, value, attention_mask, scaling), None


def _plain_sdpa(module, query, key, value, attention_mask, scaling, dropout, **kwargs):
    mask = attention_mask
    if attention_mask is not None and attention_mask.ndim == 2:  # the "rkv" mask: padding only
        q_len, kv_len = query.shape[2], key.shape[2]
        causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
        mask = causal[None, None] & attention_mask[:, None, None, -kv_len:].bool()
    return sdpa_attention_forward(module, query, key, value, mask, scaling=scaling, dropout=dropout,
                                  **kwargs)


AttentionInterface.register(ATTENTION_NAME, rkv_attention)
AttentionMaskInterface.register(ATTENTION_NAME, _padding_mask)


class RkvLayer(CacheLayerMixin):
    """One model layer's view of the shared librkv cache: it counts the
    columns transformers has seen (padding included) and hands K/V to the
    attention call that follows."""

    is_sliding = False
    is_compileable = False
    is_croppable = True

    def __init__(self, owner: "RkvCache", layer_idx: int):
        super().__init__()
        self._owner = owner
        self.layer_idx = layer_idx
        self.columns = 0

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self._owner._on_update(self, key_states, value_states)
        return key_states, value_states

    def get_mask_sizes(self, query_length: int, *args) -> tuple[int, int]:
        return self.columns + query_length, 0

    def get_seq_length(self) -> int:
        return self.columns

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self._owner.reset()

    def crop(self, tokens_to_remove: int) -> None:
        self._owner.crop(tokens_to_remove)

    def reorder_cache(self, beam_idx) -> None:
        self._owner.reorder_cache(beam_idx)

    def batch_repeat_interleave(self, repeats: int) -> None:
        self._owner.batch_repeat_interleave(repeats)

    def batch_select_indices(self, indices) -> None:
        self._owner.batch_select_indices(indices)


@dataclass
class _PromptPlan:
    """A multi-token call, decided once at its first layer."""
    real: torch.Tensor | None   # [rows, T] bool: real tokens (None: all)
    fresh: bool                 # no row holds anything yet: a prompt
    rows: list[int]             # rows appended (real tokens, not forked from another)
    counts: list[int]           # real tokens of each appended row
    offsets: list[int]          # first real token of each appended row
    index: torch.Tensor | None  # `rows` on the device, None when it is every row
    forks: list[tuple[int, int]]  # (source row, row): identical prompts, forked after the call


class RkvCache(Cache):
    """A transformers Cache whose K/V live in an :class:`rkv.Cache`.

    ``model`` gives the layer count and is checked (every layer full attention,
    the ``"rkv"`` attention implementation, a dtype librkv stores). The librkv
    cache is created at the first forward, from the shapes that arrive (batch,
    this rank's heads, head_dim, dtype, device), with ``max(batch,
    max_batch_size)`` sequence slots: pass ``max_batch_size`` for
    ``batch_repeat_interleave``. ``cuda_graph=True`` replays every decode step
    of the model from a CUDA graph (CUDA only; the model's forward is wrapped
    once, transparently for other caches). ``options`` are :class:`rkv.Cache`
    parameters (method, budget, buffer, window, max_rollback, ...).

    One RkvCache serves one batch: call :meth:`reset` before a different one.
    """

    def __init__(self, model: PreTrainedModel, *, max_batch_size: int | None = None,
                 cuda_graph: bool = False, **options: Any):
        config = model.config.get_text_config()
        check_model(model, config)
        self.num_layers = config.num_hidden_layers
        super().__init__(layers=[RkvLayer(self, i) for i in range(self.num_layers)])
        self.options = dict(options)
        self._slots_wanted = max_batch_size
        self.native: NativeCache | None = None  # created at the first forward
        self.forks = 0  # rkv_seq_copy calls made for beams, repeats and identical prompts
        self._rows: list[int] = []  # the librkv slot of each batch row
        self._batch: Batch | None = None
        self._calls: DecodeCalls | None = None
        self._slots: torch.Tensor | None = None  # _rows on the device, for the prompt path
        self._held = False  # a token was appended since create or reset
        self._plan: _PromptPlan | None = None
        self._input_ids = None  # of the forward in progress (identical prompts)
        self._capturing = False
        self._device = self._dtype = None
        self._longest = 0  # the longest row, in tokens appended (FULL's capacity check)
        self._graphs = DecodeGraphs(self) if cuda_graph else None
        install_forward(model)

    # --- the forward, the layers, the attention ------------------------------------
    def _forward(self, original, kwargs):
        """Every forward of the model with this cache (install_forward)."""
        self._input_ids = kwargs.get("input_ids")
        try:
            if self._graphs is not None and self._held and self._rows:
                key = self._graphs.key(kwargs)
                if key is not None and key[0] == len(self._rows):
                    return self._graphs.run(original, kwargs, key)
            return original(**kwargs)
        finally:
            self._input_ids = None

    def _on_update(self, layer: RkvLayer, key_states, value_states) -> None:
        check_layer_call(layer.layer_idx, key_states, value_states, self._device, self._dtype,
                         len(self._rows) or None)
        _pending.entry = (self, layer.layer_idx)

    def _attention(self, layer: int, query, key, value, attention_mask, scaling):
        """[rows, T, q_heads, dim], as transformers' attention functions return.
        The layer counts the columns once they are in (a refused call leaves
        the count as it was; a graph replay counts for itself)."""
        if query.shape[2] == 1 and self._held and self._plan is None:
            out = self._decode(layer, query, key, value, scaling)
        else:
            out = self._prompt(layer, query, key, value, attention_mask, scaling)
        if not self._capturing:
            self.layers[layer].columns += key.shape[2]
        return out

    # --- decode steps ------------------------------------------------------------------
    def _decode(self, layer: int, query, key, value, scaling):
        if layer == 0 and not self._capturing:
            self._begin_step()
        rows, q_heads, _, dim = query.shape
        out = torch.empty(rows, 1, q_heads, dim, dtype=query.dtype, device=query.device)
        self._calls.step(layer, key[:, :, 0], value[:, :, 0], query[:, :, 0], out[:, 0], scaling,
                         self._stream())
        if layer == self.num_layers - 1 and not self._capturing:
            self._end_step(replayed=False)
        return out

    def _begin_step(self) -> None:
        """Before a decode step (eager, or a graph replay): compress the full
        sequences now, outside any graph; refuse a step a FULL cache cannot hold."""
        native = self.native
        if native.compress_due():
            native.compress(ALL, ALL, stream=self._stream())
        if self._full and self._longest + 1 > self._max_len:
            raise CapacityError(
                f"the FULL cache holds max_len = {self._max_len} tokens per sequence and a sequence "
                f"is full: create the RkvCache with a larger max_len, or use a compressing method")

    def _end_step(self, replayed: bool) -> None:
        """After a decode step: the host learns what the batch calls appended."""
        self._batch.advance(1)
        self._longest += 1
        if replayed:
            for layer in self.layers:
                layer.columns += 1

    # --- prompts and other multi-token calls -------------------------------------------
    def _prompt(self, layer: int, query, key, value, attention_mask, scaling):
        if layer == 0 or self._plan is None:
            self._plan = self._make_plan(query, key, attention_mask)
        plan = self._plan
        if plan.fresh:
            out = fresh_attention(query, key, value, plan.real, scaling)
        else:
            held_k, held_v, lengths = self._held_tensors(layer)
            out = continued_attention(query, key, value, plan.real, held_k, held_v, lengths, scaling)
        if plan.rows:
            pick = (lambda x: x) if plan.index is None else (lambda x: x.index_select(0, plan.index))
            self.native.append(layer, [self._rows[r] for r in plan.rows], pick(key), pick(value),
                               q=pick(query), num_tokens=plan.counts, token_offsets=plan.offsets,
                               prompt=plan.fresh, stream=self._stream())
        if layer == self.num_layers - 1:
            self._finish_plan(plan)
        return out.transpose(1, 2).contiguous()

    def _make_plan(self, query, key, attention_mask) -> _PromptPlan:
        rows, kv_heads, length, dim = key.shape
        if self.native is None:
            self._create(rows, kv_heads, query.shape[1], dim, key.dtype, key.device)
        if not self._rows:
            if rows > self.native.params["max_seqs"]:
                raise ValueError(f"a batch of {rows} sequences, but this RkvCache has "
                                 f"{self.native.params['max_seqs']} slots (set at its first call)")
            self._set_rows(list(range(rows)))
        real = None
        if attention_mask is not None:
            if attention_mask.ndim != 2:
                raise ValueError("RkvCache takes a 2D attention_mask (1 = real token, 0 = left "
                                 "padding), not a prepared 4D mask")
            real = attention_mask[:, -length:].to(device=key.device, dtype=torch.bool)
        fresh = not self._held
        pieces = [real.sum(dim=1) if real is not None else torch.full((rows,), length, device=key.device)]
        if real is not None:  # left padding: 0 .. 0 1 .. 1 in every row
            pieces.append((real[:, 1:] >= real[:, :-1]).all(dim=1).long())
        ids = self._input_ids
        dedup = fresh and rows > 1 and ids is not None and tuple(ids.shape) == (rows, length)
        if dedup:  # prompts repeated by generate (num_return_sequences, beams): fork them
            same = (ids[1:] == ids[:-1].to(ids.device)).all(dim=1)
            if real is not None:
                same &= (real[1:] == real[:-1]).all(dim=1)
            pieces.append(same.long())
        host = torch.cat([p.long() for p in pieces]).tolist()  # the one sync of the call
        counts = host[:rows]
        if real is not None and not all(host[rows:2 * rows]):
            raise ValueError("RkvCache takes left padding only: in attention_mask every row's "
                             "padding must come before its real tokens")
        same_as_previous = [False] + [bool(x) for x in host[-(rows - 1):]] if dedup else [False] * rows
        source = list(range(rows))
        for r in range(1, rows):
            if same_as_previous[r]:
                source[r] = source[r - 1]
        appended = [r for r in range(rows) if counts[r] > 0 and source[r] == r]
        forks = [(source[r], r) for r in range(rows) if counts[r] > 0 and source[r] != r]
        if not fresh:
            self._make_room([(self._rows[r], counts[r]) for r in appended])
        index = None
        if len(appended) != rows:
            index = torch.tensor(appended, device=key.device, dtype=torch.long)
        return _PromptPlan(real, fresh, appended, [counts[r] for r in appended],
                           [length - counts[r] for r in appended], index, forks)

    def _make_room(self, slots_and_counts) -> None:
        """Before tokens that may be rolled back (assisted decoding's drafts):
        compress first the sequences they would overflow, so that no draft goes
        through a compression while it can still be rejected."""
        for slot, count in slots_and_counts:
            _, held = self.native.length(slot, 0)
            if held + count > self._capacity and held > self.native.get_budget(slot):
                self.native.compress(slot, ALL, stream=self._stream())

    def _finish_plan(self, plan: _PromptPlan) -> None:
        for source, row in plan.forks:
            self.native.copy(self._rows[source], self._rows[row], stream=self._stream())
            self.forks += 1
        self._plan = None
        if plan.rows:
            self._held = True
        self._longest = max(self.native.length(slot, 0)[0] for slot in self._rows)

    def _held_tensors(self, layer: int):
        """The rows' held K, V [rows, kv_heads, capacity, dim] and lengths [rows],
        read from librkv's layer memory (views when the rows are slots 0..n-1)."""
        view = self.native.view_layer(layer)
        k, v, lengths = view.k, view.v, view.lengths
        if not isinstance(k, torch.Tensor):  # CPU: numpy over librkv memory
            # (lengths is a read-only numpy view: torch gets a copy of its few ints)
            k, v, lengths = torch.from_numpy(k), torch.from_numpy(v), torch.from_numpy(lengths.copy())
            if self._dtype == torch.bfloat16:  # numpy has no bfloat16: uint16 bits
                k, v = k.view(torch.bfloat16), v.view(torch.bfloat16)
        rows = len(self._rows)
        if self._rows == list(range(rows)):
            return k[:rows], v[:rows], lengths[:rows]
        if self._slots is None:
            self._slots = torch.tensor(self._rows, device=k.device, dtype=torch.long)
        return k.index_select(0, self._slots), v.index_select(0, self._slots), lengths.index_select(
            0, self._slots)

    # --- creation and rows -------------------------------------------------------------
    def _create(self, rows, kv_heads, q_heads, dim, dtype, device) -> None:
        slots = max(rows, self._slots_wanted or 0)
        device_name = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
        self.native = NativeCache(max_seqs=slots, num_layers=self.num_layers, num_kv_heads=kv_heads,
                                  num_q_heads=q_heads, head_dim=dim, dtype=TORCH_DTYPES[dtype],
                                  device=device_name, **self.options)
        self._device, self._dtype, self._code = device, dtype, int(TORCH_DTYPES[dtype])
        self._capacity = self.native.view_layer(0).capacity
        params = self.native.params
        self._full = params["method"] == Method.FULL
        self._max_len = params["max_len"]

    def _stream(self):
        if self._device is None or self._device.type != "cuda":
            return None
        return torch.cuda.current_stream(self._device).cuda_stream

    def _set_rows(self, slots: list[int]) -> None:
        """Row i of the batch is librkv sequence slots[i] from now on."""
        if self._batch is None or self._batch.max_entries != len(slots):
            if self._batch is not None:
                self._batch.close()
            self._batch = Batch(self.native, len(slots))
            self._calls = DecodeCalls(self.native, self._batch, self.num_layers, self._code)
            if self._graphs is not None:
                self._graphs.clear()  # they read the old batch's ids
        if slots != self._rows:
            self._batch.set(slots, stream=self._stream())
            self._rows = list(slots)
            self._slots = None

    def _remap(self, wanted: list[int]) -> None:
        """Make row i hold a copy of sequence slot wanted[i]: a slot wanted once
        stays where it is, each further copy is a fork into a free slot, slots
        no row wants any more are reset."""
        slots = self.native.params["max_seqs"]
        if len(wanted) > slots:
            raise ValueError(f"{len(wanted)} rows need {len(wanted)} librkv sequence slots, but this "
                             f"RkvCache has {slots}: create it with max_batch_size={len(wanted)}")
        new: list[int | None] = [None] * len(wanted)
        claimed = set()
        for i, slot in enumerate(wanted):
            if slot not in claimed:
                new[i] = slot
                claimed.add(slot)
        free = [s for s in range(slots) if s not in claimed]
        stream = self._stream()
        for s in self._rows:
            if s not in claimed:
                self.native.reset(s, stream=stream)
        for i, slot in enumerate(wanted):
            if new[i] is None:
                target = free.pop(0)
                if target not in self._rows:  # an old row's slot was reset above
                    self.native.reset(target, stream=stream)
                self.native.copy(slot, target, stream=stream)
                self.forks += 1
                new[i] = target
        self._set_rows(new)

    # --- Cache API ----------------------------------------------------------------------
    def reorder_cache(self, beam_idx) -> None:
        """Beam search: row i continues beam beam_idx[i] (forks where a beam
        is continued more than once)."""
        if self.native is None or not self._rows:
            return
        sources = beam_idx.tolist()
        wanted = [self._rows[i] for i in sources]
        if wanted != self._rows:
            self._remap(wanted)

    def batch_repeat_interleave(self, repeats: int) -> None:
        """Each row becomes `repeats` consecutive rows, forks of it."""
        if self.native is None or not self._rows:
            return
        self._remap([slot for slot in self._rows for _ in range(repeats)])

    def batch_select_indices(self, indices) -> None:
        """Keep the rows `indices` (in that order)."""
        if self.native is None or not self._rows:
            return
        self._remap([self._rows[i] for i in torch.as_tensor(indices).tolist()])

    def crop(self, tokens_to_remove: int) -> None:
        """Roll back the last tokens of every row (assisted decoding): -n removes
        n tokens, a positive n keeps the first n columns (the legacy form)."""
        tokens_to_remove = int(tokens_to_remove)  # transformers may pass a 0-d tensor
        if self.native is None or not self._rows or tokens_to_remove == 0:
            return
        columns = self.layers[0].columns
        remove = -tokens_to_remove if tokens_to_remove < 0 else max(0, columns - tokens_to_remove)
        if remove == 0:
            return
        limits = [self.native.rollback_limit(slot) for slot in self._rows]
        if min(limits) < remove:
            row = limits.index(min(limits))
            raise BadStateError(
                f"RkvCache cannot roll back {remove} token(s): row {row} (librkv sequence "
                f"{self._rows[row]}) can roll back {limits[row]}. Tokens that went through a "
                f"compression are gone, and methods that keep queries roll back at most "
                f"max_rollback = {self.native.params['max_rollback']}: for assisted decoding create "
                f"the RkvCache with max_rollback >= the assistant's draft length "
                f"(num_assistant_tokens) and a buffer larger than it")
        stream = self._stream()
        for slot in self._rows:
            self.native.truncate(slot, remove, stream=stream)
        for layer in self.layers:
            layer.columns -= remove
        self._longest -= remove

    def reset(self) -> None:
        """Forget every sequence: the cache serves a new batch (of any size up to
        its slots) from the next call."""
        if self.native is not None:
            self.native.reset(ALL, stream=self._stream())
        if self._batch is not None:
            self._batch.close()
        if self._graphs is not None:
            self._graphs.clear()
        self._batch, self._calls, self._rows, self._slots = None, None, [], None
        self._held, self._plan, self._longest = False, None, 0
        for layer in self.layers:
            layer.columns = 0

    @property
    def is_compileable(self) -> bool:
        return False  # host bookkeeping runs between steps: use cuda_graph=True instead

    @property
    def is_croppable(self) -> bool:
        return True  # within librkv's rollback limit; crop() says when it is exceeded

    @property
    def graph_stats(self) -> dict[str, int]:
        """Captures and replays of the decode step (cuda_graph=True)."""
        if self._graphs is None:
            return {"captures": 0, "replays": 0}
        return {"captures": self._graphs.captures, "replays": self._graphs.replays}

    def close(self) -> None:
        """Free librkv's memory now (else when the cache is garbage collected)."""
        if self._graphs is not None:
            self._graphs.clear()
        if self.native is not None:
            self.native.close()
