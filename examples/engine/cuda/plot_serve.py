#!/usr/bin/env python3
"""Plot rkv_serve_bench's results: decode tokens/s and concurrent sequences
against the generation length, one line per method; or compare two runs (the
same benchmark with two K/V storages, say bf16 and `--kv-dtype fp8`).

    python3 plot_serve.py DIR                  reads DIR/serve_bench.json, writes DIR/serve_bench.png
    python3 plot_serve.py --compare A B OUT    reads A/ and B/serve_bench.json, writes
                                               OUT/serve_compare.md (a table: sequences and
                                               tokens/s of each run, B over A) and
                                               OUT/serve_compare.png (where matplotlib is)

rkv_serve_bench runs the first form itself; where matplotlib is missing (a GPU
machine without it), copy the JSON to a machine that has it and run it there.
The two runs compared must be of one device, shape, prompt and generation
lengths (else exit 1, saying what differs).
"""
import json
import sys
from pathlib import Path


class ReportError(Exception):
    pass


def load(folder: Path) -> dict:
    path = folder / "serve_bench.json"
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ReportError(f"no report at {path} ({e.strerror}): run rkv_serve_bench --out {folder}")
    except ValueError as e:
        raise ReportError(f"{path} is not a serving-benchmark report: {e}")
    missing = [key for key in ("device", "shape", "prompt", "curves") if key not in data]
    if missing:
        raise ReportError(f"{path} is not a serving-benchmark report: no {', '.join(missing)}")
    return data


def storage(data: dict) -> str:
    """The run's K/V storage, short: "bf16" or "FP8 E4M3" (reports before the field: bf16)."""
    return data.get("kv_dtype", "bf16").split(" (")[0]


def pyplot():
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def methods_of(curves: list) -> list:
    methods = []
    for point in curves:
        if point["method"] not in methods:
            methods.append(point["method"])
    return methods


def style_axes(axes, gens) -> None:
    for ax, title in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(gens)
        ax.set_xticklabels([f"{g // 1024}K" if g % 1024 == 0 else str(g) for g in gens])
        ax.set_xlabel("generated tokens per request")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)


def plot_one(folder: Path) -> int:
    data = load(folder)
    plt = pyplot()
    if plt is None:
        print("plot_serve.py: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 1
    fig, (tps_ax, seq_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, method in enumerate(methods_of(data["curves"])):
        color = colors[index % len(colors)]  # the same in both panels, measured or not
        points = sorted((p for p in data["curves"] if p["method"] == method), key=lambda p: p["gen"])
        style = "--" if method.startswith("Full") else "-"
        gens = [p["gen"] for p in points]
        measured = [(p["gen"], p["tokens_per_s"]) for p in points if p["tokens_per_s"] > 0]
        if measured:
            tps_ax.plot(*zip(*measured), style, marker="o", color=color, label=method)
        seq_ax.plot(gens, [p["batch"] for p in points], style, marker="o", color=color, label=method)
    style_axes(((tps_ax, "decode tokens/s (all sequences)"), (seq_ax, "concurrent sequences")),
               sorted({p["gen"] for p in data["curves"]}))
    seq_ax.legend(fontsize=8)
    fig.suptitle(f"{data['device']}: {data['shape']}, K/V {storage(data)}, prompt {data['prompt']} tokens",
                 fontsize=10)
    fig.tight_layout()
    out = folder / "serve_bench.png"
    fig.savefig(out, dpi=120)
    print(f"plot_serve.py: wrote {out}")
    return 0


def ratio(b: float, a: float) -> str:
    return f"{b / a:.2f}×" if a > 0 and b > 0 else "–"


def count(value: float) -> str:
    return f"{value:,.0f}" if value > 0 else "not measured"


def compare_markdown(a: dict, b: dict, a_dir: Path, b_dir: Path) -> str:
    sa, sb = storage(a), storage(b)
    rows = {(p["method"], p["gen"]): p for p in a["curves"]}
    lines = [
        f"# Serving benchmark: K/V stored as {sa} against {sb} (`rkv_serve_bench`, two runs)",
        "",
        f"GPU: {a['device']}; model shape: {a['shape']}; prompt {a['prompt']} tokens. "
        f"{sa}: `{a_dir}`; {sb}: `{b_dir}`. Sequences: the most that fit the same memory "
        "(librkv's `rkv_cache_size`); tokens/s: decode, every sequence of that batch.",
        "",
        f"| generated | method | sequences, {sa} | tokens/s, {sa} | sequences, {sb} | tokens/s, {sb} "
        f"| {sb} / {sa} sequences | {sb} / {sa} tokens/s |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for point in sorted(b["curves"], key=lambda p: (p["gen"], methods_of(b["curves"]).index(p["method"]))):
        other = rows.get((point["method"], point["gen"]))
        if other is None:
            continue
        gen = point["gen"]
        label = f"{gen // 1024}K" if gen % 1024 == 0 else str(gen)
        lines.append(
            f"| {label} | {point['method']} | {other['batch']:,} | {count(other['tokens_per_s'])} | "
            f"{point['batch']:,} | {count(point['tokens_per_s'])} | {ratio(point['batch'], other['batch'])} | "
            f"{ratio(point['tokens_per_s'], other['tokens_per_s'])} |")
    return "\n".join(lines) + "\n"


def compare(a_dir: Path, b_dir: Path, out: Path) -> int:
    a, b = load(a_dir), load(b_dir)
    for key in ("device", "shape", "prompt"):
        if a[key] != b[key]:
            print(f"plot_serve.py: the runs differ in {key}: {a[key]!r} against {b[key]!r}", file=sys.stderr)
            return 1
    gens_a, gens_b = sorted({p["gen"] for p in a["curves"]}), sorted({p["gen"] for p in b["curves"]})
    if gens_a != gens_b:
        print(f"plot_serve.py: the runs differ in generation lengths: {gens_a} against {gens_b}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_compare.md").write_text(compare_markdown(a, b, a_dir, b_dir))
    print(f"plot_serve.py: wrote {out / 'serve_compare.md'}")
    plt = pyplot()
    if plt is None:
        print("plot_serve.py: no plot (matplotlib is not installed: pip install matplotlib)")
        return 0
    fig, (tps_ax, seq_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, method in enumerate(methods_of(a["curves"])):
        color = colors[index % len(colors)]
        for data, style in ((a, "-"), (b, "--")):
            points = sorted((p for p in data["curves"] if p["method"] == method), key=lambda p: p["gen"])
            label = f"{method}, {storage(data)}"
            measured = [(p["gen"], p["tokens_per_s"]) for p in points if p["tokens_per_s"] > 0]
            if measured:
                tps_ax.plot(*zip(*measured), style, marker="o", color=color, label=label)
            seq_ax.plot([p["gen"] for p in points], [p["batch"] for p in points], style, marker="o", color=color,
                        label=label)
    style_axes(((tps_ax, "decode tokens/s (all sequences)"), (seq_ax, "concurrent sequences")), gens_a)
    seq_ax.legend(fontsize=7)
    fig.suptitle(f"{a['device']}: {a['shape']}, K/V {storage(a)} (solid) and {storage(b)} (dashed)", fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "serve_compare.png", dpi=120)
    print(f"plot_serve.py: wrote {out / 'serve_compare.png'}")
    return 0


def main(argv: list) -> int:
    try:
        if len(argv) == 2 and not argv[1].startswith("-"):
            return plot_one(Path(argv[1]))
        if len(argv) == 5 and argv[1] == "--compare":
            return compare(Path(argv[2]), Path(argv[3]), Path(argv[4]))
    except ReportError as e:
        print(f"plot_serve.py: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
