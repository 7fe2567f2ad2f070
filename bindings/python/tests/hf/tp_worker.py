"""One rank of the tensor-parallel test (run by torchrun from test_tp.py):
load the tiny model with tp_plan="auto", generate with transformers' cache and
with RkvCache, and check each rank's librkv cache holds its own heads only."""
import json
import os
import sys

import torch
import torch.distributed as dist
from transformers import AutoModelForCausalLM, DynamicCache

sys.path.insert(0, os.path.dirname(__file__))
from conftest import left_padded_batch  # noqa: E402

import rkv.hf  # noqa: E402  (registers the "rkv" attention)


def main(path: str) -> None:
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    torch.cuda.set_device(rank)
    model = AutoModelForCausalLM.from_pretrained(path, tp_plan="auto", dtype=torch.float32,
                                                 attn_implementation="sdpa").eval()
    ids, mask = left_padded_batch([7, 12, 3], device=f"cuda:{rank}")

    def run(cache):
        return model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=16,
                              min_new_tokens=16, do_sample=False, past_key_values=cache)

    expected = run(DynamicCache(config=model.config))
    model.set_attn_implementation("rkv")
    full = rkv.hf.RkvCache(model, budget=64, buffer=8, window=4)
    same = torch.equal(run(full), expected)
    small = rkv.hf.RkvCache(model, budget=8, buffer=4, window=2)
    run(small)
    report = {"rank": rank, "same": same,
              "kv_heads": small.native.params["num_kv_heads"],
              "q_heads": small.native.params["num_q_heads"],
              "evicted": small.native.stats().tokens_evicted,
              "max_held": max(small.native.length(b, 0)[1] for b in range(3)),
              "world": world}
    print("RKV_TP " + json.dumps(report), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
