// The CUDA engine on the GPU (exit 77 without one), on small Llama models with
// random BF16 weights that this test writes (synthetic_gguf.h), so that the
// CPU engine (f32 weights dequantised from the same BF16 values, f32 cache) is
// the reference:
//
// 1. Forward pass, GPU against CPU, teacher-forced on the CPU's greedy tokens:
//    Full and R-KV, batch 1 and a batch of sequences of different lengths (in
//    non-contiguous slots, idle slots as padding), prompts longer than a
//    prefill piece and, for R-KV, longer than the cache (compressed while
//    prefilled). Stated tolerance, max |logit difference| / std of the CPU's
//    logits: Full <= kFullTolerance (bf16 weights are exact; activations and
//    K/V are rounded to bf16); R-KV <= kRkvTolerance, because bf16 rounding can
//    swap two near-tied candidates at a compression, after which the caches
//    hold different tokens (mean error <= kRkvMeanTolerance); its top-1 must
//    agree on kRkvTop1 of the steps and whole kept sets must match on at least
//    kRkvKeptSame of the heads (broken scoring matches none). The measured
//    numbers are printed.
// 2. Greedy decoding, Full: the GPU's tokens equal the CPU's, except at a step
//    where the CPU's top two logits are closer than twice the measured error
//    (a near tie that bf16 may flip; the prompt is chosen, on the CPU, for
//    wide margins, so this should not happen).
// 3. A decode step replayed from a CUDA graph equals the same step run
//    eagerly: identical tokens and bit-identical logits, across compressions.
// 4. Continuous batching: 7 requests on 3 slots (slots reused, a stop token):
//    each request's tokens equal the same request run alone in the same slot,
//    and the decode step was captured once.
// 5. The decode loop with a librkv batch: one graph, captured once, replayed
//    while the set of decoding slots changes at every chunk (slots sit out and
//    come back), gives every slot the tokens it gets decoding alone; before
//    each chunk's copy of tokens to the host nothing waits for the GPU,
//    allocates or copies through pageable memory, and the copy is the one
//    wait. Continuous batching in waves (the running set changes 16 times as
//    scheduled, at least 12 asserted): one capture, no librkv call that waits
//    (rkv_cache_sync_lengths, ...), and exactly one host wait per prefill, per
//    decode chunk and at the end. The calls are counted by wrappers this
//    program defines (call_counter.h); the test first proves that they see
//    the calls made inside librkv.so.
// 6. Errors on the GPU: too little memory, a prompt longer than a FULL cache,
//    a full queue, a slot outside the table, a cache the engine cannot use,
//    more steps than a FULL cache has room for: messages, no crash.
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "call_counter.h"
#include "decoder.h"
#include "gguf.h"
#include "gpu_model.h"
#include "model.h"
#include "serving.h"
#include "session.h"
#include "synthetic_gguf.h"
#include "test_util.h"
#include "weights.h"
#include "rkv/rkv_experimental.h"  // rkv_cache_sync_lengths: to prove the call counter sees librkv's calls

using namespace engine;
using namespace engine::cuda;

namespace {

// Measured on the H200 (2026-11-29): Full at most 0.020 of the std; R-KV mean at most
// 0.015, top-1 at least 97.4%, kept sets identical on 75% to 100% of the heads, and a
// largest single deviation of 0.90 of the std on model-a, whose near-isotropic random
// keys tie often: one swapped token in one head moves a later step's logits that much.
// A wrong scorer, attention or bookkeeping breaks the mean, top-1 and kept-set bounds.
constexpr double kFullTolerance = 0.06;     // max |GPU - CPU| logit / std of the CPU's logits
constexpr double kRkvTolerance = 1.5;      // the same for R-KV, whose kept sets may differ after a near tie
constexpr double kRkvMeanTolerance = 0.05;  // mean |GPU - CPU| logit / std, R-KV
constexpr double kRkvTop1 = 0.9;           // R-KV: steps whose top-1 token agrees
constexpr double kRkvKeptSame = 0.5;       // R-KV: (sequence, layer, head) whose kept sets are identical
constexpr int32_t kBudget = 24, kBuffer = 16, kWindow = 8;  // R-KV: capacity 40, compresses often

struct Fixture {
    std::string name;
    std::unique_ptr<GgufFile> file;
    std::unique_ptr<Model> cpu;
    std::unique_ptr<DeviceWeights> weights;
    int32_t vocab = 0;
};

std::vector<int32_t> random_tokens(int32_t n, int32_t vocab, uint64_t seed) {
    std::vector<int32_t> out(static_cast<size_t>(n));
    uint64_t s = seed * 0x9e3779b97f4a7c15ull + 7;
    for (int32_t &t : out) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        t = int32_t(s % uint64_t(vocab - 3)) + 3;  // past the control tokens
    }
    return out;
}

rkv_cache *make_gpu_cache(const GpuModel &model, rkv_method method, int32_t max_len,
                          rkv_dtype storage = RKV_DTYPE_BF16) {
    rkv_cache_params p;
    check_rkv(rkv_params_default(&p, sizeof p), "rkv_params_default");
    model.set_cache_shape(p);
    p.dtype = storage;
    p.method = method;
    p.budget = kBudget;
    p.buffer = kBuffer;
    p.window = kWindow;
    if (max_len > 0) p.max_len = max_len;  // FULL's capacity; the others keep the default
    rkv_cache *cache = nullptr;
    check_rkv(rkv_cache_create(&p, &cache), "rkv_cache_create");
    return cache;
}

rkv_cache *make_cpu_cache(const Model &model, rkv_method method, int32_t max_len) {
    CacheOptions o;
    o.method = method;
    o.budget = kBudget;
    o.buffer = kBuffer;
    o.window = kWindow;
    if (max_len > 0) o.max_len = max_len;
    return create_cache(model, o);
}

using CacheOwner = std::unique_ptr<rkv_cache, void (*)(rkv_cache *)>;
CacheOwner own(rkv_cache *cache) { return CacheOwner(cache, rkv_cache_destroy); }

// Waits for the stream's work (the engine runs on a non-blocking stream), then copies.
std::vector<float> download(const float *device, size_t count, cudaStream_t stream) {
    check_cuda(cudaStreamSynchronize(stream), "the engine's work");
    std::vector<float> host(count);
    check_cuda(cudaMemcpy(host.data(), device, count * 4, cudaMemcpyDeviceToHost), "download");
    return host;
}

// The CPU's greedy continuation of one sequence: tokens[i] = argmax logits[i].
struct Trajectory {
    std::vector<int32_t> tokens;  // [steps]
    std::vector<float> logits;    // [steps, vocab]
    double min_margin = 1e30;     // smallest top-1 minus top-2 along the way
};

Trajectory cpu_greedy(Model &model, rkv_method method, const std::vector<int32_t> &prompt, int32_t steps) {
    const int32_t vocab = model.config().vocab_size;
    auto cache = own(make_cpu_cache(model, method, int32_t(prompt.size()) + steps));
    Trajectory t;
    std::vector<float> row(static_cast<size_t>(vocab));
    model.prefill(cache.get(), 0, prompt.data(), int32_t(prompt.size()), row.data(), true, true);
    for (int32_t i = 0; i < steps; ++i) {
        if (i > 0) {
            const int32_t seq = 0;
            model.decode(cache.get(), &seq, &t.tokens.back(), 1, row.data());
        }
        const int32_t best = argmax(row.data(), vocab);
        float second = -1e30f;
        for (int32_t v = 0; v < vocab; ++v)
            if (v != best) second = std::max(second, row[size_t(v)]);
        t.min_margin = std::min(t.min_margin, double(row[size_t(best)] - second));
        t.tokens.push_back(best);
        t.logits.insert(t.logits.end(), row.begin(), row.end());
    }
    return t;
}

struct Agreement {
    double max_abs = 0, sum_abs = 0, sum_sq = 0;  // of GPU - CPU
    double ref_var = 0;                            // summed variance of the CPU rows
    int64_t count = 0, rows = 0, top1_same = 0;
    void add(const float *gpu, const float *cpu, int32_t vocab) {
        double mean = 0;
        for (int32_t v = 0; v < vocab; ++v) mean += cpu[v];
        mean /= vocab;
        double var = 0;
        for (int32_t v = 0; v < vocab; ++v) {
            const double d = double(gpu[v]) - cpu[v];
            max_abs = std::max(max_abs, std::fabs(d));
            sum_abs += std::fabs(d);
            var += (cpu[v] - mean) * (cpu[v] - mean);
        }
        ref_var += var / vocab;
        count += vocab;
        ++rows;
        top1_same += argmax(gpu, vocab) == argmax(cpu, vocab);
    }
    double std_ref() const { return std::sqrt(ref_var / double(std::max<int64_t>(rows, 1))); }
    double relative() const { return max_abs / std_ref(); }
    double mean_relative() const { return sum_abs / double(std::max<int64_t>(count, 1)) / std_ref(); }
    double top1() const { return double(top1_same) / double(std::max<int64_t>(rows, 1)); }
};

// Teacher-forced GPU logits of sequences (prompt i in slot slots[i]) fed the
// CPU's tokens; returns [sequence][steps * vocab].
std::vector<std::vector<float>> gpu_teacher_forced(GpuModel &model, rkv_cache *cache, const std::vector<int32_t> &slots,
                                                   const std::vector<std::vector<int32_t>> &prompts,
                                                   const std::vector<Trajectory> &cpu, int32_t steps,
                                                   cudaStream_t stream) {
    const size_t vocab = size_t(model.config().vocab_size);
    std::vector<std::vector<float>> out(slots.size());
    for (size_t i = 0; i < slots.size(); ++i) {
        model.prefill(cache, slots[i], prompts[i].data(), int32_t(prompts[i].size()), true, stream);
        out[i] = download(model.prefill_logits(), vocab, stream);
    }
    Decoder decoder(model, cache, true, stream);
    decoder.set_active(slots, stream);
    std::vector<int32_t> tokens;
    for (int32_t step = 1; step < steps; ++step) {
        for (size_t i = 0; i < slots.size(); ++i)
            model.set_slot(slots[i], cpu[i].tokens[size_t(step - 1)], int32_t(prompts[i].size()) + step - 1, stream);
        decoder.compress_due(stream);
        decoder.enqueue_steps(1, stream);
        decoder.collect(tokens, stream);
        const std::vector<float> logits = download(model.decode_logits(), size_t(model.slots()) * vocab, stream);
        for (size_t i = 0; i < slots.size(); ++i)
            out[i].insert(out[i].end(), logits.begin() + long(size_t(slots[i]) * vocab),
                          logits.begin() + long(size_t(slots[i] + 1) * vocab));
    }
    return out;
}

// Free-running greedy tokens of requests pinned to slots, through the server.
std::vector<std::vector<int32_t>> gpu_greedy(GpuModel &model, rkv_cache *cache, const std::vector<int32_t> &slots,
                                             const std::vector<std::vector<int32_t>> &prompts, int32_t steps,
                                             cudaStream_t stream) {
    ServerOptions so;
    so.steps_per_sync = 5;
    Server server(model, cache, so, stream);
    for (size_t i = 0; i < slots.size(); ++i) {
        Request r;
        r.prompt = prompts[i];
        r.max_new = steps;
        r.slot = slots[i];
        server.submit(r);
    }
    server.run();
    std::vector<std::vector<int32_t>> out;
    for (size_t i = 0; i < slots.size(); ++i) out.push_back(server.result(int32_t(i)).tokens);
    return out;
}

// Greedy tokens agree unless the CPU's top two are within twice the measured error where they first differ.
void expect_same_greedy(const std::string &what, const Trajectory &cpu, const std::vector<int32_t> &gpu,
                        double max_error, int32_t vocab) {
    size_t same = 0;
    while (same < cpu.tokens.size() && same < gpu.size() && cpu.tokens[same] == gpu[same]) ++same;
    if (same == cpu.tokens.size() && gpu.size() == cpu.tokens.size()) {
        std::printf("  %s: greedy tokens identical (%zu), smallest CPU margin %.3f\n", what.c_str(), same,
                    cpu.min_margin);
        return;
    }
    bool near_tie = false;
    double margin = 0;
    if (same < gpu.size() && same < cpu.tokens.size()) {
        const float *row = &cpu.logits[same * size_t(vocab)];
        margin = double(row[cpu.tokens[same]]) - double(row[gpu[same]]);
        near_tie = margin <= 2 * max_error;
    }
    EXPECT(near_tie, "%s: greedy tokens differ at %zu of %zu (CPU %d, GPU %d, CPU margin %.4f > 2 x error %.4f)",
           what.c_str(), same, cpu.tokens.size(), same < cpu.tokens.size() ? cpu.tokens[same] : -1,
           same < gpu.size() ? gpu[same] : -1, margin, max_error);
    if (near_tie)
        std::printf("  %s: greedy tokens identical for %zu, then a near tie (CPU margin %.4f <= 2 x %.4f)\n",
                    what.c_str(), same, margin, max_error);
}

// Fraction of (sequence, layer, head) whose kept positions are identical on the two caches.
double kept_agreement(const rkv_cache *cpu_cache, int32_t cpu_seq, const rkv_cache *gpu_cache, int32_t gpu_seq,
                      int32_t layers, int32_t heads, int32_t *heads_compared) {
    int32_t same = 0;
    std::vector<int32_t> a(4096), b(4096);
    for (int32_t l = 0; l < layers; ++l)
        for (int32_t h = 0; h < heads; ++h) {
            int32_t na = 0, nb = 0;
            check_rkv(rkv_seq_positions(cpu_cache, cpu_seq, l, h, a.data(), 4096, &na), "rkv_seq_positions");
            check_rkv(rkv_seq_positions(gpu_cache, gpu_seq, l, h, b.data(), 4096, &nb), "rkv_seq_positions");
            std::sort(a.begin(), a.begin() + na);
            std::sort(b.begin(), b.begin() + nb);
            same += na == nb && std::equal(a.begin(), a.begin() + na, b.begin());
        }
    *heads_compared += layers * heads;
    return same;
}

// 1 + 2: the forward pass against the CPU (prompts[i] in slots[i] of a table of `table` slots).
void compare_with_cpu(Fixture &f, rkv_method method, const std::vector<int32_t> &prompt_lengths,
                      const std::vector<int32_t> &slots, int32_t table, int32_t steps, uint64_t seed, bool greedy) {
    const std::string what = f.name + " " + kMethodNames[method] + " batch " + std::to_string(slots.size());
    const Config &c = f.cpu->config();
    // prompts: for greedy checks, the seed (of 16) whose CPU trajectories have the widest margins
    std::vector<std::vector<int32_t>> prompts;
    std::vector<Trajectory> cpu;
    double best_margin = -1;
    for (uint64_t attempt = 0; attempt < (greedy ? 16u : 1u); ++attempt) {
        std::vector<std::vector<int32_t>> p;
        std::vector<Trajectory> t;
        double margin = 1e30;
        for (size_t i = 0; i < prompt_lengths.size(); ++i) {
            p.push_back(random_tokens(prompt_lengths[i], c.vocab_size, seed * 1000 + attempt * 10 + i));
            t.push_back(cpu_greedy(*f.cpu, method, p.back(), steps));
            margin = std::min(margin, t.back().min_margin);
        }
        if (margin > best_margin) best_margin = margin, prompts = p, cpu = t;
    }

    Stream stream;
    ModelOptions mo;
    mo.slots = table;
    mo.prefill_rows = 16;  // prompts run in several pieces
    mo.history_rows = 8;
    GpuModel model(*f.weights, mo);
    int32_t longest = 0;
    for (int32_t n : prompt_lengths) longest = std::max(longest, n);
    auto cache = own(make_gpu_cache(model, method, longest + steps));
    const std::vector<std::vector<float>> gpu =
        gpu_teacher_forced(model, cache.get(), slots, prompts, cpu, steps, stream.get());
    Agreement all;
    for (size_t i = 0; i < slots.size(); ++i)
        for (int32_t s = 0; s < steps; ++s)
            all.add(&gpu[i][size_t(s) * size_t(c.vocab_size)], &cpu[i].logits[size_t(s) * size_t(c.vocab_size)],
                    c.vocab_size);
    std::printf("%s (prompts", what.c_str());
    for (int32_t n : prompt_lengths) std::printf(" %d", n);
    std::printf(", %d steps): max |GPU - CPU| logit %.4f = %.4f of the logits' std %.3f (mean %.5f), top-1 same %.1f%%\n",
                steps, all.max_abs, all.relative(), all.std_ref(), all.mean_relative(), 100.0 * all.top1());
    if (method == RKV_METHOD_FULL) {
        EXPECT(all.relative() <= kFullTolerance, "%s: logits differ by %.4f of their std (tolerance %.2f)",
               what.c_str(), all.relative(), kFullTolerance);
    } else {
        EXPECT(all.relative() <= kRkvTolerance, "%s: logits differ by %.4f of their std (tolerance %.2f)",
               what.c_str(), all.relative(), kRkvTolerance);
        EXPECT(all.mean_relative() <= kRkvMeanTolerance, "%s: mean logit difference %.4f of their std (tolerance %.2f)",
               what.c_str(), all.mean_relative(), kRkvMeanTolerance);
        EXPECT(all.top1() >= kRkvTop1, "%s: top-1 agrees on %.1f%% of steps (at least %.0f%%)", what.c_str(),
               100.0 * all.top1(), 100.0 * kRkvTop1);
        // kept sets: the CPU again, each sequence alone, teacher-forced the same way
        int32_t same = 0, compared = 0;
        for (size_t i = 0; i < slots.size(); ++i) {
            auto cpu_cache = own(make_cpu_cache(*f.cpu, method, 0));
            std::vector<float> row(static_cast<size_t>(c.vocab_size));
            f.cpu->prefill(cpu_cache.get(), 0, prompts[i].data(), int32_t(prompts[i].size()), row.data(), true, true);
            for (int32_t s = 1; s < steps; ++s) {
                const int32_t seq = 0;
                f.cpu->decode(cpu_cache.get(), &seq, &cpu[i].tokens[size_t(s - 1)], 1, row.data());
            }
            same += int32_t(kept_agreement(cpu_cache.get(), 0, cache.get(), slots[i], c.n_layers, c.n_kv_heads,
                                           &compared));
        }
        std::printf("  kept sets identical on %d of %d (sequence, layer, head)\n", same, compared);
        EXPECT(same >= kRkvKeptSame * compared, "%s: kept sets identical on %d of %d heads only (at least %.0f%%)",
               what.c_str(), same, compared, 100.0 * kRkvKeptSame);
    }
    if (greedy) {
        // the same cache, emptied: the server resets each slot when its request ends
        check_rkv(rkv_seq_reset(cache.get(), RKV_ALL, stream.get()), "rkv_seq_reset");
        const std::vector<std::vector<int32_t>> tokens =
            gpu_greedy(model, cache.get(), slots, prompts, steps, stream.get());
        for (size_t i = 0; i < slots.size(); ++i)
            expect_same_greedy(what + " sequence " + std::to_string(i), cpu[i], tokens[i], all.max_abs, c.vocab_size);
    }
}

// 3: graph replay equals eager decoding, bit for bit, across compressions.
// With FP8 storage (the decoder hands librkv bf16; librkv quantises at append,
// dequantises in rkv_attend) there is no prefill (the engine's prompt attention
// reads bf16 views): the slots start empty, from one token each.
void graph_equals_eager(Fixture &f, rkv_dtype storage) {
    const std::string what = f.name + (storage == RKV_DTYPE_FP8_E4M3 ? " (FP8 cache)" : "");
    Stream stream;
    ModelOptions mo;
    mo.slots = 3;
    mo.prefill_rows = 16;
    mo.history_rows = 8;
    GpuModel model(*f.weights, mo);
    auto graph_cache = own(make_gpu_cache(model, RKV_METHOD_RKV, 0, storage));
    auto eager_cache = own(make_gpu_cache(model, RKV_METHOD_RKV, 0, storage));
    const std::vector<int32_t> slots = {0, 1, 2};
    Decoder graph(model, graph_cache.get(), true, stream.get()), eager(model, eager_cache.get(), false, stream.get());
    const size_t vocab = size_t(model.config().vocab_size), rows = size_t(model.slots()) * vocab;
    std::vector<int32_t> graph_tokens, eager_tokens, all_graph, all_eager;
    std::vector<float> graph_logits, eager_logits;
    // The two caches share the model's slot state: run them in turns, saving and restoring it.
    std::vector<int32_t> state_tokens[2], state_positions[2];
    auto save = [&](int which) {
        check_cuda(cudaStreamSynchronize(stream.get()), "the engine's work");
        state_tokens[which].resize(size_t(model.slots()));
        state_positions[which].resize(size_t(model.slots()));
        check_cuda(cudaMemcpy(state_tokens[which].data(), model.slot_tokens(), size_t(model.slots()) * 4,
                              cudaMemcpyDeviceToHost), "save");
        check_cuda(cudaMemcpy(state_positions[which].data(), model.slot_positions(), size_t(model.slots()) * 4,
                              cudaMemcpyDeviceToHost), "save");
    };
    auto restore = [&](int which) {
        // on the engine's stream: ordered before the steps that read them
        check_cuda(cudaMemcpyAsync(model.slot_tokens(), state_tokens[which].data(), size_t(model.slots()) * 4,
                                   cudaMemcpyHostToDevice, stream.get()), "restore");
        check_cuda(cudaMemcpyAsync(model.slot_positions(), state_positions[which].data(),
                                   size_t(model.slots()) * 4, cudaMemcpyHostToDevice, stream.get()), "restore");
    };
    for (int which = 0; which < 2; ++which) {
        rkv_cache *cache = which == 0 ? graph_cache.get() : eager_cache.get();
        for (int32_t s : slots) {
            const std::vector<int32_t> prompt = random_tokens(9 + 11 * s, int32_t(vocab), 500 + uint64_t(s));
            if (storage == RKV_DTYPE_BF16) model.prefill(cache, s, prompt.data(), int32_t(prompt.size()), true, stream.get());
            else model.set_slot(s, prompt[0], 0, stream.get());
        }
        save(which);
    }
    graph.set_active(slots, stream.get());
    eager.set_active(slots, stream.get());
    int32_t steps = 0, chunks = 0, logit_mismatches = 0;
    int64_t compressions = 0;
    const int32_t total_steps = storage == RKV_DTYPE_BF16 ? 60 : 2 * (kBudget + kBuffer);  // FP8: past two compressions
    while (steps < total_steps) {
        restore(0);
        compressions += graph.compress_due(stream.get());
        const int32_t k = std::min({graph.room(), 4, total_steps - steps});
        graph.enqueue_steps(k, stream.get());
        graph.collect(graph_tokens, stream.get());
        graph_logits = download(model.decode_logits(), rows, stream.get());
        save(0);
        restore(1);
        eager.compress_due(stream.get());
        eager.enqueue_steps(k, stream.get());
        eager.collect(eager_tokens, stream.get());
        eager_logits = download(model.decode_logits(), rows, stream.get());
        save(1);
        all_graph.insert(all_graph.end(), graph_tokens.begin(), graph_tokens.end());
        all_eager.insert(all_eager.end(), eager_tokens.begin(), eager_tokens.end());
        logit_mismatches += std::memcmp(graph_logits.data(), eager_logits.data(), rows * 4) != 0;
        steps += k;
        ++chunks;
    }
    EXPECT(all_graph == all_eager, "%s: graph replay and eager decoding give different tokens", what.c_str());
    EXPECT(logit_mismatches == 0, "%s: logits of graph and eager steps differ after %d of %d chunks", what.c_str(),
           logit_mismatches, chunks);
    EXPECT(compressions > 0, "%s: the sequences were compressed during the replays", what.c_str());
    EXPECT(graph.captures() == 1, "%s: the decode step is captured once (got %d captures)", what.c_str(),
           graph.captures());
    std::printf("%s: graph replay = eager decoding: %d steps of 3 slots in %d chunks, %lld compressions, tokens "
                "identical, logits bit-identical\n", what.c_str(), steps, chunks, (long long)compressions);
}

// 4: continuous batching: each request's tokens equal the same request alone (in the same slot).
void continuous_batching(Fixture &f) {
    Stream stream;
    ModelOptions mo;
    mo.slots = 3;
    mo.prefill_rows = 16;
    mo.history_rows = 8;
    GpuModel model(*f.weights, mo);
    auto cache = own(make_gpu_cache(model, RKV_METHOD_RKV, 0));
    const int32_t vocab = model.config().vocab_size;
    const int32_t prompt_lengths[7] = {5, 31, 12, 60, 8, 44, 19};
    const int32_t max_new[7] = {30, 12, 40, 25, 6, 33, 18};
    std::vector<Request> requests;
    for (int i = 0; i < 7; ++i) {
        Request r;
        r.prompt = random_tokens(prompt_lengths[i], vocab, 900 + uint64_t(i));
        r.max_new = max_new[i];
        requests.push_back(r);
    }
    ServerOptions so;
    so.steps_per_sync = 4;
    auto run_alone = [&](Request r, int32_t slot) {
        r.slot = slot;
        Server server(model, cache.get(), so, stream.get());
        server.submit(r);
        server.run();
        return server.result(0);
    };
    // request 2 stops at the token it produces 6th when alone (or earlier if that token came before)
    requests[2].stop = {run_alone(requests[2], -1).tokens.at(5)};

    Server server(model, cache.get(), so, stream.get());
    for (const Request &r : requests) server.submit(r);
    server.run();
    const Server::Stats &st = server.stats();
    bool all_same = true;
    for (int i = 0; i < 7; ++i) {
        const Result &batched = server.result(i);
        const Result alone = run_alone(requests[size_t(i)], batched.slot);
        const bool same = batched.tokens == alone.tokens && batched.stopped == alone.stopped;
        all_same = all_same && same;
        EXPECT(same, "%s: request %d (slot %d) gives %zu tokens in the batch, %zu alone; first difference at %zu",
               f.name.c_str(), i, batched.slot, batched.tokens.size(), alone.tokens.size(),
               size_t(std::mismatch(batched.tokens.begin(), batched.tokens.end(), alone.tokens.begin(),
                                    alone.tokens.end()).first - batched.tokens.begin()));
        EXPECT(batched.stopped || int32_t(batched.tokens.size()) == max_new[i], "%s: request %d ended early",
               f.name.c_str(), i);
        // Its cache as it finished (before the server reset the slot): what it appended, held and compressed.
        const rkv_stats &kv = batched.cache;
        EXPECT(kv.tokens_appended > 0 && kv.tokens_held > 0 && kv.tokens_held <= kv.tokens_appended &&
                   kv.tokens_appended == alone.cache.tokens_appended && kv.tokens_held == alone.cache.tokens_held &&
                   kv.compressions == alone.cache.compressions,
               "%s: request %d's cache as it finished: %llu tokens appended, %llu held, %llu compressions in the "
               "batch; alone %llu, %llu, %llu", f.name.c_str(), i, (unsigned long long)kv.tokens_appended,
               (unsigned long long)kv.tokens_held, (unsigned long long)kv.compressions,
               (unsigned long long)alone.cache.tokens_appended, (unsigned long long)alone.cache.tokens_held,
               (unsigned long long)alone.cache.compressions);
    }
    EXPECT(server.result(2).stopped, "%s: request 2 ended at its stop token", f.name.c_str());
    EXPECT(st.captures == 1, "%s: the decode step is captured once, whichever slots run (%d captures)",
           f.name.c_str(), st.captures);
    EXPECT(st.compressions > 0, "%s: sequences were compressed while batched", f.name.c_str());
    std::printf("%s: continuous batching, 7 requests on 3 slots: %lld decode steps, %d changes of the running set, "
                "%d graph capture(s), %lld compressions; every request's tokens %s the same request alone\n",
                f.name.c_str(), (long long)st.decode_steps, st.batch_changes, st.captures,
                (long long)st.compressions, all_same ? "equal" : "DIFFER from");
}

// 5: the call counter sees the calls made inside librkv.so, or the checks below could not fail.
bool counter_sees_librkv(Fixture &f) {
    Stream stream;
    ModelOptions mo;
    mo.slots = 1;
    mo.prefill_rows = 16;
    mo.history_rows = 8;
    GpuModel model(*f.weights, mo);
    auto cache = own(make_gpu_cache(model, RKV_METHOD_RKV, 0));
    const test::CallCounts before = test::call_counts();
    check_rkv(rkv_cache_sync_lengths(cache.get(), stream.get()), "rkv_cache_sync_lengths");
    const test::CallCounts seen = test::call_counts() - before;
    // rkv_cache_sync_lengths waits with cudaStreamSynchronize inside librkv.so
    EXPECT(seen.rkv_waits == 1 && seen.host_waits >= 1,
           "the call counter does not see librkv's calls (rkv_cache_sync_lengths counted as %s): the wrappers of "
           "call_counter.cpp are not bound",
           seen.describe().c_str());
    return seen.rkv_waits == 1 && seen.host_waits >= 1;
}

int32_t slot_token(const GpuModel &model, int32_t slot, cudaStream_t stream) {
    check_cuda(cudaStreamSynchronize(stream), "the engine's work");
    int32_t token = -1;
    check_cuda(cudaMemcpy(&token, model.slot_tokens() + slot, 4, cudaMemcpyDeviceToHost), "download");
    return token;
}

// 5: one graph for any set of slots, no wait before the token copy, each slot as if alone.
void one_graph_for_changing_slots(Fixture &f) {
    Stream stream;
    ModelOptions mo;
    mo.slots = 4;
    mo.prefill_rows = 16;
    mo.history_rows = 8;
    GpuModel model(*f.weights, mo);
    const int32_t slots = mo.slots, vocab = model.config().vocab_size, chunk_steps = 3;
    std::vector<std::vector<int32_t>> prompts;
    for (int32_t s = 0; s < slots; ++s) prompts.push_back(random_tokens(6 + 9 * s, vocab, 700 + uint64_t(s)));
    // The decoding slots of each chunk as bits: every slot sits out and comes back, and no two
    // chunks in a row have the same set.
    const unsigned pattern[] = {0xF, 0x5, 0xA, 0x3, 0x8, 0x6, 0xD, 0x1, 0xF, 0xE, 0x7, 0xB,
                                0x2, 0xC, 0x9, 0x4, 0xF, 0x5, 0xA, 0x3, 0x6, 0x9, 0xF, 0x1};
    const int32_t chunks = int32_t(sizeof pattern / sizeof pattern[0]);

    auto cache = own(make_gpu_cache(model, RKV_METHOD_RKV, 0));
    std::vector<std::vector<int32_t>> batched(static_cast<size_t>(slots));  // each slot's tokens (first: the prompt's)
    for (int32_t s = 0; s < slots; ++s) {
        const std::vector<int32_t> &prompt = prompts[size_t(s)];
        model.prefill(cache.get(), s, prompt.data(), int32_t(prompt.size()), true, stream.get());
        batched[size_t(s)].push_back(slot_token(model, s, stream.get()));
    }
    Decoder decoder(model, cache.get(), true, stream.get());
    const test::CallCounts start = test::call_counts();
    std::vector<int32_t> members, tokens;
    int64_t compressions = 0;
    int32_t waits_before_copy = 0, copies_not_one_wait = 0;
    for (int32_t c = 0; c < chunks; ++c) {
        members.clear();
        for (int32_t s = 0; s < slots; ++s)
            if (pattern[c] >> s & 1u) members.push_back(s);
        const test::CallCounts before = test::call_counts();
        decoder.set_active(members, stream.get());
        compressions += decoder.compress_due(stream.get());
        const int32_t k = std::min(decoder.room(), chunk_steps);
        decoder.enqueue_steps(k, stream.get());
        const test::CallCounts enqueued = test::call_counts() - before;
        if (!enqueued.none() && waits_before_copy++ == 0)
            std::fprintf(stderr, "chunk %d: before the copy of its tokens: %s\n", c, enqueued.describe().c_str());
        const test::CallCounts copy_start = test::call_counts();
        decoder.collect(tokens, stream.get());
        const test::CallCounts copied = test::call_counts() - copy_start;
        if (!(copied.host_waits == 1 && copied.pageable_copies == 0 && copied.allocations == 0 &&
              copied.rkv_waits == 0) &&
            copies_not_one_wait++ == 0)
            std::fprintf(stderr, "chunk %d: the copy of its tokens: %s\n", c, copied.describe().c_str());
        for (int32_t step = 0; step < k; ++step)
            for (int32_t s : members) batched[size_t(s)].push_back(tokens[size_t(step) * size_t(slots) + size_t(s)]);
    }
    const test::CallCounts loop = test::call_counts() - start;
    EXPECT(waits_before_copy == 0,
           "%s: in %d of %d chunks a call before the copy of the tokens waited for the GPU, allocated or copied "
           "through pageable memory (the first is printed above)", f.name.c_str(), waits_before_copy, chunks);
    EXPECT(copies_not_one_wait == 0, "%s: in %d of %d chunks the copy of the tokens was not exactly one host wait",
           f.name.c_str(), copies_not_one_wait, chunks);
    EXPECT(loop.rkv_waits == 0, "%s: the decode loop called librkv functions that wait (%s)", f.name.c_str(),
           loop.describe().c_str());
    EXPECT(decoder.captures() == 1, "%s: the decode step is captured once for %d sets of slots (got %d captures)",
           f.name.c_str(), chunks, decoder.captures());
    EXPECT(decoder.batch_changes() == chunks, "%s: %d changes of the set of slots, %d recorded", f.name.c_str(), chunks,
           decoder.batch_changes());
    EXPECT(compressions > 0, "%s: sequences were compressed between chunks", f.name.c_str());

    // Each slot alone, in a cache of its own, for as many steps as it decoded above.
    int32_t same = 0;
    for (int32_t s = 0; s < slots; ++s) {
        auto alone_cache = own(make_gpu_cache(model, RKV_METHOD_RKV, 0));
        model.prefill(alone_cache.get(), s, prompts[size_t(s)].data(), int32_t(prompts[size_t(s)].size()), true,
                      stream.get());
        std::vector<int32_t> alone = {slot_token(model, s, stream.get())};
        Decoder single(model, alone_cache.get(), true, stream.get());
        single.set_active({s}, stream.get());
        while (alone.size() < batched[size_t(s)].size()) {
            single.compress_due(stream.get());
            const int32_t k = std::min({single.room(), chunk_steps, int32_t(batched[size_t(s)].size() - alone.size())});
            single.enqueue_steps(k, stream.get());
            single.collect(tokens, stream.get());
            for (int32_t step = 0; step < k; ++step) alone.push_back(tokens[size_t(step) * size_t(slots) + size_t(s)]);
        }
        const bool equal = alone == batched[size_t(s)];
        same += equal;
        EXPECT(equal, "%s: slot %d decoded %zu tokens while slots came and went; alone they differ at %zu",
               f.name.c_str(), s, batched[size_t(s)].size(),
               size_t(std::mismatch(alone.begin(), alone.end(), batched[size_t(s)].begin()).first - alone.begin()));
    }
    std::printf("%s: one graph for %d changing sets of 4 slots: 1 capture (got %d), %lld compressions, per chunk "
                "nothing waited before the token copy and the copy waited once (whole loop: %s); %d of %d slots "
                "equal to decoding alone\n",
                f.name.c_str(), chunks, decoder.captures(), (long long)compressions, loop.describe().c_str(), same,
                slots);
}

// 5: continuous batching in waves: the running set changes many times, one capture, waits counted.
void serving_waits_once_per_chunk(Fixture &f) {
    Stream stream;
    ModelOptions mo;
    mo.slots = 4;
    mo.prefill_rows = 16;
    mo.history_rows = 8;
    GpuModel model(*f.weights, mo);
    auto cache = own(make_gpu_cache(model, RKV_METHOD_RKV, 0));
    const int32_t vocab = model.config().vocab_size, waves = 4;
    ServerOptions so;
    so.max_requests = waves * mo.slots;
    so.steps_per_sync = 4;
    Server server(model, cache.get(), so, stream.get());
    int32_t waits_not_counted = 0;
    test::CallCounts all;
    for (int32_t w = 0; w < waves; ++w) {
        // four requests of distinct lengths: the running set shrinks 4 -> 3 -> 2 -> 1, then the next wave refills it
        for (int32_t i = 0; i < mo.slots; ++i) {
            Request r;
            r.prompt = random_tokens(5 + 7 * i + w, vocab, 1300 + uint64_t(w * 10 + i));
            r.max_new = 3 + 6 * i + w;
            server.submit(r);
        }
        const Server::Stats before_stats = server.stats();
        const test::CallCounts before = test::call_counts();
        server.run();
        const test::CallCounts seen = test::call_counts() - before;
        const Server::Stats &st = server.stats();
        const int64_t expected =
            (st.prefills - before_stats.prefills) + (st.decode_chunks - before_stats.decode_chunks) + 1;
        all.host_waits += seen.host_waits;
        all.rkv_waits += seen.rkv_waits;
        all.allocations += seen.allocations;
        if (seen.host_waits != expected || seen.rkv_waits != 0 || seen.allocations != 0) {
            ++waits_not_counted;
            std::fprintf(stderr, "wave %d: %s; expected %lld host waits (one per prefill, per decode chunk, at the "
                         "end)\n", w, seen.describe().c_str(), (long long)expected);
        }
    }
    const Server::Stats &st = server.stats();
    EXPECT(waits_not_counted == 0,
           "%s: in %d of %d waves the server waited for the GPU elsewhere than after a prefill, a decode chunk and "
           "at the end, called a librkv function that waits, or allocated (printed above)",
           f.name.c_str(), waits_not_counted, waves);
    EXPECT(st.captures == 1, "%s: the decode step is captured once (got %d captures)", f.name.c_str(), st.captures);
    EXPECT(st.batch_changes >= 3 * waves, "%s: the running set changed %d times (at least %d expected)",
           f.name.c_str(), st.batch_changes, 3 * waves);
    bool all_ran = true;
    for (int32_t i = 0; i < server.requests(); ++i)
        all_ran = all_ran && int32_t(server.result(i).tokens.size()) == 3 + 6 * (i % mo.slots) + i / mo.slots;
    EXPECT(all_ran, "%s: every request generated its tokens", f.name.c_str());
    std::printf("%s: continuous batching in %d waves, %d requests on 4 slots: %lld decode chunks, the running set "
                "changed %d times, %d graph capture(s); %lld host waits (prefills, chunks, ends), %lld librkv waits, "
                "%lld allocations\n",
                f.name.c_str(), waves, server.requests(), (long long)st.decode_chunks, st.batch_changes, st.captures,
                (long long)all.host_waits, (long long)all.rkv_waits, (long long)all.allocations);
}

template <typename F> std::string error_of(F f) {
    try {
        f();
    } catch (const std::exception &e) {
        return e.what();
    }
    return "";
}

// 6: bad input on the GPU.
void errors(Fixture &f) {
    Stream stream;
    const std::string oom = error_of([&] {
        ModelOptions mo;
        mo.slots = 200000000;  // about a terabyte of activations
        GpuModel model(*f.weights, mo);
    });
    std::printf("too little memory: %s\n", oom.c_str());
    EXPECT(oom.find("out of GPU memory") != std::string::npos && oom.find("GiB free") != std::string::npos,
           "too little GPU memory is reported with sizes: '%s'", oom.c_str());

    ModelOptions mo;
    mo.slots = 2;
    mo.prefill_rows = 16;
    mo.history_rows = 8;
    GpuModel model(*f.weights, mo);  // the context still works after the failed allocation
    auto full = own(make_gpu_cache(model, RKV_METHOD_FULL, 32));
    ServerOptions so;
    so.max_requests = 2;
    so.steps_per_sync = 4;  // within the 8 rows of the model's token history
    Server server(model, full.get(), so, stream.get());
    Request r;
    r.prompt = random_tokens(30, f.vocab, 1);
    r.max_new = 10;
    const std::string too_long = error_of([&] { server.submit(r); });
    EXPECT(too_long.find("max_len = 32") != std::string::npos, "prompt longer than the FULL cache: '%s'",
           too_long.c_str());
    r.max_new = 2;
    r.slot = 5;
    EXPECT(error_of([&] { server.submit(r); }).find("outside the table of 2 slots") != std::string::npos,
           "a slot outside the table");
    r.slot = -1;
    r.prompt[3] = f.vocab;
    EXPECT(error_of([&] { server.submit(r); }).find("outside the vocabulary") != std::string::npos,
           "a token outside the vocabulary");
    r.prompt[3] = 5;
    server.submit(r);
    server.submit(r);
    EXPECT(error_of([&] { server.submit(r); }).find("queue is full") != std::string::npos, "a full queue");
    server.run();
    EXPECT(server.result(0).tokens.size() == 2 && server.result(1).tokens.size() == 2, "the queued requests ran");

    // a FULL sequence cannot decode past max_len: an error, not a dropped token
    Decoder decoder(model, full.get(), true, stream.get());
    const std::vector<int32_t> prompt = random_tokens(30, f.vocab, 2);
    model.prefill(full.get(), 0, prompt.data(), 30, true, stream.get());
    decoder.set_active({0}, stream.get());
    EXPECT(error_of([&] { decoder.enqueue_steps(3, stream.get()); }).find("room for 2") != std::string::npos,
           "more steps than a FULL cache has room for");
    EXPECT(error_of([&] { decoder.set_active({0, 0}, stream.get()); }).find("twice") != std::string::npos,
           "a slot listed twice");
    EXPECT(error_of([&] { model.prefill(full.get(), 7, prompt.data(), 3, true, stream.get()); })
                   .find("outside the 2 slots") != std::string::npos,
           "prefill into a slot outside the table");

    // caches the engine cannot use
    rkv_cache_params p;
    rkv_params_default(&p, sizeof p);
    model.set_cache_shape(p);
    p.auto_compress = 1;
    rkv_cache *raw = nullptr;
    check_rkv(rkv_cache_create(&p, &raw), "rkv_cache_create");
    auto autocompress = own(raw);
    const std::string compressing = error_of([&] { Decoder d(model, autocompress.get(), true, stream.get()); });
    EXPECT(compressing.find("auto_compress") != std::string::npos, "a cache that compresses inside appends is refused");
    p.auto_compress = 0;
    p.max_seqs = 3;
    check_rkv(rkv_cache_create(&p, &raw), "rkv_cache_create");
    auto wrong_slots = own(raw);
    const std::string mismatch = error_of([&] { Decoder d(model, wrong_slots.get(), true, stream.get()); });
    EXPECT(mismatch.find("does not match") != std::string::npos, "a cache with another slot count is refused");
    std::printf("errors: too little memory, prompt too long, slot, token, queue, room, caches: messages\n");
}

Fixture load(const std::string &name, const test::SyntheticModel &spec, const std::string &dir, Stream &stream) {
    Fixture f;
    f.name = name;
    const std::string path = dir + "/" + name + ".gguf";
    test::write_synthetic_gguf(path, spec);
    f.file = std::make_unique<GgufFile>(path);
    f.cpu = std::make_unique<Model>(*f.file);
    f.weights = std::make_unique<DeviceWeights>(DeviceWeights::load(*f.file, stream.get()));
    f.vocab = spec.vocab;
    return f;
}

}  // namespace

int main() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        std::printf("SKIP: no CUDA device (run on an H100/H200: examples/engine/cuda/gpu_check_engine.sh)\n");
        return 77;
    }
    char dir_template[] = "/tmp/rkv_gpu_engine_XXXXXX";
    const char *dir = mkdtemp(dir_template);
    if (!dir) {
        std::perror("mkdtemp");
        return 1;
    }
    try {
        require_device();
        Stream stream;
        test::SyntheticModel a;  // head_dim 64, 2 query heads per KV head, separate output matrix
        a.layers = 3;
        test::SyntheticModel b;  // head_dim 128, 4 query heads per KV head, tied output
        b.layers = 2;
        b.dim = 512;
        b.heads = 4;
        b.kv_heads = 1;
        b.head_dim = 128;
        b.mlp = 768;
        b.vocab = 384;
        b.tied_output = true;
        b.seed = 2;
        Fixture fa = load("model-a", a, dir, stream), fb = load("model-b", b, dir, stream);
        for (Fixture *f : {&fa, &fb}) {
            compare_with_cpu(*f, RKV_METHOD_FULL, {30}, {0}, 1, 32, 1, true);
            compare_with_cpu(*f, RKV_METHOD_FULL, {7, 23, 41}, {0, 1, 3}, 4, 24, 2, true);
            compare_with_cpu(*f, RKV_METHOD_RKV, {33}, {0}, 1, 48, 3, false);
            compare_with_cpu(*f, RKV_METHOD_RKV, {7, 23, 41, 70}, {0, 1, 2, 3}, 4, 48, 4, false);
        }
        graph_equals_eager(fa, RKV_DTYPE_BF16);
        graph_equals_eager(fb, RKV_DTYPE_BF16);
        graph_equals_eager(fa, RKV_DTYPE_FP8_E4M3);
        graph_equals_eager(fb, RKV_DTYPE_FP8_E4M3);
        continuous_batching(fa);
        if (counter_sees_librkv(fa)) {
            one_graph_for_changing_slots(fa);
            one_graph_for_changing_slots(fb);
            serving_waits_once_per_chunk(fa);
        }
        errors(fa);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "FAILED with an exception: %s\n", e.what());
        ++g_failures;
    }
    for (const char *name : {"model-a.gguf", "model-b.gguf"}) unlink((std::string(dir) + "/" + name).c_str());
    rmdir(dir);
    return finish();
}
