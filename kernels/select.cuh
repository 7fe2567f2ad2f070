// Selection and compaction, one block per (head, job), for every method:
//   1. the score each candidate ranks by (the method's Scorer, core/method.h;
//      R-KV mixes the importance and redundancy computed before),
//   2. the same choice as src/selection.cpp: candidates at positions below
//      protect_below are kept, the others compete for the remaining places by
//      (score, slot), larger first; NaN ranks lowest; the window is kept,
//   3. the order of the kept tokens: by slot (position order) or protected,
//      then winners by descending score, then the window (reference order),
//   4. compaction of positions, scorer state, K and V into slots 0 .. keep-1.
// Then commit_kernel publishes the new lengths once every head is done. Step 2
// sorts only in reference order; in position order a radix select marks the
// winners (radix_select.cuh).
#pragma once

#include "common.cuh"
#include "core/random_score.h"
#include "fp8.cuh"
#include "radix_select.cuh"
#include "scoring.cuh"

namespace rkv::kernels {

constexpr int kSelectThreads = 512;  // two blocks per SM at 64 registers

// Smallest power of two >= n (the bitonic sort's length).
__host__ __device__ constexpr int32_t pow2_at_least(int32_t n) {
    int32_t p = 1;
    while (p < n) p <<= 1;
    return p;
}

// Dynamic shared memory of select_compact_kernel for a capacity: the sort
// keys [pow2 >= cap] (later reused for positions and state), source slots
// [cap] int32 and flags [cap] bytes.
__host__ __device__ constexpr size_t select_shared_bytes(int32_t capacity) {
    return size_t(pow2_at_least(capacity)) * sizeof(uint64_t) + size_t(capacity) * (sizeof(int32_t) + 1);
}

// The score candidate j of (job, head) ranks by (src/cpu/cpu_backend.cpp's score).
static_assert(kNumScorers == 7, "a new Scorer needs its case in method_score (and its score kernels)");
__device__ __forceinline__ float method_score(const CompressParams &p, const CacheLayer &c, const Job &job,
                                              int32_t h, int64_t scratch, int64_t slots, int32_t j) {
    switch (p.scorer) {
        case Scorer::ImportanceRedundancy: {  // lambda * I - (1 - lambda) * R, rounded step by step as on the CPU
            const float importance = p.scratch.importance[scratch + j];
            const float redundancy = p.scratch.redundancy[scratch + j];
            return __fsub_rn(__fmul_rn(p.lambda, importance),
                             __fmul_rn(__fsub_rn(1.0f, p.lambda), redundancy));
        }
        case Scorer::Importance: return p.scratch.importance[scratch + j];
        case Scorer::AccumulatedAttention: return c.state[slots + j];
        case Scorer::Recency: return float(c.positions[slots + j]);
        case Scorer::KeyDiff: return p.scratch.final_scores[scratch + j];  // keydiff_kernel
        case Scorer::Random:
            return random_score(p.seed, job.seq, c.layer, h, uint64_t(c.compressions[job.seq]),
                                c.positions[slots + j]);
        case Scorer::None: break;
    }
    return 0.0f;
}

// Which word of which row a thread moves, for rows of `words_per_row` words
// (at most 256: a row is at most 1 KiB, head_dim <= 256 on CUDA, moved in
// words of 16 bytes, or of 4, 2, 1 where the row is not a multiple of 16):
// thread t moves word t % words_per_row of every rows_per_pass-th row from
// row t / words_per_row. The divisions happen once per thread: per word, as
// before, the 64-bit divisions were most of the compaction's instructions.
struct RowLanes {
    int32_t row;            // the thread's first row of a pass (>= rows_per_pass: idle)
    int32_t rows_per_pass;  // rows the block covers at once
    int64_t byte;           // the thread's word, as a byte offset in a row
};

template <typename Word>
__device__ __forceinline__ RowLanes row_lanes(int64_t row_bytes) {
    const int32_t words_per_row = int32_t(row_bytes / int64_t(sizeof(Word)));
    const int32_t thread = int32_t(threadIdx.x);
    return RowLanes{thread / words_per_row, int32_t(blockDim.x) / words_per_row,
                    int64_t(thread % words_per_row) * int64_t(sizeof(Word))};
}

// Moves rows src[i] -> i (i < keep) of one head's K and V in place, for
// src ascending with src[i] >= i (position order): chunks of rows are read
// into registers, then written, in ascending order, so a row is never
// overwritten before it was read. Word = the widest unit dividing a row.
template <typename Word>
__device__ void compact_rows_ascending(char *k_head, char *v_head, const int32_t *src, int32_t keep,
                                       int64_t row_bytes) {
    constexpr int kRowsPerThread = 4;  // words of K per thread and chunk, and as many of V
    const RowLanes lanes = row_lanes<Word>(row_bytes);
    const int32_t rows_per_chunk = lanes.rows_per_pass * kRowsPerThread;
    const bool active = lanes.row < lanes.rows_per_pass;
    for (int32_t first = 0; first < keep; first += rows_per_chunk) {
        Word k_words[kRowsPerThread], v_words[kRowsPerThread];
#pragma unroll
        for (int u = 0; u < kRowsPerThread; ++u) {
            const int32_t i = first + lanes.row + u * lanes.rows_per_pass;
            if (active && i < keep) {
                const int64_t offset = int64_t(src[i]) * row_bytes + lanes.byte;
                k_words[u] = *reinterpret_cast<const Word *>(k_head + offset);
                v_words[u] = *reinterpret_cast<const Word *>(v_head + offset);
            }
        }
        __syncthreads();
#pragma unroll
        for (int u = 0; u < kRowsPerThread; ++u) {
            const int32_t i = first + lanes.row + u * lanes.rows_per_pass;
            if (active && i < keep && src[i] != i) {  // (rows already in place are not written)
                const int64_t offset = int64_t(i) * row_bytes + lanes.byte;
                *reinterpret_cast<Word *>(k_head + offset) = k_words[u];
                *reinterpret_cast<Word *>(v_head + offset) = v_words[u];
            }
        }
        __syncthreads();
    }
}

// Any permutation (reference order): gather every kept row into scratch, then
// copy the block back.
template <typename Word>
__device__ void compact_rows_gather(char *head, char *gather, const int32_t *src, int32_t keep,
                                    int64_t row_bytes) {
    const RowLanes lanes = row_lanes<Word>(row_bytes);
    if (lanes.row < lanes.rows_per_pass)
        for (int32_t i = lanes.row; i < keep; i += lanes.rows_per_pass)
            *reinterpret_cast<Word *>(gather + int64_t(i) * row_bytes + lanes.byte) =
                *reinterpret_cast<const Word *>(head + int64_t(src[i]) * row_bytes + lanes.byte);
    __syncthreads();
    const int64_t words = int64_t(keep) * (row_bytes / int64_t(sizeof(Word)));
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

// Sorts keys[0 .. count) (count a power of two) in descending order, all
// threads of the block taking part.
__device__ __forceinline__ void bitonic_sort_descending(uint64_t *keys, int32_t count) {
    for (int32_t size = 2; size <= count; size <<= 1) {
        for (int32_t stride = size >> 1; stride > 0; stride >>= 1) {
            __syncthreads();
            for (int32_t t = threadIdx.x; t < count / 2; t += blockDim.x) {
                const int32_t lo = 2 * t - (t & (stride - 1)), hi = lo + stride;  // lo has bit `stride` clear
                const bool descending = (lo & size) == 0;
                const uint64_t a = keys[lo], b = keys[hi];
                if ((a < b) == descending) {
                    keys[lo] = b;
                    keys[hi] = a;
                }
            }
        }
    }
    __syncthreads();
}

// Selection and compaction of head h of group job jj, all threads of the block
// taking part. select_shared: select_shared_bytes(capacity); reduce_i [32];
// warp_counts [blockDim / 32].
template <typename T>
__device__ void select_compact_head(const CompressParams &p, const Job &job, int32_t jj, int32_t h,
                                    uint64_t *select_shared, int32_t *reduce_i, int32_t *warp_counts) {
    const CacheLayer c = job_cache(p, job);
    const int32_t n = job.held, window = c.window;
    const int32_t candidates = n - window, keep = job.keep;
    const int64_t slots = slot_index(c, job.seq, h, 0);
    const int64_t scratch = scratch_row(p, jj, h);
    const int32_t sorted_count = pow2_at_least(candidates);
    // Shared memory, reused phase by phase:
    uint64_t *keys = select_shared;                                            // [pow2] 1-2: sort keys, 0 = protected
    int32_t *kept_positions = reinterpret_cast<int32_t *>(select_shared);      // [cap] 4: positions of the kept
    float *kept_state = reinterpret_cast<float *>(select_shared) + c.capacity;  // [cap] 4: their state
    int32_t *src = reinterpret_cast<int32_t *>(select_shared + pow2_at_least(c.capacity));  // [cap] 3-4: source
                                                                               // slot of each kept slot
    uint8_t *flags = reinterpret_cast<uint8_t *>(src + c.capacity);            // [cap] 1: protected, 2: winner

    // 1. scores and keys (the padding of the sort sorts last, like protected
    //    keys; only reference order sorts: the radix select reads the candidates)
    const int32_t key_count = p.reference_order ? sorted_count : candidates;
    int32_t local_protected = 0;
    for (int32_t j = threadIdx.x; j < key_count; j += blockDim.x) {
        if (j >= candidates) {
            keys[j] = 0;
            continue;
        }
        const float score = method_score(p, c, job, h, scratch, slots, j);
        p.scratch.final_scores[scratch + j] = score;
        const bool is_protected = c.positions[slots + j] < job.protect_below;
        keys[j] = is_protected ? 0 : selection_key(score, j);
        flags[j] = is_protected ? 1 : 0;
        local_protected += is_protected;
    }
    const int32_t num_protected = block_sum(local_protected, reduce_i);  // (syncs: keys are complete)
    if (p.score_only) return;
    const int32_t winners = max(0, keep - window - num_protected);

    // 2. the winners: the `winners` largest keys. In reference order they are
    //    sorted and placed by rank right away; in position order only the set
    //    matters (radix_select.cuh).
    if (p.reference_order) {
        bitonic_sort_descending(keys, sorted_count);
        for (int32_t k = threadIdx.x; k < winners; k += blockDim.x) {
            const int32_t j = int32_t(uint32_t(keys[k]));
            flags[j] |= 2;
            src[num_protected + k] = j;
        }
    } else {
        mark_largest_keys(keys, candidates, winners, flags);
    }
    __syncthreads();

    // 3. destination of every other kept candidate: an exclusive scan over the
    //    slots of the flags "kept" (position order) or "protected" (reference order).
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    int32_t carry = 0;
    for (int32_t first = 0; first < candidates; first += blockDim.x) {
        const int32_t j = first + threadIdx.x;
        const uint8_t flag = j < candidates ? flags[j] : 0;
        const bool counted = p.reference_order ? (flag & 1) : flag != 0;
        const unsigned ballot = __ballot_sync(0xffffffffu, counted);
        if (lane == 0) warp_counts[warp] = __popc(ballot);
        __syncthreads();
        int32_t before = carry;
        for (int w = 0; w < warp; ++w) before += warp_counts[w];
        before += __popc(ballot & ((1u << lane) - 1u));
        int32_t total = 0;
        for (int w = 0; w < int(blockDim.x >> 5); ++w) total += warp_counts[w];
        if (counted) src[before] = j;
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
    if (c.k_scale) compact_scales(c, slots, src, keep, kept_state, reinterpret_cast<float *>(kept_positions));
    const int64_t row_bytes = int64_t(c.head_dim) * dtype_bytes(c.dtype);  // the storage's (FP8: 1 byte)
    char *k_head = static_cast<char *>(c.keys) + slots * row_bytes;
    char *v_head = static_cast<char *>(c.values) + slots * row_bytes;
    char *gather = p.scratch.gather
                       ? static_cast<char *>(p.scratch.gather) + scratch * row_bytes
                       : nullptr;
    // The widest word that divides a row (FP8 rows of an odd head_dim: bytes).
    if (row_bytes % 16 == 0) compact_kv<uint4>(p, k_head, v_head, gather, src, keep, row_bytes);
    else if (row_bytes % 4 == 0) compact_kv<uint32_t>(p, k_head, v_head, gather, src, keep, row_bytes);
    else if (row_bytes % 2 == 0) compact_kv<uint16_t>(p, k_head, v_head, gather, src, keep, row_bytes);
    else compact_kv<uint8_t>(p, k_head, v_head, gather, src, keep, row_bytes);
}

// Dynamic shared memory of select_compact_kernel: the selection's, or the
// importance pooling's where the kernel pools first and needs more.
__host__ __device__ constexpr size_t select_compact_shared_bytes(const CompressParams &p) {
    const size_t select = select_shared_bytes(p.cache.capacity);
    if (!(p.scores_in_selection & kSelectionPools)) return select;
    const size_t pool = importance_pool_shared_bytes(
        p.cache.window, p.cache.capacity, importance_pool_staged(p.pooled_groups, p.cache.window, p.cache.capacity));
    return pool > select ? pool : select;
}

// grid (kv head, job), kSelectThreads threads, select_compact_shared_bytes(p)
// of dynamic shared memory. First the scores p.scores_in_selection names
// (importance pooling, redundancy: the same device code as their own kernels,
// into the same scratch, which __syncthreads makes visible to the block),
// then the selection and compaction.
template <typename T>
__global__ void __launch_bounds__(kSelectThreads, 2) select_compact_kernel(CompressParams p) {
    extern __shared__ uint64_t select_shared[];
    __shared__ int32_t reduce_i[32];
    __shared__ int32_t warp_counts[kSelectThreads / 32];
    __shared__ double reduce_d[32];
    const Job job = p.jobs[blockIdx.y];
    if (!job_active(p, job)) return;
    const int32_t jj = blockIdx.y, h = blockIdx.x;
    if (p.scores_in_selection & kSelectionPools) {
        importance_pool(p, job, jj, h, reinterpret_cast<float *>(select_shared),
                        importance_pool_staged(p.pooled_groups, p.cache.window, p.cache.capacity));
        __syncthreads();
    }
    if (p.scores_in_selection & kSelectionRedundancy) {
        redundancy_head(p, job, jj, h, p.scratch.corrections + scratch_row(p, jj, h), reduce_d);
        __syncthreads();
    }
    select_compact_head<T>(p, job, jj, h, select_shared, reduce_i, warp_counts);
}

// One thread per job, after every head of the group is compacted: publish the
// new length and count the compression.
__global__ void commit_kernel(CompressParams p) {
    const int32_t jj = threadIdx.x;
    if (jj >= p.num_jobs) return;
    const Job job = p.jobs[jj];
    if (!job_active(p, job)) return;
    const CacheLayer c = job_cache(p, job);
    c.lengths[job.seq] = job.keep;
    c.compressions[job.seq] += 1;
    c.recent[job.seq] = 0;
    c.pending[job.seq] = 0;  // committed before the scores (launch_h2o_commit_all)
}

}  // namespace rkv::kernels
