#include "bench_measure.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "kernels.h"
#include "session.h"
#include "shape.h"

namespace engine::cuda {

namespace {

constexpr int32_t kSourceTokens = 512;  // random tokens the filler appends from (each call: up to this many per slot)

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[v.size() / 2];
}

rkv_cache_params params_for(const Config &shape, const CacheSpec &spec, int32_t batch) {
    rkv_cache_params p;
    check_rkv(rkv_params_default(&p, sizeof p), "rkv_params_default");
    p.max_seqs = batch;
    p.num_layers = shape.n_layers;
    p.num_kv_heads = shape.n_kv_heads;
    p.num_q_heads = shape.n_heads;
    p.head_dim = shape.head_dim;
    p.dtype = spec.dtype;
    p.device_type = RKV_DEVICE_CUDA;
    p.auto_compress = 0;
    p.method = spec.method;
    if (spec.method == RKV_METHOD_FULL) {
        p.max_len = spec.max_len;
    } else {
        p.budget = spec.budget;
        p.buffer = spec.buffer;
    }
    return p;
}

}  // namespace

std::string CacheSpec::label() const {
    if (method == RKV_METHOD_FULL) return "Full " + std::to_string(max_len);
    return std::string(method == RKV_METHOD_RKV ? "R-KV " : kMethodNames[method]) + std::to_string(budget) + "+" +
           std::to_string(buffer);
}

Ceilings measure_ceilings(cudaStream_t stream) {
    Ceilings c;
    EventTimer timer;
    {
        const size_t bytes = size_t(1) << 30;
        DeviceBuffer a(bytes, "copy ceiling source"), b(bytes, "copy ceiling target");
        check_cuda(cudaMemsetAsync(a.data(), 1, bytes, stream), "cudaMemsetAsync");
        std::vector<double> ms;
        for (int r = 0; r < 12; ++r) {
            timer.start(stream);
            check_cuda(cudaMemcpyAsync(b.data(), a.data(), bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync");
            const double m = timer.stop_ms(stream);
            if (r >= 2) ms.push_back(m);
        }
        c.copy_gbs = 2.0 * double(bytes) / (median(ms) * 1e-3) / 1e9;
    }
    {
        const int64_t n = 8192;
        DeviceBuffer a(size_t(n * n) * 2, "matmul ceiling A"), b(size_t(n * n) * 2, "matmul ceiling B"),
            y(size_t(n * n) * 2, "matmul ceiling C");
        fill_random(a.as<bf16>(), uint64_t(n * n), 1.0f, 1, stream);
        fill_random(b.as<bf16>(), uint64_t(n * n), 1.0f, 2, stream);
        check_launch("random matrices");
        GemmContext context;
        GemmPlan plan(context, n, n, n, Output::BF16);
        std::vector<double> ms;
        for (int r = 0; r < 10; ++r) {
            timer.start(stream);
            plan.run(a.as<bf16>(), b.as<bf16>(), y.data(), stream);
            const double m = timer.stop_ms(stream);
            if (r >= 3) ms.push_back(m);
        }
        c.matmul_tflops = plan.flops() / (median(ms) * 1e-3) / 1e12;
    }
    return c;
}

ModelOptions bench_model_options(int32_t batch) {
    ModelOptions o;
    o.slots = batch;
    o.prefill_rows = 16;
    o.history_rows = 64;
    return o;
}

uint64_t batch_bytes(const Config &shape, const CacheSpec &spec, int32_t batch) {
    const rkv_cache_params p = params_for(shape, spec, batch);
    uint64_t bytes = 0;
    if (rkv_cache_size(&p, &bytes) != RKV_OK) return UINT64_MAX;  // e.g. a size that overflows
    return bytes + GpuModel::activation_bytes(shape, bench_model_options(batch));
}

int32_t capacity(const Config &shape, const CacheSpec &spec, uint64_t available) {
    auto fits = [&](int32_t b) { return batch_bytes(shape, spec, b) <= available; };
    if (!fits(1)) return 0;
    int32_t lo = 1, hi = 2;
    while (hi < (1 << 20) && fits(hi)) lo = hi, hi *= 2;
    while (hi - lo > 1) {
        const int32_t mid = lo + (hi - lo) / 2;
        (fits(mid) ? lo : hi) = mid;
    }
    return lo;
}

Rig::Rig(const DeviceWeights &weights, const CacheSpec &spec, int32_t batch, cudaStream_t stream)
    : weights_(weights), spec_(spec), stream_(stream), batch_(batch) {
    const Config &c = weights.config();
    for (int attempt = 0;; ++attempt) {
        try {
            model_ = std::make_unique<GpuModel>(weights, bench_model_options(batch_));
            const rkv_cache_params p = params_for(c, spec, batch_);
            check_rkv(rkv_cache_create(&p, &cache_), "rkv_cache_create");
            break;
        } catch (const Error &e) {
            model_.reset();
            const bool out_of_memory = std::string(e.what()).find("out of") != std::string::npos ||
                                       std::string(e.what()).find("OUT_OF_MEMORY") != std::string::npos;
            if (!out_of_memory || attempt == 3 || batch_ < 2) throw;
            const int32_t smaller = std::max(1, batch_ * 97 / 100);
            std::printf("    (batch %d does not fit: %s; trying %d)\n", batch_, e.what(), smaller);
            batch_ = smaller;
        }
    }
    decoder_ = std::make_unique<Decoder>(*model_, cache_, true, stream);
    const size_t kv = size_t(c.n_kv_heads) * size_t(c.head_dim), q = size_t(c.n_heads) * size_t(c.head_dim);
    source_ = DeviceBuffer(size_t(kSourceTokens) * (2 * kv + q) * 2, "random tokens for the cache");
    fill_random(source_.as<bf16>(), uint64_t(kSourceTokens) * (2 * kv + q), 1.0f, 77, stream);
    check_launch("random tokens");
    std::vector<int32_t> all(static_cast<size_t>(batch_));
    for (int32_t s = 0; s < batch_; ++s) all[size_t(s)] = s;
    decoder_->set_active(all, stream);
    tokens_.reserve(size_t(64) * size_t(batch_));
}

Rig::~Rig() {
    decoder_.reset();
    if (cache_) rkv_cache_destroy(cache_);
}

void Rig::fill_to(const std::vector<int32_t> &held) {
    const Config &c = weights_.config();
    const int64_t kv = int64_t(c.n_kv_heads) * c.head_dim, q = int64_t(c.n_heads) * c.head_dim;
    bf16 *k_src = source_.as<bf16>(), *v_src = k_src + kSourceTokens * kv, *q_src = v_src + kSourceTokens * kv;
    std::vector<int32_t> current(static_cast<size_t>(batch_)), ids, counts;
    for (int32_t s = 0; s < batch_; ++s)
        check_rkv(rkv_seq_length(cache_, s, 0, nullptr, &current[size_t(s)]), "rkv_seq_length");
    rkv_append_args a;
    std::memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    // every entry reads tokens 0.. of the same random source
    a.k = rkv_tensor{k_src, RKV_DTYPE_BF16, c.n_kv_heads, c.head_dim, 0, kv, c.head_dim, 0};
    a.v = rkv_tensor{v_src, RKV_DTYPE_BF16, c.n_kv_heads, c.head_dim, 0, kv, c.head_dim, 0};
    a.q = rkv_tensor{q_src, RKV_DTYPE_BF16, c.n_heads, c.head_dim, 0, q, c.head_dim, 0};
    for (;;) {
        ids.clear();
        counts.clear();
        for (int32_t s = 0; s < batch_; ++s)
            if (current[size_t(s)] < held[size_t(s)]) {
                ids.push_back(s);
                counts.push_back(std::min(held[size_t(s)] - current[size_t(s)], kSourceTokens));
            }
        if (ids.empty()) break;
        a.num_seqs = int32_t(ids.size());
        a.seq_ids = ids.data();
        a.num_tokens = counts.data();
        for (int32_t layer = 0; layer < c.n_layers; ++layer) {
            a.layer = layer;
            check_rkv(rkv_append(cache_, &a, stream_), "rkv_append (filling the cache)");
        }
        for (size_t i = 0; i < ids.size(); ++i) current[size_t(ids[i])] += counts[i];
    }
    for (int32_t s = 0; s < batch_; ++s) {
        int64_t logical = 0;
        check_rkv(rkv_seq_length(cache_, s, 0, &logical, nullptr), "rkv_seq_length");
        model_->set_slot(s, int32_t((int64_t(s) * 7919 + 13) % c.vocab_size), int32_t(logical), stream_);
    }
    check_cuda(cudaStreamSynchronize(stream_), "filling the cache");
}

double Rig::mean_held() const {
    double sum = 0;
    for (int32_t s = 0; s < batch_; ++s) {
        int32_t held = 0;
        check_rkv(rkv_seq_length(cache_, s, 0, nullptr, &held), "rkv_seq_length");
        sum += held;
    }
    return sum / batch_;
}

double Rig::time_steps(int32_t steps, double *compress_ms, int64_t *compressions) {
    const int32_t history = model_->options().history_rows;
    auto run = [&](int32_t count, double *compress_total, int64_t *compressed) {
        EventTimer compress_timer;
        for (int32_t done = 0; done < count;) {
            compress_timer.start(stream_);
            const int32_t due = decoder_->compress_due(stream_);
            if (due > 0) {
                const double ms = compress_timer.stop_ms(stream_);
                if (compress_total) *compress_total += ms;
                if (compressed) *compressed += due;
            }
            const int32_t k = std::min({decoder_->room(), count - done, history});
            if (k < 1) throw Error("no room to decode (a FULL cache at max_len)");
            decoder_->enqueue_steps(k, stream_);
            decoder_->collect(tokens_, stream_);
            done += k;
        }
    };
    if (!warm_) run(2, nullptr, nullptr);  // the first replays upload the graph: not timed
    warm_ = true;
    EventTimer timer;
    double compress_total = 0;
    int64_t compressed = 0;
    timer.start(stream_);
    run(steps, &compress_total, &compressed);
    const double ms = timer.stop_ms(stream_);
    if (compress_ms) *compress_ms = compress_total;
    if (compressions) *compressions = compressed;
    return ms / steps;
}

void Rig::compress_all() {
    if (spec_.method == RKV_METHOD_FULL) return;
    // Every sequence full, then one batched compression of all of them (one call per
    // sequence would compress them one at a time).
    fill_all_to(capacity());
    check_rkv(rkv_compress(cache_, RKV_ALL, RKV_ALL, stream_), "rkv_compress");
    check_cuda(cudaStreamSynchronize(stream_), "compression");
}

double Rig::replay_ms(cudaGraphExec_t graph, int32_t replays) {
    EventTimer timer;
    check_cuda(cudaGraphLaunch(graph, stream_), "cudaGraphLaunch");  // warm-up (uploads the graph): replays + 1 in all
    timer.start(stream_);
    for (int32_t r = 0; r < replays; ++r) check_cuda(cudaGraphLaunch(graph, stream_), "cudaGraphLaunch");
    return timer.stop_ms(stream_) / replays;
}

StepBreakdown Rig::breakdown(int32_t replays) {
    const Config &c = weights_.config();
    StepBreakdown b;
    b.batch = batch_;
    const int32_t room = decoder_->room();
    replays = std::min(replays, room / 2 - 1);  // the step and the append graphs each take replays + 1 tokens
    if (replays < 1) throw Error("no room left in the cache to take a step apart");
    b.mean_held = mean_held();
    auto time_phases = [&](unsigned phases) {
        cudaGraphExec_t graph = decoder_->capture_phases(phases, stream_);
        double ms = 0;
        try {
            ms = replay_ms(graph, replays);
        } catch (...) {
            cudaGraphExecDestroy(graph);
            throw;
        }
        cudaGraphExecDestroy(graph);
        if (phases & kPhaseAppend) decoder_->advance(replays + 1);  // what the replays appended, told to librkv
        return ms;
    };
    b.step_ms = time_phases(kPhaseAll);
    b.matmul_ms = time_phases(kPhaseMatmul);
    b.attend_ms = time_phases(kPhaseAttend);
    b.append_ms = time_phases(kPhaseAppend);
    b.other_ms = time_phases(kPhaseOther);
    // K + V of one token, as stored: bf16 rows, or E4M3 rows plus a float32 scale per (token, KV head)
    const bool fp8 = spec_.dtype == RKV_DTYPE_FP8_E4M3;
    const double row_bytes = fp8 ? c.head_dim * 1.0 + 4.0 : c.head_dim * 2.0;
    const double per_token_kv = 2.0 * c.n_layers * c.n_kv_heads * row_bytes;
    b.kv_bytes = per_token_kv * b.mean_held * batch_;
    b.weight_bytes = double(weights_.bytes());
    b.matmul_flops = 2.0 * double(matmul_params(c)) * batch_;
    // append: f32 K and V (and Q, kept in bf16 for the observation window) read, rows written as stored
    const double q_heads = spec_.method == RKV_METHOD_FULL ? 0.0 : double(c.n_heads);
    b.append_bytes = double(batch_) * c.n_layers *
                     (2.0 * c.n_kv_heads * (c.head_dim * 4.0 + row_bytes) + q_heads * c.head_dim * (4.0 + 2.0));
    return b;
}

}  // namespace engine::cuda
