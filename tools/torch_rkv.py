#!/usr/bin/env python3
"""R-KV compression written directly in PyTorch from docs/algorithm.md:
the straightforward batched implementation librkv's CUDA backend is compared
with (tools/gpu_check.sh runs both).

    python3 tools/torch_rkv.py bench [--batches 1,8,64,256] [--repeats 3] [--json FILE]
                                     [--rkv-json FILE]   # print the ratio to librkv's times
    python3 tools/torch_rkv.py check GOLDEN_DIR          # same kept sets as the official code

The benchmark compresses every layer of the R1-Distill-Llama-8B shape (32
layers, 8 KV heads, 32 query heads, head_dim 128, bf16 K/V) with every
sequence holding budget + buffer = 1024 + 128 tokens, and compacts K and V,
exactly the workload of rkv_bench_gpu. All heads of all sequences of a layer go
through each step at once (no Python loop over sequences or heads). The key
Gram matrix is a bf16 matmul (tensor cores) scaled by the float32 inverse
norms, like librkv's fused path; everything after it is float32.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F


def rkv_keep(keys, queries, budget, window, kernel=7, lam=0.1, tau=0.5, quirk=False):
    """Slots R-KV keeps for every (sequence, KV head).

    keys    [B, H, N, d]            held keys (post-RoPE), any float dtype
    queries [B, H*G, window, d]     the observation window's queries
    returns [B, H, budget] int64    kept slots, ascending (position order)
    """
    B, H, N, d = keys.shape
    G = queries.shape[1] // H
    C = N - window
    # 1. importance: group max of raw logits, softmax over the candidates,
    #    mean over the window, max-pool along the slots
    q = queries.float().view(B, H, G, window, d)
    logits = torch.einsum("bhgad,bhnd->bhgan", q, keys[:, :, :C].float()) / math.sqrt(d)
    attention = logits.amax(dim=2).softmax(dim=-1).mean(dim=-2)  # [B, H, C]
    importance = F.max_pool1d(attention.reshape(B * H, 1, C), kernel, stride=1, padding=kernel // 2)
    importance = importance.reshape(B, H, C)
    # 2. redundancy: cosine similarities, diagonal 0, the latest near-duplicate
    #    of each row zeroed, column means, softmax over all N
    inverse = 1.0 / (keys.float().norm(dim=-1) + 1e-8)  # [B, H, N]
    if keys.dtype == torch.float32:
        gram = keys @ keys.transpose(-1, -2)
    else:
        gram = torch.matmul(keys, keys.transpose(-1, -2)).float()
    similarity = gram * inverse[..., :, None] * inverse[..., None, :]  # [B, H, N, N]
    del gram
    similarity.diagonal(dim1=-2, dim2=-1).zero_()
    slots = torch.arange(N, device=keys.device, dtype=torch.int32)
    latest = torch.where(similarity > tau, slots, -1).amax(dim=-1)  # [B, H, N]
    column = latest.clamp(min=0).long().unsqueeze(-1)
    rule = (latest >= 0) if not quirk else torch.ones_like(latest, dtype=torch.bool)
    current = similarity.gather(-1, column)
    similarity.scatter_(-1, column, torch.where(rule.unsqueeze(-1), torch.zeros_like(current), current))
    redundancy = similarity.mean(dim=-2).softmax(dim=-1)[..., :C]
    del similarity
    # 3. score, 4. select: top budget - window candidates, plus the window
    #    (exact ties are broken by torch.topk's order, not by recency: irrelevant to the timing)
    score = lam * importance - (1.0 - lam) * redundancy
    top = torch.topk(score, budget - window, dim=-1).indices
    window_slots = torch.arange(C, N, device=keys.device).expand(B, H, window)
    return torch.cat([top.sort(dim=-1).values, window_slots], dim=-1)


def compact(cache, kept):
    """5. K or V [B, H, N, d] <- the kept slots, in order, in slots 0 .. budget-1."""
    d = cache.shape[-1]
    cache[:, :, : kept.shape[-1]] = torch.gather(cache, 2, kept.unsqueeze(-1).expand(-1, -1, -1, d))


def bench(args):
    layers, kv_heads, q_heads, d, budget, buffer, window = 32, 8, 32, 128, 1024, 128, 8
    n = budget + buffer
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False
    results = []
    print(f"\n== PyTorch {torch.__version__}: R-KV compression of all {layers} layers "
          f"(bf16, B {budget} + {buffer}), {torch.cuda.get_device_name()}")
    print(f"{'batch':>6} {'ms':>12} {'ms/seq':>10} {'peak GiB':>10}")
    for batch in args.batches:
        generator = torch.Generator(device=device).manual_seed(batch)
        keys = [torch.randn(batch, kv_heads, n, d, device=device, generator=generator).bfloat16() for _ in range(layers)]
        values = [torch.randn(batch, kv_heads, n, d, device=device, generator=generator).bfloat16() for _ in range(layers)]
        queries = [torch.randn(batch, q_heads, window, d, device=device, generator=generator).bfloat16()
                   for _ in range(layers)]
        times = []
        torch.cuda.reset_peak_memory_stats()
        for r in range(args.repeats + 1):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for layer in range(layers):
                kept = rkv_keep(keys[layer], queries[layer], budget, window)
                compact(keys[layer], kept)
                compact(values[layer], kept)
            stop.record()
            torch.cuda.synchronize()
            if r > 0:
                times.append(start.elapsed_time(stop))
        ms = sorted(times)[len(times) // 2]
        peak = torch.cuda.max_memory_allocated() / 2**30
        print(f"{batch:>6} {ms:>12.2f} {ms / batch:>10.3f} {peak:>10.1f}", flush=True)
        results.append({"bench": "torch_compress", "batch": batch, "ms": ms, "peak_gib": peak})
        del keys, values, queries
        torch.cuda.empty_cache()
    if args.json:
        with open(args.json, "w") as out:
            for r in results:
                out.write(json.dumps(r) + "\n")
    if args.rkv_json and os.path.exists(args.rkv_json):
        rkv = [json.loads(line) for line in open(args.rkv_json) if line.strip()]
        paths = []  # every path rkv_bench_gpu measured, in its order
        for x in rkv:
            if x.get("bench") == "compress" and x["path"] not in paths:
                paths.append(x["path"])
        print("\n== librkv CUDA against this PyTorch implementation (same workload)")
        print(f"{'batch':>6} {'torch ms':>10}" + "".join(f" {p + ' ms':>12} {'speed-up':>9}" for p in paths))
        for r in results:
            row = {x["path"]: x["ms"] for x in rkv if x.get("bench") == "compress" and x["batch"] == r["batch"]}
            line = f"{r['batch']:>6} {r['ms']:>10.1f}"
            for p in paths:
                ms = row.get(p)
                line += f" {ms or float('nan'):>12.2f} {(r['ms'] / ms) if ms else float('nan'):>8.1f}x"
            print(line)


def npy(path):
    import numpy
    return torch.from_numpy(numpy.load(path))


def check(golden):
    """The single-step R-KV golden cases: the kept set of every head matches."""
    manifest = json.load(open(os.path.join(golden, "manifest.json")))
    checked = 0
    for case in manifest["cases"]:
        if case["method"] != "rkv" or not case.get("compressed") or case.get("multistep"):
            continue
        folder = os.path.join(golden, case["name"])
        keys, queries, kept = npy(f"{folder}/K.npy"), npy(f"{folder}/Q.npy"), npy(f"{folder}/kept.npy")
        ours = rkv_keep(keys, queries, case["budget"], case["window"], case["kernel"],
                        case["lambda"], 0.5, quirk=True)[0]
        for h in range(keys.shape[1]):
            if set(ours[h].tolist()) != set(kept[h].tolist()):
                print(f"{case['name']} head {h}: kept sets differ")
                return 1
        checked += 1
    print(f"PyTorch R-KV: {checked} golden single-step cases keep the official code's sets")
    return 0 if checked else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench")
    b.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 64, 256])
    b.add_argument("--repeats", type=int, default=3)
    b.add_argument("--json")
    b.add_argument("--rkv-json")
    c = sub.add_parser("check")
    c.add_argument("golden")
    args = parser.parse_args()
    if args.command == "bench":
        if not torch.cuda.is_available():
            print("no CUDA device: nothing to measure")
            return 77
        bench(args)
        return 0
    return check(args.golden)


if __name__ == "__main__":
    sys.exit(main())
