// Append: scatter the K/V/Q rows of many sequences into the cache in one
// launch, converting from the caller's dtype and strides to the storage dtype,
// and (H2O) accumulate each new query's attention over the held keys.
//
// The destination slot and position of every chunk come from the device
// bookkeeping (lengths, logical), and the last block to finish advances them:
// a decode step captured in a CUDA graph appends at the next slot on every
// replay. A chunk that does not fit (only possible when replays outrun the
// capacity) is dropped and counted in `dropped`, never written out of bounds.
#pragma once

#include "common.cuh"
#include "fp8.cuh"

namespace rkv::kernels {

// The type the query window is kept in: the storage type, bf16 for FP8.
template <typename T>
using QueryType = std::conditional_t<kIsFp8<T>, __nv_bfloat16, T>;

constexpr int kAppendThreads = 256;
constexpr int kAppendRowsPerBlock = 16;  // rows of head_dim elements per block

// Chunk i of an append: from the host's list, or entry i of a batch (one
// token at row i; seq -1 for padding).
__device__ __forceinline__ AppendChunk chunk_at(const AppendParams &p, int i) {
    if (p.batch_ids) return AppendChunk{p.batch_ids[i], i, 1, 0, 0};
    return p.chunks[i];
}

// Advance the bookkeeping of chunk i (or count its tokens as dropped), as
// src/schedule.cpp after_append does on the host.
__device__ __forceinline__ void advance_chunk(const AppendParams &p, int i) {
    const CacheLayer &c = p.cache;
    const AppendChunk chunk = chunk_at(p, i);
    if (chunk.seq < 0) return;
    const int32_t held = c.lengths[chunk.seq];
    if (held + chunk.count > c.capacity) {
        c.dropped[chunk.seq] += chunk.count;
        return;
    }
    c.lengths[chunk.seq] = held + chunk.count;
    c.logical[chunk.seq] += chunk.count;
    c.queries_valid[chunk.seq] =
        p.q.data ? min(max(c.window, c.history), c.queries_valid[chunk.seq] + chunk.count) : 0;
    c.recent[chunk.seq] += chunk.count;
    c.pending[chunk.seq] = p.h2o ? min(c.pending[chunk.seq] + chunk.count, c.max_rollback) : 0;
}

// Copy one row of d elements from a caller's tensor into storage.
//   vectorized: same dtype, 16-byte aligned rows (checked by the launcher)
template <typename T>
__device__ __forceinline__ void copy_row(const Tensor &src, int64_t src_index, T *dst, int32_t d,
                                         int lane, int lanes, bool vectorized) {
    if (vectorized) {
        const uint4 *from = reinterpret_cast<const uint4 *>(static_cast<const T *>(src.data) + src_index);
        uint4 *to = reinterpret_cast<uint4 *>(dst);
        const int vectors = d / Vec16<T>::kCount;
        for (int v = lane; v < vectors; v += lanes) to[v] = from[v];
    } else {
        for (int e = lane; e < d; e += lanes) dst[e] = from_float<T>(load_any(src.data, src.dtype, src_index + e));
    }
}

// FP8: one K or V row quantised with its power-of-two scale (core/fp8.h). The
// row's `lanes` lanes (a half-warp) find its largest magnitude together, so
// every lane of the warp calls this; `active` says whether this lane's row is
// a K/V row to write.
constexpr int kAppendLanes = kAppendThreads / kAppendRowsPerBlock;  // lanes per row (16)

__device__ __forceinline__ void quantize_row(const Tensor &src, int64_t src_index, uint8_t *dst, float *scale_dst,
                                             int32_t d, int lane, bool active) {
    constexpr int kPerLane = 256 / kAppendLanes;  // head_dim <= 256
    float x[kPerLane];
    float amax = 0.0f;
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
        const int e = lane + k * kAppendLanes;
        x[k] = active && e < d ? load_any(src.data, src.dtype, src_index + e) : 0.0f;
        amax = fmaxf(amax, fabsf(x[k]));  // fmaxf: a NaN is ignored, as on the CPU
    }
#pragma unroll
    for (int offset = kAppendLanes / 2; offset > 0; offset >>= 1)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, offset));
    if (!active) return;
    const Fp8Scale s = fp8_scale(amax);
#pragma unroll
    for (int k = 0; k < kPerLane; ++k) {
        const int e = lane + k * kAppendLanes;
        if (e < d) dst[e] = float_to_fp8(__fmul_rn(x[k], s.inverse));
    }
    if (lane == 0) *scale_dst = s.scale;
}

// grid (x: row blocks of a chunk, y: chunk), kAppendThreads threads.
// Rows of a chunk, per token: kv_heads K rows, kv_heads V rows, then q_heads Q
// rows (queries only for the chunk's last `window` tokens into the window ring,
// and its last `history` tokens into the history: earlier ones would be
// overwritten in the rings anyway, and writing them would race).
// T: the storage type; FP8 rows are quantised, the window and history are bf16.
template <typename T>
__global__ void __launch_bounds__(kAppendThreads) append_kernel(AppendParams p, int vectorized) {
    const CacheLayer &c = p.cache;
    const AppendChunk chunk = chunk_at(p, blockIdx.y);
    const bool active = chunk.seq >= 0;  // not padding
    const int32_t slot0 = active ? c.lengths[chunk.seq] : 0;
    const int32_t position0 = active ? c.logical[chunk.seq] : 0;
    const bool fits = active && slot0 + chunk.count <= c.capacity;
    const int32_t d = c.head_dim;
    const int32_t q_rows = p.q.data ? c.q_heads : 0;
    const int32_t rows_per_token = 2 * c.kv_heads + q_rows;
    const int64_t rows = int64_t(chunk.count) * rows_per_token;
    // Threads per row: enough lanes for a row, the rest of the block takes more rows.
    using Q = QueryType<T>;
    const int lanes = kAppendLanes;
    const int lane = threadIdx.x % lanes;
    const int64_t row = int64_t(blockIdx.x) * kAppendRowsPerBlock + threadIdx.x / lanes;
    T *storage = nullptr;     // a K or V row
    float *scale = nullptr;   // its scale (FP8)
    Q *query = nullptr;       // a row of the query window
    const Tensor *src = nullptr;
    int64_t src_index = 0;
    if (fits && row < rows) {
        const int32_t t = int32_t(row / rows_per_token);
        const int32_t r = int32_t(row % rows_per_token);
        const int64_t token = chunk.token0 + t;
        const int32_t slot = slot0 + t;
        if (r < 2 * c.kv_heads) {
            const int32_t h = r % c.kv_heads;
            src = r < c.kv_heads ? &p.k : &p.v;
            src_index = chunk.entry * src->stride_seq + token * src->stride_token + h * src->stride_head;
            const int64_t entry = slot_index(c, chunk.seq, h, slot);
            storage = static_cast<T *>(r < c.kv_heads ? c.keys : c.values) + entry * d;
            if constexpr (kIsFp8<T>) scale = (r < c.kv_heads ? c.k_scale : c.v_scale) + entry;
            if (r < c.kv_heads && lane == 0) {
                c.positions[entry] = position0 + t;
                c.state[entry] = 0.0f;
            }
        } else {
            const int32_t qh = r - 2 * c.kv_heads;
            src = &p.q;
            src_index = chunk.entry * src->stride_seq + token * src->stride_token + qh * src->stride_head;
            if (t >= chunk.count - c.window) {
                const int32_t ring = (position0 + t) % c.window;
                query = static_cast<Q *>(c.queries) + query_index(c, chunk.seq, qh, ring);
            }
            if (c.history > 0 && t >= chunk.count - c.history) {
                const int32_t ring = (position0 + t) % c.history;
                copy_row(*src, src_index, static_cast<Q *>(c.history_queries) + history_index(c, chunk.seq, qh, ring),
                         d, lane, lanes, !kIsFp8<T> && vectorized != 0);
            }
        }
    }
    if constexpr (kIsFp8<T>) {
        // every lane of the warp takes part in the row maxima
        quantize_row(storage ? *src : p.k, src_index, reinterpret_cast<uint8_t *>(storage), scale, d, lane,
                     storage != nullptr);
        if (query) copy_row(*src, src_index, query, d, lane, lanes, false);
    } else {
        if (storage) copy_row(*src, src_index, storage, d, lane, lanes, vectorized != 0);
        if (query) copy_row(*src, src_index, query, d, lane, lanes, vectorized != 0);
    }
    if (grid_last_block(p.counter) && !p.h2o)
        for (int i = threadIdx.x; i < p.num_chunks; i += blockDim.x) advance_chunk(p, i);
}

// ---------------------------------------------------------------------------
// H2O: a query's heads attend causally over the keys held up to and including
// its token (group-pooled raw logits, softmax), and each key's probability is
// added to its state, query after query in position order (the CPU's
// summation order). With max_rollback = R > 0 a query is committed only once
// it is R tokens old (kernels/sequence.cuh commits the older pending ones), so
// that a rollback never has to take back an accumulated query.

// Shared memory of the H2O kernels: logits [capacity] + queries [groups, head_dim] floats.
__host__ __device__ inline size_t h2o_shared_bytes(int32_t capacity, int32_t groups, int32_t head_dim) {
    return (size_t(capacity) + size_t(groups) * head_dim) * sizeof(float);
}

// One query, whose G heads the block loaded into `queries` [groups, d], attends
// over keys[0 .. visible) and adds its pooled probabilities to state[0 .. visible).
// Every thread of the block calls it.
// FP8: key j is keys[j] * key_scales[j] (key_scales is nullptr otherwise).
template <typename T>
__device__ void h2o_add_query(const CacheLayer &c, const T *keys, const float *key_scales, int32_t visible,
                              rkv_pooling pooling, float scale, const float *queries, float *logits, float *state,
                              float *reduce_f, double *reduce_d) {
    const int32_t groups = c.q_heads / c.kv_heads, d = c.head_dim;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    __syncthreads();  // `queries` is loaded
    // A warp per key: pooled logit over the group.
    for (int32_t j = warp; j < visible; j += warps) {
        const T *k = keys + int64_t(j) * d;
        const float key_scale = scale * (key_scales ? key_scales[j] : 1.0f);
        const float pooled = pool_group(pooling, groups, [&](int32_t g) {
            float dot = 0.0f;
            for (int32_t e = lane; e < d; e += 32) dot += queries[g * d + e] * to_float(k[e]);
            return warp_sum(dot) * key_scale;
        });
        if (lane == 0) logits[j] = pooled;
    }
    __syncthreads();
    float local_max = -INFINITY;
    for (int32_t j = threadIdx.x; j < visible; j += blockDim.x) local_max = fmaxf(local_max, logits[j]);
    const float max_logit = block_max(local_max, reduce_f);
    double local_sum = 0.0;
    for (int32_t j = threadIdx.x; j < visible; j += blockDim.x) {
        const float e = expf(logits[j] - max_logit);
        logits[j] = e;
        local_sum += e;
    }
    const float inverse = float(1.0 / block_sum(local_sum, reduce_d));
    for (int32_t j = threadIdx.x; j < visible; j += blockDim.x) state[j] += logits[j] * inverse;
    __syncthreads();  // the next query may overwrite `queries` and `logits`
}

// The new tokens of every chunk that are at least max_rollback tokens old
// when the append is done (all of them when max_rollback is 0), from the
// caller's q. With a history their queries are rounded through the query
// dtype (QueryType), as the history holds them, so a query adds the same probabilities
// whether it is committed here or later from the history.
// grid (kv head, chunk), kAppendThreads threads, h2o_shared_bytes.
template <typename T>
__global__ void __launch_bounds__(kAppendThreads) h2o_kernel(AppendParams p) {
    extern __shared__ float h2o_shared[];
    __shared__ float reduce_f[32];
    __shared__ double reduce_d[32];
    const CacheLayer &c = p.cache;
    const AppendChunk chunk = chunk_at(p, blockIdx.y);
    const int32_t head = blockIdx.x;
    const int32_t groups = c.q_heads / c.kv_heads;
    const int32_t d = c.head_dim;
    float *logits = h2o_shared;                 // [capacity]
    float *queries = h2o_shared + c.capacity;   // [groups, d]
    const int32_t slot0 = chunk.seq >= 0 ? c.lengths[chunk.seq] : 0;
    if (chunk.seq >= 0 && slot0 + chunk.count <= c.capacity) {
        const T *keys = static_cast<const T *>(c.keys) + slot_index(c, chunk.seq, head, 0) * d;
        const float *key_scales = c.k_scale ? c.k_scale + slot_index(c, chunk.seq, head, 0) : nullptr;
        float *state = c.state + slot_index(c, chunk.seq, head, 0);
        const int32_t committed = max(0, chunk.count - c.max_rollback);
        for (int32_t t = 0; t < committed; ++t) {
            const int64_t token = chunk.token0 + t;
            for (int i = threadIdx.x; i < groups * d; i += blockDim.x) {
                const int32_t g = i / d, e = i % d;
                const float q = load_any(p.q.data, p.q.dtype,
                                         chunk.entry * p.q.stride_seq + token * p.q.stride_token +
                                             (head * groups + g) * p.q.stride_head + e);
                queries[i] = c.history > 0 ? to_float(from_float<QueryType<T>>(q)) : q;
            }
            h2o_add_query<T>(c, keys, key_scales, slot0 + t + 1, p.pooling, p.scale, queries, logits, state, reduce_f,
                             reduce_d);
        }
    }
    if (grid_last_block(p.counter))
        for (int i = threadIdx.x; i < p.num_chunks; i += blockDim.x) advance_chunk(p, i);
}

}  // namespace rkv::kernels
