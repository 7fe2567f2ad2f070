// rkv_serve_bench: how many reasoning sequences one GPU serves, and how fast,
// with R-KV against a full KV cache: the CUDA engine on the
// R1-Distill-Llama-8B shape with dummy bf16 weights (`./rkv serve-bench`).
//
//   rkv_serve_bench [--out DIR] [--shape SPEC] [--prompt 256] [--gens 4096,16384,32768]
//                   [--budgets 1024,512,2048] [--buffer 128] [--steps 8] [--reserve-gib 2]
//                   [--max-batch N] [--time-limit 480] [--no-serve-check] [--plot-script PATH]
//
// Measures, all in one run (bench_measure.h, bench_report.h):
//   - ceilings: device copy bandwidth, bf16 matmul rate;
//   - capacity: the most concurrent sequences whose K/V and activations fit in
//     the memory left after the weights, for Full reserved to prompt +
//     generation, Full in 16-token pages (average over a request's life), and
//     R-KV at each budget + buffer;
//   - decode steps of the engine (CUDA graph, compressions when due) at each
//     method's largest batch and at Full's batches, at contexts along a
//     request's life (Full) and over whole compression intervals (R-KV);
//   - one step taken apart (matrix products, attention, append, compression,
//     the rest) against the ceilings;
//   - a continuous-batching run end to end (requests, prefills, slot reuse).
// Writes DIR/serve_bench.md, DIR/serve_bench.json and (with matplotlib)
// DIR/serve_bench.png; the JSON and markdown are rewritten after every
// measurement, so a run cut short keeps what it measured. A measurement that
// fails (out of memory at a large batch, ...) is reported and skipped.
#include <algorithm>
#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench_measure.h"
#include "bench_report.h"
#include "device.h"
#include "serving.h"
#include "shape.h"

using namespace engine;
using namespace engine::cuda;

namespace {

struct Options {
    std::string out = "serve_bench";
    std::string shape = "r1-llama-8b";
    int32_t prompt = 256;
    std::vector<int32_t> gens = {4096, 16384, 32768};
    std::vector<int32_t> budgets = {1024, 512, 2048};
    int32_t buffer = 128;
    int32_t steps = 8;
    double reserve_gib = 2.0;
    int32_t max_batch = 0;
    double time_limit = 480;
    bool serve_check = true;
    rkv_dtype kv_dtype = RKV_DTYPE_BF16;  // storage of every cache measured (--kv-dtype)
    std::string plot_script;  // default: the source tree's plot_serve.py, else ./examples/engine/cuda/plot_serve.py
};

// The usage, on stderr after a problem (exit 2), on stdout for --help (exit 0).
[[noreturn]] void usage(const char *program, const std::string &problem) {
    if (!problem.empty()) std::fprintf(stderr, "%s: %s\n", program, problem.c_str());
    std::fprintf(problem.empty() ? stdout : stderr,
                 "usage: %s [--out DIR] [--shape SPEC] [--prompt 256] [--gens 4096,16384,32768]\n"
                 "          [--budgets 1024,512,2048] [--buffer 128] [--steps 8] [--reserve-gib 2]\n"
                 "          [--max-batch N] [--time-limit 480] [--no-serve-check] [--plot-script PATH]\n"
                 "          [--kv-dtype bf16|fp8]   (K/V storage of every cache; fp8: E4M3)\n"
                 "shape SPEC: a preset (r1-llama-8b) and/or key=value overrides, e.g. r1-llama-8b,layers=4\n",
                 program);
    std::exit(problem.empty() ? 0 : 2);
}

std::vector<int32_t> parse_list(const char *program, const std::string &what, const std::string &text) {
    std::vector<int32_t> values;
    std::stringstream items(text);
    for (std::string item; std::getline(items, item, ',');) {
        char *end = nullptr;
        const long v = std::strtol(item.c_str(), &end, 10);
        if (item.empty() || *end != '\0' || v < 1 || v > (1 << 24)) usage(program, what + ": '" + item + "' is not a positive number");
        values.push_back(int32_t(v));
    }
    if (values.empty()) usage(program, what + " is empty");
    return values;
}

Options parse(int argc, char **argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(argv[0], arg + " needs a value");
            return argv[++i];
        };
        auto number = [&](double low, double high) {
            const std::string text = value();
            char *end = nullptr;
            const double v = std::strtod(text.c_str(), &end);
            if (text.empty() || *end != '\0' || v < low || v > high)
                usage(argv[0], arg + " " + text + " is outside " + std::to_string(low) + " .. " + std::to_string(high));
            return v;
        };
        if (arg == "-h" || arg == "--help") usage(argv[0], "");
        else if (arg == "--out") o.out = value();
        else if (arg == "--shape") o.shape = value();
        else if (arg == "--prompt") o.prompt = int32_t(number(1, 1 << 20));
        else if (arg == "--gens") o.gens = parse_list(argv[0], arg, value());
        else if (arg == "--budgets") o.budgets = parse_list(argv[0], arg, value());
        else if (arg == "--buffer") o.buffer = int32_t(number(1, 1 << 14));
        else if (arg == "--steps") o.steps = int32_t(number(1, 60));
        else if (arg == "--reserve-gib") o.reserve_gib = number(0, 1 << 20);
        else if (arg == "--max-batch") o.max_batch = int32_t(number(1, 1 << 20));
        else if (arg == "--time-limit") o.time_limit = number(1, 1e6);
        else if (arg == "--no-serve-check") o.serve_check = false;
        else if (arg == "--plot-script") o.plot_script = value();
        else if (arg == "--kv-dtype") {
            const std::string text = value();
            if (text == "bf16") o.kv_dtype = RKV_DTYPE_BF16;
            else if (text == "fp8") o.kv_dtype = RKV_DTYPE_FP8_E4M3;
            else usage(argv[0], "--kv-dtype " + text + ": valid: bf16 fp8");
        }
        else usage(argv[0], "unknown option " + arg);
    }
    for (int32_t b : o.budgets)
        if (b <= 8 || b + o.buffer > 16384)
            usage(argv[0], "budget " + std::to_string(b) + ": above the window (8) and budget + buffer <= 16384");
    return o;
}

// The caches a run measures, in the run's K/V storage: R-KV at a budget (and
// the run's buffer), or a Full cache of max_len slots per sequence.
CacheSpec rkv_spec(const Options &o, int32_t budget) {
    CacheSpec spec;
    spec.budget = budget;
    spec.buffer = o.buffer;
    spec.dtype = o.kv_dtype;
    return spec;
}
CacheSpec full_spec(const Options &o, int32_t max_len) {
    CacheSpec spec;
    spec.method = RKV_METHOD_FULL;
    spec.max_len = max_len;
    spec.dtype = o.kv_dtype;
    return spec;
}

// Page-rounded tokens a paging engine holds for one request, averaged over its
// life and rounded to a token: after t of `gen` tokens it holds
// 16 * ceil((prompt + t) / 16).
int32_t paged_average(int32_t prompt, int32_t gen) {
    double sum = 0;
    for (int32_t t = 1; t <= gen; ++t) sum += 16.0 * double((prompt + t + 15) / 16);
    return int32_t(sum / gen + 0.5);
}

class Clock {
  public:
    double seconds() const {
        return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    }
    void say(const char *format, ...) const __attribute__((format(printf, 2, 3)));

  private:
    std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

void Clock::say(const char *format, ...) const {
    std::printf("[%7.1f s] ", seconds());
    va_list args;
    va_start(args, format);
    std::vprintf(format, args);
    va_end(args);
    std::printf("\n");
    std::fflush(stdout);
}

struct Bench {
    Options o;
    Config shape;
    const DeviceWeights *weights = nullptr;
    cudaStream_t stream = nullptr;
    Report report;
    Clock clock;

    int32_t batch_limit(int32_t batch) const { return o.max_batch > 0 ? std::min(batch, o.max_batch) : batch; }

    void measure_rkv(int32_t budget, int32_t batch) {
        RkvRun run;
        run.budget = budget;
        run.buffer = o.buffer;
        run.batch = batch;
        try {
            const CacheSpec spec = rkv_spec(o, budget);
            Rig rig(*weights, spec, batch, stream);
            run.batch = rig.batch();
            const int32_t capacity = rig.capacity();
            const std::string name = rkv_name(budget, o.buffer) + ", batch " + std::to_string(run.batch);
            // before the first compression: contexts at 1/4 and 3/4 of prompt .. capacity
            for (double part : {0.25, 0.75}) {
                if (o.prompt >= capacity) break;
                const int32_t context = o.prompt + int32_t(part * (capacity - o.prompt));
                const int32_t steps = std::min(o.steps, capacity - context - 2);
                if (steps < 1) continue;
                rig.fill_all_to(context);
                const double ms = rig.time_steps(steps);
                run.phase1.emplace_back(context + steps / 2.0, ms);
                clock.say("%s: %.2f ms per step at context %d (before any compression)", name.c_str(), ms, context);
            }
            // steady state: sequences staggered so that each is compressed once in `buffer` steps
            std::vector<int32_t> held(static_cast<size_t>(run.batch));
            for (int32_t s = 0; s < run.batch; ++s) held[size_t(s)] = capacity - s % o.buffer;
            rig.fill_to(held);
            double compress_ms = 0;
            run.steady_ms = rig.time_steps(o.buffer, &compress_ms, &run.compressions);
            run.steady_compress_ms = compress_ms;
            run.steady_steps = o.buffer;
            clock.say("%s: %.2f ms per step over %d steps, %lld compressions (%.1f ms of them)", name.c_str(),
                      run.steady_ms, o.buffer, (long long)run.compressions, compress_ms);
            // one step taken apart at the steady state's average fill
            rig.compress_all();
            rig.fill_all_to(budget + o.buffer / 2);
            run.breakdown = rig.breakdown(8);
            run.breakdown.compress_ms = compress_ms / o.buffer;
            run.has_breakdown = true;
            clock.say("%s: step %.2f ms = matmul %.2f + attend %.2f + append %.2f + engine kernels %.2f (+ rest)",
                      name.c_str(), run.breakdown.step_ms, run.breakdown.matmul_ms, run.breakdown.attend_ms,
                      run.breakdown.append_ms, run.breakdown.other_ms);
        } catch (const Error &e) {
            run.error = e.what();
            report.rkv.push_back(run);
            if (e.sticky) throw;
            clock.say("R-KV %d at batch %d failed: %s", budget, batch, e.what());
            return;
        } catch (const std::exception &e) {
            run.error = e.what();
            clock.say("R-KV %d at batch %d failed: %s", budget, batch, e.what());
        }
        report.rkv.push_back(run);
    }

    void measure_full(int32_t gen, bool paged, int32_t batch) {
        FullRun run;
        run.gen = gen;
        run.paged = paged;
        run.batch = batch;
        try {
            CacheSpec spec = full_spec(o, 0);  // max_len below
            std::vector<int32_t> contexts;
            int32_t breakdown_at = 0;
            if (paged) {
                const int32_t average = paged_average(o.prompt, gen);
                contexts = {average};
                breakdown_at = average;  // the step is taken apart where it was measured
                spec.max_len = average + o.steps + 8;  // room for the steps and a short breakdown
            } else {
                for (int i = 0; i < 4; ++i) contexts.push_back(o.prompt + int32_t((2 * i + 1) / 8.0 * gen));
                breakdown_at = o.prompt + gen / 2;
                spec.max_len = o.prompt + gen;
            }
            Rig rig(*weights, spec, batch, stream);
            run.batch = rig.batch();
            const std::string name = std::string(paged ? "Full paged " : "Full reserved ") + std::to_string(gen) +
                                     ", batch " + std::to_string(run.batch);
            for (int32_t context : contexts) {
                rig.fill_all_to(std::max(1, context - o.steps / 2));
                const double ms = rig.time_steps(o.steps);
                run.points.emplace_back(context, ms);
                clock.say("%s: %.2f ms per step at context %d", name.c_str(), ms, context);
                if (!run.has_breakdown && (paged || context > breakdown_at - gen / 4)) {
                    rig.fill_all_to(breakdown_at - 20);
                    run.breakdown = rig.breakdown(8);
                    run.has_breakdown = true;
                    clock.say("%s: step %.2f ms = matmul %.2f + attend %.2f + append %.2f + engine kernels %.2f",
                              name.c_str(), run.breakdown.step_ms, run.breakdown.matmul_ms, run.breakdown.attend_ms,
                              run.breakdown.append_ms, run.breakdown.other_ms);
                }
            }
        } catch (const Error &e) {
            run.error = e.what();
            report.full.push_back(run);
            if (e.sticky) throw;
            clock.say("Full %d (%s) at batch %d failed: %s", gen, paged ? "paged" : "reserved", batch, e.what());
            return;
        } catch (const std::exception &e) {
            run.error = e.what();
            clock.say("Full %d failed: %s", gen, e.what());
        }
        report.full.push_back(run);
    }

    void serve_check() {
        ServeCheck &s = report.serve;
        s.ran = true;
        s.budget = o.budgets.front();
        s.buffer = o.buffer;
        s.slots = batch_limit(std::min(64, std::max(1, report.capacity_of(rkv_name(s.budget, o.buffer), 0))));
        s.requests = 2 * s.slots;
        try {
            ModelOptions mo;
            mo.slots = s.slots;
            mo.prefill_rows = 256;
            mo.history_rows = 64;
            GpuModel model(*weights, mo);
            rkv_cache_params p;
            check_rkv(rkv_params_default(&p, sizeof p), "rkv_params_default");
            model.set_cache_shape(p);
            p.budget = s.budget;
            p.buffer = s.buffer;
            rkv_cache *cache = nullptr;
            check_rkv(rkv_cache_create(&p, &cache), "rkv_cache_create");
            std::unique_ptr<rkv_cache, void (*)(rkv_cache *)> owner(cache, rkv_cache_destroy);
            ServerOptions so;
            so.max_requests = s.requests;
            so.steps_per_sync = 32;
            Server server(model, cache, so, stream);
            std::mt19937 rng(7);
            std::uniform_int_distribution<int32_t> token(0, shape.vocab_size - 1);
            std::uniform_int_distribution<int32_t> prompt_len(std::max(1, o.prompt / 2), o.prompt);
            std::uniform_int_distribution<int32_t> new_len(256, 1280);
            std::vector<int32_t> wanted;
            for (int32_t i = 0; i < s.requests; ++i) {
                Request r;
                r.prompt.resize(size_t(prompt_len(rng)));
                for (int32_t &t : r.prompt) t = token(rng);
                r.max_new = new_len(rng);
                wanted.push_back(r.max_new);
                server.submit(r);
            }
            const auto start = std::chrono::steady_clock::now();
            server.run();
            s.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            for (int32_t i = 0; i < s.requests; ++i) {
                const Result &result = server.result(i);
                s.generated += int64_t(result.tokens.size());
                if (int32_t(result.tokens.size()) != wanted[size_t(i)] || result.slot < 0)
                    throw Error("request " + std::to_string(i) + " generated " + std::to_string(result.tokens.size()) +
                                " of its " + std::to_string(wanted[size_t(i)]) + " tokens");
            }
            const Server::Stats &st = server.stats();
            s.prompt_tokens = st.prompt_tokens;
            s.decode_steps = st.decode_steps;
            s.compressions = st.compressions;
            s.captures = st.captures;
            s.batch_changes = st.batch_changes;
            s.decode_chunks = st.decode_chunks;
            s.prefill_s = st.prefill_s;
            s.decode_s = st.decode_s;
            clock.say("continuous batching: %d requests on %d slots, %lld tokens in %.1f s, %lld decode chunks, "
                      "%d changes of the running set, %d graph capture(s), %lld compressions", s.requests, s.slots,
                      (long long)s.generated, s.seconds, (long long)s.decode_chunks, s.batch_changes, s.captures,
                      (long long)s.compressions);
            if (s.captures != 1)
                throw Error("the decode step was captured " + std::to_string(s.captures) +
                            " times; the engine captures it once and replays it for any set of slots");
        } catch (const Error &e) {
            s.error = e.what();
            if (e.sticky) throw;
            clock.say("continuous batching failed: %s", e.what());
        } catch (const std::exception &e) {
            s.error = e.what();
            clock.say("continuous batching failed: %s", e.what());
        }
    }
};

}  // namespace

int main(int argc, char **argv) {
    Bench bench;
    bench.o = parse(argc, argv);
    const Options &o = bench.o;
    try {
        bench.shape = parse_shape(o.shape);
        check_gpu_shape(bench.shape);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
        return 2;
    }
    std::error_code io_error;
    std::filesystem::create_directories(o.out, io_error);
    if (io_error) {
        std::fprintf(stderr, "%s: cannot create %s: %s\n", argv[0], o.out.c_str(), io_error.message().c_str());
        return 1;
    }
    Report &report = bench.report;
    report.shape = describe(bench.shape);
    report.prompt = o.prompt;
    report.buffer = o.buffer;
    report.gens = o.gens;
    report.budgets = o.budgets;
    report.kv_dtype = o.kv_dtype == RKV_DTYPE_BF16 ? "bf16" : "FP8 E4M3 (a float32 scale per token and KV head)";
    const Clock &clock = bench.clock;
    try {
        report.device = require_device();
        Stream stream;
        bench.stream = stream.get();
        clock.say("%s; shape %s; librkv %s", report.device.c_str(), report.shape.c_str(), rkv_version_string());
        report.ceilings = measure_ceilings(stream.get());
        clock.say("ceilings: copy %.0f GB/s (read + write), bf16 matmul %.0f TFLOP/s", report.ceilings.copy_gbs,
                  report.ceilings.matmul_tflops);
        uint64_t free_before = 0, total = 0;
        device_memory(&free_before, &total);
        const uint64_t needed = weight_bytes(bench.shape, false);
        if (needed + (uint64_t(1) << 30) > free_before)
            throw Error("the weights need " + gib(needed) + " and the GPU has " + gib(free_before) + " free of " +
                        gib(total) + ": too little GPU memory for this shape (try --shape r1-llama-8b,layers=4)");
        DeviceWeights weights = DeviceWeights::dummy(bench.shape, 1, stream.get());
        bench.weights = &weights;
        uint64_t free_bytes = 0;
        device_memory(&free_bytes, &total);
        report.weight_bytes = double(weights.bytes());
        report.free_bytes = double(free_bytes);
        report.reserve_bytes = o.reserve_gib * double(1ull << 30);
        report.available_bytes = std::max(0.0, report.free_bytes - report.reserve_bytes);
        const uint64_t available = uint64_t(report.available_bytes);
        clock.say("dummy weights %s; %s free of %s; %s for K/V and activations", gib(weights.bytes()).c_str(),
                  gib(free_bytes).c_str(), gib(total).c_str(), gib(available).c_str());

        // capacity
        auto add_capacity = [&](const std::string &method, int32_t gen, const CacheSpec &spec) {
            const int32_t batch = capacity(bench.shape, spec, available);
            double per_sequence = 0;
            if (batch > 1)
                per_sequence = double(batch_bytes(bench.shape, spec, batch) - batch_bytes(bench.shape, spec, 1)) /
                               double(batch - 1);
            report.capacity.push_back({method, gen, batch, per_sequence});
            clock.say("capacity %-28s gen %6d: %5d sequences (%.1f MiB each)", method.c_str(), gen, batch,
                      per_sequence / (1 << 20));
        };
        for (int32_t gen : o.gens) {
            add_capacity("Full reserved", gen, full_spec(o, o.prompt + gen));
            add_capacity("Full paged", gen, full_spec(o, paged_average(o.prompt, gen)));
        }
        for (int32_t budget : o.budgets) add_capacity(rkv_name(budget, o.buffer), 0, rkv_spec(o, budget));
        write_report(report, o.out);

        // measurements, the most important first (a time limit cuts the tail)
        int32_t main_gen = o.gens[o.gens.size() / 2];
        for (int32_t g : o.gens)
            if (g == 16384) main_gen = g;
        std::vector<std::pair<std::string, std::function<void()>>> tasks;
        const int32_t rkv_budget = o.budgets.front();
        auto rkv_batch_limit = [&](int32_t budget) { return bench.batch_limit(report.capacity_of(rkv_name(budget, o.buffer), 0)); };
        auto full_batch = [&](int32_t gen, bool paged) {
            return bench.batch_limit(report.capacity_of(paged ? "Full paged" : "Full reserved", gen));
        };
        tasks.emplace_back("R-KV at its largest batch", [&] { bench.measure_rkv(rkv_budget, rkv_batch_limit(rkv_budget)); });
        tasks.emplace_back("Full reserved", [&] { bench.measure_full(main_gen, false, full_batch(main_gen, false)); });
        tasks.emplace_back("R-KV at Full's batch",
                           [&] { bench.measure_rkv(rkv_budget, full_batch(main_gen, false)); });
        for (int32_t gen : o.gens)
            if (gen != main_gen)
                tasks.emplace_back("Full reserved", [&, gen] { bench.measure_full(gen, false, full_batch(gen, false)); });
        for (int32_t gen : o.gens)
            tasks.emplace_back("Full paged", [&, gen] { bench.measure_full(gen, true, full_batch(gen, true)); });
        for (size_t i = 1; i < o.budgets.size(); ++i) {
            const int32_t budget = o.budgets[i];
            tasks.emplace_back("R-KV at its largest batch", [&, budget] { bench.measure_rkv(budget, rkv_batch_limit(budget)); });
        }
        for (int32_t gen : o.gens)
            if (gen != main_gen && full_batch(gen, false) != full_batch(main_gen, false))
                tasks.emplace_back("R-KV at Full's batch",
                                   [&, gen] { bench.measure_rkv(rkv_budget, full_batch(gen, false)); });
        if (o.serve_check && o.kv_dtype != RKV_DTYPE_BF16)
            report.notes.push_back("No continuous-batching run with FP8 storage: the engine's prefill attention reads "
                                   "the cache's bf16 views itself.");
        else if (o.serve_check)
            tasks.emplace_back("continuous batching", [&] { bench.serve_check(); });

        for (auto &task : tasks) {
            if (clock.seconds() > o.time_limit) {
                report.notes.push_back("Skipped for the time limit (--time-limit " + std::to_string(int(o.time_limit)) +
                                       " s): " + task.first + ".");
                clock.say("time limit: skipping %s", task.first.c_str());
                continue;
            }
            task.second();
            write_report(report, o.out);
        }
    } catch (const Error &e) {
        std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
        report.notes.push_back(std::string("Stopped: ") + e.what());
        write_report(report, o.out);
        return 1;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s: %s\n", argv[0], e.what());
        return 1;
    }
    write_report(report, o.out);
    std::printf("\n%s\n", report_markdown(report).c_str());
    // The plot script of the source tree this was built from, or of the working directory's
    // checkout (a build carried to another machine).
    std::string script = o.plot_script;
    for (const char *candidate : {RKV_PLOT_SCRIPT, "examples/engine/cuda/plot_serve.py"})
        if (script.empty() && std::filesystem::exists(candidate)) script = candidate;
    const std::string plot = "python3 " + (script.empty() ? std::string("plot_serve.py") : script) + " " + o.out;
    if (script.empty() || std::system(plot.c_str()) != 0)
        std::printf("No plot (no plot_serve.py here, or matplotlib missing): run `%s` where matplotlib is "
                    "installed.\n", plot.c_str());
    std::printf("Wrote %s/serve_bench.md and %s/serve_bench.json.\n", o.out.c_str(), o.out.c_str());
    return 0;
}
