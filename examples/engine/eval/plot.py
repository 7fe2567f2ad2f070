#!/usr/bin/env python3
"""Plot rkv_eval's teacher-forced results: loss increase over Full against the budget, one
line per method, and top-1 agreement beside it.

    python3 plot.py DIR        reads DIR/teacher_forced.csv, writes DIR/loss_vs_budget.png
Needs matplotlib (pip install matplotlib).
"""
import csv
import os
import sys

import matplotlib

matplotlib.use("Agg")  # no display needed
import matplotlib.pyplot as plt


def main():
    folder = sys.argv[1] if len(sys.argv) > 1 else "eval-results"
    rows = list(csv.DictReader(open(os.path.join(folder, "teacher_forced.csv"))))
    methods = list(dict.fromkeys(r["method"] for r in rows))  # in the program's order
    fig, (loss_ax, top1_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for method in methods:
        mine = sorted((r for r in rows if r["method"] == method), key=lambda r: int(r["budget"]))
        budgets = [int(r["budget"]) for r in mine]
        style = dict(marker="o", linewidth=2.5 if method == "rkv" else 1.4, label=method)
        loss_ax.plot(budgets, [float(r["loss_increase"]) for r in mine], **style)
        top1_ax.plot(budgets, [float(r["top1_agreement"]) for r in mine], **style)
    for ax in (loss_ax, top1_ax):
        ax.set_xscale("log", base=2)
        budgets = sorted({int(r["budget"]) for r in rows})
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.set_xlabel("budget (tokens kept per head; buffer = min(128, budget))")
        ax.grid(alpha=0.3)
    loss_ax.axhline(0, color="black", linewidth=0.8)
    loss_ax.set_ylabel("next-token loss increase over Full (nats)")
    top1_ax.set_ylabel("top-1 agreement with Full")
    loss_ax.legend()
    fig.suptitle("SmolLM2-135M replaying DeepSeek-R1-Distill reasoning traces through librkv")
    fig.tight_layout()
    out = os.path.join(folder, "loss_vs_budget.png")
    fig.savefig(out, dpi=120)
    print("wrote", out)


if __name__ == "__main__":
    main()
