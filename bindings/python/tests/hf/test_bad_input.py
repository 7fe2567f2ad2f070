"""What the adapter refuses, each with an exception that names what to change:
models whose attention librkv cannot serve, dtypes it does not store, a batch
that changes size in place, tensors on another device, masks it cannot read,
and a FULL cache that is full."""
import pytest
import torch
import transformers
from conftest import SHAPE, generate, left_padded_batch, tiny_model

import rkv
import rkv.hf


def model_from(config_class, **overrides):
    config = config_class(**{**SHAPE, **overrides})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.set_attn_implementation("rkv")
    return model.eval()


def test_models_whose_attention_librkv_cannot_serve():
    with pytest.raises(ValueError, match="attn_implementation='rkv'"):
        rkv.hf.RkvCache(tiny_model("llama"))  # still SDPA
    gemma = model_from(transformers.Gemma3TextConfig, sliding_window=8)
    with pytest.raises(ValueError, match="sliding_attention layers.*DynamicCache"):
        rkv.hf.RkvCache(gemma)
    mistral = model_from(transformers.MistralConfig, sliding_window=16)
    with pytest.raises(ValueError, match="sliding window of 16 tokens.*sliding_window = None"):
        rkv.hf.RkvCache(mistral)
    mistral.config.sliding_window = None  # trained with full attention: then it is served
    rkv.hf.RkvCache(mistral)


def test_latent_attention_is_refused():
    config = transformers.DeepseekV3Config(
        vocab_size=64, hidden_size=32, intermediate_size=32, moe_intermediate_size=16,
        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2, n_routed_experts=2,
        num_experts_per_tok=1, n_group=1, topk_group=1, first_k_dense_replace=1, q_lora_rank=16,
        kv_lora_rank=16, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    model.set_attn_implementation("rkv")
    with pytest.raises(ValueError, match="keys of 16 and values of 8 dimensions"):
        rkv.hf.RkvCache(model)


def test_dtypes_librkv_does_not_store():
    model = tiny_model("llama", dtype=torch.float64)
    model.set_attn_implementation("rkv")
    with pytest.raises(ValueError, match="torch.float64.*torch.bfloat16, torch.float16 or torch.float32"):
        rkv.hf.RkvCache(model)
    model = tiny_model("llama")
    model.set_attn_implementation("rkv")
    cache = rkv.hf.RkvCache(model)
    k = torch.zeros(1, 2, 3, 16, dtype=torch.float64)
    with pytest.raises(ValueError, match="float64, which librkv does not store"):
        cache.update(k, k, 0)


def test_a_batch_that_changes_size_in_place():
    model = tiny_model("llama")
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch([5, 7])
    cache = rkv.hf.RkvCache(model, budget=32, buffer=8, window=2, max_batch_size=3)
    generate(model, ids, mask, 4, cache)
    bigger, bigger_mask = left_padded_batch([5, 7, 6])
    with pytest.raises(ValueError, match="batch of 2 sequence.*called with 3.*cache.reset()"):
        model(input_ids=bigger, attention_mask=bigger_mask, past_key_values=cache, use_cache=True)
    cache.reset()  # a new batch, up to the 3 slots it was created with
    generate(model, bigger, bigger_mask, 4, cache)
    assert [cache.native.length(s, 0)[0] for s in range(3)] == [5 + 3, 7 + 3, 6 + 3]
    cache.reset()
    four, four_mask = left_padded_batch([5, 7, 6, 2])
    with pytest.raises(ValueError, match="4 sequences, but this RkvCache has 3 slots"):
        generate(model, four, four_mask, 4, cache)


def test_tensors_on_another_device():
    model = tiny_model("llama")
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch([5])
    cache = rkv.hf.RkvCache(model, budget=32, buffer=8, window=2)
    generate(model, ids, mask, 2, cache)
    k = torch.zeros(1, 2, 1, 16, device="meta")
    with pytest.raises(ValueError, match="layer 1's keys are on meta.*lives on cpu.*device_map"):
        cache.update(k, k, 1)


def test_masks_the_adapter_cannot_read():
    model = tiny_model("llama")
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch([5, 3])
    right_padded = mask.flip(1)
    cache = rkv.hf.RkvCache(model, budget=32, buffer=8, window=2)
    with pytest.raises(ValueError, match="left padding only"):
        model(input_ids=ids, attention_mask=right_padded, past_key_values=cache, use_cache=True)
    assert not cache.native.stats().tokens_appended  # refused before anything went in
    assert cache.get_seq_length() == 0
    mask4d = torch.ones(2, 1, 5, 5, dtype=torch.bool)
    with pytest.raises(ValueError, match="2D attention_mask"):
        model(input_ids=ids, attention_mask=mask4d, past_key_values=cache, use_cache=True)


def test_a_full_cache_that_is_full():
    model = tiny_model("llama")
    model.set_attn_implementation("rkv")
    ids, mask = left_padded_batch([10])
    cache = rkv.hf.RkvCache(model, method="full", max_len=16)
    with pytest.raises(rkv.CapacityError, match="max_len = 16.*larger max_len"):
        generate(model, ids, mask, 10, cache)
    assert cache.native.length(0, 0)[0] == 16  # filled to the last slot, nothing lost
