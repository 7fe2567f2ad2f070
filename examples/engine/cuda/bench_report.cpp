#include "bench_report.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace engine::cuda {

namespace {

double mean_ms(const std::vector<std::pair<double, double>> &points) {
    double sum = 0;
    for (const auto &p : points) sum += p.second;
    return points.empty() ? 0.0 : sum / double(points.size());
}

std::string fmt(const char *format, double value) {
    char text[64];
    std::snprintf(text, sizeof text, format, value);
    return text;
}

std::string thousands(double value) {  // 12345.6 -> "12,346"
    const long long v = std::llround(value);
    std::string digits = std::to_string(v < 0 ? -v : v), out;
    for (size_t i = 0; i < digits.size(); ++i) {
        if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
        out += digits[i];
    }
    return (v < 0 ? "-" : "") + out;
}

std::string gen_label(int32_t gen) { return gen % 1024 == 0 ? std::to_string(gen / 1024) + "K" : std::to_string(gen); }

std::string ratio(double a, double b) { return b > 0 && a > 0 ? fmt("%.2f×", a / b) : "—"; }

const FullRun *find_full(const Report &r, int32_t gen, bool paged) {
    for (const FullRun &f : r.full)
        if (f.gen == gen && f.paged == paged && f.error.empty() && !f.points.empty()) return &f;
    return nullptr;
}

const RkvRun *find_rkv(const Report &r, int32_t budget, int32_t batch) {
    for (const RkvRun &k : r.rkv)
        if (k.budget == budget && k.error.empty() && k.steady_ms > 0 && (batch < 0 || k.batch == batch)) return &k;
    return nullptr;
}

// The R-KV run of this budget at its largest batch (the first measured).
const RkvRun *largest_rkv(const Report &r, int32_t budget) {
    const RkvRun *best = nullptr;
    for (const RkvRun &k : r.rkv)
        if (k.budget == budget && k.error.empty() && k.steady_ms > 0 && (!best || k.batch > best->batch)) best = &k;
    return best;
}

void breakdown_table(std::ostringstream &md, const StepBreakdown &b, double compress_ms, const Ceilings &ceilings) {
    const double total = b.step_ms + compress_ms;
    const double copy = ceilings.copy_gbs * 1e9;  // bytes per second (read + write)
    auto share = [&](double ms) { return total > 0 ? fmt("%.1f%%", 100.0 * ms / total) : std::string("—"); };
    const double rest = b.step_ms - b.matmul_ms - b.attend_ms - b.append_ms - b.other_ms;
    const double mm_tflops = b.matmul_ms > 0 ? b.matmul_flops / (b.matmul_ms * 1e-3) / 1e12 : 0;
    const double mm_gbs = b.matmul_ms > 0 ? b.weight_bytes / (b.matmul_ms * 1e-3) / 1e9 : 0;
    const double att_gbs = b.attend_ms > 0 ? b.kv_bytes / (b.attend_ms * 1e-3) / 1e9 : 0;
    const double app_gbs = b.append_ms > 0 ? b.append_bytes / (b.append_ms * 1e-3) / 1e9 : 0;
    const double floor_ms = (b.weight_bytes + b.kv_bytes) / copy * 1e3;
    md << "| part | ms | share | rate | against the ceiling |\n|---|---:|---:|---:|---:|\n";
    md << "| matrix products (cuBLASLt) | " << fmt("%.2f", b.matmul_ms) << " | " << share(b.matmul_ms) << " | "
       << fmt("%.0f TFLOP/s", mm_tflops) << ", weights read at " << fmt("%.0f GB/s", mm_gbs) << " | "
       << fmt("%.0f%% of bf16 matmul", 100.0 * mm_tflops / ceilings.matmul_tflops) << ", "
       << fmt("%.0f%% of copy", 100.0 * mm_gbs * 1e9 / copy) << " |\n";
    md << "| attention (rkv_attend) | " << fmt("%.2f", b.attend_ms) << " | " << share(b.attend_ms) << " | "
       << fmt("%.0f GB/s of K/V", att_gbs) << " | " << fmt("%.0f%% of copy", 100.0 * att_gbs * 1e9 / copy) << " |\n";
    md << "| append (rkv_append) | " << fmt("%.2f", b.append_ms) << " | " << share(b.append_ms) << " | "
       << fmt("%.0f GB/s", app_gbs) << " | " << fmt("%.1f%% of copy", 100.0 * app_gbs * 1e9 / copy) << " |\n";
    md << "| compression, amortised (rkv_compress) | " << fmt("%.2f", compress_ms) << " | " << share(compress_ms)
       << " | | |\n";
    md << "| engine kernels (norms, RoPE, SwiGLU, argmax, gather) | " << fmt("%.2f", b.other_ms) << " | "
       << share(b.other_ms) << " | | |\n";
    md << "| rest (gaps between kernels; the parts overlap less alone) | " << fmt("%.2f", rest) << " | " << share(rest)
       << " | | |\n";
    md << "| **step** (graph " << fmt("%.2f", b.step_ms) << " + compression) | **" << fmt("%.2f", total)
       << "** | 100% | floor " << fmt("%.2f ms", floor_ms) << " = (weights " << fmt("%.1f GB", b.weight_bytes / 1e9)
       << " + K/V " << fmt("%.1f GB", b.kv_bytes / 1e9) << ") / copy | **" << fmt("%.2f×", total / floor_ms)
       << " the floor** |\n\n";
}

void json_points(std::ostringstream &js, const std::vector<std::pair<double, double>> &points) {
    js << "[";
    for (size_t i = 0; i < points.size(); ++i)
        js << (i ? "," : "") << "[" << fmt("%.1f", points[i].first) << "," << fmt("%.4f", points[i].second) << "]";
    js << "]";
}

void json_breakdown(std::ostringstream &js, bool has, const StepBreakdown &b) {
    if (!has) {
        js << "null";
        return;
    }
    js << "{\"batch\":" << b.batch << ",\"mean_held\":" << fmt("%.1f", b.mean_held) << ",\"step_ms\":"
       << fmt("%.4f", b.step_ms) << ",\"matmul_ms\":" << fmt("%.4f", b.matmul_ms) << ",\"attend_ms\":"
       << fmt("%.4f", b.attend_ms) << ",\"append_ms\":" << fmt("%.4f", b.append_ms) << ",\"other_ms\":"
       << fmt("%.4f", b.other_ms) << ",\"compress_ms\":" << fmt("%.4f", b.compress_ms) << ",\"weight_bytes\":"
       << fmt("%.0f", b.weight_bytes) << ",\"kv_bytes\":" << fmt("%.0f", b.kv_bytes) << ",\"matmul_flops\":"
       << fmt("%.0f", b.matmul_flops) << ",\"append_bytes\":" << fmt("%.0f", b.append_bytes) << "}";
}

std::string json_string(const std::string &s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (c == '\n') {
            out += "\\n";
            continue;
        }
        out += c;
    }
    return out + "\"";
}

}  // namespace

std::string rkv_name(int32_t budget, int32_t buffer) {
    return "R-KV " + std::to_string(budget) + "+" + std::to_string(buffer);
}

int32_t Report::capacity_of(const std::string &method, int32_t gen) const {
    for (const CapacityRow &row : capacity)
        if (row.method == method && (row.gen == gen || row.gen == 0)) return row.batch;
    return 0;
}

double full_tokens_per_s(const FullRun &run) {
    const double ms = mean_ms(run.points);
    return ms > 0 ? run.batch / (ms * 1e-3) : 0.0;
}

double rkv_tokens_per_s(const RkvRun &run, int32_t gen, int32_t prompt) {
    if (run.steady_ms <= 0) return 0.0;
    const int32_t capacity = run.budget + run.buffer;
    const int32_t phase1_steps = std::max(0, std::min(gen, capacity - prompt));
    const double phase1_ms = run.phase1.empty() ? run.steady_ms : mean_ms(run.phase1);
    const double total_ms = phase1_steps * phase1_ms + double(gen - phase1_steps) * run.steady_ms;
    return double(run.batch) * gen / (total_ms * 1e-3);
}

std::string report_markdown(const Report &r) {
    std::ostringstream md;
    md << "# Serving benchmark: R-KV against a full KV cache (`rkv_serve_bench`)\n\n";
    md << "GPU: " << r.device << "; model shape: " << r.shape << ", dummy bf16 weights ("
       << fmt("%.2f GiB", r.weight_bytes / double(1ull << 30)) << "); prompt " << r.prompt
       << " tokens; greedy decode, every step replayed from a CUDA graph. K/V stored as " << r.kv_dtype << ".\n";
    md << "Ceilings measured in this run: copy " << fmt("%.0f GB/s", r.ceilings.copy_gbs)
       << " (bytes read + written), bf16 matrix product " << fmt("%.0f TFLOP/s", r.ceilings.matmul_tflops)
       << " (8192³, cuBLASLt). Memory for K/V and activations: "
       << fmt("%.1f GiB", r.available_bytes / double(1ull << 30)) << " (free after the weights "
       << fmt("%.1f GiB", r.free_bytes / double(1ull << 30)) << ", less "
       << fmt("%.1f GiB", r.reserve_bytes / double(1ull << 30)) << " kept in reserve).\n\n";

    md << "## Concurrent sequences and decode throughput\n\n";
    md << "| generated | method | sequences | × Full reserved | decode tokens/s | × Full reserved |\n"
       << "|---:|---|---:|---:|---:|---:|\n";
    for (int32_t gen : r.gens) {
        const int32_t full_batch = r.capacity_of("Full reserved", gen);
        const FullRun *reserved = find_full(r, gen, false);
        const double full_tps = reserved ? full_tokens_per_s(*reserved) : 0.0;
        auto row = [&](const std::string &method, int32_t batch, double tps) {
            md << "| " << gen_label(gen) << " | " << method << " | " << batch << " | " << ratio(batch, full_batch)
               << " | " << (tps > 0 ? thousands(tps) : std::string("—")) << " | " << ratio(tps, full_tps) << " |\n";
        };
        row("Full reserved", full_batch, full_tps);
        const FullRun *paged = find_full(r, gen, true);
        row("Full paged (16-token pages)", r.capacity_of("Full paged", gen), paged ? full_tokens_per_s(*paged) : 0.0);
        for (int32_t budget : r.budgets) {
            const RkvRun *k = largest_rkv(r, budget);
            row(rkv_name(budget, r.buffer), r.capacity_of(rkv_name(budget, r.buffer), 0),
                k ? rkv_tokens_per_s(*k, gen, r.prompt) : 0.0);
        }
    }
    md << "\nSequences: the most whose K/V (librkv's `rkv_cache_size`, all its buffers) and the engine's "
          "activations fit. Full reserved holds prompt + generation per sequence from the start; Full paged holds "
          "its tokens rounded up to 16-token pages, averaged over a request's life (what a paging engine holds "
          "in steady state with staggered requests; librkv has no paging: this row is computed from the page "
          "arithmetic and measured at that average context). R-KV holds budget + buffer.\n\n";

    if (!r.budgets.empty()) {
        const int32_t budget = r.budgets.front();
        md << "## At equal batches\n\n| generated | batch | Full reserved tokens/s | " << rkv_name(budget, r.buffer)
           << " tokens/s | × |\n|---:|---:|---:|---:|---:|\n";
        for (int32_t gen : r.gens) {
            const FullRun *reserved = find_full(r, gen, false);
            if (!reserved) continue;
            const RkvRun *k = find_rkv(r, budget, reserved->batch);
            const double a = full_tokens_per_s(*reserved), b = k ? rkv_tokens_per_s(*k, gen, r.prompt) : 0.0;
            md << "| " << gen_label(gen) << " | " << reserved->batch << " | " << thousands(a) << " | "
               << (b > 0 ? thousands(b) : std::string("—")) << " | " << ratio(b, a) << " |\n";
        }
        md << "\n";
    }

    md << "## One decode step taken apart\n\n"
          "Each part captured in a graph of its own and replayed at the same cache state; shares of the whole "
          "step (graph replay plus the compressions it is due, amortised over a compression interval).\n\n";
    for (int32_t budget : r.budgets) {
        const RkvRun *k = largest_rkv(r, budget);
        if (!k || !k->has_breakdown) continue;
        md << "### " << rkv_name(budget, r.buffer) << ", batch " << k->batch << " (its largest), "
           << fmt("%.0f", k->breakdown.mean_held) << " tokens held on average\n\n";
        breakdown_table(md, k->breakdown, k->breakdown.compress_ms, r.ceilings);
    }
    for (const FullRun &f : r.full)
        if (f.has_breakdown && !f.paged && f.error.empty()) {
            md << "### Full reserved for " << gen_label(f.gen) << ", batch " << f.batch << ", context "
               << fmt("%.0f", f.breakdown.mean_held) << "\n\n";
            breakdown_table(md, f.breakdown, 0.0, r.ceilings);
        }

    // Targets (the issue's: 16K generated, R-KV 1024+128 against Full reserved).
    if (!r.gens.empty() && !r.budgets.empty()) {
        int32_t gen = r.gens[r.gens.size() / 2];
        for (int32_t g : r.gens)
            if (g == 16384) gen = g;
        const int32_t budget = r.budgets.front();
        const RkvRun *k = largest_rkv(r, budget);
        const FullRun *reserved = find_full(r, gen, false);
        md << "## Targets (" << gen_label(gen) << " generated, " << rkv_name(budget, r.buffer)
           << " against Full reserved)\n\n";
        md << "- concurrent sequences: "
           << ratio(r.capacity_of(rkv_name(budget, r.buffer), 0), r.capacity_of("Full reserved", gen))
           << " (target ≥ 10×)\n";
        md << "- decode tokens/s: "
           << ratio(k ? rkv_tokens_per_s(*k, gen, r.prompt) : 0.0, reserved ? full_tokens_per_s(*reserved) : 0.0)
           << " (target ≥ 5×)\n";
        if (k && k->has_breakdown) {
            const StepBreakdown &b = k->breakdown;
            const double floor_ms = (b.weight_bytes + b.kv_bytes) / (r.ceilings.copy_gbs * 1e9) * 1e3;
            md << "- decode step at R-KV's largest batch: " << fmt("%.2f ms", b.step_ms + b.compress_ms) << " = "
               << fmt("%.2f×", (b.step_ms + b.compress_ms) / floor_ms) << " its floor of "
               << fmt("%.2f ms", floor_ms) << " (target ≤ 1.5×)\n";
        }
        md << "\n";
    }

    if (r.serve.ran) {
        const ServeCheck &s = r.serve;
        md << "## Continuous batching, end to end\n\n";
        if (!s.error.empty()) {
            md << "Failed: " << s.error << "\n\n";
        } else {
            md << s.requests << " requests on " << s.slots << " slots (" << rkv_name(s.budget, s.buffer)
               << ", dummy weights): " << s.prompt_tokens << " prompt tokens prefilled, " << s.generated
               << " tokens generated in " << fmt("%.1f s", s.seconds) << " ("
               << thousands(double(s.generated) / s.seconds) << " tokens/s with prefills; decode "
               << fmt("%.1f s", s.decode_s) << ", prefill " << fmt("%.1f s", s.prefill_s) << "); " << s.decode_steps
               << " decode steps in " << s.decode_chunks << " chunks (one copy of tokens to the host each, the "
               << "decode loop's only synchronisation), " << s.batch_changes
               << " changes of the running set of slots, " << s.captures << " graph capture"
               << (s.captures == 1 ? "" : "s") << " of the decode step, " << s.compressions << " compressions.\n\n";
        }
    }

    md << "## How the totals are composed\n\n"
          "Full: steps measured at the midpoints of four equal parts of a request's life (reserved), or at the "
          "page-rounded average context (paged); tokens/s = batch / mean step. R-KV: steps before the first "
          "compression measured at two contexts, then the steady state over a whole compression interval "
          "(`buffer` steps, every sequence compressed once in it, staggered), compressions included; "
          "tokens/s = batch × G / (first-phase time + remaining steps × steady step). The cache states are "
          "set up by appending random tokens straight into librkv; prompts are not timed (decode only).\n";
    for (const std::string &note : r.notes) md << "\n- " << note;
    md << "\n";
    return md.str();
}

void write_report(const Report &r, const std::string &dir) {
    std::ofstream(dir + "/serve_bench.md") << report_markdown(r);

    std::ostringstream js;
    js << "{\n\"device\":" << json_string(r.device) << ",\"shape\":" << json_string(r.shape)
       << ",\"kv_dtype\":" << json_string(r.kv_dtype) << ",\"prompt\":"
       << r.prompt << ",\"buffer\":" << r.buffer << ",\n\"ceilings\":{\"copy_gbs\":"
       << fmt("%.1f", r.ceilings.copy_gbs) << ",\"matmul_tflops\":" << fmt("%.1f", r.ceilings.matmul_tflops)
       << "},\"weight_bytes\":" << fmt("%.0f", r.weight_bytes) << ",\"free_bytes\":" << fmt("%.0f", r.free_bytes)
       << ",\"available_bytes\":" << fmt("%.0f", r.available_bytes) << ",\n\"capacity\":[";
    for (size_t i = 0; i < r.capacity.size(); ++i)
        js << (i ? "," : "") << "{\"method\":" << json_string(r.capacity[i].method) << ",\"gen\":"
           << r.capacity[i].gen << ",\"batch\":" << r.capacity[i].batch << ",\"bytes_per_sequence\":"
           << fmt("%.0f", r.capacity[i].bytes_per_sequence) << "}";
    // The composed curve, one line per method (what plot_serve.py draws).
    js << "],\n\"curves\":[";
    bool first = true;
    auto curve_point = [&](const std::string &method, int32_t gen, int32_t batch, double tps) {
        js << (first ? "" : ",") << "{\"method\":" << json_string(method) << ",\"gen\":" << gen << ",\"batch\":"
           << batch << ",\"tokens_per_s\":" << fmt("%.1f", tps) << "}";
        first = false;
    };
    for (int32_t gen : r.gens) {
        const FullRun *reserved = find_full(r, gen, false), *paged = find_full(r, gen, true);
        curve_point("Full reserved", gen, r.capacity_of("Full reserved", gen), reserved ? full_tokens_per_s(*reserved) : 0);
        curve_point("Full paged", gen, r.capacity_of("Full paged", gen), paged ? full_tokens_per_s(*paged) : 0);
        for (int32_t budget : r.budgets) {
            const RkvRun *k = largest_rkv(r, budget);
            curve_point(rkv_name(budget, r.buffer), gen, r.capacity_of(rkv_name(budget, r.buffer), 0),
                        k ? rkv_tokens_per_s(*k, gen, r.prompt) : 0);
        }
    }
    js << "],\n\"full_runs\":[";
    for (size_t i = 0; i < r.full.size(); ++i) {
        const FullRun &f = r.full[i];
        js << (i ? ",\n" : "") << "{\"gen\":" << f.gen << ",\"paged\":" << (f.paged ? "true" : "false")
           << ",\"batch\":" << f.batch << ",\"points\":";
        json_points(js, f.points);
        js << ",\"breakdown\":";
        json_breakdown(js, f.has_breakdown, f.breakdown);
        js << ",\"error\":" << json_string(f.error) << "}";
    }
    js << "],\n\"rkv_runs\":[";
    for (size_t i = 0; i < r.rkv.size(); ++i) {
        const RkvRun &k = r.rkv[i];
        js << (i ? ",\n" : "") << "{\"budget\":" << k.budget << ",\"buffer\":" << k.buffer << ",\"batch\":" << k.batch
           << ",\"phase1\":";
        json_points(js, k.phase1);
        js << ",\"steady_ms\":" << fmt("%.4f", k.steady_ms) << ",\"steady_compress_ms\":"
           << fmt("%.4f", k.steady_compress_ms) << ",\"steady_steps\":" << k.steady_steps << ",\"compressions\":"
           << k.compressions << ",\"breakdown\":";
        json_breakdown(js, k.has_breakdown, k.breakdown);
        js << ",\"error\":" << json_string(k.error) << "}";
    }
    const ServeCheck &s = r.serve;
    js << "],\n\"serve_check\":{\"ran\":" << (s.ran ? "true" : "false") << ",\"slots\":" << s.slots
       << ",\"requests\":" << s.requests << ",\"prompt_tokens\":" << s.prompt_tokens << ",\"generated\":"
       << s.generated << ",\"decode_steps\":" << s.decode_steps << ",\"decode_chunks\":" << s.decode_chunks
       << ",\"batch_changes\":" << s.batch_changes << ",\"captures\":" << s.captures
       << ",\"compressions\":" << s.compressions << ",\"seconds\":" << fmt("%.3f", s.seconds)
       << ",\"error\":" << json_string(s.error) << "},\n\"notes\":[";
    for (size_t i = 0; i < r.notes.size(); ++i) js << (i ? "," : "") << json_string(r.notes[i]);
    js << "]\n}\n";
    std::ofstream(dir + "/serve_bench.json") << js.str();
}

}  // namespace engine::cuda
