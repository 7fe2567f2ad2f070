// rkv_serve_bench's results, how the totals are composed from the measured
// steady states, and the files it writes (markdown table and JSON; the plot
// is drawn from the JSON by plot_serve.py).
//
// Composition (for G generated tokens after a prompt of P):
//   - Full, reserved or paged: every step of a request's life is a step at a
//     context between P and P + G; step time is close to linear in the
//     context, so the mean over the life is the mean of steps measured at the
//     midpoints of four equal parts of it (reserved: all sequences at the same
//     context, as a batch started together) or, paged, at the page-rounded
//     average context (staggered requests hold that many tokens on average).
//     tokens/s = batch / mean step.
//   - R-KV: the first C - P steps (C = budget + buffer) run before any
//     compression, at contexts P .. C (measured at two midpoints); every later
//     step is in the steady state, measured over whole compression intervals
//     (`buffer` steps with the sequences' compressions spread over them, as
//     continuous batching spreads them), compressions included.
//     tokens/s = batch * G / (phase-1 time + (G - (C - P)) * steady step).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bench_measure.h"

namespace engine::cuda {

struct FullRun {
    int32_t gen = 0;
    bool paged = false;
    int32_t batch = 0;
    std::vector<std::pair<double, double>> points;  // (context, ms per step)
    bool has_breakdown = false;
    StepBreakdown breakdown;
    std::string error;
};

struct RkvRun {
    int32_t budget = 0, buffer = 0, batch = 0;
    std::vector<std::pair<double, double>> phase1;  // (context, ms per step) before the first compression
    double steady_ms = 0;                            // per step, compressions included
    double steady_compress_ms = 0;                   // compression time over the interval
    int32_t steady_steps = 0;
    int64_t compressions = 0;
    bool has_breakdown = false;
    StepBreakdown breakdown;
    std::string error;
};

struct CapacityRow {
    std::string method;  // "Full reserved", "Full paged", "R-KV 1024+128"
    int32_t gen = 0;     // 0: the same at every generation length
    int32_t batch = 0;
    double bytes_per_sequence = 0;
};

struct ServeCheck {
    bool ran = false;
    int32_t slots = 0, requests = 0, budget = 0, buffer = 0;
    int64_t prompt_tokens = 0, generated = 0, decode_steps = 0, decode_chunks = 0, compressions = 0;
    int32_t captures = 0;       // decode-step graphs captured (the engine captures one)
    int32_t batch_changes = 0;  // changes of the running set of slots, each an rkv_batch_set
    double seconds = 0, prefill_s = 0, decode_s = 0;
    std::string error;
};

struct Report {
    std::string device, shape;
    std::string kv_dtype = "bf16";  // the K/V storage of every cache measured
    int32_t prompt = 0, buffer = 128;
    std::vector<int32_t> gens, budgets;
    Ceilings ceilings;
    double weight_bytes = 0, free_bytes = 0, available_bytes = 0, reserve_bytes = 0;
    std::vector<CapacityRow> capacity;
    std::vector<FullRun> full;
    std::vector<RkvRun> rkv;
    ServeCheck serve;
    std::vector<std::string> notes;

    int32_t capacity_of(const std::string &method, int32_t gen) const;
};

double full_tokens_per_s(const FullRun &run);
double rkv_tokens_per_s(const RkvRun &run, int32_t gen, int32_t prompt);
std::string rkv_name(int32_t budget, int32_t buffer);  // "R-KV 1024+128"

// Write DIR/serve_bench.md and DIR/serve_bench.json with what the report holds so far.
void write_report(const Report &report, const std::string &dir);
// The markdown text (also printed at the end).
std::string report_markdown(const Report &report);

}  // namespace engine::cuda
