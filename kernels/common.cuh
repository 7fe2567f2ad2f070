// Device helpers shared by every kernel: storage types and conversions,
// compile-time dispatch over dtype and head dim, deterministic reductions,
// group pooling, cp.async and tensor-core (mma.sync, ldmatrix) primitives,
// and the ordered key the selection ranks by. Enum values are the public
// header's (rkv_dtype, rkv_pooling) and core/method.h's: no mirrors here.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "params.h"
#include "rkv/rkv.h"

namespace rkv::kernels {

// Compile-time dispatch over the storage dtype: the body sees `T`. FP8 storage
// takes the default branch, bf16: the type its scoring reads (the dequantised
// keys, scratch.keys_dequantised) and its query window are kept in. Kernels
// that touch FP8 rows themselves dispatch with RKV_DISPATCH_STORAGE (fp8.cuh).
#define RKV_DISPATCH_DTYPE(dtype, T, ...)                              \
    switch (dtype) {                                                   \
        case RKV_DTYPE_F32: {                                          \
            using T = float;                                           \
            __VA_ARGS__                                                \
        } break;                                                       \
        case RKV_DTYPE_F16: {                                          \
            using T = __half;                                          \
            __VA_ARGS__                                                \
        } break;                                                       \
        default: {                                                     \
            using T = __nv_bfloat16;                                   \
            __VA_ARGS__                                                \
        } break;                                                       \
    }

// Compile-time dispatch over the head dim: the body sees `D` (64, 128, 256, or 0
// for any other head dim, served by a runtime-sized path).
#define RKV_DISPATCH_HEAD_DIM(head_dim, D, ...) \
    switch (head_dim) {                         \
        case 64: {                              \
            constexpr int D = 64;               \
            __VA_ARGS__                         \
        } break;                                \
        case 128: {                             \
            constexpr int D = 128;              \
            __VA_ARGS__                         \
        } break;                                \
        case 256: {                             \
            constexpr int D = 256;              \
            __VA_ARGS__                         \
        } break;                                \
        default: {                              \
            constexpr int D = 0;                \
            __VA_ARGS__                         \
        } break;                                \
    }

// ---------------------------------------------------------------------------
// conversions (round to nearest even, as the CPU backend)

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

__host__ __device__ __forceinline__ int dtype_bytes(int32_t dtype) {
    return dtype == RKV_DTYPE_F32 ? 4 : dtype == RKV_DTYPE_FP8_E4M3 ? 1 : 2;
}

// Bytes of an element of the query window and history: the storage dtype's,
// bf16 for FP8 storage (QueryType in append.cuh).
__host__ __device__ __forceinline__ int query_dtype_bytes(int32_t dtype) {
    return dtype == RKV_DTYPE_FP8_E4M3 ? 2 : dtype_bytes(dtype);
}

// Element `index` of a buffer of a runtime dtype, as float.
__device__ __forceinline__ float load_any(const void *data, int32_t dtype, int64_t index) {
    switch (dtype) {
        case RKV_DTYPE_F32: return static_cast<const float *>(data)[index];
        case RKV_DTYPE_F16: return __half2float(static_cast<const __half *>(data)[index]);
        default: return __bfloat162float(static_cast<const __nv_bfloat16 *>(data)[index]);
    }
}

__device__ __forceinline__ void store_any(void *data, int32_t dtype, int64_t index, float x) {
    switch (dtype) {
        case RKV_DTYPE_F32: static_cast<float *>(data)[index] = x; return;
        case RKV_DTYPE_F16: static_cast<__half *>(data)[index] = __float2half_rn(x); return;
        default: static_cast<__nv_bfloat16 *>(data)[index] = __float2bfloat16_rn(x); return;
    }
}

// 16 bytes of T as floats (4 for float, 8 for 16-bit types).
template <typename T>
struct Vec16 {
    static constexpr int kCount = 16 / int(sizeof(T));
};

__device__ __forceinline__ void unpack16(const uint4 &raw, float *out, float) {
    out[0] = __uint_as_float(raw.x);
    out[1] = __uint_as_float(raw.y);
    out[2] = __uint_as_float(raw.z);
    out[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void unpack16(const uint4 &raw, float *out, __half) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __half22float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}
__device__ __forceinline__ void unpack16(const uint4 &raw, float *out, __nv_bfloat16) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&raw);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const float2 f = __bfloat1622float2(h[i]);
        out[2 * i] = f.x;
        out[2 * i + 1] = f.y;
    }
}

// ---------------------------------------------------------------------------
// reductions: fixed shuffle and summation orders, so results are reproducible

template <typename V>
__device__ __forceinline__ V warp_sum(V v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <typename V>
__device__ __forceinline__ V warp_max(V v) {
#pragma unroll
    for (int offset = 16; offset > 0; offset >>= 1) v = max(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

// The latest hit (largest index above a threshold, -1 for none) and the value
// there, over the lanes whose ids differ only in the bits kFirstOffset ..
// kLastOffset (powers of two): every such lane ends with the winner. Indices of
// hits differ between lanes, so the order of the steps does not change it.
template <int kFirstOffset, int kLastOffset>
__device__ __forceinline__ void keep_latest_over_lanes(int32_t &latest, float &value) {
#pragma unroll
    for (int offset = kFirstOffset; offset <= kLastOffset; offset <<= 1) {
        const int32_t other_latest = __shfl_xor_sync(0xffffffffu, latest, offset);
        const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
        if (other_latest > latest) {
            latest = other_latest;
            value = other_value;
        }
    }
}

// Sum over the block; every thread gets the same total (warp totals are added
// in warp order). `shared` holds 32 values.
template <typename V>
__device__ __forceinline__ V block_sum(V v, V *shared) {
    v = warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();  // the previous use of `shared` is over
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    V total = shared[0];
    for (int w = 1; w < warps; ++w) total += shared[w];
    return total;
}

template <typename V>
__device__ __forceinline__ V block_max(V v, V *shared) {
    v = warp_max(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) shared[warp] = v;
    __syncthreads();
    V total = shared[0];
    for (int w = 1; w < warps; ++w) total = max(total, shared[w]);
    return total;
}

// ---------------------------------------------------------------------------
// group pooling: the query heads of one KV head's group share one logit per
// key, as the CPU's pool_groups computes it: the max, or the sum times 1/G.

// logit(g) for g = 0 .. groups-1, pooled. Every thread of a warp that calls it
// must call it (logit may hold warp shuffles).
template <typename Logit>
__device__ __forceinline__ float pool_group(rkv_pooling pooling, int32_t groups, Logit &&logit) {
    float value = 0.0f;
    for (int32_t g = 0; g < groups; ++g) {
        const float x = logit(g);
        if (g == 0) value = x;
        else if (pooling == RKV_POOLING_MAX) value = fmaxf(value, x);
        else value += x;
    }
    if (pooling == RKV_POOLING_MEAN && groups > 1) value *= 1.0f / float(groups);
    return value;
}

// ---------------------------------------------------------------------------
// cp.async: 16-byte global -> shared copies that bypass the registers

__device__ __forceinline__ uint32_t shared_address(const void *pointer) {
    return uint32_t(__cvta_generic_to_shared(pointer));
}

// valid false: fill the 16 bytes with zeros and read nothing.
__device__ __forceinline__ void cp_async_16(uint32_t shared, const void *global, bool valid) {
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(global), "r"(bytes));
}
// A 4-byte copy (a float: FP8 scales); valid false: zeros. (.ca: 4-byte
// copies may not bypass L1.)
__device__ __forceinline__ void cp_async_4(uint32_t shared, const void *global, bool valid) {
    const int bytes = valid ? 4 : 0;
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(shared), "l"(global), "r"(bytes));
}
// cp_async_16 for a stream read once, front to back (attention's K/V rows): the
// L2 fetches 128 bytes from HBM per miss instead of the minimum, so the next
// copies of the row find their bytes there.
__device__ __forceinline__ void cp_async_16_stream(uint32_t shared, const void *global, bool valid) {
    const int bytes = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global.L2::128B [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(global), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Wait until at most kPending committed groups are still in flight.
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }

// In a ring of kStages buffers that loads stages 0 .. kStages-2 up front and
// stage s + kStages - 1 right after stage s's wait: wait until stage `stage`
// (of `stages`) has landed. The groups committed after it may stay in flight:
// kStages - 2 of them, fewer near the end (a fixed count there would let the
// wait return before this stage's copies land).
template <int kStages>
__device__ __forceinline__ void cp_async_wait_stage(int32_t stage, int32_t stages) {
    static_assert(kStages >= 2 && kStages <= 6, "up to four groups in flight behind the one waited for");
    const int32_t later = min(kStages - 2, stages - 1 - stage);
    if (later >= 4) cp_async_wait<4>();
    else if (later == 3) cp_async_wait<3>();
    else if (later == 2) cp_async_wait<2>();
    else if (later == 1) cp_async_wait<1>();
    else cp_async_wait<0>();
}

// ---------------------------------------------------------------------------
// tensor cores: mma.sync m16n8k16 (f16/bf16 in, float32 accumulate) and
// ldmatrix of four 8x8 b16 matrices from shared memory

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

// Four 8x8 b16 matrices transposed: thread t gets, of each matrix, the elements
// (rows 2(t%4), 2(t%4)+1; column t/4): the B fragment of m16n8k16 from a
// row-major [k][n] tile (decode attention's V rows).
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

// ---------------------------------------------------------------------------
// selection order (src/selection.cpp): higher score first, equal scores keep
// the higher slot, NaN ranks with -inf, below every number.

// Maps a score to bits whose unsigned order is the score order (-0 == +0, NaN == -inf).
__device__ __forceinline__ uint32_t ordered_score_bits(float score) {
    if (isnan(score)) score = -INFINITY;
    if (score == 0.0f) score = 0.0f;
    const uint32_t bits = __float_as_uint(score);
    return (bits & 0x80000000u) ? ~bits : (bits | 0x80000000u);
}

// Larger key = kept first. Never 0, which marks a protected candidate.
__device__ __forceinline__ uint64_t selection_key(float score, int32_t slot) {
    return (uint64_t(ordered_score_bits(score)) << 32) | uint32_t(slot);
}

// ---------------------------------------------------------------------------
// index helpers

// (seq, head, slot) of a layer's positions/state; times head_dim for K and V.
__device__ __forceinline__ int64_t slot_index(const CacheLayer &c, int32_t seq, int32_t head,
                                              int32_t slot) {
    return (int64_t(seq) * c.kv_heads + head) * c.capacity + slot;
}

// First element of (seq, query head, ring slot) in the query ring.
__device__ __forceinline__ int64_t query_index(const CacheLayer &c, int32_t seq, int32_t q_head,
                                               int32_t ring) {
    return ((int64_t(seq) * c.q_heads + q_head) * c.window + ring) * c.head_dim;
}

// First element of (seq, query head, history slot) in the query history.
__device__ __forceinline__ int64_t history_index(const CacheLayer &c, int32_t seq, int32_t q_head,
                                                 int32_t slot) {
    return ((int64_t(seq) * c.q_heads + q_head) * c.history + slot) * c.head_dim;
}

// ---------------------------------------------------------------------------
// compression jobs

// The memory of the job's layer: p.cache (layer 0) moved `job.layer` layers on.
__device__ __forceinline__ CacheLayer job_cache(const CompressParams &p, const Job &job) {
    CacheLayer c = p.cache;
    const int64_t slots = int64_t(job.layer) * p.layer_slots;
    const int64_t row_bytes = int64_t(c.head_dim) * dtype_bytes(c.dtype);
    c.keys = static_cast<char *>(c.keys) + slots * row_bytes;
    c.values = static_cast<char *>(c.values) + slots * row_bytes;
    c.positions += slots;
    c.state += slots;
    if (c.k_scale) c.k_scale += slots;
    if (c.v_scale) c.v_scale += slots;
    const int64_t query_element = query_dtype_bytes(c.dtype);
    c.queries = static_cast<char *>(c.queries) + int64_t(job.layer) * p.layer_queries * query_element;
    if (c.history_queries)
        c.history_queries = static_cast<char *>(c.history_queries) + int64_t(job.layer) * p.layer_history * query_element;
    const int32_t book = job.layer * c.max_seqs;
    c.lengths += book;
    c.logical += book;
    c.queries_valid += book;
    c.compressions += book;
    c.dropped += book;
    c.recent += book;
    c.pending += book;
    c.layer = job.layer;
    return c;
}

// True if the job of this block still holds what the host planned.
__device__ __forceinline__ bool job_active(const CompressParams &p, const Job &job) {
    return p.cache.lengths[job.layer * p.cache.max_seqs + job.seq] == job.held;
}

// Offset of (group job jj, head h) in the [J, H, cap] scratch arrays.
__device__ __forceinline__ int64_t scratch_row(const CompressParams &p, int32_t jj, int32_t h) {
    return (int64_t(jj) * p.cache.kv_heads + h) * p.cache.capacity;
}

// The int8 keys of (group job jj, head h): scratch.keys_int8 rows
// [J, H, tiles * kGramTile] of 128 bytes (kernels/params.h).
__device__ __forceinline__ int8_t *keys_int8_rows(const CompressParams &p, int32_t jj, int32_t h) {
    return p.scratch.keys_int8 + (int64_t(jj) * p.cache.kv_heads + h) * p.scratch.tiles * kGramTile * 128;
}

// Rows first_row .. first_row + 127 (kGramTile) of a [*, D] matrix of 16-bit
// keys into a shared-memory tile by kThreads threads, 16-byte chunk `chunk` of
// row `row` at tile + offset(row, chunk) (the tile's layout: the ldmatrix
// swizzle of gram_fused.cuh, or wgmma's SW128); rows >= n are zeros. The
// thread count is known at compile time, so each thread copies one chunk of
// every (kThreads / (D / 8))th row and its copies differ by constant offsets
// (a loop that recomputes the row, the chunk and both addresses per copy took
// 26 instructions each in the Gram kernel's SASS); a whole tile (all but a
// head's last) is copied without bounds checks.
template <typename T, int D, int kThreads, typename Offset>
__device__ __forceinline__ void copy_key_tile(uint32_t tile, const T *source, int32_t first_row, int32_t n,
                                              Offset offset) {
    constexpr int kChunks = D / 8, kRowsPerPass = kThreads / kChunks;
    static_assert(kThreads % kChunks == 0 && kGramTile % kRowsPerPass == 0, "whole passes of whole rows");
    const int row0 = threadIdx.x / kChunks, chunk = threadIdx.x % kChunks;
    const T *from = source + int64_t(first_row + row0) * D + chunk * 8;
    if (first_row + kGramTile <= n) {
#pragma unroll
        for (int pass = 0; pass < kGramTile / kRowsPerPass; ++pass)
            cp_async_16(tile + offset(row0 + pass * kRowsPerPass, chunk), from + pass * kRowsPerPass * D, true);
        return;
    }
#pragma unroll
    for (int pass = 0; pass < kGramTile / kRowsPerPass; ++pass) {
        const int row = row0 + pass * kRowsPerPass;
        const bool valid = first_row + row < n;
        cp_async_16(tile + offset(row, chunk), valid ? from + pass * kRowsPerPass * D : source, valid);
    }
}

// 16 bytes of shared memory at a shared address (16-byte aligned) in one load.
// (Through a uint4 pointer into a shared tile, the compiler issued four 4-byte
// loads.)
__device__ __forceinline__ uint4 load_shared_16(uint32_t address) {
    uint4 v;
    asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];\n" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(address));
    return v;
}

// k^_r . W - k^_r . k^_r for row `row` of a shared-memory tile of 16-bit keys
// (16-byte chunk c of the row at tile + offset(row, c), as copy_key_tile lays
// it out), inv_r = 1 / (|k_r| + 1e-8) and w [D] (16-byte aligned) the sum of
// the head's normalised keys: the row's sum of S over every key (S's diagonal
// is 0), with no Gram. Per 8 elements, one 16-byte load of the row and two of
// W: as 4 + 8 scalar loads they were the most instructions of the Gram
// kernels outside their walks (wgmma Gram 6.23-6.28 -> 5.99-6.01 ms at batch
// 64 on model keys; the arithmetic, and so the sums, unchanged).
template <typename T, int D, typename Offset>
__device__ __forceinline__ float row_sum_from_w(const char *tile, int row, float inv_r, const float *w,
                                                Offset offset) {
    const uint32_t tile_address = shared_address(tile), w_address = shared_address(w);
    float dot_w = 0.0f, dot_self = 0.0f;
#pragma unroll 4
    for (int chunk = 0; chunk < D / 8; ++chunk) {
        const uint4 w_low = load_shared_16(w_address + chunk * 32), w_high = load_shared_16(w_address + chunk * 32 + 16);
        const float w_chunk[8] = {__uint_as_float(w_low.x),  __uint_as_float(w_low.y),  __uint_as_float(w_low.z),
                                  __uint_as_float(w_low.w),  __uint_as_float(w_high.x), __uint_as_float(w_high.y),
                                  __uint_as_float(w_high.z), __uint_as_float(w_high.w)};
        float values[8];
        unpack16(load_shared_16(tile_address + offset(row, chunk)), values, T());
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            const float k_hat = values[e] * inv_r;
            dot_w += k_hat * w_chunk[e];
            dot_self += k_hat * k_hat;
        }
    }
    return dot_w - dot_self;
}

// One element of W (the sum of every normalised key of a head): its per-tile
// partials partial[t * D], t < tiles (written by the importance kernels), added
// in tile order. The loads go out kWPartialLoads at a time: one at a time,
// each add waited for its load (the Gram kernels' top prologue stall).
template <int D>
__device__ __forceinline__ float sum_w_partials(const float *partial, int32_t tiles) {
    float sum = 0.0f;
    int32_t t = 0;
    for (; t + kWPartialLoads <= tiles; t += kWPartialLoads) {
        float part[kWPartialLoads];
#pragma unroll
        for (int u = 0; u < kWPartialLoads; ++u) part[u] = partial[(t + u) * D];
#pragma unroll
        for (int u = 0; u < kWPartialLoads; ++u) sum += part[u];
    }
    for (; t < tiles; ++t) sum += partial[t * D];
    return sum;
}

// The keys the scoring kernels read for (group job jj, head h), [held, head_dim]
// of T: the rows of the job's layer (c = job_cache(p, job)), or for FP8 storage
// their dequantised bf16 copy (kernels/fp8.cu, scratch.keys_dequantised), which
// the scoring kernels read as they read a bf16 cache.
template <typename T>
__device__ __forceinline__ const T *scoring_keys(const CompressParams &p, const CacheLayer &c, int32_t jj,
                                                 const Job &job, int32_t h) {
    if (p.scratch.keys_dequantised)
        return static_cast<const T *>(p.scratch.keys_dequantised) + scratch_row(p, jj, h) * c.head_dim;
    return static_cast<const T *>(c.keys) + slot_index(c, job.seq, h, 0) * c.head_dim;
}

// The last block of a grid to finish gets true (all other blocks have passed
// this point, and their global writes are visible). `counter` returns to 0.
__device__ __forceinline__ bool grid_last_block(unsigned *counter) {
    __shared__ bool last;
    __syncthreads();
    if (threadIdx.x == 0) {
        __threadfence();
        const unsigned total = gridDim.x * gridDim.y * gridDim.z;
        last = atomicAdd(counter, 1u) == total - 1;
        if (last) *counter = 0;  // nobody else touches it in this launch any more
    }
    __syncthreads();
    if (last) __threadfence();
    return last;
}

}  // namespace rkv::kernels
