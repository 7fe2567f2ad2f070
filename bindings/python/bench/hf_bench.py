#!/usr/bin/env python3
"""transformers with librkv (rkv.hf.RkvCache) against DynamicCache and
StaticCache (and NVIDIA kvpress's DecodingPress where it runs): decode
tokens/s and peak memory at batch 1, 8, 32, 64 and the largest that fits each
cache, for generations of 4K and 16K new tokens, on a model of the
R1-Distill-Llama-8B shape with random bf16 weights (built from its config: no
download). All ratios come from one run.

    python3 bindings/python/bench/hf_bench.py --out DIR [--time-limit 400]
        [--gens 4096,16384] [--batches 1,8,32,64] [--prompt 256]
        [--budget 1024] [--buffer 128] [--steps 6] [--max-batch N]
        [--shape r1-llama-8b[,layers=N]] [--device cuda] [--reserve-gib 4]

Whole generations of 16K tokens at every batch would take hours, so each
cache is brought to a set state and N decode steps are timed there; totals are
composed from them as the serving benchmark composes its own (hf_report.py says
how). A short real generate() of each cache checks the steps against what a
user sees. Batches larger than a cache can hold for the whole generation are
not run for it. Progress is printed as it goes, with each configuration's
seconds; a configuration that runs out of memory is reported and skipped (the
largest batch is retried smaller); no new measurement starts after
--time-limit seconds, and the report covers what was measured. Writes
DIR/hf_bench.md, DIR/hf_bench.json and DIR/hf_bench.png, and prints the tables
at the end.

Expected on one H200 (estimates from the step times the issue quotes, before
a first run): model built in under a minute; RkvCache about 2 s per batch up
to 64 and 15-25 s at its largest (about 800 sequences: 130 steps of a whole
compression interval); StaticCache and DynamicCache 2-8 s per configuration
(a cache of up to 110 GiB filled, 8-9 steps of up to 0.6 s), 40 of them;
kvpress, where it runs, like RkvCache but eager; generate() checks 10-20 s.
About 4 to 6 minutes in all.

NVIDIA kvpress (pip install kvpress, not a dependency) is measured when it
imports and its DecodingPress works under the installed transformers
(hf_kvpress.py checks on a tiny model first); otherwise the output says why.
kvpress 0.5.5 pins transformers < 5.3, and under 5.17 it fails.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import hf_kvpress  # noqa: E402
import hf_report  # noqa: E402
from hf_measure import Bench, release  # noqa: E402

import rkv  # noqa: E402
import rkv.hf  # noqa: E402
import transformers  # noqa: E402

SHAPES = {
    # DeepSeek-R1-Distill-Llama-8B (Llama 3.1 8B)
    "r1-llama-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                        rope_theta=500000.0, max_position_embeddings=131072),
    # for a smoke test on any machine
    "tiny": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, rope_theta=10000.0,
                 max_position_embeddings=65536),
}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="hf_bench", help="folder for hf_bench.md/.json/.png")
    p.add_argument("--time-limit", type=float, default=400.0,
                   help="seconds after which no new measurement starts (default 400)")
    p.add_argument("--gens", default="4096,16384", help="new tokens per generation")
    p.add_argument("--batches", default="1,8,32,64", help="batches, besides the largest that fits")
    p.add_argument("--prompt", type=int, default=256)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--buffer", type=int, default=128)
    p.add_argument("--steps", type=int, default=6, help="timed steps of a full cache per context")
    p.add_argument("--max-batch", type=int, default=0, help="cap on the largest batch (0: none)")
    p.add_argument("--shape", default="r1-llama-8b", help="r1-llama-8b or tiny, optionally ',layers=N'")
    p.add_argument("--device", default="cuda")
    p.add_argument("--reserve-gib", type=float, default=4.0,
                   help="memory left aside for activations, graph pools and fragmentation")
    p.add_argument("--no-generate", action="store_true", help="skip the end-to-end generate() check")
    return p.parse_args(argv)


class Progress:
    def __init__(self, limit: float):
        self.start = time.perf_counter()
        self.limit = limit

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def say(self, text: str) -> None:
        print(f"[{self.elapsed():6.1f} s] {text}", flush=True)

    def out_of_time(self) -> bool:
        return self.elapsed() > self.limit


def build_model(shape: str, device: torch.device, dtype):
    name, *extra = shape.split(",")
    if name not in SHAPES:
        raise SystemExit(f"unknown shape {name!r}: one of {', '.join(SHAPES)}")
    fields = dict(SHAPES[name])
    for item in extra:
        key, _, value = item.partition("=")
        fields[{"layers": "num_hidden_layers"}.get(key, key)] = int(value)
    config = transformers.LlamaConfig(**fields)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype,
                                                              attn_implementation="sdpa")
    return model.eval(), config


def copy_bandwidth(device) -> float:
    """Device-to-device copy, GB/s of bytes read + written (0 on the CPU)."""
    if device.type != "cuda":
        return 0.0
    a = torch.empty(2**30, dtype=torch.uint8, device=device)
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        b.copy_(a)
    end.record()
    end.synchronize()
    rate = 2 * a.numel() * 10 / (start.elapsed_time(end) * 1e-3) / 1e9
    del a, b
    release()
    return rate


def run_measure(results, progress, label, record, measure) -> str:
    """One configuration: its timing, or the error (out of memory included).
    Returns "ok", "oom", "failed" or "skipped"."""
    if progress.out_of_time():
        record["error"] = "skipped: time limit"
        results["runs"].append(record)
        return "skipped"
    started = time.perf_counter()
    outcome = "ok"
    try:
        steps = measure()
        record.update(ms=steps.ms, steps=steps.steps, peak_bytes=steps.peak_bytes,
                      compressions=steps.compressions, notes=steps.notes)
        progress.say(f"{label}: {steps.ms:.2f} ms per step ({steps.steps} steps"
                     f"{f', {steps.compressions} compressions' if steps.compressions else ''}"
                     f"{f', peak {steps.peak_bytes / 2**30:.1f} GiB' if steps.peak_bytes else ''}; "
                     f"{time.perf_counter() - started:.1f} s)"
                     + "".join(f"; {n}" for n in steps.notes))
    except (torch.cuda.OutOfMemoryError, rkv.OutOfMemoryError, MemoryError) as error:
        record["error"] = "out of memory"
        outcome = "oom"
        progress.say(f"{label}: out of memory ({str(error).splitlines()[0][:100]})")
    except Exception as error:  # noqa: BLE001 (reported per configuration)
        record["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        outcome = "failed"
        progress.say(f"{label}: failed: {record['error']}")
    release()
    results["runs"].append(record)
    return outcome


def measure_phases(results, progress, kind, batches, largest, first, steady):
    """The first phase and the steady state of a compressing cache at each
    batch, the largest first; a largest batch that runs out of memory is
    dropped for one an eighth smaller (up to 3 times). Returns the largest
    batch that ran."""
    name = hf_report.CACHE_NAMES[kind]
    for batch in sorted({b for b in batches if b < largest} | {largest}, reverse=True):
        for attempt in range(4 if batch == largest else 1):
            count = len(results["runs"])
            outcome = run_measure(results, progress, f"{name} batch {batch}, first phase",
                                  dict(cache=kind, gen=None, batch=batch, phase="first"),
                                  lambda b=batch: first(b))
            if outcome == "ok":
                outcome = run_measure(results, progress, f"{name} batch {batch}, steady state",
                                      dict(cache=kind, gen=None, batch=batch, phase="steady"),
                                      lambda b=batch: steady(b))
            if outcome != "oom" or batch != largest or attempt == 3:
                break
            del results["runs"][count:]
            smaller = max(1, batch * 7 // 8)
            results["meta"]["notes"].append(f"{name}: batch {batch} ran out of memory; the largest "
                                            f"batch measured is {smaller}")
            progress.say(f"{name}: batch {batch} ran out of memory, trying {smaller}")
            largest = batch = smaller
    return largest


def generate_check(bench, results, progress, cache_kind, batch, prompt, new, options):
    """A real generate(): decode ms per step from the time of new+1 against 1 token."""
    if progress.out_of_time():
        return
    model, device = bench.model, bench.device
    ids = torch.randint(3, bench.vocab, (batch, prompt), device=device)
    record = dict(cache=cache_kind, batch=batch, prompt=prompt, new=new)

    def run(tokens):
        if cache_kind == "dynamic":
            model.set_attn_implementation("sdpa")
            cache = transformers.DynamicCache(config=model.config)
        else:
            model.set_attn_implementation(rkv.hf.ATTENTION_NAME)
            cache = rkv.hf.RkvCache(model, cuda_graph=cache_kind == "rkv", **options)
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=cache,
                       max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        if cache_kind != "dynamic":
            cache.close()
        return seconds

    try:
        with torch.no_grad():
            run(2)  # warm-up (graph capture, cuBLAS plans)
            prefill = run(1)
            whole = run(new + 1)
        record["ms"] = (whole - prefill) * 1e3 / new
        progress.say(f"generate(), {hf_report.CACHE_NAMES[cache_kind]}, batch {batch}: "
                     f"{record['ms']:.2f} ms per decode step")
    except (torch.cuda.OutOfMemoryError, rkv.OutOfMemoryError) as error:
        record["error"] = "out of memory"
        progress.say(f"generate(), {cache_kind}, batch {batch}: out of memory ({str(error)[:80]})")
    except Exception as error:  # noqa: BLE001
        record["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
        progress.say(f"generate(), {cache_kind}, batch {batch}: failed: {record['error']}")
    release()
    results["generate"].append(record)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(args.time_limit)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (use --device cpu --shape tiny for a smoke test)")
        return 77
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gens = [int(g) for g in args.gens.split(",")]
    progress.say(f"building the {args.shape} model (random {dtype} weights) on {device}")
    model, config = build_model(args.shape, device, dtype)
    bench = Bench(model, device)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    copy_gbs = copy_bandwidth(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        device_name = torch.cuda.get_device_name(device)
    else:
        free, device_name = 64 * 2**30, "CPU"
    available = max(0, int(free - args.reserve_gib * 2**30))
    rkv_options = dict(method="rkv", budget=args.budget, buffer=args.buffer)
    capacity_tokens = args.budget + args.buffer

    # Capacities: the most sequences whose cache (and a step's activations) fit.
    kv_token = 2 * config.num_hidden_layers * bench.kv_heads * bench.head_dim * torch.finfo(dtype).bits // 8
    activations = 4 * bench.vocab * 2 + 64 * config.hidden_size * 2
    full_bytes, full_batch = {}, {}
    for gen in gens:
        per_seq = (args.prompt + gen) * kv_token * (1 + 1 / config.num_hidden_layers) + activations
        full_bytes[str(gen)] = int(per_seq)
        full_batch[str(gen)] = max(1, int(available // per_seq))
    shape = dict(num_layers=config.num_hidden_layers, num_kv_heads=bench.kv_heads,
                 num_q_heads=bench.q_heads, head_dim=bench.head_dim,
                 dtype={torch.bfloat16: "bf16", torch.float32: "f32"}[dtype],
                 device="cuda" if device.type == "cuda" else "cpu", **rkv_options)
    # Bytes per sequence from two sizes far apart: the CUDA compression scratch
    # grows with max_seqs x layers up to its cap of jobs (64), so the step from
    # 1 to 2 sequences counts scratch, not a sequence's K/V.
    low, high = 512, 1024
    size_low, size_high = (rkv.cache_size(max_seqs=n, **shape) for n in (low, high))
    per_seq_cache = (size_high - size_low) / (high - low)
    fixed = size_low - low * per_seq_cache
    rkv_seq = int(per_seq_cache + activations)
    rkv_batch = max(1, int((available - fixed) // rkv_seq))
    if args.max_batch:
        rkv_batch = min(rkv_batch, args.max_batch)
        full_batch = {g: min(b, args.max_batch) for g, b in full_batch.items()}
    kvpress, kvpress_why_not = hf_kvpress.probe()
    # kvpress: a DynamicCache of budget + interval tokens, replaced layer by
    # layer at each step (torch.cat) and at each compression.
    press_seq = int(capacity_tokens * kv_token * (1 + 2 / config.num_hidden_layers) + activations)
    press_batch = max(1, int(available // press_seq))
    if args.max_batch:
        press_batch = min(press_batch, args.max_batch)
    results = dict(
        meta=dict(device_name=device_name, torch=torch.__version__, transformers=transformers.__version__,
                  librkv=rkv.__version__, shape=args.shape, dtype=str(dtype).replace("torch.", ""),
                  prompt=args.prompt, gens=gens, budget=args.budget, buffer=args.buffer,
                  weight_bytes=weight_bytes, copy_gbs=copy_gbs, free_bytes=free, available_bytes=available,
                  kvpress=None if kvpress is None else f"DecodingPress({hf_kvpress.SCORER}), target_size "
                  f"{args.budget}, compression_interval {args.buffer}",
                  notes=[] if kvpress is None else [
                      f"kvpress: DecodingPress with {hf_kvpress.SCORER}, target_size = budget, "
                      f"compression_interval = buffer, over a DynamicCache, eager (its hooks run in Python)."]),
        capacity=dict(full=full_batch, full_bytes=full_bytes, rkv=rkv_batch, rkv_bytes=rkv_seq),
        runs=[], generate=[])
    if kvpress_why_not:
        results["meta"]["notes"].append(kvpress_why_not)
        progress.say(kvpress_why_not)
    else:
        results["capacity"].update(kvpress=press_batch, kvpress_bytes=press_seq)
    if device.type != "cuda":
        results["meta"]["notes"].append("On the CPU nothing is captured: the StaticCache and "
                                        "RkvCache steps ran eagerly (a smoke test, not a benchmark).")
    progress.say(f"weights {weight_bytes / 2**30:.1f} GiB; copy {copy_gbs:.0f} GB/s; "
                 f"{available / 2**30:.1f} GiB for caches; largest batches: full "
                 + ", ".join(f"{b} at {g} new tokens" for g, b in full_batch.items())
                 + f"; RkvCache {rkv_batch}" + ("" if kvpress is None else f"; kvpress {press_batch}"))
    batches = sorted({int(b) for b in args.batches.split(",")})
    graph = device.type == "cuda"
    first_context = (args.prompt + capacity_tokens) // 2  # the middle of the steps before compressing
    staggered = lambda batch: [capacity_tokens - s % args.buffer for s in range(batch)]  # noqa: E731

    # 1. RkvCache (CUDA graph; eager on the CPU): the steps before the first
    #    compression, then the steady state over a whole compression interval.
    kind = "rkv" if graph else "rkv-eager"
    results["capacity"]["rkv"] = measure_phases(
        results, progress, kind, batches, rkv_batch,
        first=lambda b: bench.rkv(b, [first_context] * b, 8, graph, **rkv_options),
        steady=lambda b: bench.rkv(b, staggered(b), args.buffer, graph, **rkv_options))
    hf_report.write(results, out)

    # 2. DynamicCache and StaticCache, the longest generation first, at the
    #    batches that hold the whole generation.
    for gen in sorted(gens, reverse=True):
        fits = full_batch[str(gen)]
        for batch in sorted(set(batches) | {fits}, reverse=True):
            for context in (args.prompt + gen // 4, args.prompt + 3 * gen // 4):
                for kind, measure in (("static", bench.static), ("dynamic", bench.dynamic)):
                    record = dict(cache=kind, gen=gen, batch=batch, context=context)
                    if batch > fits:
                        record["error"] = (f"does not fit: {batch} x {full_bytes[str(gen)] / 2**30:.2f} GiB "
                                           f"> {available / 2**30:.0f} GiB")
                        results["runs"].append(record)
                        continue
                    run_measure(results, progress,
                                f"{hf_report.CACHE_NAMES[kind]} {gen} new tokens, batch {batch}, "
                                f"context {context}", record,
                                lambda m=measure, b=batch, c=context: m(b, c, args.steps))
            hf_report.write(results, out)

    # 3. kvpress's DecodingPress, where it runs: as RkvCache.
    if kvpress is not None:
        press = dict(budget=args.budget, interval=args.buffer)
        results["capacity"]["kvpress"] = measure_phases(
            results, progress, "kvpress", batches, press_batch,
            first=lambda b: bench.kvpress(kvpress, b, first_context, 8, **press),
            steady=lambda b: bench.kvpress(kvpress, b, args.budget, args.buffer, **press))
        hf_report.write(results, out)

    # 4. The adapter without graphs: what Python costs per step.
    if graph:
        for batch in (1, 64):
            if batch > results["capacity"]["rkv"]:
                continue
            run_measure(results, progress, f"RkvCache (eager) batch {batch}, steady state",
                        dict(cache="rkv-eager", gen=None, batch=batch, phase="steady"),
                        lambda b=batch: bench.rkv(b, staggered(b), args.buffer, False, **rkv_options))

    # 5. generate() end to end, a short one, against the composed steps.
    if not args.no_generate:
        check_batch = min(64, results["capacity"]["rkv"], full_batch[str(min(gens))])
        for kind in (("rkv", "dynamic") if graph else ("rkv-eager", "dynamic")):
            generate_check(bench, results, progress, kind, check_batch, args.prompt,
                           min(128, args.buffer), rkv_options)

    hf_report.write(results, out, with_plot=True)
    progress.say(f"done: {out / 'hf_bench.md'}, {out / 'hf_bench.json'}, {out / 'hf_bench.png'}")
    print()
    print(hf_report.markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
