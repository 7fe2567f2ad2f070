"""Tensor parallel: tp_plan="auto" over 2 GPUs, each rank's RkvCache holds its
own KV heads. Runs only where two GPUs and a CUDA build of librkv exist."""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import tiny_model

import rkv


def test_tensor_parallel_two_gpus(tmp_path):
    if torch.cuda.device_count() < 2:
        pytest.skip("needs 2 GPUs")
    try:
        rkv.Cache(max_seqs=1, num_layers=1, num_kv_heads=1, head_dim=8, device="cuda").close()
    except rkv.UnsupportedError as e:
        pytest.skip(f"librkv built without CUDA: {e.message}")
    # 4 KV heads and 8 query heads split evenly over 2 ranks
    tiny_model("llama", num_attention_heads=8, num_key_value_heads=4,
               hidden_size=128).save_pretrained(tmp_path)
    torchrun = shutil.which("torchrun") or None
    command = ([torchrun] if torchrun else [sys.executable, "-m", "torch.distributed.run"]) + [
        "--nproc_per_node=2", os.path.join(os.path.dirname(__file__), "tp_worker.py"), str(tmp_path)]
    env = {**os.environ, "NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    reports = [json.loads(line.split(" ", 1)[1]) for line in done.stdout.splitlines()
               if line.startswith("RKV_TP ")]
    assert sorted(r["rank"] for r in reports) == [0, 1]
    for report in reports:
        assert report["same"], report  # no eviction: identical to transformers' cache
        assert report["kv_heads"] == 4 // 2 and report["q_heads"] == 8 // 2  # own heads only
        assert report["evicted"] > 0 and report["max_held"] <= 8 + 4
