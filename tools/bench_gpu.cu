// rkv_bench_gpu: the CUDA backend on the R1-Distill-Llama-8B shape (32 layers,
// 8 KV heads, 32 query heads, head_dim 128, bf16), budget 1024 + buffer 128,
// through the public C API, timed with CUDA events on one stream:
//   - compression of every layer of every sequence (all full), batch 1, 8, 64,
//     256, on every matrix-product path (cuBLASLt, fused mma.sync, wgmma): ms,
//     achieved TFLOP/s (of the nominal work below) against the measured bf16
//     matmul peak, the time against the floor (nominal work at that peak),
//     scratch bytes; then the time of each phase of one compression per path
//     (RKV_CUDA_PROFILE, phases synchronised) at the --profile batches;
//   - append of one decode token for batch 256 (one layer per call), eagerly and
//     replayed from a CUDA graph of the 32 layers: GB/s against the copy bandwidth;
//   - rkv_attend for batch 256 at length 1152: GB/s of K and V read.
// The ceilings are measured in the same run: a 1 GiB device-to-device copy
// (bytes read + written) and an 8192^3 bf16 cuBLASLt matmul.
//
//   rkv_bench_gpu [--batches 1,8,64,256] [--profile 1,64] [--repeats 5] [--keys gauss|shared|model]
//                 [--head-dim 64|128|256] [--json FILE]
//
// --head-dim: the same shape with another head_dim (the other kernel
// instances; the key kinds keep their cosine similarities).
//
// Keys: `gauss` (default) are independent normal vectors, whose cosine
// similarities never pass R-KV's threshold (0.5): the redundancy's worst case,
// every key Gram tile computed. `shared` adds one direction common to every key
// of a head, as real keys have (the golden cases' planted keys too): pairwise
// cosine about 0.4, 6.5% of pairs above 0.5; 92% of keys have one of those
// among the last 128 keys, but a row tile of 128 keys walks 7 of 9 column
// tiles on average before every key has found one (a NumPy replica of this
// generator). `model` adds a stronger common direction (|m|^2 = 101: cosine
// about 0.44, 19% of pairs above 0.5), chosen so that the wgmma walk is as long
// as on a real model's keys: SmolLM2-135M's own held keys (`rkv_engine --method
// full --key-stats`, 1,146 keys per head, 30 layers) walk 2.00 of 9 column
// tiles per row tile and 1.64 per half, these 2.06 and 1.64 (the replica).
//
// Nominal work per (sequence, layer, KV head), N = 1152, C = N - 8, G*window = 32:
//   key Gram 2*N*N*d + window logits 2*32*C*d  (about 89 GFLOP per sequence).
// The fused path computes half the Gram (it is symmetric); TFLOP/s counts the
// nominal work either way, so the numbers of the two paths compare directly.
#define RKV_EXPERIMENTAL_API
#include <cublasLt.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <string>
#include <vector>

#include "rkv/rkv.h"

namespace {

#define CHECK(call)                                                                                  \
    do {                                                                                             \
        rkv_status status_ = (call);                                                                 \
        if (status_ != RKV_OK) {                                                                     \
            std::fprintf(stderr, "%s: %s: %s\n", #call, rkv_status_name(status_), rkv_error_message()); \
            std::exit(1);                                                                            \
        }                                                                                            \
    } while (0)
#define CUDA(call)                                                                                  \
    do {                                                                                            \
        cudaError_t error_ = (call);                                                                \
        if (error_ != cudaSuccess) {                                                                \
            std::fprintf(stderr, "%s: %s\n", #call, cudaGetErrorString(error_));                    \
            std::exit(1);                                                                           \
        }                                                                                           \
    } while (0)

constexpr int kLayers = 32, kKvHeads = 8, kQHeads = 32, kBudget = 1024, kBuffer = 128, kWindow = 8;
int head_dim = 128;  // --head-dim (the model's: 128)
constexpr int kCapacity = kBudget + kBuffer;

FILE *json = nullptr;
// --keys: Gaussian keys, or with a direction every key of a head shares.
enum class Keys { Gauss, Shared, Model };
Keys key_kind = Keys::Gauss;
const char *const kKeyNames[] = {"gauss", "shared", "model"};
const char *const kKeyWords[] = {"gauss", "shared direction", "shared direction, a model's walk"};
float shared_amplitude() { return key_kind == Keys::Shared ? 0.815f : key_kind == Keys::Model ? 0.89f : 0.0f; }

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

// Deterministic pseudo-normal bf16 values (sum of uniforms), different per index.
__global__ void fill_random(__nv_bfloat16 *x, size_t n, uint64_t seed) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
        uint64_t h = (i + 1) * 0x9e3779b97f4a7c15ull ^ seed;
        float sum = 0.0f;
        for (int k = 0; k < 4; ++k) {
            h ^= h >> 33;
            h *= 0xff51afd7ed558ccdull;
            h ^= h >> 29;
            sum += float(h >> 40) * (1.0f / 16777216.0f);
        }
        x[i] = __float2bfloat16((sum - 2.0f) * 1.7320508f);
    }
}

// Adds to each of `vectors` vectors of head_dim a direction m common to all,
// components +-amplitude (pseudo-random signs), to normal keys of |k|^2 ~ 128:
// amplitude 0.815 (|m|^2 = 85) makes their cosine similarity about 85 / 213 =
// 0.4, with a spread of about 0.07 (bf16 keys of |k|^2 = 128 +- 16); 0.89
// (|m|^2 = 101) about 0.44.
__global__ void add_shared_direction(__nv_bfloat16 *x, size_t vectors, int dim, float amplitude) {
    for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < vectors * dim;
         i += size_t(gridDim.x) * blockDim.x) {
        const uint32_t d = uint32_t(i % dim), sign = (d * 0x9e3779b9u) >> 31;
        x[i] = __float2bfloat16(__bfloat162float(x[i]) + (sign ? -amplitude : amplitude));
    }
}

struct Timer {
    cudaEvent_t start, stop;
    Timer() {
        CUDA(cudaEventCreate(&start));
        CUDA(cudaEventCreate(&stop));
    }
    ~Timer() {
        cudaEventDestroy(start);
        cudaEventDestroy(stop);
    }
    void begin(cudaStream_t s) { CUDA(cudaEventRecord(start, s)); }
    double end_ms(cudaStream_t s) {
        CUDA(cudaEventRecord(stop, s));
        CUDA(cudaEventSynchronize(stop));
        float ms = 0;
        CUDA(cudaEventElapsedTime(&ms, start, stop));
        return ms;
    }
};

// Device-to-device copy bandwidth (bytes read + written per second) of `bytes`.
double copy_bandwidth(size_t bytes, cudaStream_t stream, int repeats) {
    void *a = nullptr, *b = nullptr;
    CUDA(cudaMalloc(&a, bytes));
    CUDA(cudaMalloc(&b, bytes));
    CUDA(cudaMemsetAsync(a, 1, bytes, stream));
    Timer t;
    std::vector<double> ms;
    for (int r = 0; r < repeats + 2; ++r) {
        t.begin(stream);
        CUDA(cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, stream));
        const double m = t.end_ms(stream);
        if (r >= 2) ms.push_back(m);
    }
    CUDA(cudaFree(a));
    CUDA(cudaFree(b));
    return 2.0 * double(bytes) / (median(ms) * 1e-3);
}

// bf16 matmul rate of an n^3 cuBLASLt product on random data (TFLOP/s).
double matmul_peak(int n, cudaStream_t stream) {
    __nv_bfloat16 *a, *b, *c;
    const size_t count = size_t(n) * n;
    CUDA(cudaMalloc(&a, count * 2));
    CUDA(cudaMalloc(&b, count * 2));
    CUDA(cudaMalloc(&c, count * 2));
    fill_random<<<1024, 256, 0, stream>>>(a, count, 1);
    fill_random<<<1024, 256, 0, stream>>>(b, count, 2);
    void *workspace;
    const size_t workspace_bytes = 64u << 20;
    CUDA(cudaMalloc(&workspace, workspace_bytes));
    cublasLtHandle_t handle;
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t layout;
    cublasLtMatmulPreference_t preference;
    cublasLtCreate(&handle);
    cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F);
    cublasLtMatrixLayoutCreate(&layout, CUDA_R_16BF, n, n, n);
    cublasLtMatmulPreferenceCreate(&preference);
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace_bytes,
                                         sizeof workspace_bytes);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    cublasLtMatmulAlgoGetHeuristic(handle, desc, layout, layout, layout, layout, preference, 1, &result, &found);
    const float one = 1.0f, zero = 0.0f;
    Timer t;
    std::vector<double> ms;
    for (int r = 0; r < 8; ++r) {
        t.begin(stream);
        cublasLtMatmul(handle, desc, &one, a, layout, b, layout, &zero, c, layout, c, layout, &result.algo, workspace,
                       workspace_bytes, stream);
        const double m = t.end_ms(stream);
        if (r >= 3) ms.push_back(m);
    }
    cublasLtMatmulPreferenceDestroy(preference);
    cublasLtMatrixLayoutDestroy(layout);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(handle);
    CUDA(cudaFree(workspace));
    CUDA(cudaFree(a));
    CUDA(cudaFree(b));
    CUDA(cudaFree(c));
    return found ? 2.0 * double(n) * n * n / (median(ms) * 1e-3) / 1e12 : 0.0;
}

// Random tokens for up to `seqs` sequences x `tokens`, K/V [seq*tokens, 8, 128], Q [.., 32, 128].
struct Source {
    __nv_bfloat16 *k = nullptr, *v = nullptr, *q = nullptr;
    int seqs, tokens;
    Source(int seqs_, int tokens_, cudaStream_t stream) : seqs(seqs_), tokens(tokens_) {
        const size_t rows = size_t(seqs) * tokens;
        CUDA(cudaMalloc(&k, rows * kKvHeads * head_dim * 2));
        CUDA(cudaMalloc(&v, rows * kKvHeads * head_dim * 2));
        CUDA(cudaMalloc(&q, rows * kQHeads * head_dim * 2));
        fill_random<<<4096, 256, 0, stream>>>(k, rows * kKvHeads * head_dim, 11);
        if (key_kind != Keys::Gauss)
            add_shared_direction<<<4096, 256, 0, stream>>>(k, rows * kKvHeads, head_dim, shared_amplitude());
        fill_random<<<4096, 256, 0, stream>>>(v, rows * kKvHeads * head_dim, 12);
        fill_random<<<4096, 256, 0, stream>>>(q, rows * kQHeads * head_dim, 13);
        CUDA(cudaGetLastError());
    }
    ~Source() {
        cudaFree(k);
        cudaFree(v);
        cudaFree(q);
    }
};

// Append `count` tokens to every sequence of every layer: the source's tokens
// first .. first + count - 1 of each sequence (packed per sequence).
void append_tokens(rkv_cache *cache, const Source &src, int seqs, int count, cudaStream_t stream, int first = 0) {
    std::vector<int32_t> ids(seqs), counts(seqs, count);
    std::vector<int64_t> offsets(seqs);
    for (int i = 0; i < seqs; ++i) {
        ids[i] = i;
        offsets[i] = int64_t(i) * src.tokens + first;
    }
    rkv_append_args a;
    std::memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.num_seqs = seqs;
    a.seq_ids = ids.data();
    a.num_tokens = counts.data();
    a.token_offsets = offsets.data();
    a.k = rkv_tensor{src.k, RKV_DTYPE_BF16, kKvHeads, head_dim, 0, kKvHeads * head_dim, head_dim, 0};
    a.v = rkv_tensor{src.v, RKV_DTYPE_BF16, kKvHeads, head_dim, 0, kKvHeads * head_dim, head_dim, 0};
    a.q = rkv_tensor{src.q, RKV_DTYPE_BF16, kQHeads, head_dim, 0, kQHeads * head_dim, head_dim, 0};
    for (int layer = 0; layer < kLayers; ++layer) {
        a.layer = layer;
        CHECK(rkv_append(cache, &a, stream));
    }
}

rkv_cache *make_cache(int seqs) {
    rkv_cache_params p;
    CHECK(rkv_params_default(&p, sizeof p));
    p.max_seqs = seqs;
    p.num_layers = kLayers;
    p.num_kv_heads = kKvHeads;
    p.num_q_heads = kQHeads;
    p.head_dim = head_dim;
    p.dtype = RKV_DTYPE_BF16;
    p.device_type = RKV_DEVICE_CUDA;
    p.budget = kBudget;
    p.buffer = kBuffer;
    p.window = kWindow;
    p.auto_compress = 0;
    rkv_cache *cache = nullptr;
    CHECK(rkv_cache_create(&p, &cache));
    return cache;
}

// Bytes the cache holds beyond K, V, positions, state, query ring and lengths.
uint64_t scratch_bytes(const rkv_cache *cache, int seqs, uint64_t *kv_bytes) {
    rkv_stats s;
    std::memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    CHECK(rkv_cache_stats(cache, RKV_ALL, &s));
    const uint64_t slots = uint64_t(kLayers) * seqs * kKvHeads * kCapacity;
    const uint64_t fixed = s.bytes_kv_capacity + slots * 8 + uint64_t(kLayers) * seqs * kQHeads * kWindow * head_dim * 2 +
                           uint64_t(kLayers) * seqs * 4;
    *kv_bytes = s.bytes_kv_capacity;
    return s.bytes_allocated - fixed;
}

double nominal_flops(int seqs) {
    const double n = kCapacity, c = kCapacity - kWindow, rows = (kQHeads / kKvHeads) * kWindow;
    return double(seqs) * kLayers * kKvHeads * (2.0 * n * n * head_dim + 2.0 * rows * c * head_dim);
}

// Median ms of compressing every (sequence, layer) of a full cache, refilling
// the 128 evicted tokens between repeats (not timed) with tokens the cache has
// not held: the source holds kCapacity + (repeats + 1) kBuffer per sequence.
// (Until session 18 the refill appended the first 128 tokens again: copies of
// held keys, so every repeat but the first had 128 exact near-duplicates per
// head, which no decode produces and which the "no pair above tau" of
// Gaussian keys excludes.)
double time_compression(rkv_cache *cache, const Source &src, int seqs, int repeats, cudaStream_t stream) {
    Timer t;
    std::vector<double> ms;
    int fresh = kCapacity;  // the next token of the source not appended yet
    for (int r = 0; r < repeats + 1; ++r) {
        int32_t due = 0;
        CHECK(rkv_compress_due(cache, RKV_ALL, RKV_ALL, &due));
        if (!due) {
            append_tokens(cache, src, seqs, kBuffer, stream, fresh);
            fresh += kBuffer;
        }
        CUDA(cudaStreamSynchronize(stream));
        t.begin(stream);
        CHECK(rkv_compress(cache, RKV_ALL, RKV_ALL, stream));
        const double m = t.end_ms(stream);
        if (r > 0) ms.push_back(m);  // the first also plans and warms up
    }
    return median(ms);
}

struct Path {
    rkv_matmul_path path;
    const char *name;
};
constexpr Path kPaths[] = {{RKV_MATMUL_CUBLASLT, "cublaslt"},
                           {RKV_MATMUL_FUSED, "fused"},
                           {RKV_MATMUL_WGMMA, "wgmma"},
                           {RKV_MATMUL_WGMMA_INT8, "wgmma_int8"},
                           {RKV_MATMUL_AUTO, "auto"}};

// Every path at every batch, path after path (the newest last: a kernel fault
// there leaves the rows before it printed), then one row per batch comparing them.
void bench_compression(const std::vector<int> &batches, int repeats, double peak_tflops, cudaStream_t stream) {
    std::printf("\n== compression of all 32 layers (R1-Distill-Llama-8B shape, head_dim %d, bf16, B 1024 + 128, every "
                "sequence full)\n",
                head_dim);
    std::printf("floor = the nominal work at the measured bf16 matmul rate (%.0f TFLOP/s); x floor = ms / floor\n",
                peak_tflops);
    std::printf("%6s %10s %12s %10s %10s %12s %10s %9s %14s %8s\n", "batch", "path", "ms", "ms/seq", "floor ms",
                "TFLOP/s", "of peak", "x floor", "scratch MiB", "of KV");
    constexpr int kNumPaths = int(sizeof kPaths / sizeof kPaths[0]);
    std::vector<std::vector<double>> times(batches.size(), std::vector<double>(kNumPaths, 0.0));
    for (int pi = 0; pi < kNumPaths; ++pi) {
        const Path &path = kPaths[pi];
        for (size_t bi = 0; bi < batches.size(); ++bi) {
            const int seqs = batches[bi];
            rkv_cache *cache = make_cache(seqs);
            if (rkv_cache_set_matmul_path(cache, path.path) != RKV_OK) {
                std::printf("%6d %10s  (not run: %s)\n", seqs, path.name, rkv_error_message());
                rkv_cache_destroy(cache);
                continue;
            }
            Source src(seqs, kCapacity + (repeats + 1) * kBuffer, stream);
            append_tokens(cache, src, seqs, kCapacity, stream);
            uint64_t kv = 0;
            const uint64_t scratch = scratch_bytes(cache, seqs, &kv);
            const double floor_ms = nominal_flops(seqs) / (peak_tflops * 1e12) * 1e3;
            const double ms = time_compression(cache, src, seqs, repeats, stream);
            const double tflops = nominal_flops(seqs) / (ms * 1e-3) / 1e12;
            times[bi][pi] = ms;
            std::printf("%6d %10s %12.3f %10.4f %10.3f %12.1f %9.1f%% %8.2fx %14.1f %7.2f%%\n", seqs, path.name, ms,
                        ms / seqs, floor_ms, tflops, 100.0 * tflops / peak_tflops, ms / floor_ms,
                        double(scratch) / (1 << 20), 100.0 * double(scratch) / double(kv));
            if (json)
                std::fprintf(json,
                             "{\"bench\":\"compress\",\"batch\":%d,\"path\":\"%s\",\"ms\":%.4f,\"tflops\":%.2f,"
                             "\"peak_tflops\":%.1f,\"floor_ms\":%.4f,\"scratch_bytes\":%llu,\"kv_bytes\":%llu}\n",
                             seqs, path.name, ms, tflops, peak_tflops, floor_ms, (unsigned long long)scratch,
                             (unsigned long long)kv);
            std::fflush(stdout);
            rkv_cache_destroy(cache);
        }
    }
    std::printf("\n== paths side by side (ms; speed-up of each path over fused; fastest against the floor)\n");
    std::printf("%6s", "batch");
    for (const Path &path : kPaths) std::printf(" %10s ms %8s", path.name, "vs fused");
    std::printf(" %10s %9s %9s\n", "floor ms", "x floor", "of floor");
    for (size_t bi = 0; bi < batches.size(); ++bi) {
        const double floor_ms = nominal_flops(batches[bi]) / (peak_tflops * 1e12) * 1e3;
        const double fused = times[bi][1];
        double best = 0.0;
        std::printf("%6d", batches[bi]);
        for (int pi = 0; pi < kNumPaths; ++pi) {
            const double ms = times[bi][pi];
            if (ms > 0 && (best == 0.0 || ms < best)) best = ms;
            if (ms > 0) std::printf(" %13.3f %7.2fx", ms, fused > 0 ? fused / ms : 0.0);
            else std::printf(" %13s %8s", "-", "-");
        }
        std::printf(" %10.3f %8.2fx %8.1f%%\n", floor_ms, best > 0 ? best / floor_ms : 0.0,
                    best > 0 ? 100.0 * floor_ms / best : 0.0);
    }
    std::fflush(stdout);
}

// The time of each phase of one compression of every (sequence, layer), per
// path: a cache created with RKV_CUDA_PROFILE=1 prints its phase times to
// stderr when destroyed (phases synchronised, so they add up to more than the
// unprofiled time).
void bench_phases(const std::vector<int> &batches, cudaStream_t stream) {
    for (const Path &path : kPaths) {
        for (int seqs : batches) {
            Source src(seqs, kCapacity, stream);
            setenv("RKV_CUDA_PROFILE", "1", 1);
            rkv_cache *cache = make_cache(seqs);
            unsetenv("RKV_CUDA_PROFILE");
            if (rkv_cache_set_matmul_path(cache, path.path) != RKV_OK) {
                rkv_cache_destroy(cache);
                continue;
            }
            append_tokens(cache, src, seqs, kCapacity, stream);
            CUDA(cudaStreamSynchronize(stream));
            CHECK(rkv_compress(cache, RKV_ALL, RKV_ALL, stream));
            CUDA(cudaStreamSynchronize(stream));
            std::printf("\n== phases of one compression, batch %d, path %s:\n", seqs, path.name);
            std::fflush(stdout);
            rkv_cache_destroy(cache);  // prints the profile
            std::fflush(stderr);
        }
    }
}

// Append and attend at batch 256 (or the largest batch asked for).
void bench_decode(int seqs, double copy_bytes_per_s, cudaStream_t stream) {
    rkv_cache *cache = make_cache(seqs);
    Source src(seqs, kCapacity, stream);
    append_tokens(cache, src, seqs, kCapacity, stream);
    CUDA(cudaStreamSynchronize(stream));
    Timer t;

    // --- attend at length 1152 (every sequence full) -------------------------
    std::vector<int32_t> ids(seqs);
    for (int i = 0; i < seqs; ++i) ids[i] = i;
    __nv_bfloat16 *out;
    CUDA(cudaMalloc(&out, size_t(seqs) * kQHeads * head_dim * 2));
    const rkv_tensor q{src.q, RKV_DTYPE_BF16, kQHeads, head_dim, int64_t(kCapacity) * kQHeads * head_dim, 0, head_dim, 0};
    const rkv_tensor o{out, RKV_DTYPE_BF16, kQHeads, head_dim, int64_t(kQHeads) * head_dim, 0, head_dim, 0};
    std::vector<double> ms;
    for (int r = 0; r < 12; ++r) {
        const int layer = r % kLayers;
        t.begin(stream);
        rkv_attend_args attend{};
        attend.struct_size = sizeof attend;
        attend.layer = layer;
        attend.num_seqs = seqs;
        attend.seq_ids = ids.data();
        attend.q = q;
        attend.out = o;
        CHECK(rkv_attend(cache, &attend, stream));
        const double m = t.end_ms(stream);
        if (r >= 2) ms.push_back(m);
    }
    const double attend_ms = median(ms);
    const double kv_read = double(seqs) * kKvHeads * kCapacity * head_dim * 2 * 2;
    const double attend_gbs = kv_read / (attend_ms * 1e-3) / 1e9;

    // --- append one token (after a compression there are 128 free slots) -------
    CHECK(rkv_compress(cache, RKV_ALL, RKV_ALL, stream));
    rkv_append_args a;
    std::memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.num_seqs = seqs;
    a.seq_ids = ids.data();
    a.k = rkv_tensor{src.k, RKV_DTYPE_BF16, kKvHeads, head_dim, int64_t(kCapacity) * kKvHeads * head_dim, 0, head_dim, 0};
    a.v = rkv_tensor{src.v, RKV_DTYPE_BF16, kKvHeads, head_dim, int64_t(kCapacity) * kKvHeads * head_dim, 0, head_dim, 0};
    a.q = rkv_tensor{src.q, RKV_DTYPE_BF16, kQHeads, head_dim, int64_t(kCapacity) * kQHeads * head_dim, 0, head_dim, 0};
    // bytes read and written: K, V and Q rows of every sequence, positions and state
    const double moved = 2.0 * double(seqs) * (2 * kKvHeads + kQHeads) * head_dim * 2 + double(seqs) * kKvHeads * 8;
    ms.clear();
    for (int r = 0; r < 3; ++r) {  // eager: 32 layer calls per step
        t.begin(stream);
        for (int layer = 0; layer < kLayers; ++layer) {
            a.layer = layer;
            CHECK(rkv_append(cache, &a, stream));
        }
        ms.push_back(t.end_ms(stream) / kLayers);
    }
    const double eager_ms = median(ms);
    // graph: one decode step's 32 appends captured once, replayed
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    for (int layer = 0; layer < kLayers; ++layer) {
        a.layer = layer;
        CHECK(rkv_append(cache, &a, stream));
    }
    CUDA(cudaStreamEndCapture(stream, &graph));
    CUDA(cudaGraphInstantiate(&exec, graph, 0));
    CHECK(rkv_cache_sync_lengths(cache, stream));
    ms.clear();
    for (int r = 0; r < 8; ++r) {
        t.begin(stream);
        CUDA(cudaGraphLaunch(exec, stream));
        ms.push_back(t.end_ms(stream) / kLayers);
    }
    CHECK(rkv_cache_sync_lengths(cache, stream));
    const double graph_ms = median(ms);
    // the same bytes as one device-to-device copy (read + write counted)
    const double same_size_copy = copy_bandwidth(size_t(moved / 2), stream, 20);

    std::printf("\n== decode, batch %d (bf16)\n", seqs);
    std::printf("append 1 token, 1 layer, eager: %8.2f us  %8.1f GB/s  (%4.1f%% of copy %.0f GB/s; same-size copy %.0f GB/s)\n",
                eager_ms * 1e3, moved / (eager_ms * 1e-3) / 1e9, 100.0 * moved / (eager_ms * 1e-3) / copy_bytes_per_s,
                copy_bytes_per_s / 1e9, same_size_copy / 1e9);
    std::printf("append 1 token, 1 layer, graph: %8.2f us  %8.1f GB/s  (%4.1f%% of copy)\n", graph_ms * 1e3,
                moved / (graph_ms * 1e-3) / 1e9, 100.0 * moved / (graph_ms * 1e-3) / copy_bytes_per_s);
    std::printf("rkv_attend at 1152, 1 layer:   %8.2f us  %8.1f GB/s of K+V read (%4.1f%% of copy)\n", attend_ms * 1e3,
                attend_gbs, 100.0 * attend_gbs * 1e9 / copy_bytes_per_s);
    if (json) {
        std::fprintf(json, "{\"bench\":\"append\",\"batch\":%d,\"eager_us\":%.3f,\"graph_us\":%.3f,\"bytes\":%.0f,"
                           "\"copy_gbs\":%.1f,\"same_size_copy_gbs\":%.1f}\n",
                     seqs, eager_ms * 1e3, graph_ms * 1e3, moved, copy_bytes_per_s / 1e9, same_size_copy / 1e9);
        std::fprintf(json, "{\"bench\":\"attend\",\"batch\":%d,\"length\":%d,\"us\":%.3f,\"gbs\":%.1f,\"copy_gbs\":%.1f}\n",
                     seqs, kCapacity, attend_ms * 1e3, attend_gbs, copy_bytes_per_s / 1e9);
    }
    CUDA(cudaGraphExecDestroy(exec));
    CUDA(cudaGraphDestroy(graph));
    CUDA(cudaFree(out));
    rkv_cache_destroy(cache);
}

// --keys NAME: sets key_kind; false for an unknown name.
bool parse_keys(const char *name) {
    for (int kind = 0; kind < int(std::size(kKeyNames)); ++kind)
        if (!std::strcmp(name, kKeyNames[kind])) {
            key_kind = Keys(kind);
            return true;
        }
    return false;
}

}  // namespace

int main(int argc, char **argv) {
    std::vector<int> batches = {1, 8, 64, 256}, profile = {1, 64};
    int repeats = 5;
    for (int i = 1; i < argc; ++i) {
        if (!std::strcmp(argv[i], "--batches") && i + 1 < argc) {
            batches.clear();
            for (char *token = std::strtok(argv[++i], ","); token; token = std::strtok(nullptr, ","))
                batches.push_back(std::atoi(token));
        } else if (!std::strcmp(argv[i], "--profile") && i + 1 < argc) {
            profile.clear();
            for (char *token = std::strtok(argv[++i], ","); token; token = std::strtok(nullptr, ","))
                if (std::atoi(token) > 0) profile.push_back(std::atoi(token));
        } else if (!std::strcmp(argv[i], "--repeats") && i + 1 < argc) {
            repeats = std::max(1, std::atoi(argv[++i]));
        } else if (!std::strcmp(argv[i], "--keys") && i + 1 < argc && parse_keys(argv[i + 1])) {
            ++i;
        } else if (!std::strcmp(argv[i], "--head-dim") && i + 1 < argc &&
                   (!std::strcmp(argv[i + 1], "64") || !std::strcmp(argv[i + 1], "128") ||
                    !std::strcmp(argv[i + 1], "256"))) {
            head_dim = std::atoi(argv[++i]);
        } else if (!std::strcmp(argv[i], "--json") && i + 1 < argc) {
            json = std::fopen(argv[++i], "w");
        } else {
            const bool help = !std::strcmp(argv[i], "-h") || !std::strcmp(argv[i], "--help");
            std::fprintf(help ? stdout : stderr, "usage: %s [--batches 1,8,64,256] [--profile 1,64 (0: none)] "
                         "[--repeats 5] [--keys gauss|shared|model] [--head-dim 64|128|256] [--json FILE]\n", argv[0]);
            return help ? 0 : 2;
        }
    }
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        std::printf("no CUDA device: nothing to measure\n");
        return 77;
    }
    cudaDeviceProp prop;
    CUDA(cudaGetDeviceProperties(&prop, 0));
    cudaStream_t stream;
    CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const double copy = copy_bandwidth(size_t(1) << 30, stream, 10);
    const double peak = matmul_peak(8192, stream);
    std::printf("%s, %d SMs: device copy %.0f GB/s (read + write), bf16 matmul %.0f TFLOP/s (8192^3, cuBLASLt); "
                "keys: %s; head_dim %d\n",
                prop.name, prop.multiProcessorCount, copy / 1e9, peak, kKeyWords[int(key_kind)], head_dim);
    if (json)
        std::fprintf(json,
                     "{\"bench\":\"ceilings\",\"copy_gbs\":%.1f,\"matmul_tflops\":%.1f,\"keys\":\"%s\","
                     "\"head_dim\":%d}\n",
                     copy / 1e9, peak, kKeyNames[int(key_kind)], head_dim);
    bench_compression(batches, repeats, peak > 0 ? peak : 790.0, stream);
    bench_phases(profile, stream);
    bench_decode(*std::max_element(batches.begin(), batches.end()), copy, stream);
    if (json) std::fclose(json);
    CUDA(cudaStreamDestroy(stream));
    return 0;
}
