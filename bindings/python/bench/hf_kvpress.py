"""NVIDIA kvpress as a peer of hf_bench.py, where it can run: its
DecodingPress (compression during decoding) over a DynamicCache, at the
budget and interval librkv's R-KV gets (target_size = budget,
compression_interval = buffer), scored by KnormPress (the cheapest of its
scorers: a fair floor for kvpress's cost; kvpress has no R-KV).

kvpress is not a dependency of anything here. kvpress 0.5.5 pins
transformers < 5.3 and reads the attention's `cache_position` argument, which
transformers 5.3 and later no longer pass; `probe` finds out on a tiny model
whether this installation works, and says why not when it does not.
"""
from __future__ import annotations

import torch
import transformers
from transformers import DynamicCache

SCORER = "KnormPress"


def probe():
    """(kvpress module, None) where its DecodingPress compresses a tiny
    model's cache during generate(); (None, why not) otherwise."""
    try:
        import kvpress
    except Exception as error:  # noqa: BLE001 (any import failure means: not a peer here)
        return None, (f"NVIDIA kvpress is not compared: it does not import here "
                      f"({type(error).__name__}: {str(error).splitlines()[0][:160]})")
    version = getattr(kvpress, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as dist_version
            version = dist_version("kvpress")
        except Exception:  # noqa: BLE001
            version = "?"
    config = transformers.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                                      max_position_embeddings=1024)
    try:
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
        press = make_press(kvpress, budget=16, interval=8)
        ids = torch.randint(3, 256, (2, 8))
        cache = DynamicCache(config=model.config)
        with torch.no_grad(), press(model):
            model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                           max_new_tokens=40, min_new_tokens=40, do_sample=False, pad_token_id=0)
        held = cache.layers[0].keys.shape[2]
        if held > 16 + 8:
            return None, (f"NVIDIA kvpress {version} is not compared: its DecodingPress did not compress "
                          f"under transformers {transformers.__version__} (48 tokens held {held}, "
                          f"budget 16 + interval 8)")
    except Exception as error:  # noqa: BLE001
        return None, (f"NVIDIA kvpress {version} is not compared: it imports, but its DecodingPress fails "
                      f"under transformers {transformers.__version__} ({type(error).__name__}: "
                      f"{str(error).splitlines()[0][:120]}; kvpress pins transformers < 5.3)")
    return kvpress, None


def make_press(kvpress, budget: int, interval: int):
    """DecodingPress keeping `budget` tokens per head after every `interval`
    decode steps (no hidden-state buffer: KnormPress scores keys alone)."""
    return kvpress.DecodingPress(base_press=getattr(kvpress, SCORER)(), compression_interval=interval,
                                 target_size=budget, hidden_states_buffer_size=0)
