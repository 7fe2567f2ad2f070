// The scores a compression ranks (algorithm.md), after the matrix products:
//   importance_pool  window-query logits -> group pooling, softmax over the
//                    candidates, window mean, max-pool          (R-KV, SnapKV;
//                    its device code in kernels/pooling.cuh)
//   key_norms        1 / (|k| + 1e-8) per key                    (cuBLASLt path)
//   gram_row_stats   raw key-Gram rows -> per row: sum of S, latest column
//                    above tau and S there, S[r, 0]              (cuBLASLt path)
//   redundancy       row stats -> column sums with the zeroed entries taken
//                    off -> softmax of the column means          (R-KV)
//   keydiff          -cos(k, mean key)                           (KeyDiff)
// Every kernel takes the group's CompressParams, one block per (head, job), and
// skips jobs the device no longer holds in the planned state (see Job). On
// the fused and wgmma paths the pooling and the redundancy run inside
// select_compact_kernel instead (kernels/select.cuh, kSelectionPools and
// kSelectionRedundancy); their kernels serve the cuBLASLt path.
// The arithmetic follows src/cpu/scoring.cpp step by step (float32, with the
// same sums in double), so scores agree to float rounding.
#pragma once

#include "common.cuh"
#include "pooling.cuh"

namespace rkv::kernels {

constexpr int kScoreThreads = 1024;      // key norms, KeyDiff
constexpr int kPoolThreads = 256;        // importance pooling: a warp per window row
constexpr int kRedundancyThreads = 512;  // four blocks per SM (launch bounds): 64 jobs x 8 heads in one wave
constexpr int kRowStatThreads = 256;  // gram_row_stats: a warp per row
constexpr double kFixedScale = 274877906944.0;  // 2^38: fixed point of the corrections
constexpr int kPartialLoads = 16;     // redundancy: a row's partial stats loaded at once

// grid (kv head, job): importance_pool, staged or not (importance_pool_staged).
__global__ void __launch_bounds__(kPoolThreads) importance_pool_kernel(CompressParams p, int32_t staged) {
    extern __shared__ float pool_shared[];
    const Job job = p.jobs[blockIdx.y];
    if (!job_active(p, job)) return;
    importance_pool(p, job, blockIdx.y, blockIdx.x, pool_shared, staged != 0);
}

// grid (kv head, job), kScoreThreads threads: a warp per key.
template <typename T>
__global__ void __launch_bounds__(kScoreThreads) key_norms_kernel(CompressParams p) {
    const Job job = p.jobs[blockIdx.y];
    if (!job_active(p, job)) return;
    const int32_t h = blockIdx.x, d = p.cache.head_dim;
    const CacheLayer c = job_cache(p, job);
    const T *keys = scoring_keys<T>(p, c, blockIdx.y, job, h);
    float *inv_norm = p.scratch.inv_norm + scratch_row(p, blockIdx.y, h);
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int32_t r = threadIdx.x >> 5; r < job.held; r += warps) {
        double squares = 0.0;
        for (int32_t e = lane; e < d; e += 32) {
            const double x = to_float(keys[int64_t(r) * d + e]);
            squares += x * x;
        }
        squares = warp_sum(squares);
        if (lane == 0) inv_norm[r] = 1.0f / (float(sqrt(squares)) + 1e-8f);
    }
}

// grid (row block, kv head, job), kRowStatThreads threads: a warp per row of
// the raw Gram block gram [kGramTile, cap] (rows r0 .. r0 + rows - 1).
// S[r, c] = raw * inv_r * inv_c; the diagonal is 0. Writes slot 0 of the
// partial row stats, and S[r, 0].
__global__ void __launch_bounds__(kRowStatThreads) gram_row_stats_kernel(CompressParams p, int32_t r0) {
    const Job job = p.jobs[blockIdx.z];
    if (!job_active(p, job)) return;
    const int32_t h = blockIdx.y, n = job.held;
    const int lane = threadIdx.x & 31;
    const int32_t local = blockIdx.x * (kRowStatThreads / 32) + (threadIdx.x >> 5);
    const int32_t r = r0 + local;
    if (local >= kGramTile || r >= n) return;
    const int64_t row = scratch_row(p, blockIdx.z, h);
    const int64_t cap = p.cache.capacity;
    const float *gram = p.scratch.gram + (row * kGramTile) + int64_t(local) * cap;
    const float *inv = p.scratch.inv_norm + row;
    const float inv_r = inv[r], tau = p.threshold;
    float sum = 0.0f, value = 0.0f;
    int32_t latest = -1;
    for (int32_t c = lane; c < n; c += 32) {
        const float s = c == r ? 0.0f : gram[c] * inv_r * inv[c];
        sum += s;
        if (s > tau) {  // c grows along the loop: the last hit is this lane's latest
            latest = c;
            value = s;
        }
        if (c == 0) p.scratch.first_column[row + r] = s;
    }
    sum = warp_sum(sum);
    keep_latest_over_lanes<1, 16>(latest, value);
    if (lane == 0) {
        const int64_t slot0 = row * p.scratch.tiles;  // partial slot 0 of this head
        p.scratch.partial_sum[slot0 + r] = sum;
        p.scratch.partial_latest[slot0 + r] = latest;
        p.scratch.partial_value[slot0 + r] = value;
    }
}

// The redundancy of head h of group job jj, all threads of the block taking
// part. Column sums of S from the row sums (slot 0; S is symmetric: column c
// sums to row c), minus the entries the rule zeroes, taken off in fixed point
// so the result does not depend on the order of the atomics; then R = softmax
// of the column means over all n slots. Scratch of the caller: corrections [n]
// (global or shared memory), reduce_d [32].
__device__ void redundancy_head(const CompressParams &p, const Job &job, int32_t jj, int32_t h,
                                long long *corrections, double *reduce_d) {
    const int32_t n = job.held, candidates = n - p.cache.window;
    const int64_t row = scratch_row(p, jj, h);
    const int64_t cap = p.cache.capacity;
    const int32_t tiles = p.gram_fused ? (n + kGramTile - 1) / kGramTile : 1;
    const float *partial_sum = p.scratch.partial_sum + row * p.scratch.tiles;
    const int32_t *partial_latest = p.scratch.partial_latest + row * p.scratch.tiles;
    const float *partial_value = p.scratch.partial_value + row * p.scratch.tiles;
    for (int32_t c = threadIdx.x; c < n; c += blockDim.x) corrections[c] = 0;
    __syncthreads();
    for (int32_t r = threadIdx.x; r < n; r += blockDim.x) {
        // The row's latest column over its tiles' partials: the first tile
        // holding the largest (strict >), its value loaded once; the tiles'
        // loads go out together (one at a time, they made this the launch's
        // critical path).
        int32_t latest = -1, latest_tile = -1;
        for (int32_t t0 = 0; t0 < tiles; t0 += kPartialLoads) {
            int32_t candidate[kPartialLoads];
#pragma unroll
            for (int u = 0; u < kPartialLoads; ++u)
                candidate[u] = t0 + u < tiles ? partial_latest[(t0 + u) * cap + r] : -1;
#pragma unroll
            for (int u = 0; u < kPartialLoads; ++u)
                if (candidate[u] > latest) {
                    latest = candidate[u];
                    latest_tile = t0 + u;
                }
        }
        float value = latest_tile >= 0 ? partial_value[latest_tile * cap + r] : 0.0f;
        if (latest < 0 && p.slot0_quirk) {  // the official code's argmax of an all-zero row
            latest = 0;
            value = p.scratch.first_column[row + r];
        }
        if (latest >= 0)
            atomicAdd(reinterpret_cast<unsigned long long *>(corrections + latest),
                      static_cast<unsigned long long>(__double2ll_rn(double(value) * kFixedScale)));
    }
    __syncthreads();
    double local_max = -INFINITY;
    for (int32_t c = threadIdx.x; c < n; c += blockDim.x) {
        double column = partial_sum[c];  // slot 0: the row sum, = the column sum (S is symmetric)
        column -= double(corrections[c]) / kFixedScale;
        const double mean = column / n;
        corrections[c] = __double_as_longlong(mean);  // this thread's slot: reuse it for the mean
        local_max = fmax(local_max, mean);
    }
    const double max_mean = block_max(local_max, reduce_d);
    double local_sum = 0.0;
    for (int32_t c = threadIdx.x; c < n; c += blockDim.x) {
        const double e = exp(__longlong_as_double(corrections[c]) - max_mean);
        corrections[c] = __double_as_longlong(e);  // this thread's slot again: the exponential, for the output
        local_sum += e;
    }
    const double sum = block_sum(local_sum, reduce_d);
    float *out = p.scratch.redundancy + row;
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x)  // (j < n: the slots this thread wrote)
        out[j] = float(__longlong_as_double(corrections[j]) / sum);
}

// grid (kv head, job), kRedundancyThreads threads: redundancy_head with the
// corrections in scratch.
__global__ void __launch_bounds__(kRedundancyThreads, 4) redundancy_kernel(CompressParams p) {
    __shared__ double reduce_d[32];
    const Job job = p.jobs[blockIdx.y];
    if (!job_active(p, job)) return;
    const int32_t jj = blockIdx.y, h = blockIdx.x;
    redundancy_head(p, job, jj, h, p.scratch.corrections + scratch_row(p, jj, h), reduce_d);
}

// grid (kv head, job), kScoreThreads threads: final_scores[j] = -cos(k_j, mean
// key) for the candidates; the mean is summed key by key in order, as the CPU does.
template <typename T>
__global__ void __launch_bounds__(kScoreThreads) keydiff_kernel(CompressParams p) {
    extern __shared__ float mean[];  // [head_dim]
    __shared__ double reduce_d[32];
    const Job job = p.jobs[blockIdx.y];
    if (!job_active(p, job)) return;
    const int32_t h = blockIdx.x, d = p.cache.head_dim, n = job.held;
    const CacheLayer c = job_cache(p, job);
    const T *keys = scoring_keys<T>(p, c, blockIdx.y, job, h);
    for (int32_t e = threadIdx.x; e < d; e += blockDim.x) {
        float sum = 0.0f;
        for (int32_t i = 0; i < n; ++i) sum += to_float(keys[int64_t(i) * d + e]);
        mean[e] = sum / float(n);
    }
    __syncthreads();
    double local = 0.0;
    for (int32_t e = threadIdx.x; e < d; e += blockDim.x) local += double(mean[e]) * mean[e];
    const float mean_norm = float(sqrt(block_sum(local, reduce_d)));
    float *out = p.scratch.final_scores + scratch_row(p, blockIdx.y, h);
    const int lane = threadIdx.x & 31, warps = blockDim.x >> 5;
    for (int32_t j = threadIdx.x >> 5; j < n - p.cache.window; j += warps) {
        float dot = 0.0f;
        double squares = 0.0;
        for (int32_t e = lane; e < d; e += 32) {
            const float x = to_float(keys[int64_t(j) * d + e]);
            dot += x * mean[e];
            squares += double(x) * x;
        }
        dot = warp_sum(dot);
        squares = warp_sum(squares);
        if (lane == 0) out[j] = -dot / fmaxf(float(sqrt(squares)) * mean_norm, 1e-12f);
    }
}

}  // namespace rkv::kernels
