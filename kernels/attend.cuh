// Decode attention over the held tokens: one query token per entry, every
// query head of a KV head's group at once (GQA), softmax in float32 from the
// stored values (FP8: fp8 * scale). The held length is read from the device
// bookkeeping, so a captured decode step attends over what the replayed append
// left; with a batch, so is the sequence of each entry.
//
// attend_split_kernel (head_dim 64, 128, 256; every storage dtype) is
// flash-decoding: grid (split, KV head, entry). Each block takes a contiguous
// share of one (entry, KV head)'s tokens, streams its K and V rows through
// shared memory with cp.async (kSplitStages stages in flight: the bytes in
// flight cost no registers), and computes a partial softmax state (max, sum,
// weighted V) for the group's query heads. With one split the block writes the
// output; otherwise it writes its partial, and the last of the (entry, KV
// head)'s blocks to finish merges all of them (no second launch).
//
// Inside a block, a "worker" of kLanes lanes holds kE elements of each row (16
// bytes per vector, vectors interleaved across the lanes so a worker's loads
// are contiguous in shared memory) and takes kU tokens at a time: the kU x G
// dot products are independent (their lane sums run side by side), and the
// running softmax state is rescaled once per kU tokens, not per token. Workers
// keep their own states; they are merged at the end (shuffles inside a warp,
// then shared memory across warps).
//
// attend_kernel is the same arithmetic for any other head_dim (strided lanes,
// registers only, one block per (KV head, entry)).
#pragma once

#include "common.cuh"
#include "fp8.cuh"
#include "pdl.cuh"

namespace rkv::kernels {

// The sequence entry i of a call attends for (the one place that says so):
// from the host's list, or from a batch's device ids; -1 for none (batch
// padding: the entry's blocks leave its output rows untouched).
__device__ __forceinline__ int32_t attend_sequence(const AttendParams &p, int32_t entry) {
    if (entry >= p.num_seqs) return -1;
    return p.batch_ids ? p.batch_ids[entry] : p.seq_ids[entry];
}

// The tokens [begin, end) split `split` of a split kernel's blocks takes of a
// sequence holding `held`: an even share, rounded up (the last splits may be
// short or empty). Both split kernels (CUDA cores and tensor cores) cut the
// same way, so their partials merge the same way.
struct SplitRange {
    int32_t begin, end;
};
__device__ __forceinline__ SplitRange split_range(int32_t held, int32_t splits, int32_t split) {
    const int32_t chunk = (held + splits - 1) / splits;
    const int32_t begin = min(held, split * chunk);
    return {begin, min(held, begin + chunk)};
}

// Rows [0, held) of one (sequence, KV head): K, V and (FP8) their scales.
template <typename T>
struct HeadRows {
    const T *keys;
    const T *values;
    const float *k_scale;  // nullptr unless FP8
    const float *v_scale;
};

template <typename T>
__device__ __forceinline__ HeadRows<T> head_rows(const CacheLayer &c, int32_t seq, int32_t head) {
    const int64_t slot0 = slot_index(c, seq, head, 0);
    HeadRows<T> rows;
    rows.keys = static_cast<const T *>(c.keys) + slot0 * c.head_dim;
    rows.values = static_cast<const T *>(c.values) + slot0 * c.head_dim;
    rows.k_scale = c.k_scale ? c.k_scale + slot0 : nullptr;
    rows.v_scale = c.v_scale ? c.v_scale + slot0 : nullptr;
    return rows;
}

// FP8: the key and value scales of a stage's tokens first .. first + count
// into shared k_to, v_to [count] (tokens at or past `end`: zeros), copied by
// the block's threads in the stage's cp.async group.
template <typename T>
__device__ __forceinline__ void stage_scales(const HeadRows<T> &rows, float *k_to, float *v_to, int32_t first,
                                             int32_t end, int count) {
    for (int i = threadIdx.x; i < count; i += blockDim.x) {
        const int32_t t = first + i;
        const bool valid = t < end;
        cp_async_4(shared_address(k_to + i), rows.k_scale + (valid ? t : 0), valid);
        cp_async_4(shared_address(v_to + i), rows.v_scale + (valid ? t : 0), valid);
    }
}

// Sum over the kLanes lanes of a worker (consecutive lanes of a warp): every
// lane gets the total.
template <int kLanes>
__device__ __forceinline__ float lanes_sum(float v) {
#pragma unroll
    for (int offset = kLanes / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

// exp2(a - b) that is 0 when a is -inf (a state that saw no token).
__device__ __forceinline__ float rescale_factor(float a, float b) { return a == -INFINITY ? 0.0f : exp2f(a - b); }

// ---------------------------------------------------------------------------
// the split kernel

constexpr int kSplitThreads = 128;       // 4 warps
constexpr int kSplitStages = 3;          // shared-memory stages (two in flight while one is read)
constexpr int kSplitMaxGroup = 8;        // query heads per pass over the tokens
constexpr float kLog2E = 1.4426950408889634f;  // logits in log2 units: exp2 instead of exp

// Two shapes of the same kernel (rkv_cache_set_attend_plan's variants):
//   wide   (kNarrow false): 16 elements per lane (8 for f32), 16 KiB of K and
//          16 KiB of V per stage, 4 tokens per worker step, two blocks per SM;
//   narrow (kNarrow true, groups of at most 4): half the elements per lane,
//          8 + 8 KiB stages, 2 tokens per step, at most 128 registers: four
//          blocks per SM, twice the warps to hide latency, more shuffles per token.
// Groups above 4 heads always use half the elements per lane (registers).
template <typename T, int D, int G, bool kNarrow>
struct SplitShape {
    static constexpr int kSize = int(sizeof(T));
    static constexpr int kPreferred = (kSize == 4 ? 8 : 16) / (G > 4 || kNarrow ? 2 : 1);
    static constexpr int kE = kPreferred > D / 32 ? kPreferred : D / 32;  // elements per lane per row
    static constexpr int kBlocksPerSM = kNarrow ? 4 : 2;
    static constexpr int kKBytes = kNarrow ? 8192 : 16384;  // K bytes per stage (and as many of V)
    static constexpr int kLanes = D / kE;                    // lanes per worker (<= 32)
    static constexpr int kVectorBytes = kE * kSize < 16 ? kE * kSize : 16;
    static constexpr int kPerVector = kVectorBytes / kSize;  // elements per vector
    static constexpr int kVectors = kE / kPerVector;         // vectors per lane per row
    static constexpr int kWorkersPerWarp = 32 / kLanes;
    static constexpr int kWorkers = (kSplitThreads / 32) * kWorkersPerWarp;
    static constexpr int kRowBytes = D * kSize;
    static constexpr int kStageTokens = kKBytes / kRowBytes;
    static constexpr int kMaxU = kNarrow ? 2 : 4;
    static constexpr int kU = kStageTokens / kWorkers < kMaxU ? kStageTokens / kWorkers : kMaxU;  // tokens per worker step
    static constexpr int kScaleBytes = kIsFp8<T> ? kStageTokens * 4 : 0;  // per stage, K and again V
    static constexpr int kStageBytes = 2 * kKBytes + 2 * kScaleBytes;
    static constexpr size_t kSharedBytes = size_t(kSplitStages) * kStageBytes;
    static_assert(kLanes >= 1 && kLanes <= 32 && (kLanes & (kLanes - 1)) == 0, "a worker is a power of two of lanes");
    static_assert(kU >= 1 && kStageTokens % (kWorkers * kU) == 0, "a stage holds whole rounds of the workers");
    static_assert(kVectors * kPerVector == kE, "whole vectors per lane");
    // the merge of the warps fits in the stage memory
    static_assert(size_t(kSplitThreads / 32) * G * (D + 2) * 4 <= kSharedBytes, "merge buffer");
};

// Element i of this lane in a row (vectors interleaved across the lanes).
template <typename S>
__device__ __forceinline__ int lane_element(int lane, int i) {
    return ((i / S::kPerVector) * S::kLanes + lane) * S::kPerVector + i % S::kPerVector;
}

// This lane's kE elements of a row in shared memory, as floats.
template <typename T, typename S>
__device__ __forceinline__ void load_lane(const char *row, int lane, float (&out)[S::kE]) {
#pragma unroll
    for (int v = 0; v < S::kVectors; ++v) {
        const char *at = row + (v * S::kLanes + lane) * S::kVectorBytes;
        if constexpr (S::kVectorBytes == 16) {
            unpack16(*reinterpret_cast<const uint4 *>(at), out + v * S::kPerVector, T());
        } else {  // FP8 with 8 elements per lane
            unpack8(*reinterpret_cast<const uint2 *>(at), out + v * S::kPerVector, T());
        }
    }
}

// Partial results of one block: (max in log2 units, sum) per head, then the
// weighted V sums. Index of a partial: (entry * kv_heads + head) * splits + split.
__device__ __forceinline__ float *partial_state(const AttendParams &p, int64_t partial) {
    return p.partial_state + partial * 2 * p.groups;  // [groups][2]
}
__device__ __forceinline__ float *partial_acc(const AttendParams &p, int64_t partial) {
    return p.partial_acc + partial * p.groups * int64_t(p.cache.head_dim);  // [groups][head_dim]
}

// out[entry, head*groups + g, e] from the block's merged state, or from all
// splits' partials (the last block of an (entry, head)).
__device__ __forceinline__ void store_out(const AttendParams &p, int32_t entry, int32_t q_head, int32_t e, float x) {
    store_any(const_cast<void *>(p.out.data), p.out.dtype,
              entry * p.out.stride_seq + int64_t(q_head) * p.out.stride_head + e, x);
}

// The block's state for query head g of a pass, element e: (max, sum,
// weighted V sum) from the kWarps states its warps left in shared memory
// (merge_acc [kWarps][G][D] weighted V sums, merge_max / merge_sum [kWarps][G]).
struct BlockState {
    float max, sum, acc;
};
template <int kWarps, int G, int D>
__device__ __forceinline__ BlockState block_state(const float *merge_acc, const float *merge_max,
                                                  const float *merge_sum, int32_t g, int32_t e) {
    float total_max = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) total_max = fmaxf(total_max, merge_max[w * G + g]);
    float total_sum = 0.0f, total = 0.0f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
        const float factor = rescale_factor(merge_max[w * G + g], total_max);
        total_sum += merge_sum[w * G + g] * factor;
        total += merge_acc[(w * G + g) * D + e] * factor;
    }
    return BlockState{total_max, total_sum, total};
}

// The block's result for query heads g0 .. g0+count of its (entry, KV head,
// split), from its warps' states (block_state): the output itself with one
// split, else the block's partial. The caller synchronises before (the states
// are written) and after (shared memory reuse).
template <int kWarps, int G, int D>
__device__ __forceinline__ void write_block_result(const AttendParams &p, int32_t entry, int32_t head, int32_t split,
                                                   int32_t g0, int32_t count, const float *merge_acc,
                                                   const float *merge_max, const float *merge_sum) {
    const int64_t partial = (int64_t(entry) * p.cache.kv_heads + head) * p.splits + split;
    for (int32_t index = threadIdx.x; index < count * D; index += blockDim.x) {
        const int32_t g = index / D, e = index % D;
        const BlockState state = block_state<kWarps, G, D>(merge_acc, merge_max, merge_sum, g, e);
        const float total_max = state.max, total_sum = state.sum, total = state.acc;
        if (p.splits == 1) {
            store_out(p, entry, head * p.groups + g0 + g, e, total_sum > 0.0f ? total / total_sum : 0.0f);
        } else {
            partial_acc(p, partial)[(g0 + g) * D + e] = total;
            if (e == 0) {
                partial_state(p, partial)[(g0 + g) * 2] = total_max;
                partial_state(p, partial)[(g0 + g) * 2 + 1] = total_sum;
            }
        }
    }
}

// Query head q_head's output elements e .. e + 3 from the splits' results,
// folded in split order with a running maximum, kMergeBatch splits' loads in
// flight at once. load(s, &state, &acc): split s's (max, sum) and its
// weighted V sums of those elements (from global partials, or from another
// block's shared memory: either way the same arithmetic, so the same bits).
constexpr int kMergeBatch = 8;
template <typename Load>
__device__ __forceinline__ void merge_splits_and_store(const AttendParams &p, int32_t entry, int32_t q_head, int32_t e,
                                                       Load &&load) {
    float total_max = -INFINITY, total_sum = 0.0f;
    float4 total = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    for (int32_t s0 = 0; s0 < p.splits; s0 += kMergeBatch) {
        float2 state[kMergeBatch];  // (max, sum) of split s0 + k
        float4 acc[kMergeBatch];
#pragma unroll
        for (int k = 0; k < kMergeBatch; ++k) {
            if (s0 + k < p.splits) {
                load(s0 + k, &state[k], &acc[k]);
            } else {
                state[k] = make_float2(-INFINITY, 0.0f);
                acc[k] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
            }
        }
#pragma unroll
        for (int k = 0; k < kMergeBatch; ++k) {
            const float new_max = fmaxf(total_max, state[k].x);
            const float old_factor = rescale_factor(total_max, new_max);
            const float factor = rescale_factor(state[k].x, new_max);
            total_sum = total_sum * old_factor + state[k].y * factor;
            total.x = total.x * old_factor + acc[k].x * factor;
            total.y = total.y * old_factor + acc[k].y * factor;
            total.z = total.z * old_factor + acc[k].z * factor;
            total.w = total.w * old_factor + acc[k].w * factor;
            total_max = new_max;
        }
    }
    const bool any = total_sum > 0.0f;
    store_out(p, entry, q_head, e, any ? total.x / total_sum : 0.0f);
    store_out(p, entry, q_head, e + 1, any ? total.y / total_sum : 0.0f);
    store_out(p, entry, q_head, e + 2, any ? total.z / total_sum : 0.0f);
    store_out(p, entry, q_head, e + 3, any ? total.w / total_sum : 0.0f);
}

// With several splits, the last block of this (entry, KV head) to finish
// merges every split's partial (in split order: deterministic) into out. Every
// thread of the block calls it after its partials are written. A thread takes
// four consecutive elements of one query head and folds the splits in
// (merge_splits_and_store): no thread waits on another (at one sequence this
// merge is on the critical path of the whole call).
template <int D>
__device__ __forceinline__ void merge_splits_if_last(const AttendParams &p, int32_t entry, int32_t head) {
    __shared__ bool last_block;
    if (p.splits == 1) return;
    __threadfence();
    __syncthreads();
    unsigned *counter = p.counters + int64_t(entry) * p.cache.kv_heads + head;
    if (threadIdx.x == 0) {
        last_block = atomicAdd(counter, 1u) == unsigned(p.splits - 1);
        if (last_block) *counter = 0;  // every other block of the pair has counted
    }
    __syncthreads();
    if (!last_block) return;
    __threadfence();
    const int64_t first = (int64_t(entry) * p.cache.kv_heads + head) * p.splits;
    for (int32_t index = threadIdx.x; index < p.groups * (D / 4); index += blockDim.x) {
        const int32_t g = index / (D / 4), e = (index % (D / 4)) * 4;
        merge_splits_and_store(p, entry, head * p.groups + g, e, [&](int32_t s, float2 *state, float4 *acc) {
            *state = __ldcg(reinterpret_cast<const float2 *>(partial_state(p, first + s) + g * 2));
            *acc = __ldcg(reinterpret_cast<const float4 *>(partial_acc(p, first + s) + g * D + e));
        });
    }
}

// grid (split, KV head, entry), kSplitThreads threads, SplitShape::kSharedBytes
// of dynamic shared memory. G: query heads per pass (a power of two >= the
// group size, or 8 with several passes).
template <typename T, int D, int G, bool kNarrow>
__global__ void __launch_bounds__(kSplitThreads, (SplitShape<T, D, G, kNarrow>::kBlocksPerSM))
    attend_split_kernel(AttendParams p) {
    using S = SplitShape<T, D, G, kNarrow>;
    extern __shared__ __align__(16) char split_shared[];
    const CacheLayer &c = p.cache;
    const int32_t split = blockIdx.x, head = blockIdx.y, entry = blockIdx.z;
    wait_for_prior_grids();  // a programmatic dependent launch (kernels/pdl.cuh)
    allow_dependent_launch();
    const int32_t seq = attend_sequence(p, entry);
    if (seq < 0) return;
    const int32_t groups = p.groups;
    const int32_t held = c.lengths[seq];
    const SplitRange range = split_range(held, p.splits, split);  // this block's tokens
    const int32_t begin = range.begin, end = range.end;
    const int32_t stages = (end - begin + S::kStageTokens - 1) / S::kStageTokens;
    const HeadRows<T> rows = head_rows<T>(c, seq, head);
    const int lane = threadIdx.x % S::kLanes, worker = threadIdx.x / S::kLanes;
    const int warp = threadIdx.x / 32, warp_worker = worker % S::kWorkersPerWarp;
    const float scale_log2 = p.scale * kLog2E;
    constexpr int kChunksPerRow = S::kRowBytes / 16;

    // Stage s: K rows, V rows (and FP8 scales) of tokens begin + s*kStageTokens ..
    auto load_stage = [&](int32_t s) {
        char *k_stage = split_shared + (s % kSplitStages) * S::kStageBytes;
        char *v_stage = k_stage + S::kKBytes;
        const int32_t first = begin + s * S::kStageTokens;
        for (int index = threadIdx.x; index < S::kStageTokens * kChunksPerRow; index += kSplitThreads) {
            const int32_t t = first + index / kChunksPerRow;
            const bool valid = t < end;
            const int64_t offset = valid ? int64_t(t) * S::kRowBytes + (index % kChunksPerRow) * 16 : 0;
            cp_async_16(shared_address(k_stage + index * 16), reinterpret_cast<const char *>(rows.keys) + offset, valid);
            cp_async_16(shared_address(v_stage + index * 16), reinterpret_cast<const char *>(rows.values) + offset, valid);
        }
        if constexpr (kIsFp8<T>) {
            float *k_scales = reinterpret_cast<float *>(v_stage + S::kKBytes);
            stage_scales(rows, k_scales, k_scales + S::kStageTokens, first, end, S::kStageTokens);
        }
        cp_async_commit();
    };

    for (int32_t g0 = 0; g0 < groups; g0 += G) {
        const int32_t count = min(G, groups - g0);
        float q[G][S::kE], acc[G][S::kE], running_max[G], running_sum[G];
#pragma unroll
        for (int g = 0; g < G; ++g) {
            running_max[g] = -INFINITY;
            running_sum[g] = 0.0f;
#pragma unroll
            for (int i = 0; i < S::kE; ++i) {
                acc[g][i] = 0.0f;
                q[g][i] = g < count ? load_any(p.q.data, p.q.dtype,
                                               entry * p.q.stride_seq +
                                                   (int64_t(head) * groups + g0 + g) * p.q.stride_head +
                                                   lane_element<S>(lane, i))
                                    : 0.0f;
            }
        }
        __syncthreads();  // the previous pass is done with the shared memory
        for (int32_t s = 0; s < kSplitStages - 1; ++s)
            if (s < stages) load_stage(s);
        for (int32_t stage = 0; stage < stages; ++stage) {
            cp_async_wait_stage<kSplitStages>(stage, stages);
            __syncthreads();
            if (stage + kSplitStages - 1 < stages) load_stage(stage + kSplitStages - 1);
            const char *k_stage = split_shared + (stage % kSplitStages) * S::kStageBytes;
            const char *v_stage = k_stage + S::kKBytes;
            const float *k_scales = reinterpret_cast<const float *>(v_stage + S::kKBytes);
            const float *v_scales = k_scales + S::kStageTokens;
            const int32_t stage_first = begin + stage * S::kStageTokens;
#pragma unroll 1
            for (int round = 0; round < S::kStageTokens / (S::kWorkers * S::kU); ++round) {
                const int local0 = (round * S::kWorkers + worker) * S::kU;
                // logits of kU tokens x G heads (log2 units)
                float logit[S::kU][G];
#pragma unroll
                for (int u = 0; u < S::kU; ++u) {
                    float k[S::kE];
                    load_lane<T, S>(k_stage + (local0 + u) * S::kRowBytes, lane, k);
#pragma unroll
                    for (int g = 0; g < G; ++g) {
                        float dot = 0.0f;
#pragma unroll
                        for (int i = 0; i < S::kE; ++i) dot = fmaf(q[g][i], k[i], dot);
                        logit[u][g] = dot;
                    }
                }
#pragma unroll
                for (int u = 0; u < S::kU; ++u) {
                    const bool valid = stage_first + local0 + u < end;
                    float factor = scale_log2;
                    if constexpr (kIsFp8<T>) factor *= k_scales[local0 + u];
#pragma unroll
                    for (int g = 0; g < G; ++g) {
                        const float x = lanes_sum<S::kLanes>(logit[u][g]) * factor;
                        logit[u][g] = valid ? x : -INFINITY;
                    }
                }
                // one rescale per kU tokens
                float weight[S::kU][G];
#pragma unroll
                for (int g = 0; g < G; ++g) {
                    float tile_max = logit[0][g];
#pragma unroll
                    for (int u = 1; u < S::kU; ++u) tile_max = fmaxf(tile_max, logit[u][g]);
                    const float new_max = fmaxf(running_max[g], tile_max);
                    const float correction = rescale_factor(running_max[g], new_max);
                    float sum = running_sum[g] * correction;
#pragma unroll
                    for (int u = 0; u < S::kU; ++u) {
                        weight[u][g] = logit[u][g] == -INFINITY ? 0.0f : exp2f(logit[u][g] - new_max);
                        sum += weight[u][g];
                    }
                    running_sum[g] = sum;
                    running_max[g] = new_max;
#pragma unroll
                    for (int i = 0; i < S::kE; ++i) acc[g][i] *= correction;
                }
#pragma unroll
                for (int u = 0; u < S::kU; ++u) {
                    float v[S::kE];
                    load_lane<T, S>(v_stage + (local0 + u) * S::kRowBytes, lane, v);
                    float v_factor = 1.0f;
                    if constexpr (kIsFp8<T>) v_factor = v_scales[local0 + u];
#pragma unroll
                    for (int g = 0; g < G; ++g) {
                        const float w = weight[u][g] * v_factor;
#pragma unroll
                        for (int i = 0; i < S::kE; ++i) acc[g][i] = fmaf(w, v[i], acc[g][i]);
                    }
                }
            }
        }

        // Merge the workers of each warp (shuffles), then the warps (shared memory).
#pragma unroll
        for (int offset = S::kLanes; offset < 32; offset <<= 1) {
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float other_max = __shfl_xor_sync(0xffffffffu, running_max[g], offset);
                const float other_sum = __shfl_xor_sync(0xffffffffu, running_sum[g], offset);
                const float new_max = fmaxf(running_max[g], other_max);
                const float mine = rescale_factor(running_max[g], new_max);
                const float theirs = rescale_factor(other_max, new_max);
                running_sum[g] = running_sum[g] * mine + other_sum * theirs;
#pragma unroll
                for (int i = 0; i < S::kE; ++i) {
                    const float other = __shfl_xor_sync(0xffffffffu, acc[g][i], offset);
                    acc[g][i] = acc[g][i] * mine + other * theirs;
                }
                running_max[g] = new_max;
            }
        }
        __syncthreads();  // every stage is consumed: the stage memory is free
        constexpr int kWarps = kSplitThreads / 32;
        float *merge_acc = reinterpret_cast<float *>(split_shared);  // [warps][G][D]
        float *merge_max = merge_acc + kWarps * G * D;               // [warps][G]
        float *merge_sum = merge_max + kWarps * G;                   // [warps][G]
        if (warp_worker == 0) {
#pragma unroll
            for (int g = 0; g < G; ++g) {
#pragma unroll
                for (int i = 0; i < S::kE; ++i) merge_acc[(warp * G + g) * D + lane_element<S>(lane, i)] = acc[g][i];
                if (lane == 0) {
                    merge_max[warp * G + g] = running_max[g];
                    merge_sum[warp * G + g] = running_sum[g];
                }
            }
        }
        __syncthreads();
        write_block_result<kWarps, G, D>(p, entry, head, split, g0, count, merge_acc, merge_max, merge_sum);
    }
    merge_splits_if_last<D>(p, entry, head);
}

// ---------------------------------------------------------------------------
// any other head_dim: one block per (KV head, entry), registers only

constexpr int kAttendThreads = 256;

template <typename T>
struct GenericShape {
    static constexpr int kPerLane = 8;   // head_dim <= 256 = 32 lanes x 8
    static constexpr int kLanes = 32;
    static constexpr int kTokenGroups = kAttendThreads / kLanes;
    static constexpr int kMaxGroup = 4;  // query heads per pass
};

// grid (KV head, entry), kAttendThreads threads.
template <typename T>
__global__ void __launch_bounds__(kAttendThreads) attend_kernel(AttendParams p) {
    using S = GenericShape<T>;
    __shared__ float acc_shared[S::kTokenGroups][S::kMaxGroup][S::kLanes * S::kPerLane];
    __shared__ float max_shared[S::kTokenGroups][S::kMaxGroup];
    __shared__ float sum_shared[S::kTokenGroups][S::kMaxGroup];
    const CacheLayer &c = p.cache;
    const int32_t head = blockIdx.x, entry = blockIdx.y;
    wait_for_prior_grids();  // a programmatic dependent launch (kernels/pdl.cuh)
    allow_dependent_launch();
    const int32_t seq = attend_sequence(p, entry);
    if (seq < 0) return;
    const int32_t d = c.head_dim, groups = p.groups;
    const int32_t held = c.lengths[seq];
    const int lane = threadIdx.x % S::kLanes, token_group = threadIdx.x / S::kLanes;
    const HeadRows<T> rows = head_rows<T>(c, seq, head);
    const float scale_log2 = p.scale * kLog2E;

    for (int32_t g0 = 0; g0 < groups; g0 += S::kMaxGroup) {
        const int32_t count = min(S::kMaxGroup, groups - g0);
        float q[S::kMaxGroup][S::kPerLane];
        float running_max[S::kMaxGroup], running_sum[S::kMaxGroup], acc[S::kMaxGroup][S::kPerLane];
#pragma unroll
        for (int g = 0; g < S::kMaxGroup; ++g) {
            running_max[g] = -INFINITY;
            running_sum[g] = 0.0f;
#pragma unroll
            for (int i = 0; i < S::kPerLane; ++i) {
                const int e = lane + 32 * i;
                acc[g][i] = 0.0f;
                q[g][i] = (g < count && e < d)
                              ? load_any(p.q.data, p.q.dtype,
                                         entry * p.q.stride_seq + (int64_t(head) * groups + g0 + g) * p.q.stride_head + e)
                              : 0.0f;
            }
        }
        // The loop bound is uniform over the block: every warp stays whole for the shuffles.
        for (int32_t base = 0; base < held; base += S::kTokenGroups) {
            const int32_t t = min(base + token_group, held - 1);  // a clamped row is ignored
            const bool valid = base + token_group < held;
            float k[S::kPerLane], v[S::kPerLane];
#pragma unroll
            for (int i = 0; i < S::kPerLane; ++i) {
                const int e = lane + 32 * i;
                k[i] = e < d ? to_float(rows.keys[int64_t(t) * d + e]) : 0.0f;
                v[i] = e < d ? to_float(rows.values[int64_t(t) * d + e]) : 0.0f;
            }
            const float k_factor = scale_log2 * (rows.k_scale ? rows.k_scale[t] : 1.0f);
            const float v_factor = rows.v_scale ? rows.v_scale[t] : 1.0f;
#pragma unroll
            for (int g = 0; g < S::kMaxGroup; ++g) {
                float dot = 0.0f;
#pragma unroll
                for (int i = 0; i < S::kPerLane; ++i) dot = fmaf(q[g][i], k[i], dot);
                const float logit = warp_sum(dot) * k_factor;
                if (!valid) continue;
                const float new_max = fmaxf(running_max[g], logit);
                const float correction = rescale_factor(running_max[g], new_max);
                const float weight = exp2f(logit - new_max);
                running_sum[g] = running_sum[g] * correction + weight;
#pragma unroll
                for (int i = 0; i < S::kPerLane; ++i) acc[g][i] = acc[g][i] * correction + weight * v_factor * v[i];
                running_max[g] = new_max;
            }
        }
#pragma unroll
        for (int g = 0; g < S::kMaxGroup; ++g) {
#pragma unroll
            for (int i = 0; i < S::kPerLane; ++i) acc_shared[token_group][g][lane + 32 * i] = acc[g][i];
            if (lane == 0) {
                max_shared[token_group][g] = running_max[g];
                sum_shared[token_group][g] = running_sum[g];
            }
        }
        __syncthreads();
        for (int32_t index = threadIdx.x; index < count * d; index += blockDim.x) {
            const int32_t g = index / d, e = index % d;
            float total_max = -INFINITY;
            for (int tg = 0; tg < S::kTokenGroups; ++tg) total_max = fmaxf(total_max, max_shared[tg][g]);
            float total_sum = 0.0f, total = 0.0f;
            for (int tg = 0; tg < S::kTokenGroups; ++tg) {
                const float factor = rescale_factor(max_shared[tg][g], total_max);
                total_sum += sum_shared[tg][g] * factor;
                total += acc_shared[tg][g][e] * factor;
            }
            store_out(p, entry, head * groups + g0 + g, e, total_sum > 0.0f ? total / total_sum : 0.0f);
        }
        __syncthreads();  // shared memory is reused by the next pass over the group
    }
}

}  // namespace rkv::kernels
