#!/usr/bin/env python3
"""Decode attention on the GPU, side by side in one run: librkv's rkv_attend
(bf16 and FP8 E4M3 storage, every plan) and torch's
scaled_dot_product_attention(q, k, v, enable_gqa=True) reading the very same
K/V memory (the cache's layer view, wrapped as torch tensors).

    python3 tools/bench_attend.py [--lib build-gpu/librkv.so] [--json FILE] [--plot FILE.png]
                                  [--repeats 20] [--cases 1x1152,8x1152,32x1152,256x1152,32x16384]

R1-Distill-Llama-8B shape (8 KV heads, 32 query heads, head_dim 128), one
decode token per sequence, every sequence holding `length` tokens. Each
measurement replays a CUDA graph of one call per layer over enough layers that
the K/V read exceeds the L2 cache (so every call reads HBM), and reports the
median per call. GB/s counts the K/V bytes each call must read (FP8: bytes
plus scales). Ratios are SDPA's time over librkv's (> 1: librkv is faster).

The sweep: every (splits, kernel shape) plan librkv can be forced to
(rkv_cache_set_attend_plan), next to the automatic plan, so the table shows
whether the rule picks the best measured plan. Each case also checks
rkv_attend's output against SDPA's (bf16) or against float32 attention over
the dequantised K/V (FP8). Also: sequences per GiB for an R-KV cache
(budget 1024 + 128) and a Full 16K cache in bf16 and FP8 (rkv_cache_size).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import rkv_ctypes as rc  # noqa: E402

KV_HEADS, Q_HEADS, DIM = 8, 32, 128
L2_BYTES = 50 << 20


class DeviceArray:
    """A torch-visible view of device memory librkv owns (__cuda_array_interface__)."""

    def __init__(self, pointer, shape, typestr, owner):
        self.__cuda_array_interface__ = {"version": 3, "shape": tuple(shape), "typestr": typestr,
                                         "data": (pointer, False), "strides": None, "stream": None}
        self.owner = owner


def layers_for(layer_bytes):
    """Enough layers that one pass over them reads several L2 caches' worth."""
    return max(2, min(32, math.ceil(8 * L2_BYTES / layer_bytes)))


def settle(torch):
    """Waits out the driver's work after a case's allocations before timing.

    Measured on the H200 (session 16, run WJ): after one case's caches were
    freed and the next case's made, rkv_attend ran up to 13% slower for the
    first ~60 ms (33 x 16K: 562 us, then 492), while SDPA, timed later in the
    case, did not: a bias against rkv in any case but a run's first. A
    second's wait before the first timing removed it.
    """
    torch.cuda.synchronize()
    time.sleep(1.0)


def time_graph(torch, calls, repeats):
    """Median ms per call of a CUDA graph that makes `calls()` once (a list of launches)."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        count = calls()  # warm-up, outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    # thread_local: librkv's host-side checks (cudaPointerGetAttributes) run during the capture
    with torch.cuda.graph(graph, capture_error_mode="thread_local"):
        calls()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(repeats):
        start.record()
        graph.replay()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / count)
    del graph
    return statistics.median(times)


def kv_bytes(batch, length, fp8):
    per_row = DIM + 4 if fp8 else DIM * 2  # FP8: one byte per element and a float scale
    return 2 * batch * KV_HEADS * length * per_row


def plans_for(batch, sweep):
    pairs = batch * KV_HEADS
    plans = [(0, rc.ATTEND_AUTO)]
    if not sweep:
        return plans
    for variant in (rc.ATTEND_WIDE, rc.ATTEND_NARROW, rc.ATTEND_TENSOR):
        for splits in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64):
            if pairs * splits <= 2048 or splits == 1:
                plans.append((splits, variant))
    return plans


def run_case(torch, F, rkv, batch, length, repeats, sweep_plans, results):
    layer_bytes = kv_bytes(batch, length, False) // 1  # per layer, bf16
    layers = layers_for(layer_bytes)
    torch.manual_seed(batch * 100003 + length)
    source_k = torch.randn(batch, length, KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    source_v = torch.randn(batch, length, KV_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    q = torch.randn(batch, Q_HEADS, DIM, device="cuda", dtype=torch.bfloat16)
    ids = list(range(batch))
    row = KV_HEADS * DIM
    stride_seq = length * row
    stream = torch.cuda.current_stream().cuda_stream
    case = {"batch": batch, "length": length, "layers": layers}
    print("\n== batch %d x %d tokens (%d layers rotated; %.1f MB of bf16 K+V per layer)" %
          (batch, length, layers, layer_bytes / 1e6), flush=True)

    outputs = {}
    for name, dtype in (("bf16", rc.BF16), ("fp8", rc.FP8_E4M3)):
        params = rkv.params(max_seqs=batch, num_layers=layers, num_kv_heads=KV_HEADS, num_q_heads=Q_HEADS,
                            head_dim=DIM, method=rc.METHOD_FULL, max_len=length, dtype=dtype,
                            device_type=rc.CUDA)
        cache = rkv.create(params)
        try:
            k_in = rc.Tensor(source_k.data_ptr(), rc.BF16, KV_HEADS, DIM, stride_seq, row, DIM)
            v_in = rc.Tensor(source_v.data_ptr(), rc.BF16, KV_HEADS, DIM, stride_seq, row, DIM)
            for layer in range(layers):
                rkv.append(cache, layer, ids, [length] * batch, k_in, v_in, stream=stream)
            out = torch.empty_like(q)
            q_t = rc.Tensor(q.data_ptr(), rc.BF16, Q_HEADS, DIM, Q_HEADS * DIM, 0, DIM)
            out_t = rc.Tensor(out.data_ptr(), rc.BF16, Q_HEADS, DIM, Q_HEADS * DIM, 0, DIM)

            def rkv_calls():
                s = torch.cuda.current_stream().cuda_stream
                for layer in range(layers):
                    rkv.attend(cache, layer, ids, q_t, out_t, 0.0, s)
                return layers

            sweep = []
            settle(torch)
            time_graph(torch, rkv_calls, repeats)  # warm-up
            for splits, variant in plans_for(batch, sweep_plans):
                try:
                    rkv.set_attend_plan(cache, splits, variant)
                except rc.RkvError:
                    continue  # a plan this shape does not serve
                ms = time_graph(torch, rkv_calls, repeats)
                sweep.append({"splits": splits, "variant": ["auto", "wide", "narrow", "tensor"][variant], "us": ms * 1e3,
                              "gbs": kv_bytes(batch, length, dtype == rc.FP8_E4M3) / (ms * 1e-3) / 1e9})
            rkv.set_attend_plan(cache, 0, rc.ATTEND_AUTO)
            rkv.attend(cache, 0, ids, q_t, out_t, 0.0, stream)
            torch.cuda.synchronize()
            outputs[name] = out.float().clone()

            view = rkv.view_layer(cache, 0)
            shape = (batch, KV_HEADS, length, DIM)
            if dtype == rc.BF16:
                def layer_kv(layer):
                    v = rkv.view_layer(cache, layer)
                    k = torch.as_tensor(DeviceArray(v.k, shape, "<i2", cache), device="cuda").view(torch.bfloat16)
                    vv = torch.as_tensor(DeviceArray(v.v, shape, "<i2", cache), device="cuda").view(torch.bfloat16)
                    return k, vv
                kvs = [layer_kv(layer) for layer in range(layers)]
                q4 = q.view(batch, Q_HEADS, 1, DIM)

                def sdpa_calls():
                    for k, v in kvs:
                        F.scaled_dot_product_attention(q4, k, v, enable_gqa=True)
                    return layers

                sdpa_ms = time_graph(torch, sdpa_calls, repeats)
                case["sdpa"] = {"us": sdpa_ms * 1e3, "gbs": kv_bytes(batch, length, False) / (sdpa_ms * 1e-3) / 1e9}
                reference = F.scaled_dot_product_attention(q4, kvs[0][0], kvs[0][1], enable_gqa=True)
                reference = reference.view(batch, Q_HEADS, DIM).float()
                del kvs
            else:  # float32 attention over the dequantised K/V
                scale_shape = (batch, KV_HEADS, length)
                k8 = torch.as_tensor(DeviceArray(view.k, shape, "|u1", cache), device="cuda")
                v8 = torch.as_tensor(DeviceArray(view.v, shape, "|u1", cache), device="cuda")
                ks = torch.as_tensor(DeviceArray(view.k_scale, scale_shape, "<f4", cache), device="cuda")
                vs = torch.as_tensor(DeviceArray(view.v_scale, scale_shape, "<f4", cache), device="cuda")
                k = k8.view(torch.float8_e4m3fn).float() * ks[..., None]
                v = v8.view(torch.float8_e4m3fn).float() * vs[..., None]
                reference = F.scaled_dot_product_attention(q.float().view(batch, Q_HEADS, 1, DIM), k, v,
                                                           enable_gqa=True).view(batch, Q_HEADS, DIM)
                del k, v
            error = ((outputs[name] - reference).norm() / reference.norm()).item()
            case[name] = {"sweep": sweep, "auto": sweep[0], "best": min(sweep, key=lambda s: s["us"]),
                          "relative_error": error}
        finally:
            rkv.destroy(cache)
        torch.cuda.synchronize()
    quantisation = ((outputs["fp8"] - outputs["bf16"]).norm() / outputs["bf16"].norm()).item()
    case["fp8_vs_bf16_output"] = quantisation
    del source_k, source_v
    torch.cuda.empty_cache()

    sdpa = case["sdpa"]["us"]
    print("%-28s %10s %10s %9s" % ("", "us/layer", "GB/s", "vs SDPA"))
    print("%-28s %10.2f %10.0f %9s" % ("torch SDPA (bf16)", sdpa, case["sdpa"]["gbs"], "1.00x"))
    for name in ("bf16", "fp8"):
        for label, entry in (("auto", case[name]["auto"]), ("best", case[name]["best"])):
            plan = "" if label == "auto" and entry["splits"] == 0 else " (%s, %d splits)" % (entry["variant"],
                                                                                            entry["splits"])
            print("%-28s %10.2f %10.0f %8.2fx" % ("rkv %s %s%s" % (name, label, plan), entry["us"], entry["gbs"],
                                                 sdpa / entry["us"]))
    print("sweep (us/layer):", flush=True)
    for name in ("bf16", "fp8"):
        cells = ["%s/%d: %.1f" % (s["variant"][0], s["splits"], s["us"]) for s in case[name]["sweep"][1:]]
        print("  %s: %s" % (name, ", ".join(cells)))
    print("output: bf16 vs SDPA %.2g, fp8 vs float32 on its dequantised K/V %.2g (relative); fp8 vs bf16 %.2g" %
          (case["bf16"]["relative_error"], case["fp8"]["relative_error"], quantisation), flush=True)
    results["cases"].append(case)
    for name in ("bf16", "fp8"):
        if case[name]["relative_error"] > 1e-2:
            raise SystemExit("rkv_attend %s output differs from the reference by %.3g" %
                             (name, case[name]["relative_error"]))


def capacity(rkv, results):
    """Sequences per GiB: the bytes one more sequence costs (rkv_cache_size
    between 64 and 128 sequences, beyond the fixed scratch)."""
    print("\n== capacity (R1-Distill-Llama-8B, 32 layers)")
    print("%-32s %14s %14s %8s" % ("", "MiB/sequence", "seqs per GiB", "vs bf16"))
    rows = []
    for label, method, extra in (("R-KV, budget 1024 + 128", rc.METHOD_RKV, {}),
                                 ("Full, 16384 tokens", rc.METHOD_FULL, {"max_len": 16384})):
        per = {}
        for name, dtype in (("bf16", rc.BF16), ("fp8", rc.FP8_E4M3)):
            sizes = []
            for seqs in (64, 128):
                p = rkv.params(max_seqs=seqs, num_layers=32, num_kv_heads=KV_HEADS, num_q_heads=Q_HEADS,
                               head_dim=DIM, method=method, dtype=dtype, device_type=rc.CUDA, **extra)
                sizes.append(rkv.cache_size(p))
            per[name] = (sizes[1] - sizes[0]) / 64
        for name in ("bf16", "fp8"):
            seqs = (1 << 30) / per[name]
            print("%-32s %14.1f %14.2f %7.2fx" % ("%s, %s" % (label, name), per[name] / 2**20, seqs,
                                                 per["bf16"] / per[name]))
            rows.append({"cache": label, "dtype": name, "bytes_per_sequence": per[name], "seqs_per_gib": seqs})
    results["capacity"] = rows


def plot(results, path):
    """Bars per case: GB/s of K+V read by SDPA and rkv_attend (automatic plan, bf16 and FP8)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("no matplotlib here: no plot written")
        return
    cases = results["cases"]
    labels = ["%d x %d" % (c["batch"], c["length"]) for c in cases]
    series = (("torch SDPA, bf16", [c["sdpa"]["gbs"] for c in cases]),
              ("rkv_attend, bf16", [c["bf16"]["auto"]["gbs"] for c in cases]),
              ("rkv_attend, FP8", [c["fp8"]["auto"]["gbs"] for c in cases]))
    figure, axes = plt.subplots(figsize=(8, 4))
    width = 0.27
    for i, (name, values) in enumerate(series):
        axes.bar([x + (i - 1) * width for x in range(len(cases))], values, width, label=name)
    axes.set_xticks(range(len(cases)))
    axes.set_xticklabels(labels)
    axes.set_xlabel("sequences x held tokens (one decode token each, 8 KV heads, head_dim 128)")
    axes.set_ylabel("GB/s of K+V read")
    axes.set_title("Decode attention, %s (higher is better)" % results["device"])
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    print("wrote", path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lib", default=os.environ.get("RKV_LIB", "build-gpu/librkv.so"))
    parser.add_argument("--json")
    parser.add_argument("--plot", help="PNG of the summary: GB/s of K+V read per case (needs matplotlib)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cases", default="1x1152,8x1152,32x1152,256x1152,32x16384")
    parser.add_argument("--plans", choices=("all", "auto"), default="all",
                        help="all: sweep every kernel and split count; auto: the automatic plan only")
    args = parser.parse_args()
    import torch
    import torch.nn.functional as F
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 77
    rkv = rc.Library(args.lib)
    device = torch.cuda.get_device_properties(0)
    print("%s, %d SMs, torch %s, librkv %s" % (device.name, device.multi_processor_count, torch.__version__,
                                               rkv.version()))
    results = {"device": device.name, "torch": torch.__version__, "cases": []}
    for item in args.cases.split(","):
        batch, length = (int(x) for x in item.split("x"))
        run_case(torch, F, rkv, batch, length, args.repeats, args.plans == "all", results)
    capacity(rkv, results)

    print("\n== summary: rkv_attend (automatic plan) against SDPA, us per layer and ratio (> 1: faster)")
    print("%-16s %10s %10s %10s %8s %10s %8s %8s" % ("batch x length", "SDPA us", "SDPA GB/s", "bf16 us", "ratio",
                                                    "fp8 us", "ratio", "fp8/bf16"))
    for c in results["cases"]:
        s, b, f = c["sdpa"]["us"], c["bf16"]["auto"]["us"], c["fp8"]["auto"]["us"]
        print("%-16s %10.2f %10.0f %10.2f %7.2fx %10.2f %7.2fx %7.2fx" % ("%d x %d" % (c["batch"], c["length"]), s,
                                                                         c["sdpa"]["gbs"], b, s / b, f, s / f, b / f))
    if args.plot:
        plot(results, args.plot)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
        print("wrote", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
