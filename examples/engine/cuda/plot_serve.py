#!/usr/bin/env python3
"""Plot rkv_serve_bench's results: decode tokens/s and concurrent sequences
against the generation length, one line per method.

    python3 plot_serve.py DIR      reads DIR/serve_bench.json, writes DIR/serve_bench.png

rkv_serve_bench runs this itself; where matplotlib is missing (a GPU machine
without it), copy the JSON to a machine that has it and run it there.
"""
import json
import sys
from pathlib import Path


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    folder = Path(sys.argv[1])
    data = json.loads((folder / "serve_bench.json").read_text())
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot_serve.py: matplotlib is not installed (pip install matplotlib)", file=sys.stderr)
        return 1

    methods = []
    for point in data["curves"]:
        if point["method"] not in methods:
            methods.append(point["method"])
    fig, (tps_ax, seq_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, method in enumerate(methods):
        color = colors[index % len(colors)]  # the same in both panels, measured or not
        points = sorted((p for p in data["curves"] if p["method"] == method), key=lambda p: p["gen"])
        style = "--" if method.startswith("Full") else "-"
        gens = [p["gen"] for p in points]
        measured = [(p["gen"], p["tokens_per_s"]) for p in points if p["tokens_per_s"] > 0]
        if measured:
            tps_ax.plot(*zip(*measured), style, marker="o", color=color, label=method)
        seq_ax.plot(gens, [p["batch"] for p in points], style, marker="o", color=color, label=method)
    for ax, title in ((tps_ax, "decode tokens/s (all sequences)"), (seq_ax, "concurrent sequences")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({p["gen"] for p in data["curves"]}))
        ax.set_xticklabels([f"{g // 1024}K" if g % 1024 == 0 else str(g) for g in ax.get_xticks()])
        ax.set_xlabel("generated tokens per request")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    seq_ax.legend(fontsize=8)
    fig.suptitle(f"{data['device']}: {data['shape']}, bf16, prompt {data['prompt']} tokens", fontsize=10)
    fig.tight_layout()
    out = folder / "serve_bench.png"
    fig.savefig(out, dpi=120)
    print(f"plot_serve.py: wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
