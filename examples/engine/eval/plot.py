#!/usr/bin/env python3
"""Plot rkv_eval's teacher-forced results against the budget, one line per method, error bars
from the spread over the traces (one standard error of the per-trace values):
  - the next-token loss increase over Full, and the top-1 agreement with Full;
  - each method's loss increase minus R-KV's on the same trace (paired): the traces differ in
    difficulty far more than the methods do, and the pairing cancels that out, so this panel
    tells the close methods apart where the first one cannot;
  - Random on its own scale beside R-KV (far worse than the rest, it would flatten them).

    python3 plot.py DIR        reads DIR/teacher_forced.csv and DIR/teacher_forced_per_trace.csv,
                               writes DIR/loss_vs_budget.png
Needs matplotlib (pip install matplotlib).
"""
import csv
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt

# One look per method, the same in every panel; R-KV drawn heaviest.
STYLE = {
    "rkv": dict(color="#d62728", marker="o", linewidth=2.6, markersize=7, label="R-KV"),
    "snapkv": dict(color="#1f77b4", marker="s", label="SnapKV"),
    "h2o": dict(color="#2ca02c", marker="^", label="H2O"),
    "streamingllm": dict(color="#9467bd", marker="D", label="StreamingLLM"),
    "keydiff": dict(color="#ff7f0e", marker="v", label="KeyDiff"),
    "random": dict(color="#7f7f7f", marker="x", label="Random"),
}
MEASURES = [("loss_increase", "next-token loss increase over Full\n(nats per token; lower is better)"),
            ("top1_agreement", "top-1 agreement with Full\n(higher is better)")]


def read(folder, name):
    with open(os.path.join(folder, name)) as f:
        return list(csv.DictReader(f))


def standard_error(values):
    if len(values) < 2:
        return 0.0
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def paired_difference(per_trace, method, reference, measure):
    """Budgets, mean and standard error of method's value minus reference's, trace by trace."""
    def by_key(m):
        return {(t["trace"], int(t["budget"])): float(t[measure]) for t in per_trace if t["method"] == m}
    mine, theirs = by_key(method), by_key(reference)
    budgets = sorted({b for _, b in mine})
    means, errors = [], []
    for b in budgets:
        d = [v - theirs[k] for k, v in mine.items() if k[1] == b and k in theirs]
        means.append(sum(d) / len(d))
        errors.append(standard_error(d))
    return budgets, means, errors


def series(rows, per_trace, method, measure):
    """Budgets, values (all traces together, as results.md) and error bars of one method."""
    mine = sorted((r for r in rows if r["method"] == method), key=lambda r: int(r["budget"]))
    budgets = [int(r["budget"]) for r in mine]
    values = [float(r[measure]) for r in mine]
    errors = [standard_error([float(t[measure]) for t in per_trace
                              if t["method"] == method and int(t["budget"]) == b]) for b in budgets]
    return budgets, values, errors


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "eval-results"
    rows = read(folder, "teacher_forced.csv")
    per_trace = read(folder, "teacher_forced_per_trace.csv")
    traces = len({t["trace"] for t in per_trace})
    methods = list(dict.fromkeys(r["method"] for r in rows))  # in the program's order
    main_methods = [m for m in methods if m != "random"]
    budgets = sorted({int(r["budget"]) for r in rows})
    # Methods side by side at each budget, a little apart, so that error bars do not overlap.
    offset = {m: 1.0 + 0.025 * (i - (len(methods) - 1) / 2) for i, m in enumerate(methods)}

    has_random = "random" in methods
    fig, grid = plt.subplots(2, 2, figsize=(13, 9.5))
    (loss_ax, top1_ax), (diff_ax, random_ax) = grid

    def draw(ax, method, b, v, e):
        style = dict(dict(linewidth=1.5, markersize=6), **STYLE.get(method, dict(label=method)))
        style.pop("label", None)
        ax.errorbar([x * offset[method] for x in b], v, yerr=e, capsize=3, **style)

    for ax, (measure, label) in zip((loss_ax, top1_ax), MEASURES):
        for method in main_methods:
            draw(ax, method, *series(rows, per_trace, method, measure))
        ax.set_ylabel(label)
    loss_ax.set_title("Loss increase over Full", fontsize=10)
    top1_ax.set_title("Top-1 agreement with Full", fontsize=10)
    if "rkv" in methods:
        for method in main_methods:
            if method != "rkv":
                draw(diff_ax, method, *paired_difference(per_trace, method, "rkv", "loss_increase"))
        diff_ax.set_ylabel("loss increase minus R-KV's on the same trace\n(nats per token; above 0: worse than R-KV)")
        diff_ax.set_title("Each method against R-KV, trace by trace (paired)", fontsize=10)
    if has_random:  # Random on its own scale, R-KV beside it for reference
        for method in ["random", "rkv"] if "rkv" in methods else ["random"]:
            draw(random_ax, method, *series(rows, per_trace, method, "loss_increase"))
        random_ax.set_ylabel(MEASURES[0][1])
        random_ax.set_title("Random, a quality floor, beside R-KV (its own scale)", fontsize=10)
    axes = [ax for ax in grid.flat if ax.has_data()]
    for ax in grid.flat:
        if not ax.has_data():
            ax.set_visible(False)
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_xlabel("budget (tokens kept per head)")
        ax.grid(alpha=0.3)
    for ax in (loss_ax, diff_ax, random_ax):
        ax.axhline(0, color="black", linewidth=0.8)
    handles = [plt.Line2D([], [], **{k: v for k, v in dict(dict(linewidth=1.5), **STYLE.get(m, {})).items()
                                     if k != "label"}, label=STYLE.get(m, {}).get("label", m)) for m in methods]
    fig.legend(handles=handles, loc="lower center", ncol=len(methods), frameon=False)
    fig.suptitle(f"SmolLM2-135M replaying {traces} DeepSeek-R1-Distill reasoning traces through librkv, "
                 "against a Full cache\n(buffer = min(128, budget); error bars: one standard error over the "
                 "traces)", fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    out = os.path.join(folder, "loss_vs_budget.png")
    fig.savefig(out, dpi=120)
    print("wrote", out)


if __name__ == "__main__":
    main()
