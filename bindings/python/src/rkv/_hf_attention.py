"""The attention of the "rkv" implementation, in its two paths.

Decode (one token per row, every step after the first call): librkv's own
calls with a batch, rkv_append then rkv_attend, per layer. The attention reads
the held K/V where librkv keeps them; the sequence ids and lengths stay in the
cache's memory; shapes never change, so the whole model step can be captured
in a CUDA graph (_hf_graph.py).

Prompt (the first call, and multi-token calls such as assisted decoding's
verification): attention in PyTorch, over the call's own tokens and, when the
rows already hold tokens, over librkv's memory read in place through the layer
view (no concatenation), then one rkv_append with host ids.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from . import capi as _c

# Query chunk of the continued attention: bounds its [rows, heads, chunk, held] logits.
_QUERY_CHUNK = 64


def fresh_attention(query, key, value, real, scaling):
    """Causal attention of a prompt over its own tokens. query [B, Hq, T, D],
    key/value [B, Hkv, T, D], real [B, T] bool (None: no padding). A padding
    query attends to itself only (its output is discarded; an all-masked row
    would be NaN)."""
    gqa = query.shape[1] != key.shape[1]
    if real is None:
        return F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling,
                                              enable_gqa=gqa)
    length = query.shape[2]
    causal = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=query.device)
    mask = (causal[None] & real[:, None, :]) | (eye[None] & ~real[:, :, None])
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask[:, None], scale=scaling,
                                          enable_gqa=gqa)


def continued_attention(query, key, value, real, held_k, held_v, held_lengths, scaling):
    """Attention of new tokens over what librkv holds plus themselves.

    query [B, Hq, T, D]; key/value [B, Hkv, T, D] (the new tokens); held_k and
    held_v [B, Hkv, C, D]: librkv's layer memory of the rows' slots (a view of
    it when the rows are slots 0 .. B-1); held_lengths [B] int32 on the device
    (slots < length hold tokens). real [B, T] bool or None. The softmax runs
    over both parts in float32; the products run in the storage dtype."""
    batch, q_heads, length, dim = query.shape
    kv_heads = key.shape[1]
    group = q_heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    capacity = held_k.shape[2]
    held_visible = torch.arange(capacity, device=query.device)[None, :] < held_lengths[:, None].long()
    if real is None:
        real = torch.ones(batch, length, dtype=torch.bool, device=query.device)
    causal = torch.ones(length, length, dtype=torch.bool, device=query.device).tril()
    eye = torch.eye(length, dtype=torch.bool, device=query.device)
    new_visible = (causal[None] & real[:, None, :]) | (eye[None] & ~real[:, :, None])  # [B, T, T]
    held_visible = held_visible[:, None, :] & real[:, :, None]  # [B, T, C]: padding sees no history
    # Query head h reads KV head h // G: [B, Hkv, G, T, D]
    q = query.reshape(batch, kv_heads, group, length, dim)
    out = torch.empty(batch, kv_heads, group, length, dim, dtype=query.dtype, device=query.device)
    for start in range(0, length, _QUERY_CHUNK):
        part = slice(start, min(length, start + _QUERY_CHUNK))
        chunk = part.stop - part.start
        # the G query heads of a KV head as one block of rows: [B, Hkv, G*chunk, D]
        rows = q[:, :, :, part].reshape(batch, kv_heads, group * chunk, dim)
        logits_held = torch.matmul(rows.to(held_k.dtype), held_k.transpose(-1, -2)).float() * scale
        logits_new = torch.matmul(rows.to(key.dtype), key.transpose(-1, -2)).float() * scale
        logits_held = logits_held.view(batch, kv_heads, group, chunk, capacity)
        logits_new = logits_new.view(batch, kv_heads, group, chunk, length)
        logits_held = logits_held.masked_fill(~held_visible[:, None, None, part], float("-inf"))
        logits_new = logits_new.masked_fill(~new_visible[:, None, None, part], float("-inf"))
        weights = torch.cat([logits_held, logits_new], dim=-1).softmax(dim=-1)
        p_held = weights[..., :capacity].reshape(batch, kv_heads, group * chunk, capacity)
        p_new = weights[..., capacity:].reshape(batch, kv_heads, group * chunk, length)
        mixed = torch.matmul(p_held.to(held_v.dtype), held_v).float() + torch.matmul(
            p_new.to(value.dtype), value).float()
        out[:, :, :, part] = mixed.view(batch, kv_heads, group, chunk, dim).to(out.dtype)
    return out.view(batch, q_heads, length, dim)


def _fill_rows(tensor, x: torch.Tensor, code: int) -> None:
    """An rkv_tensor over x, [n, heads, dim] with a contiguous last axis, extent set."""
    n, heads, dim = x.shape
    s_seq, s_head, s_dim = x.stride()
    tensor.data = x.data_ptr()
    tensor.dtype = code
    tensor.num_heads = heads
    tensor.head_dim = dim
    tensor.stride_seq = s_seq
    tensor.stride_token = 0
    tensor.stride_head = s_head
    tensor.extent = 1 + (n - 1) * s_seq + (heads - 1) * s_head + (dim - 1) * s_dim


class DecodeCalls:
    """The decode step's librkv calls of every layer through one batch: the
    argument structs are built once per layer, and each call only points them
    at the step's tensors (no per-row Python, no host arrays, no sync)."""

    def __init__(self, native, batch, num_layers: int, dtype_code: int):
        self.native = native
        self.batch = batch
        self.code = dtype_code
        raw_batch = batch._handle.raw
        self.append_args, self.attend_args = [], []
        for layer in range(num_layers):
            a = _c.rkv_append_args()
            a.layer, a.num_seqs, a.batch = layer, batch.max_entries, raw_batch
            b = _c.rkv_attend_args()
            b.layer, b.num_seqs, b.batch = layer, batch.max_entries, raw_batch
            self.append_args.append((a, a.k, a.v, a.q))
            self.attend_args.append((b, b.q, b.out))

    def step(self, layer: int, k, v, q, out, scale: float | None, stream) -> None:
        """Append row i's token (k, v, q: [rows, heads, dim]) to the batch's
        sequence i, then attend for it into out [rows, q_heads, dim]."""
        args, tk, tv, tq = self.append_args[layer]
        _fill_rows(tk, k, self.code)
        _fill_rows(tv, v, self.code)
        _fill_rows(tq, q, self.code)
        attend, aq, ao = self.attend_args[layer]
        _fill_rows(aq, q, self.code)
        _fill_rows(ao, out, self.code)
        attend.scale = 0.0 if scale is None else float(scale)
        with self.native._lock:
            raw = self.native._h()
            _c.rkv_append(raw, args, stream)
            _c.rkv_attend(raw, attend, stream)
