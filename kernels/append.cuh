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

namespace rkv::kernels {

constexpr int kAppendThreads = 256;
constexpr int kAppendRowsPerBlock = 16;  // rows of head_dim elements per block

// Advance the bookkeeping of chunk i (or count its tokens as dropped).
__device__ __forceinline__ void advance_chunk(const AppendParams &p, int i) {
    const CacheLayer &c = p.cache;
    const AppendChunk &chunk = p.chunks[i];
    const int32_t held = c.lengths[chunk.seq];
    if (held + chunk.count > c.capacity) {
        c.dropped[chunk.seq] += chunk.count;
        return;
    }
    c.lengths[chunk.seq] = held + chunk.count;
    c.logical[chunk.seq] += chunk.count;
    c.queries_valid[chunk.seq] =
        p.q.data ? min(c.window, c.queries_valid[chunk.seq] + chunk.count) : 0;
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

// grid (x: row blocks of a chunk, y: chunk), kAppendThreads threads.
// Rows of a chunk, per token: kv_heads K rows, kv_heads V rows, then q_heads Q
// rows (queries only for the chunk's last `window` tokens: earlier ones would be
// overwritten in the ring anyway, and writing them would race).
template <typename T>
__global__ void __launch_bounds__(kAppendThreads) append_kernel(AppendParams p, int vectorized) {
    const CacheLayer &c = p.cache;
    const AppendChunk &chunk = p.chunks[blockIdx.y];
    const int32_t slot0 = c.lengths[chunk.seq];
    const int32_t position0 = c.logical[chunk.seq];
    const bool fits = slot0 + chunk.count <= c.capacity;
    const int32_t d = c.head_dim;
    const int32_t q_rows = p.q.data ? c.q_heads : 0;
    const int32_t rows_per_token = 2 * c.kv_heads + q_rows;
    const int64_t rows = int64_t(chunk.count) * rows_per_token;
    // Threads per row: enough lanes for a row, the rest of the block takes more rows.
    const int lanes = kAppendThreads / kAppendRowsPerBlock;
    const int lane = threadIdx.x % lanes;
    const int64_t row = int64_t(blockIdx.x) * kAppendRowsPerBlock + threadIdx.x / lanes;
    if (fits && row < rows) {
        const int32_t t = int32_t(row / rows_per_token);
        const int32_t r = int32_t(row % rows_per_token);
        const int64_t token = chunk.token0 + t;
        const int32_t slot = slot0 + t;
        T *storage = nullptr;
        const Tensor *src = nullptr;
        int64_t src_index = 0;
        if (r < 2 * c.kv_heads) {
            const int32_t h = r % c.kv_heads;
            src = r < c.kv_heads ? &p.k : &p.v;
            src_index = chunk.entry * src->stride_seq + token * src->stride_token + h * src->stride_head;
            const int64_t entry = slot_index(c, chunk.seq, h, slot);
            storage = static_cast<T *>(r < c.kv_heads ? c.keys : c.values) + entry * d;
            if (r < c.kv_heads && lane == 0) {
                c.positions[entry] = position0 + t;
                c.state[entry] = 0.0f;
            }
        } else if (t >= chunk.count - c.window) {
            const int32_t qh = r - 2 * c.kv_heads;
            src = &p.q;
            src_index = chunk.entry * src->stride_seq + token * src->stride_token + qh * src->stride_head;
            const int32_t ring = (position0 + t) % c.window;
            storage = static_cast<T *>(c.queries) + query_index(c, chunk.seq, qh, ring);
        }
        if (storage) copy_row(*src, src_index, storage, d, lane, lanes, vectorized != 0);
    }
    if (grid_last_block(p.counter) && !p.h2o)
        for (int i = threadIdx.x; i < p.num_chunks; i += blockDim.x) advance_chunk(p, i);
}

// ---------------------------------------------------------------------------
// H2O: every new token's query heads attend causally over the keys held up to
// and including the token (group-pooled raw logits, softmax), and each key's
// probability is added to its state, token after token in order (the CPU's
// summation order). grid (kv head, chunk), kAppendThreads threads; dynamic
// shared memory: logits [capacity] + queries [groups, head_dim] floats.
template <typename T>
__global__ void __launch_bounds__(kAppendThreads) h2o_kernel(AppendParams p) {
    extern __shared__ float h2o_shared[];
    __shared__ float reduce_f[32];
    __shared__ double reduce_d[32];
    const CacheLayer &c = p.cache;
    const AppendChunk &chunk = p.chunks[blockIdx.y];
    const int32_t head = blockIdx.x;
    const int32_t groups = c.q_heads / c.kv_heads;
    const int32_t d = c.head_dim;
    const int32_t slot0 = c.lengths[chunk.seq];
    float *logits = h2o_shared;                 // [capacity]
    float *queries = h2o_shared + c.capacity;   // [groups, d]
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (slot0 + chunk.count <= c.capacity) {
        const T *keys = static_cast<const T *>(c.keys) + slot_index(c, chunk.seq, head, 0) * d;
        float *state = c.state + slot_index(c, chunk.seq, head, 0);
        for (int32_t t = 0; t < chunk.count; ++t) {
            const int32_t visible = slot0 + t + 1;
            const int64_t token = chunk.token0 + t;
            __syncthreads();  // the previous token is done with `queries` and `logits`
            for (int i = threadIdx.x; i < groups * d; i += blockDim.x) {
                const int32_t g = i / d, e = i % d;
                queries[i] = load_any(p.q.data, p.q.dtype,
                                      chunk.entry * p.q.stride_seq + token * p.q.stride_token +
                                          (head * groups + g) * p.q.stride_head + e);
            }
            __syncthreads();
            // A warp per key: pooled logit over the group.
            for (int32_t j = warp; j < visible; j += warps) {
                const T *k = keys + int64_t(j) * d;
                const float pooled = pool_group(p.pooling, groups, [&](int32_t g) {
                    float dot = 0.0f;
                    for (int32_t e = lane; e < d; e += 32) dot += queries[g * d + e] * to_float(k[e]);
                    return warp_sum(dot) * p.scale;
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
        }
    }
    if (grid_last_block(p.counter))
        for (int i = threadIdx.x; i < p.num_chunks; i += blockDim.x) advance_chunk(p, i);
}

// ---------------------------------------------------------------------------
// reset of one sequence, every layer: scorer state and device bookkeeping.

// grid (layer), 256 threads.
__global__ void clear_sequence_kernel(ClearParams p) {
    const int32_t layer = blockIdx.x;
    const int64_t slots = int64_t(p.kv_heads) * p.capacity;
    float *state = p.state + (int64_t(layer) * p.max_seqs + p.seq) * slots;
    for (int64_t i = threadIdx.x; i < slots; i += blockDim.x) state[i] = 0.0f;
    if (threadIdx.x < kBookkeepingArrays) p.bookkeeping[threadIdx.x * p.book_stride + int64_t(layer) * p.max_seqs + p.seq] = 0;
}

}  // namespace rkv::kernels
