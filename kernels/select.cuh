// Selection and compaction, one block per (head, job), for every method:
//   1. the score each candidate ranks by (method switch; R-KV mixes the
//      importance and redundancy computed before),
//   2. the same choice as src/selection.cpp: candidates at positions below
//      protect_below are kept, the others compete for the remaining places by
//      (score, slot), larger first; NaN ranks lowest; the window is kept,
//   3. the order of the kept tokens: by slot (position order) or protected,
//      then winners by descending score, then the window (reference order),
//   4. compaction of positions, scorer state, K and V into slots 0 .. keep-1.
// Then commit_kernel publishes the new lengths once every head is done.
#pragma once

#include "../src/random_score.h"
#include "common.cuh"

namespace rkv::kernels {

constexpr int kSelectThreads = 1024;

// Dynamic shared memory of select_compact_kernel for a capacity.
__host__ __device__ constexpr size_t select_shared_bytes(int32_t capacity) {
    return size_t(capacity) * (sizeof(uint64_t) + sizeof(int32_t));
}

// The score candidate j of (job, head) ranks by.
__device__ __forceinline__ float method_score(const CompressParams &p, const Job &job, int32_t h,
                                              int64_t scratch, int64_t slots, int32_t j) {
    switch (p.method) {
        case 0: {  // RKV: lambda * I - (1 - lambda) * R, rounded step by step as on the CPU
            const float importance = p.scratch.importance[scratch + j];
            const float redundancy = p.scratch.redundancy[scratch + j];
            return __fsub_rn(__fmul_rn(p.lambda, importance),
                             __fmul_rn(__fsub_rn(1.0f, p.lambda), redundancy));
        }
        case 1: return p.scratch.importance[scratch + j];  // SNAPKV
        case 2: return p.cache.state[slots + j];           // H2O
        case 3: return float(p.cache.positions[slots + j]);  // STREAMINGLLM: recency
        case 4: return p.scratch.final_scores[scratch + j];  // KEYDIFF (keydiff_kernel)
        case 5:                                              // RANDOM
            return random_score(p.seed, job.seq, p.cache.layer, h,
                                uint64_t(p.cache.compressions[job.seq]), p.cache.positions[slots + j]);
    }
    return 0.0f;
}

// Moves rows src[i] -> i (i < keep) of one head's K and V in place, for
// src ascending with src[i] >= i (position order): chunks of rows are read
// into registers, then written, in ascending order, so a row is never
// overwritten before it was read. Word = the widest unit dividing a row.
template <typename Word>
__device__ void compact_rows_ascending(char *k_head, char *v_head, const int32_t *src, int32_t keep,
                                       int64_t row_bytes) {
    constexpr int kWordsPerThread = 4;  // of K, and as many of V
    const int64_t words_per_row = row_bytes / int64_t(sizeof(Word));
    const int64_t chunk_words = int64_t(kSelectThreads) * kWordsPerThread;
    const int32_t rows_per_chunk = int32_t(chunk_words >= words_per_row ? chunk_words / words_per_row : 1);
    for (int32_t first = 0; first < keep; first += rows_per_chunk) {
        const int32_t rows = min(rows_per_chunk, keep - first);
        const int64_t words = int64_t(rows) * words_per_row;
        Word k_words[kWordsPerThread], v_words[kWordsPerThread];
        // Several passes when one row alone is larger than a chunk.
        for (int64_t base = 0; base < words; base += chunk_words) {
#pragma unroll
            for (int u = 0; u < kWordsPerThread; ++u) {
                const int64_t w = base + threadIdx.x + int64_t(u) * kSelectThreads;
                if (w < words) {
                    const int32_t i = first + int32_t(w / words_per_row);
                    const int64_t offset = int64_t(src[i]) * row_bytes + (w % words_per_row) * int64_t(sizeof(Word));
                    k_words[u] = *reinterpret_cast<const Word *>(k_head + offset);
                    v_words[u] = *reinterpret_cast<const Word *>(v_head + offset);
                }
            }
            __syncthreads();
#pragma unroll
            for (int u = 0; u < kWordsPerThread; ++u) {
                const int64_t w = base + threadIdx.x + int64_t(u) * kSelectThreads;
                if (w < words) {
                    const int32_t i = first + int32_t(w / words_per_row);
                    if (src[i] == i) continue;  // already in place
                    const int64_t offset = int64_t(i) * row_bytes + (w % words_per_row) * int64_t(sizeof(Word));
                    *reinterpret_cast<Word *>(k_head + offset) = k_words[u];
                    *reinterpret_cast<Word *>(v_head + offset) = v_words[u];
                }
            }
            __syncthreads();
        }
    }
}

// Any permutation (reference order): gather every kept row into scratch, then
// copy the block back.
template <typename Word>
__device__ void compact_rows_gather(char *head, char *gather, const int32_t *src, int32_t keep,
                                    int64_t row_bytes) {
    const int64_t words_per_row = row_bytes / int64_t(sizeof(Word));
    const int64_t words = int64_t(keep) * words_per_row;
    for (int64_t w = threadIdx.x; w < words; w += blockDim.x) {
        const int64_t i = w / words_per_row, part = (w % words_per_row) * int64_t(sizeof(Word));
        *reinterpret_cast<Word *>(gather + i * row_bytes + part) =
            *reinterpret_cast<const Word *>(head + int64_t(src[i]) * row_bytes + part);
    }
    __syncthreads();
    for (int64_t w = threadIdx.x; w < words; w += blockDim.x)
        reinterpret_cast<Word *>(head)[w] = reinterpret_cast<const Word *>(gather)[w];
    __syncthreads();
}

template <typename Word>
__device__ void compact_kv(const CompressParams &p, char *k_head, char *v_head, char *gather,
                           const int32_t *src, int32_t keep, int64_t row_bytes) {
    if (p.reference_order) {
        compact_rows_gather<Word>(k_head, gather, src, keep, row_bytes);
        compact_rows_gather<Word>(v_head, gather, src, keep, row_bytes);
    } else {
        compact_rows_ascending<Word>(k_head, v_head, src, keep, row_bytes);
    }
}

// grid (kv head, job), kSelectThreads threads, select_shared_bytes(capacity)
// of dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(kSelectThreads) select_compact_kernel(CompressParams p) {
    extern __shared__ uint64_t select_shared[];
    __shared__ int32_t reduce_i[32];
    __shared__ int32_t warp_counts[kSelectThreads / 32];
    const Job job = p.jobs[blockIdx.y];
    if (!job_active(p, job)) return;
    const CacheLayer &c = p.cache;
    const int32_t h = blockIdx.x, n = job.held, window = c.window;
    const int32_t candidates = n - window, keep = job.keep;
    const int64_t slots = slot_index(c, job.seq, h, 0);
    const int64_t scratch = scratch_row(p, blockIdx.y, h);
    // Shared memory, reused phase by phase:
    uint64_t *keys = select_shared;                                           // [cap] 1-2: keys, 0 = protected
    int32_t *rank = reinterpret_cast<int32_t *>(select_shared);               // [cap] 3: rank, -1 = protected
    int32_t *kept_positions = reinterpret_cast<int32_t *>(select_shared);     // [cap] 4: positions of the kept
    float *kept_state = reinterpret_cast<float *>(select_shared) + c.capacity;  // [cap] 4: their state
    int32_t *src = reinterpret_cast<int32_t *>(select_shared + c.capacity);   // [cap] 2: rank; 3-4: source
                                                                              // slot of each kept slot

    // 1. scores and keys
    int32_t local_protected = 0;
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x) {
        const float score = method_score(p, job, h, scratch, slots, j);
        p.scratch.final_scores[scratch + j] = score;
        const bool is_protected = c.positions[slots + j] < job.protect_below;
        keys[j] = is_protected ? 0 : selection_key(score, j);
        local_protected += is_protected;
    }
    const int32_t num_protected = block_sum(local_protected, reduce_i);  // (syncs: keys are complete)
    if (p.score_only) return;
    const int32_t winners = max(0, keep - window - num_protected);

    // 2. rank of each open candidate: how many open candidates beat it
    //    (protected keys are 0 and beat nobody).
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x) {
        const uint64_t key = keys[j];
        int32_t beaten_by = 0;
        if (key != 0)
            for (int32_t i = 0; i < candidates; ++i) beaten_by += keys[i] > key;
        src[j] = key == 0 ? -1 : beaten_by;
    }
    __syncthreads();  // the keys are dead
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x) rank[j] = src[j];
    __syncthreads();

    // 3. destination of every kept candidate; an exclusive scan over the slots
    //    of the flags "kept" (position order) or "protected" (reference order).
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int32_t carry = 0;
    for (int32_t first = 0; first < candidates; first += blockDim.x) {
        const int32_t j = first + threadIdx.x;
        const int32_t r = j < candidates ? rank[j] : winners;  // outside: not kept
        const bool is_protected = r < 0;
        const bool counted = p.reference_order ? is_protected : (is_protected || r < winners);
        const unsigned ballot = __ballot_sync(0xffffffffu, counted);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        int32_t before = carry;
        for (int w = 0; w < warp; ++w) before += warp_counts[w];
        before += __popc(ballot & ((1u << lane) - 1u));
        int32_t total = 0;
        for (int w = 0; w < int(blockDim.x >> 5); ++w) total += warp_counts[w];
        if (j < candidates) {
            if (p.reference_order) {
                if (is_protected) src[before] = j;
                else if (r < winners) src[num_protected + r] = j;
            } else if (counted) {
                src[before] = j;
            }
        }
        carry += total;
        __syncthreads();  // warp_counts is rewritten by the next tile
    }
    for (int32_t j = candidates + threadIdx.x; j < n; j += blockDim.x) src[keep - window + (j - candidates)] = j;
    __syncthreads();

    // 4. compaction: positions and state through shared memory, then K and V.
    for (int32_t i = threadIdx.x; i < keep; i += blockDim.x) {
        kept_positions[i] = c.positions[slots + src[i]];
        kept_state[i] = c.state[slots + src[i]];
    }
    __syncthreads();
    for (int32_t i = threadIdx.x; i < keep; i += blockDim.x) {
        c.positions[slots + i] = kept_positions[i];
        c.state[slots + i] = kept_state[i];
    }
    const int64_t row_bytes = int64_t(c.head_dim) * sizeof(T);
    char *k_head = reinterpret_cast<char *>(static_cast<T *>(c.keys) + slots * c.head_dim);
    char *v_head = reinterpret_cast<char *>(static_cast<T *>(c.values) + slots * c.head_dim);
    char *gather = p.scratch.gather
                       ? static_cast<char *>(p.scratch.gather) + scratch * row_bytes
                       : nullptr;
    if (row_bytes % 16 == 0) compact_kv<uint4>(p, k_head, v_head, gather, src, keep, row_bytes);
    else if (row_bytes % 4 == 0) compact_kv<uint32_t>(p, k_head, v_head, gather, src, keep, row_bytes);
    else compact_kv<uint16_t>(p, k_head, v_head, gather, src, keep, row_bytes);
}

// One thread per job, after every head of the group is compacted: publish the
// new length and count the compression.
__global__ void commit_kernel(CompressParams p) {
    const int32_t jj = threadIdx.x;
    if (jj >= p.num_jobs) return;
    const Job job = p.jobs[jj];
    if (!job_active(p, job)) return;
    p.cache.lengths[job.seq] = job.keep;
    p.cache.compressions[job.seq] += 1;
}

}  // namespace rkv::kernels
