"""hf_bench.py's results: totals composed from the timed steps, the ratios
and targets, and the files (hf_bench.md, hf_bench.json, hf_bench.png).

How totals are composed: COMPOSITION below (it goes into the report).
"""
from __future__ import annotations

import json
from pathlib import Path

COMPOSITION = """As the serving benchmark (rkv_serve_bench) composes its totals:
- DynamicCache and StaticCache: a step's time grows linearly with the context,
  so the mean step of a generation of G new tokens after a prompt of P is the
  mean of the steps measured at contexts P + G/4 and P + 3G/4; tokens/s =
  batch / mean step.
- RkvCache: the steps before the first compression (the first budget + buffer
  - P tokens) at the middle of that phase, then the steady state measured over
  a whole compression interval (`buffer` steps; the rows' fills are staggered
  so that each row is compressed once in it; compressions included); tokens/s
  = batch x G / (first-phase steps x their step + remaining steps x steady step).
- kvpress (where it runs): as RkvCache, its DecodingPress keeping `budget`
  tokens after every `buffer` steps (all rows at once).
- Largest batches: computed from the bytes per sequence (K/V of the whole
  generation for DynamicCache/StaticCache, plus one layer's copy that a
  DynamicCache step makes; rkv_cache_size for RkvCache) and the memory free
  after the weights, less a reserve; RkvCache's and kvpress's were run.
Prompts are not timed (decode only); every step includes the greedy argmax.
Configurations that ran out of memory say so in the step column."""

CACHE_NAMES = {"dynamic": "DynamicCache", "static": "StaticCache (CUDA graph)",
               "rkv": "RkvCache (CUDA graph)", "rkv-eager": "RkvCache (eager)",
               "kvpress": "kvpress DecodingPress"}
TRANSFORMERS = ("dynamic", "static")


def _ok(run) -> bool:
    return run.get("error") is None and run.get("ms") is not None


def _find(results, cache, batch, **where):
    for run in results["runs"]:
        if run["cache"] == cache and run["batch"] == batch and all(run.get(k) == v for k, v in where.items()):
            return run
    return None


def full_tokens_per_s(results, cache, gen, batch):
    """(tokens/s, mean step ms) of a full cache, or (None, error text)."""
    runs = [r for r in results["runs"] if r["cache"] == cache and r["gen"] == gen and r["batch"] == batch]
    if not runs:
        return None, None
    failed = [r for r in runs if not _ok(r)]
    if failed:
        return None, failed[0]["error"]
    ms = sum(r["ms"] for r in runs) / len(runs)
    return batch / (ms * 1e-3), ms


def rkv_tokens_per_s(results, cache, gen, batch):
    """(tokens/s, steady step ms) of an RkvCache for a generation of `gen`."""
    meta = results["meta"]
    steady = _find(results, cache, batch, phase="steady")
    first = _find(results, cache, batch, phase="first")
    if steady is None:  # the first phase failed, or nothing ran
        return (None, first["error"]) if first is not None and not _ok(first) else (None, None)
    if not _ok(steady):
        return None, steady["error"]
    capacity = meta["budget"] + meta["buffer"]
    first_steps = max(0, min(gen, capacity - meta["prompt"]))
    first_ms = first["ms"] if first is not None and _ok(first) else steady["ms"]
    total_ms = first_steps * first_ms + (gen - first_steps) * steady["ms"]
    return batch * gen / (total_ms * 1e-3), steady["ms"]


def tokens_per_s(results, cache, gen, batch):
    if cache in TRANSFORMERS:
        return full_tokens_per_s(results, cache, gen, batch)
    return rkv_tokens_per_s(results, cache, gen, batch)


def peak_gib(results, cache, batch, gen=None):
    peaks = [r["peak_bytes"] for r in results["runs"] if r["cache"] == cache and r["batch"] == batch
             and (gen is None or r.get("gen") in (gen, None)) and _ok(r) and r.get("peak_bytes")]
    return max(peaks) / 2**30 if peaks else None


def batches_of(results, cache, gen):
    return sorted({r["batch"] for r in results["runs"] if r["cache"] == cache
                   and (cache not in TRANSFORMERS or r["gen"] == gen)})


def best_transformers(results, gen):
    """(tokens/s, cache, batch) of the fastest DynamicCache/StaticCache run at `gen`."""
    best = (None, None, None)
    for cache in TRANSFORMERS:
        for batch in batches_of(results, cache, gen):
            tps, _ = tokens_per_s(results, cache, gen, batch)
            if tps is not None and (best[0] is None or tps > best[0]):
                best = (tps, cache, batch)
    return best


def targets(results, gen):
    """The issue's three targets at the longest generation: (text, met) each."""
    out = []
    capacity = results["capacity"]
    rkv_batches = batches_of(results, "rkv", gen)
    ratios = []
    for batch in rkv_batches:
        ours, _ = tokens_per_s(results, "rkv", gen, batch)
        theirs, _ = tokens_per_s(results, "static", gen, batch)
        if ours and theirs:
            ratios.append((ours / theirs, batch))
    if ratios:
        worst = min(ratios)
        out.append((f"tokens/s against StaticCache at the same batch, {gen} new tokens: "
                    + ", ".join(f"{r:.1f}x at batch {b}" for r, b in ratios) + " (target >= 5x)",
                    worst[0] >= 5))
    full = capacity["full"].get(str(gen)) or capacity["full"].get(gen)
    if full and capacity.get("rkv"):
        ratio = capacity["rkv"] / full
        out.append((f"batch in the same memory, {gen} new tokens: RkvCache {capacity['rkv']} against "
                    f"{full} for a full cache = {ratio:.1f}x (target >= 10x)", ratio >= 10))
    best, cache, batch = best_transformers(results, gen)
    measured = [b for b in rkv_batches if tokens_per_s(results, "rkv", gen, b)[0]]
    largest = max(measured) if measured else None
    ours, _ = tokens_per_s(results, "rkv", gen, largest) if largest else (None, None)
    if best and ours:
        ratio = ours / best
        out.append((f"tokens/s at the largest batch, {gen} new tokens: RkvCache {ours:,.0f} at batch "
                    f"{largest} against the best without librkv, {CACHE_NAMES[cache]} {best:,.0f} at batch "
                    f"{batch} = {ratio:.1f}x (target >= 10x)", ratio >= 10))
    return out


def markdown(results) -> str:
    meta = results["meta"]
    lines = ["# transformers with librkv: RkvCache against DynamicCache and StaticCache (`hf_bench.py`)", ""]
    lines.append(f"{meta['device_name']}; torch {meta['torch']}, transformers {meta['transformers']}, "
                 f"librkv {meta['librkv']}. Model: {meta['shape']} (random weights, {meta['dtype']}, "
                 f"{meta['weight_bytes'] / 2**30:.1f} GiB); prompt {meta['prompt']} tokens; RkvCache: "
                 f"R-KV, budget {meta['budget']} + buffer {meta['buffer']}. Copy bandwidth measured in this "
                 f"run: {meta['copy_gbs']:.0f} GB/s (read + write); memory for caches and activations: "
                 f"{meta['available_bytes'] / 2**30:.1f} GiB.")
    lines.append("")
    lines.append("## Largest batch in memory")
    lines.append("")
    lines.append("| cache | new tokens | largest batch | memory per sequence |")
    lines.append("| --- | ---: | ---: | ---: |")
    capacity = results["capacity"]
    for gen in meta["gens"]:
        full = capacity["full"].get(str(gen))
        lines.append(f"| DynamicCache / StaticCache | {gen} | {full} | "
                     f"{capacity['full_bytes'][str(gen)] / 2**20:,.0f} MiB |")
    lines.append(f"| RkvCache | any | {capacity['rkv']} | {capacity['rkv_bytes'] / 2**20:,.0f} MiB |")
    if capacity.get("kvpress"):
        lines.append(f"| kvpress DecodingPress | any | {capacity['kvpress']} | "
                     f"{capacity['kvpress_bytes'] / 2**20:,.0f} MiB |")
    for gen in meta["gens"]:
        lines += ["", f"## {gen} new tokens", ""]
        best, _, _ = best_transformers(results, gen)
        lines.append("| cache | batch | step ms | tokens/s | peak GiB | vs StaticCache (same batch) | "
                     "vs DynamicCache (same batch) | vs best without librkv |")
        lines.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for cache in ("dynamic", "static", "rkv", "rkv-eager", "kvpress"):
            for batch in batches_of(results, cache, gen):
                tps, info = tokens_per_s(results, cache, gen, batch)
                if tps is None:
                    if info is not None:
                        lines.append(f"| {CACHE_NAMES[cache]} | {batch} | {info} | | | | | |")
                    continue
                static, _ = tokens_per_s(results, "static", gen, batch)
                dynamic, _ = tokens_per_s(results, "dynamic", gen, batch)
                peak = peak_gib(results, cache, batch, gen)
                lines.append(f"| {CACHE_NAMES[cache]} | {batch} | {info:.2f} | {tps:,.0f} | "
                             f"{'' if peak is None else f'{peak:.1f}'} | "
                             f"{'' if not static else f'{tps / static:.1f}x'} | "
                             f"{'' if not dynamic else f'{tps / dynamic:.1f}x'} | "
                             f"{'' if not best else f'{tps / best:.2f}x'} |")
    if results.get("generate"):
        lines += ["", "## generate() end to end", "",
                  "| cache | batch | prompt | new tokens | ms per decode step | tokens/s (decode) |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for g in results["generate"]:
            if g.get("error"):
                lines.append(f"| {CACHE_NAMES[g['cache']]} | {g['batch']} | {g['prompt']} | {g['new']} | "
                             f"{g['error']} | |")
            else:
                lines.append(f"| {CACHE_NAMES[g['cache']]} | {g['batch']} | {g['prompt']} | {g['new']} | "
                             f"{g['ms']:.2f} | {g['batch'] / (g['ms'] * 1e-3):,.0f} |")
    gen = max(meta["gens"])
    checks = targets(results, gen)
    if checks:
        lines += ["", f"## Targets ({gen} new tokens)", ""]
        lines += [f"- {'met' if met else 'NOT met'}: {text}" for text, met in checks]
    lines += ["", "## How the totals are composed", "", COMPOSITION]
    notes = [f"- {CACHE_NAMES[r['cache']]}, batch {r['batch']}: {note}"
             for r in results["runs"] for note in r.get("notes", [])] + [f"- {n}" for n in meta["notes"]]
    if notes:
        lines += ["", "## Notes", ""] + notes
    return "\n".join(lines) + "\n"


def plot(results, path: Path) -> str | None:
    """tokens/s against batch, one panel per generation length. None, or why not."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import ScalarFormatter
    except ImportError:
        return "matplotlib is not installed: no PNG (pip install matplotlib)"
    gens = results["meta"]["gens"]
    figure, axes = plt.subplots(1, len(gens), figsize=(6 * len(gens), 4.5), squeeze=False)
    styles = {"dynamic": ("tab:gray", "o"), "static": ("tab:blue", "s"), "rkv": ("tab:red", "D"),
              "rkv-eager": ("tab:orange", "^"), "kvpress": ("tab:green", "v")}
    for axis, gen in zip(axes[0], gens):
        for cache, (color, marker) in styles.items():
            points = [(b, tokens_per_s(results, cache, gen, b)[0]) for b in batches_of(results, cache, gen)]
            points = [(b, t) for b, t in points if t]
            if points:
                axis.plot(*zip(*points), marker=marker, color=color, label=CACHE_NAMES[cache])
        full = results["capacity"]["full"].get(str(gen))
        if full:
            axis.axvline(full, color="tab:gray", linestyle=":", linewidth=1)
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.xaxis.set_major_formatter(ScalarFormatter())
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.set_xlabel("batch (sequences decoded together)")
        axis.set_ylabel("tokens/s (decode)")
        axis.set_title(f"{gen} new tokens after a {results['meta']['prompt']}-token prompt")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"{results['meta']['shape']}, {results['meta']['device_name']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return None


def write(results, out: Path, with_plot: bool = False) -> None:
    """hf_bench.json and hf_bench.md now (a run cut short keeps what it
    measured); hf_bench.png when asked."""
    (out / "hf_bench.json").write_text(json.dumps(results, indent=1))
    (out / "hf_bench.md").write_text(markdown(results))
    if with_plot:
        why_not = plot(results, out / "hf_bench.png")
        if why_not:
            results["meta"]["notes"].append(why_not)
            (out / "hf_bench.md").write_text(markdown(results))
