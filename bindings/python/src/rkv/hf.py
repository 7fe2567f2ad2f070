"""Hugging Face transformers (5.x) adapter: :class:`RkvCache` stores a model's
KV cache in librkv, which keeps a fixed budget per head, during ``generate``.

    import rkv.hf
    model = AutoModelForCausalLM.from_pretrained(..., attn_implementation="rkv")
    cache = rkv.hf.RkvCache(model, method="rkv", budget=512, buffer=128)
    out = model.generate(**inputs, past_key_values=cache, max_new_tokens=2048)

How it plugs in. transformers calls ``past_key_values.update(k, v, layer)``
with post-RoPE K/V before attention, but the compression methods also need
the layer's post-RoPE queries, which only the attention function sees. So:
  1. ``RkvLayer.update`` returns the held tokens (a view of librkv's memory)
     followed by the new K/V, and leaves the new K/V for step 2;
  2. the attention implementation registered as ``"rkv"`` computes attention
     over them with a mask built from the held lengths and the padding (held
     tokens of different sequences need not be aligned), then appends the new
     K, V and Q to librkv, which compresses a full sequence before they go in.
     So, as in the reference code, the step that triggers a compression still
     attends over the uncompressed cache.
Left padding never enters librkv: each sequence's real tokens are appended
with ``token_offsets``, so original positions count real tokens only.

Models: decoder-only attention that calls ``past_key_values.update`` and the
attention interface (Llama, Qwen2, Qwen3, ...). One RkvCache serves one
``generate`` call (like DynamicCache); beam search, cropping (assisted
decoding) and reordering are not supported. Tensor parallel (``tp_plan="auto"``):
each rank's attention sees its own heads, so each rank's RkvCache holds
exactly those; nothing is exchanged.
"""
from __future__ import annotations

import threading
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, PreTrainedModel
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface

from .cache import Cache as RkvNativeCache
from .enums import DType

__all__ = ["RkvCache", "RkvLayer", "ATTENTION_NAME"]

ATTENTION_NAME = "rkv"
_TORCH_DTYPES = {torch.float32: DType.F32, torch.float16: DType.F16, torch.bfloat16: DType.BF16}

# The K/V an RkvLayer.update left for the attention call that follows it on
# this thread (the attention interface is not given the cache object).
_pending = threading.local()


def _padding_mask(batch_size: int, q_length: int, kv_length: int, attention_mask=None, **_):
    """The "rkv" mask: the 2D padding mask itself ([batch, seen + q], True =
    real token) or None. rkv_attention builds the real mask, since held tokens
    do not line up with transformers' columns once anything is evicted."""
    return attention_mask


def rkv_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """Attention over librkv's held tokens plus the new ones, then append."""
    entry = getattr(_pending, "entry", None)
    _pending.entry = None
    if entry is None or entry[0].layer_idx != getattr(module, "layer_idx", None):
        # Not fed by an RkvCache (e.g. a DynamicCache): plain SDPA, after
        # turning the 2D padding mask into the causal mask SDPA expects.
        mask = None
        if attention_mask is not None and attention_mask.ndim == 2:
            q_len, kv_len = query.shape[2], key.shape[2]
            causal = torch.ones(q_len, kv_len, dtype=torch.bool, device=query.device).tril(kv_len - q_len)
            mask = causal[None, None] & attention_mask[:, None, None, -kv_len:].bool()
        elif attention_mask is not None:
            mask = attention_mask
        return sdpa_attention_forward(module, query, key, value, mask, scaling=scaling,
                                      dropout=dropout, **kwargs)
    layer, new_k, new_v, held = entry
    batch, _, q_len, _ = query.shape
    if attention_mask is not None and attention_mask.ndim == 2:
        real = attention_mask[:, -q_len:].bool()
    else:
        real = torch.ones(batch, q_len, dtype=torch.bool, device=query.device)
    mask = _mask(held, real, key.shape[2])
    out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling,
                                         enable_gqa=query.shape[1] != key.shape[1])
    layer._append(new_k, new_v, query, real)
    return out.transpose(1, 2).contiguous(), None


def _mask(held: list[int], real: torch.Tensor, kv_len: int) -> torch.Tensor:
    """[batch, 1, q, kv] bool. Columns: the held tokens of each sequence
    (0 .. held[b]-1, then unused up to max(held)), then the q new tokens.
    A query sees every held token of its sequence and the real new tokens up
    to itself; a padding query sees only itself (its output is discarded, but
    an all-masked row would be NaN)."""
    batch, q_len = real.shape
    device = real.device
    width = kv_len - q_len  # max(held)
    columns = torch.arange(width, device=device)
    held_t = torch.tensor(held, device=device)
    held_part = (columns[None, :] < held_t[:, None])[:, None, :].expand(batch, q_len, width)
    causal = torch.ones(q_len, q_len, dtype=torch.bool, device=device).tril()
    new_part = causal[None] & real[:, None, :]
    eye = torch.eye(q_len, dtype=torch.bool, device=device)[None]
    new_part = new_part | (eye & ~real[:, :, None])
    held_part = held_part & real[:, :, None]
    return torch.cat([held_part, new_part], dim=2)[:, None]


AttentionInterface.register(ATTENTION_NAME, rkv_attention)
AttentionMaskInterface.register(ATTENTION_NAME, _padding_mask)


class RkvLayer(CacheLayerMixin):
    """One model layer's view of the shared librkv cache."""

    is_sliding = False
    is_croppable = False

    def __init__(self, owner: "RkvCache", layer_idx: int):
        super().__init__()
        self._owner = owner
        self.layer_idx = layer_idx
        self._columns = 0  # input columns seen, padding included (transformers' length)

    def lazy_initialization(self, key_states, value_states) -> None:
        self.dtype, self.device = key_states.dtype, key_states.device
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held_k, held_v, held = self._owner._held(self.layer_idx, key_states.shape[0])
        _pending.entry = (self, key_states, value_states, held)
        self._columns += key_states.shape[2]
        if held_k is None:
            return key_states, value_states
        return torch.cat([held_k, key_states], dim=2), torch.cat([held_v, value_states], dim=2)

    def _append(self, k, v, q, real: torch.Tensor) -> None:
        self._owner._append(self.layer_idx, k, v, q, real, first=self._columns == k.shape[2])

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self._columns + query_length, 0

    def get_seq_length(self) -> int:
        return self._columns

    def get_max_length(self) -> int:
        return -1

    def reset(self) -> None:
        self._columns = 0
        self._owner._reset()

    def crop(self, tokens_to_remove: int) -> None:
        raise NotImplementedError("RkvCache cannot crop: evicted tokens are gone (no assisted decoding)")

    def reorder_cache(self, beam_idx) -> None:
        raise NotImplementedError("RkvCache does not support beam search")

    def batch_repeat_interleave(self, repeats: int) -> None:
        raise NotImplementedError("RkvCache does not support expanding the batch")

    def batch_select_indices(self, indices) -> None:
        raise NotImplementedError("RkvCache does not support selecting from the batch")


class RkvCache(Cache):
    """A transformers Cache whose K/V live in an :class:`rkv.Cache`.

    ``model`` gives the layer count; the librkv cache itself is created at the
    first forward, from the shapes that arrive (batch, this rank's heads,
    head_dim, dtype, device). ``options`` are :class:`rkv.Cache` parameters
    (method, budget, buffer, window, ...). The model must use the ``"rkv"``
    attention implementation (``attn_implementation="rkv"`` when loading, or
    ``model.set_attn_implementation("rkv")``).
    """

    def __init__(self, model: PreTrainedModel, **options: Any):
        config = model.config.get_text_config()
        if getattr(config, "_attn_implementation", None) != ATTENTION_NAME:
            raise ValueError(f"RkvCache needs the model's attention implementation to be "
                             f"{ATTENTION_NAME!r}: load it with attn_implementation={ATTENTION_NAME!r} "
                             f"or call model.set_attn_implementation({ATTENTION_NAME!r})")
        self.num_layers = config.num_hidden_layers
        super().__init__(layers=[RkvLayer(self, i) for i in range(self.num_layers)])
        self.options = options
        self.native: RkvNativeCache | None = None  # created at the first forward

    # --- what the layers use ---------------------------------------------------
    def _held(self, layer: int, batch: int):
        """(K, V, held lengths) of the tokens librkv holds for this layer:
        [batch, heads, max(held), dim] views of its memory (no copy)."""
        if self.native is None:
            return None, None, [0] * batch
        held = [self.native.seq_length(b, layer)[1] for b in range(batch)]
        width = max(held)
        view = self.native.layer_view(layer)
        k, v = view.k, view.v
        if not isinstance(k, torch.Tensor):  # CPU: numpy over librkv memory
            k, v = torch.from_numpy(k), torch.from_numpy(v)
            if view.dtype == DType.BF16:
                k, v = k.view(torch.bfloat16), v.view(torch.bfloat16)
        return k[:batch, :, :width], v[:batch, :, :width], held

    def _append(self, layer: int, k, v, q, real: torch.Tensor, first: bool) -> None:
        batch, heads, q_len, dim = k.shape
        if self.native is None:
            self._create(batch, heads, q.shape[1], dim, k.dtype, k.device)
        if batch > self.native.params["max_seqs"]:
            raise ValueError("RkvCache serves one generate call: its batch cannot grow")
        counts = real.sum(dim=1).tolist()
        # Left padding: the real tokens are the last `count` of each row.
        entries = [b for b in range(batch) if counts[b] > 0]
        if not entries:
            return
        index = torch.tensor(entries, device=k.device)
        pick = (lambda x: x) if len(entries) == batch else (lambda x: x.index_select(0, index))
        self.native.append(layer, entries, pick(k), pick(v), q=pick(q),
                           num_tokens=[counts[b] for b in entries],
                           token_offsets=[q_len - counts[b] for b in entries], prompt=first)

    def _create(self, batch, kv_heads, q_heads, dim, dtype, device) -> None:
        if dtype not in _TORCH_DTYPES:
            raise ValueError(f"librkv stores float32, float16 or bfloat16, not {dtype}")
        device_name = "cpu" if device.type == "cpu" else f"cuda:{device.index or 0}"
        self.native = RkvNativeCache(max_seqs=batch, num_layers=self.num_layers,
                                     num_kv_heads=kv_heads, num_q_heads=q_heads, head_dim=dim,
                                     dtype=_TORCH_DTYPES[dtype], device=device_name,
                                     **self.options)

    def _reset(self) -> None:
        if self.native is not None:
            self.native.reset()

    # --- Cache API -----------------------------------------------------------------
    @property
    def is_compileable(self) -> bool:
        return False

    def close(self) -> None:
        """Free librkv's memory now (else when the cache is garbage collected)."""
        if self.native is not None:
            self.native.close()
