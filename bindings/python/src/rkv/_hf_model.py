"""Which transformers models the adapter can serve, and the errors that say
what to change when it cannot. librkv holds, per layer, the post-RoPE K and V
of every KV head with one head_dim, and attends with a plain softmax over
them: full causal attention of a decoder-only model, nothing else."""
from __future__ import annotations

import torch

from .enums import DType

ATTENTION_NAME = "rkv"
TORCH_DTYPES = {torch.float32: DType.F32, torch.float16: DType.F16, torch.bfloat16: DType.BF16}


def check_model(model, config) -> None:
    """Refuse, before anything is allocated, a model whose attention librkv
    cannot hold or compute. Raises ValueError naming what to change."""
    name = type(model).__name__
    if getattr(config, "_attn_implementation", None) != ATTENTION_NAME:
        raise ValueError(f"RkvCache needs the model's attention implementation to be "
                         f"{ATTENTION_NAME!r}: load it with attn_implementation={ATTENTION_NAME!r} "
                         f"or call model.set_attn_implementation({ATTENTION_NAME!r})")
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"{name} is an encoder-decoder model: RkvCache serves decoder-only "
                         f"models (Llama, Qwen2, Qwen3, ...); use transformers' EncoderDecoderCache")
    layer_types = getattr(config, "layer_types", None)
    if layer_types and set(layer_types) != {"full_attention"}:
        other = sorted(set(layer_types) - {"full_attention"})
        raise ValueError(f"{name} has {', '.join(other)} layers: RkvCache serves models whose every "
                         f"layer is full attention (librkv keeps a budget per head, not a window or "
                         f"a recurrent state); use transformers' DynamicCache for this model")
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        raise ValueError(f"{name} attends over a sliding window of {window} tokens: RkvCache keeps a "
                         f"budget per head over the whole sequence. Set config.sliding_window = None "
                         f"if the model was trained with full attention, or use DynamicCache")
    if getattr(config, "attn_logit_softcapping", None):
        raise ValueError(f"{name} soft-caps its attention logits (attn_logit_softcapping = "
                         f"{config.attn_logit_softcapping}): librkv's attention is a plain softmax; "
                         f"use DynamicCache for this model")
    qk, v = getattr(config, "qk_head_dim", None), getattr(config, "v_head_dim", None)
    if qk is not None and v is not None and qk != v:
        raise ValueError(f"{name} has keys of {qk} and values of {v} dimensions (multi-head latent "
                         f"attention): librkv stores K and V with one head_dim; use DynamicCache")
    dtype = getattr(model, "dtype", None)
    if dtype is not None and dtype not in TORCH_DTYPES:
        raise ValueError(f"the model runs in {dtype}, which librkv does not store: load it with "
                         f"dtype=torch.bfloat16, torch.float16 or torch.float32")


def check_layer_call(layer_idx: int, key_states, value_states, device, dtype, rows: int | None) -> None:
    """What only the first tensors show: dtype, head dims, one device for every
    layer, and a batch that does not grow. Cheap (Python attributes only)."""
    if key_states.dtype not in TORCH_DTYPES:
        raise ValueError(f"layer {layer_idx} gives keys in {key_states.dtype}, which librkv does not "
                         f"store: run the model in torch.bfloat16, torch.float16 or torch.float32")
    if key_states.shape[-1] != value_states.shape[-1]:
        raise ValueError(f"layer {layer_idx} has keys of {key_states.shape[-1]} and values of "
                         f"{value_states.shape[-1]} dimensions: librkv stores K and V with one "
                         f"head_dim; use DynamicCache for this model")
    if device is not None and key_states.device != device:
        raise ValueError(f"layer {layer_idx}'s keys are on {key_states.device}, but this RkvCache "
                         f"lives on {device}: librkv keeps a cache on one device. Load the model on "
                         f"one device (device_map={{'': {device.index or 0}}} or .to('{device}')), "
                         f"or split it with tensor parallelism (tp_plan='auto'), whose ranks each "
                         f"hold their own heads")
    if dtype is not None and key_states.dtype != dtype:
        raise ValueError(f"layer {layer_idx} gives keys in {key_states.dtype}, but the cache was "
                         f"created for {dtype} at the first call: use one dtype for every layer")
    if rows is not None and key_states.shape[0] != rows:
        raise ValueError(
            f"this RkvCache holds a batch of {rows} sequence(s) (fixed at its first call), but the "
            f"model was called with {key_states.shape[0]}: a batch cannot grow or shrink in place. "
            f"Use one RkvCache per generate call, or call cache.reset() before a new batch")
