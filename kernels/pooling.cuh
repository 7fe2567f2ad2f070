// The importance pooling of one head (algorithm.md: softmax of the window
// queries' logits over the candidates, mean over the window, max-pool), as
// device code that a block of any size runs: importance_pool_kernel
// (kernels/scoring.cuh) on the cuBLASLt path, select_compact_kernel before it
// selects on the fused paths (kernels/select.cuh, kSelectionPools). The
// arithmetic follows src/cpu/scoring.cpp (float32, sums in double).
#pragma once

#include "common.cuh"

namespace rkv::kernels {

// The importance of head h of group job jj, all threads of the block taking
// part. logits [rows = G*window, cap] (row g*window + a), from the cuBLASLt
// product scaled by 1/sqrt(d) over the C = held - window candidates (or already
// pooled over the group: pooled_groups 1).
// Phase 1: a warp per window query finds the max and the softmax normaliser of
// its group-pooled row; phase 2: every candidate averages its probabilities
// over the window (in window order, as the CPU); phase 3: max-pool.
// Scratch of the caller: row_max, row_inverse [window], averaged [C]. kStaged:
// `staged` holds the pooled logits [window][C] in shared memory already
// (pooled_groups 1), which phase 1 overwrites with exp(logit - row max) for
// phase 2 (one exponential per logit instead of two); else they are read from
// scratch.logits. (Two instances, not a test per element: with the test, each
// iteration of the loops waited for its load before the next one's went out.
// The sums keep their order: the unrolled loops only overlap the loads and
// the exponentials.)
template <bool kStaged>
__device__ __forceinline__ void pool_head(const CompressParams &p, const Job &job, int32_t jj, int32_t h,
                                          float *row_max, float *row_inverse, float *averaged, float *staged) {
    const int32_t window = p.cache.window;
    const int32_t groups = p.pooled_groups;  // 1: the fused kernel pooled already
    const int32_t candidates = job.held - window;
    const int64_t row = scratch_row(p, jj, h);
    const int64_t cap = p.cache.capacity;
    const float *logits = p.scratch.logits + row * p.scratch.rows;
    // pooled[a][j]: window row a of candidate j, pooled over the group.
    auto pooled = [&](int32_t a, int32_t j) {
        if constexpr (kStaged) return staged[a * candidates + j];
        else return pool_group(p.pooling, groups, [&](int32_t g) { return logits[(int64_t(g) * window + a) * cap + j]; });
    };
    // (Unrolled only from shared memory: from scratch, G loads per element.)
    constexpr int kUnroll = kStaged ? 4 : 1;
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int32_t a = threadIdx.x >> 5; a < window; a += warps) {
        float local_max = -INFINITY;
#pragma unroll kUnroll
        for (int32_t j = lane; j < candidates; j += 32) local_max = fmaxf(local_max, pooled(a, j));
        const float max_value = warp_max(local_max);
        double local_sum = 0.0;
#pragma unroll kUnroll
        for (int32_t j = lane; j < candidates; j += 32) {
            const float e = expf(pooled(a, j) - max_value);
            local_sum += e;
            if constexpr (kStaged) staged[a * candidates + j] = e;
        }
        const double sum = warp_sum(local_sum);
        if (lane == 0) {
            row_max[a] = max_value;
            row_inverse[a] = float(1.0 / sum);
        }
    }
    __syncthreads();
    const float inverse_window = 1.0f / float(window);
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x) {
        float sum = 0.0f;
#pragma unroll(2 * kUnroll)
        for (int32_t a = 0; a < window; ++a) {
            float e;
            if constexpr (kStaged) e = staged[a * candidates + j];
            else e = expf(pooled(a, j) - row_max[a]);
            sum += e * row_inverse[a];
        }
        averaged[j] = sum * inverse_window;
    }
    __syncthreads();
    const int32_t half = p.kernel / 2;
    float *out = p.scratch.importance + row;
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x) {
        const int32_t lo = max(0, j - half), hi = min(candidates - 1, j + half);
        float best = averaged[lo];
#pragma unroll 4
        for (int32_t i = lo + 1; i <= hi; ++i) best = fmaxf(best, averaged[i]);
        out[j] = best;
    }
}

// pool_head, staged (the logits in shared memory) or from scratch.logits.
__device__ inline void importance_pool_head(const CompressParams &p, const Job &job, int32_t jj, int32_t h,
                                            float *row_max, float *row_inverse, float *averaged,
                                            float *staged = nullptr) {
    if (staged != nullptr) pool_head<true>(p, job, jj, h, row_max, row_inverse, averaged, staged);
    else pool_head<false>(p, job, jj, h, row_max, row_inverse, averaged, nullptr);
}

// Dynamic shared memory of importance_pool_kernel: the softmax's row maxima
// and inverse sums [2][window]; staged, also the pooled logits
// [window][capacity] and the window averages [capacity].
__host__ __device__ constexpr size_t importance_pool_shared_bytes(int32_t window, int32_t capacity, bool staged) {
    return (size_t(2) * window + (staged ? (size_t(window) + 1) * size_t(capacity) : 0)) * sizeof(float);
}

// Whether the importance pooling stages a head's logits in shared memory: where
// they are pooled over the group already and a head fits in the 48 KiB every
// kernel may use without asking (window 8: capacities up to 1,363).
__host__ __device__ constexpr bool importance_pool_staged(int32_t pooled_groups, int32_t window, int32_t capacity) {
    return pooled_groups == 1 && importance_pool_shared_bytes(window, capacity, true) <= 48 * 1024;
}

// The importance of head h of group job jj into scratch.importance, all
// threads of the block taking part; shared: importance_pool_shared_bytes
// (window, capacity, staged) bytes. staged: the head's logits are first copied
// into shared memory with every thread's loads in flight together, and the
// window averages stay there, so the three passes over them cost one trip to
// memory instead of a chain of dependent ones per warp; else the passes read
// scratch.logits and the averages go to scratch.aux.
__device__ inline void importance_pool(const CompressParams &p, const Job &job, int32_t jj, int32_t h, float *shared,
                                       bool staged) {
    const int32_t window = p.cache.window;
    float *row_max = shared;                      // [window]
    float *row_inverse = shared + window;         // [window]
    float *logits_staged = row_inverse + window;  // staged: [window][candidates], then [candidates] averages
    const int64_t row = scratch_row(p, jj, h);
    if (!staged) {
        importance_pool_head(p, job, jj, h, row_max, row_inverse, p.scratch.aux + row);
        return;
    }
    const int32_t candidates = job.held - window;
    const int64_t cap = p.cache.capacity;
    const float *logits = p.scratch.logits + row * p.scratch.rows;  // [window, cap]
    const int32_t count = window * candidates;
    // kBatch loads per thread go out before their stores (stores into shared
    // memory between them made each load wait for the one before).
    constexpr int kBatch = 8;
    const int32_t stride = int32_t(blockDim.x);
    for (int32_t first = threadIdx.x; first < count; first += kBatch * stride) {
        float values[kBatch];
#pragma unroll
        for (int u = 0; u < kBatch; ++u) {
            const int32_t index = first + u * stride;
            if (index < count) {
                const int32_t a = index / candidates, j = index - a * candidates;
                values[u] = __ldcg(logits + a * cap + j);  // (read once: past the L1)
            }
        }
#pragma unroll
        for (int u = 0; u < kBatch; ++u)
            if (first + u * stride < count) logits_staged[first + u * stride] = values[u];
    }
    __syncthreads();
    importance_pool_head(p, job, jj, h, row_max, row_inverse, logits_staged + count, logits_staged);
}

}  // namespace rkv::kernels
