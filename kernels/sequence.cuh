// Kernels that work on whole sequences or on H2O's deferred queries:
//   - reset: the scorer state and the device bookkeeping of every layer;
//   - committing H2O's pending queries (from the query history) before an
//     append pushes them past max_rollback, and before a compression;
//   - rollback: the device bookkeeping of every layer, and the window ring
//     restored from the history;
//   - fork: every layer of one sequence onto another;
//   - a batch's device ids, from kernel parameters.
// Everything reads the device bookkeeping when it runs, so these work the same
// eagerly and in replayed CUDA graphs.
#pragma once

#include "append.cuh"

namespace rkv::kernels {

constexpr int kSequenceThreads = 256;

// The oldest `commits` pending queries of (seq, head), from the history: a
// query at position logical - pending + k sits at slot held - pending + k (no
// compression since it came) and attends over the keys up to it.
template <typename T>
__device__ void h2o_commit(const CacheLayer &c, int32_t seq, int32_t head, int32_t commits, float *state,
                           rkv_pooling pooling, float scale, float *shared, float *reduce_f, double *reduce_d) {
    const int32_t groups = c.q_heads / c.kv_heads, d = c.head_dim;
    const int32_t held = c.lengths[seq], pending = c.pending[seq];
    const int32_t first_position = c.logical[seq] - pending, first_slot = held - pending;
    const T *keys = static_cast<const T *>(c.keys) + slot_index(c, seq, head, 0) * d;
    const float *key_scales = c.k_scale ? c.k_scale + slot_index(c, seq, head, 0) : nullptr;
    const QueryType<T> *history = static_cast<const QueryType<T> *>(c.history_queries);
    float *logits = shared;               // [capacity]
    float *queries = shared + c.capacity; // [groups, d]
    for (int32_t k = 0; k < commits; ++k) {
        const int32_t ring = (first_position + k) % c.history;
        for (int i = threadIdx.x; i < groups * d; i += blockDim.x) {
            const int32_t g = i / d, e = i % d;
            queries[i] = to_float(history[history_index(c, seq, head * groups + g, ring) + e]);
        }
        h2o_add_query<T>(c, keys, key_scales, first_slot + k + 1, pooling, scale, queries, logits, state, reduce_f, reduce_d);
    }
}

// Before an append (H2O, max_rollback > 0): each chunk of `count` tokens
// leaves min(pending + count, max_rollback) pending, so the oldest
// min(pending, pending + count - max_rollback) pending queries commit now,
// before the append overwrites their history slots. Chunks that will not fit
// (dropped by the append) commit nothing.
// grid (kv head, chunk), kAppendThreads threads, h2o_shared_bytes.
template <typename T>
__global__ void __launch_bounds__(kAppendThreads) h2o_commit_before_append_kernel(AppendParams p) {
    extern __shared__ float commit_shared[];
    __shared__ float reduce_f[32];
    __shared__ double reduce_d[32];
    const CacheLayer &c = p.cache;
    const AppendChunk chunk = chunk_at(p, blockIdx.y);
    if (chunk.seq < 0 || c.lengths[chunk.seq] + chunk.count > c.capacity) return;
    const int32_t pending = c.pending[chunk.seq];
    const int32_t commits = min(pending, max(0, pending + chunk.count - c.max_rollback));
    const int32_t head = blockIdx.x;
    h2o_commit<T>(c, chunk.seq, head, commits, c.state + slot_index(c, chunk.seq, head, 0), p.pooling, p.scale,
                  commit_shared, reduce_f, reduce_d);
}

// Every pending query of each active job (before its compression), or of job
// 0 into state_out (inspection). grid (kv head, job), kAppendThreads threads,
// h2o_shared_bytes.
template <typename T>
__global__ void __launch_bounds__(kAppendThreads) h2o_commit_all_kernel(CommitParams p) {
    extern __shared__ float commit_shared[];
    __shared__ float reduce_f[32];
    __shared__ double reduce_d[32];
    const CacheLayer &c = p.cache;
    const Job job = p.jobs[blockIdx.y];
    if (c.lengths[job.seq] != job.held) return;  // as job_active: the compression will not run
    const int32_t head = blockIdx.x;
    float *state = p.state_out ? p.state_out + int64_t(head) * c.capacity : c.state + slot_index(c, job.seq, head, 0);
    h2o_commit<T>(c, job.seq, head, c.pending[job.seq], state, p.pooling, p.scale, commit_shared, reduce_f, reduce_d);
}

// ---------------------------------------------------------------------------
// rollback and fork

// Layer l of the cache, from layer 0's view.
__device__ __forceinline__ CacheLayer layer_of(const SequenceParams &p, int32_t layer) {
    CacheLayer c = p.layer0;
    const int64_t element = dtype_bytes(c.dtype), query_element = query_dtype_bytes(c.dtype);
    c.keys = static_cast<char *>(c.keys) + layer * p.layer_slots * c.head_dim * element;
    c.values = static_cast<char *>(c.values) + layer * p.layer_slots * c.head_dim * element;
    c.positions += layer * p.layer_slots;
    c.state += layer * p.layer_slots;
    if (c.k_scale) c.k_scale += layer * p.layer_slots;
    if (c.v_scale) c.v_scale += layer * p.layer_slots;
    c.queries = static_cast<char *>(c.queries) + layer * p.layer_queries * query_element;
    if (c.history_queries)
        c.history_queries = static_cast<char *>(c.history_queries) + layer * p.layer_history * query_element;
    const int64_t book = int64_t(layer) * c.max_seqs;
    c.lengths += book;
    c.logical += book;
    c.queries_valid += book;
    c.compressions += book;
    c.dropped += book;
    c.recent += book;
    c.pending += book;
    c.layer = layer;
    return c;
}

// Remove the last p.tokens tokens of sequence p.seq at every layer (the host
// checked the rollback limit), as src/schedule.cpp after_truncate does, then
// restore the window ring's last min(window, queries held) positions from the
// history. grid (layer), kSequenceThreads threads.
template <typename T>
__global__ void __launch_bounds__(kSequenceThreads) truncate_kernel(SequenceParams p) {
    const CacheLayer c = layer_of(p, blockIdx.x);
    const int32_t seq = p.seq, n = p.tokens;
    const int32_t logical = c.logical[seq] - n;
    const int32_t queries_valid = max(0, c.queries_valid[seq] - n);
    __syncthreads();  // every thread has read the bookkeeping before it changes
    if (threadIdx.x == 0) {
        c.lengths[seq] -= n;
        c.logical[seq] = logical;
        c.queries_valid[seq] = queries_valid;
        c.recent[seq] -= n;
        c.pending[seq] = max(0, c.pending[seq] - n);
    }
    if (c.history == 0) return;
    const int32_t restore = min(c.window, queries_valid);
    const int32_t d = c.head_dim;
    const int64_t elements = int64_t(c.q_heads) * restore * d;
    using Q = QueryType<T>;
    Q *window = static_cast<Q *>(c.queries);
    const Q *history = static_cast<const Q *>(c.history_queries);
    for (int64_t i = threadIdx.x; i < elements; i += blockDim.x) {
        const int32_t e = int32_t(i % d);
        const int32_t row = int32_t(i / d);
        const int32_t qh = row / restore, k = row % restore;
        const int32_t position = logical - restore + k;
        window[query_index(c, seq, qh, position % c.window) + e] =
            history[history_index(c, seq, qh, position % c.history) + e];
    }
}

// Every layer of p.src onto p.seq (empty, checked by the host): the held K, V,
// positions and state rows of every head (FP8: and scales), the window ring and
// the history, and the bookkeeping. grid (x: blocks per layer, y: layer), kSequenceThreads.
template <typename T>
__global__ void __launch_bounds__(kSequenceThreads) copy_kernel(SequenceParams p) {
    const CacheLayer c = layer_of(p, blockIdx.y);
    const int32_t src = p.src, dst = p.seq, d = c.head_dim;
    const int32_t held = c.lengths[src];
    const int64_t stride = int64_t(gridDim.x) * blockDim.x;
    const int64_t first = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
    // K and V rows: [kv_heads, held, d]
    const int64_t rows = int64_t(c.kv_heads) * held * d;
    for (int64_t i = first; i < rows; i += stride) {
        const int32_t h = int32_t(i / (int64_t(held) * d));
        const int64_t within = i % (int64_t(held) * d);
        const int64_t from = slot_index(c, src, h, 0) * d + within, to = slot_index(c, dst, h, 0) * d + within;
        static_cast<T *>(c.keys)[to] = static_cast<const T *>(c.keys)[from];
        static_cast<T *>(c.values)[to] = static_cast<const T *>(c.values)[from];
    }
    // positions, state and (FP8) scales: [kv_heads, held]
    for (int64_t i = first; i < int64_t(c.kv_heads) * held; i += stride) {
        const int32_t h = int32_t(i / held), slot = int32_t(i % held);
        const int64_t from = slot_index(c, src, h, slot), to = slot_index(c, dst, h, slot);
        c.positions[to] = c.positions[from];
        c.state[to] = c.state[from];
        if (c.k_scale) {
            c.k_scale[to] = c.k_scale[from];
            c.v_scale[to] = c.v_scale[from];
        }
    }
    // the window ring and the history: contiguous per sequence
    using Q = QueryType<T>;
    const int64_t window = int64_t(c.q_heads) * c.window * d;
    for (int64_t i = first; i < window; i += stride)
        static_cast<Q *>(c.queries)[query_index(c, dst, 0, 0) + i] =
            static_cast<const Q *>(c.queries)[query_index(c, src, 0, 0) + i];
    const int64_t history = int64_t(c.q_heads) * c.history * d;
    for (int64_t i = first; i < history; i += stride)
        static_cast<Q *>(c.history_queries)[history_index(c, dst, 0, 0) + i] =
            static_cast<const Q *>(c.history_queries)[history_index(c, src, 0, 0) + i];
    if (blockIdx.x == 0 && threadIdx.x < kBookkeepingArrays) {
        int32_t *book = p.bookkeeping + threadIdx.x * p.book_stride + int64_t(blockIdx.y) * c.max_seqs;
        book[dst] = book[src];
    }
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

// A batch's ids ids[first .. first+count) from the kernel parameters.
// grid 1, kSequenceThreads threads.
__global__ void batch_set_kernel(BatchSetParams p) {
    for (int32_t i = threadIdx.x; i < p.count; i += blockDim.x) p.ids[p.first + i] = p.values[i];
}

}  // namespace rkv::kernels
