"""The transformers benchmark (bench/hf_bench.py) end to end on a tiny model on
the CPU: every cache measured, the totals composed, the three files written.
A smoke test of the script the H200 runs, not a measurement; and the parts of
it that the H200 run has one chance to get right (the largest batch retried
after running out of memory, the targets) on made-up timings."""
import json
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import hf_bench
        import hf_measure
        import hf_report
    finally:
        sys.path.remove(str(BENCH))
    return hf_bench, hf_measure, hf_report


def test_bench_runs_on_a_tiny_model(tmp_path, capsys, bench_modules):
    hf_bench, _, _ = bench_modules
    code = hf_bench.main(["--device", "cpu", "--shape", "tiny", "--gens", "48", "--batches", "1",
                          "--prompt", "8", "--budget", "16", "--buffer", "8", "--steps", "1",
                          "--max-batch", "2", "--out", str(tmp_path)])
    assert code == 0
    results = json.loads((tmp_path / "hf_bench.json").read_text())
    failed = [r for r in results["runs"] + results["generate"] if r.get("error")]
    assert not failed, failed
    kinds = {(r["cache"], r["batch"]) for r in results["runs"]}
    assert kinds == {(c, b) for c in ("dynamic", "static", "rkv-eager") for b in (1, 2)}
    report = (tmp_path / "hf_bench.md").read_text()
    assert "## 48 new tokens" in report and "How the totals are composed" in report
    assert "| RkvCache (eager) | 2 |" in report
    assert "kvpress" in report  # measured, or why not
    pytest.importorskip("matplotlib")
    assert (tmp_path / "hf_bench.png").stat().st_size > 10_000
    assert "## 48 new tokens" in capsys.readouterr().out  # the tables, printed at the end


def test_largest_batch_is_retried_smaller_after_out_of_memory(bench_modules):
    hf_bench, hf_measure, _ = bench_modules
    measured = []

    def measure(batch):
        if batch > 80:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (made up)")
        measured.append(batch)
        return hf_measure.Steps(ms=10.0, steps=4)

    results = dict(meta=dict(notes=[]), runs=[])
    largest = hf_bench.measure_phases(results, hf_bench.Progress(600), "rkv", [1, 8], 100,
                                      first=measure, steady=measure)
    assert largest == 76  # 100, then 87, then 76
    assert measured == [76, 76, 8, 8, 1, 1]
    assert [(r["batch"], r["phase"]) for r in results["runs"]] == [
        (76, "first"), (76, "steady"), (8, "first"), (8, "steady"), (1, "first"), (1, "steady")]
    assert not any(r.get("error") for r in results["runs"])
    assert any("batch 100 ran out of memory" in n for n in results["meta"]["notes"])


def _made_up_results(rkv_ms, static_ms, dynamic_ms, rkv_batches, full):
    meta = dict(device_name="made up", torch="", transformers="", librkv="", shape="r1-llama-8b",
                dtype="bfloat16", prompt=256, gens=[16384], budget=1024, buffer=128, weight_bytes=0,
                copy_gbs=0, free_bytes=0, available_bytes=0, notes=[])
    runs = []
    for batch in rkv_batches:
        for phase in ("first", "steady"):
            runs.append(dict(cache="rkv", gen=None, batch=batch, phase=phase, ms=rkv_ms(batch)))
    for batch in sorted({1, full}):
        for context in (4352, 12544):
            runs.append(dict(cache="static", gen=16384, batch=batch, context=context, ms=static_ms(batch)))
            runs.append(dict(cache="dynamic", gen=16384, batch=batch, context=context, ms=dynamic_ms(batch)))
    capacity = dict(full={"16384": full}, full_bytes={"16384": 2**31}, rkv=max(rkv_batches),
                    rkv_bytes=2**27)
    return dict(meta=meta, capacity=capacity, runs=runs, generate=[])


def test_targets_are_ratios_to_the_same_run(bench_modules):
    _, _, hf_report = bench_modules
    # StaticCache 349 ms at any batch, DynamicCache 230 ms; RkvCache 40 ms at
    # batch 1 and 60 at batch 640: 8.7x StaticCache at batch 1, 640/57 = 11.2x
    # the batch, 640/0.060 = 10,667 tok/s against 57/0.230 = 248 = 43x.
    results = _made_up_results(lambda b: 40.0 if b == 1 else 60.0, lambda b: 349.0,
                               lambda b: 230.0, [1, 640], 57)
    checks = hf_report.targets(results, 16384)
    assert [met for _, met in checks] == [True, True, True]
    assert "8.7x at batch 1" in checks[0][0]
    assert "11.2x" in checks[1][0]
    assert "DynamicCache 248 at batch 57" in checks[2][0] and "= 43.0x" in checks[2][0]
    # The same with RkvCache slower than the targets: each one reported unmet.
    results = _made_up_results(lambda b: 300.0, lambda b: 349.0, lambda b: 230.0, [1, 300], 57)
    assert [met for _, met in hf_report.targets(results, 16384)] == [False, False, False]
