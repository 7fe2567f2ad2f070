// score_select_kernel: what importance_pool_kernel, redundancy_kernel and
// select_compact_kernel do for one (head, job), in one block and one launch
// (the wgmma path). The steps are the same device functions; what changes:
//   - the window averages and the redundancy corrections live in shared
//     memory, not in global scratch;
//   - no kernel boundary between the steps, so a block that pools or sorts
//     overlaps with the other block on its SM that streams K/V;
//   - position-order compaction is pipelined (compact_rows_pipelined): the
//     next chunk is read while this one is written, in-place rows are skipped.
#pragma once

#include "scoring.cuh"
#include "select.cuh"

namespace rkv::kernels {

// Dynamic shared memory of score_select_kernel: the largest of its steps'
// (each reuses the same bytes after the previous one is done).
__host__ __device__ constexpr size_t score_select_shared_bytes(int32_t capacity, int32_t window) {
    const size_t pool = (size_t(2) * window + capacity) * sizeof(float);  // row max, inverse, averages
    const size_t redundancy = size_t(capacity) * sizeof(long long);      // corrections
    const size_t select = select_shared_bytes(capacity);
    const size_t larger = pool > redundancy ? pool : redundancy;
    return larger > select ? larger : select;
}

// grid (kv head, job), kSelectThreads threads, score_select_shared_bytes of
// dynamic shared memory.
template <typename T>
__global__ void __launch_bounds__(kSelectThreads, 2) score_select_kernel(CompressParams p) {
    extern __shared__ uint64_t select_shared[];
    __shared__ int32_t reduce_i[32];
    __shared__ double reduce_d[32];
    __shared__ int32_t warp_counts[kSelectThreads / 32];
    const Job job = p.jobs[blockIdx.y];
    if (!job_active(p, job)) return;
    const int32_t jj = blockIdx.y, h = blockIdx.x, window = p.cache.window;
    if (p.scorer == Scorer::ImportanceRedundancy || p.scorer == Scorer::Importance) {
        float *row_max = reinterpret_cast<float *>(select_shared);  // [window]
        float *row_inverse = row_max + window;                        // [window]
        float *averaged = row_inverse + window;                       // [candidates]
        importance_pool_head(p, job, jj, h, row_max, row_inverse, averaged);
        __syncthreads();
    }
    if (p.scorer == Scorer::ImportanceRedundancy) {
        redundancy_head(p, job, jj, h, reinterpret_cast<long long *>(select_shared), reduce_d);
        __syncthreads();
    }
    select_compact_head<T, true>(p, job, jj, h, select_shared, reduce_i, warp_counts);
}

}  // namespace rkv::kernels
