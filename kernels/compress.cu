// Launchers of the scoring, selection and compaction kernels
// (kernels/scoring.cuh, kernels/select.cuh), and the shared-memory setup.
#include <algorithm>

#include "launch.h"
#include "scoring.cuh"
#include "select.cuh"
#include "shared_limit.cuh"

namespace rkv::kernels {

namespace {

dim3 heads_jobs(const CompressParams &p) { return dim3(unsigned(p.cache.kv_heads), unsigned(p.num_jobs)); }

}  // namespace

cudaError_t configure_kernels(int32_t dtype, int32_t head_dim, int32_t capacity, int32_t groups) {
    cudaError_t error = configure_append_kernels(dtype, head_dim, capacity, groups);
    if (error == cudaSuccess) error = configure_gram_kernels(dtype, head_dim);
    if (error == cudaSuccess) error = configure_gram_wgmma_kernels(dtype, head_dim);
    if (error == cudaSuccess) error = configure_gram_int8_kernels(dtype, head_dim);
    if (error == cudaSuccess) error = configure_attend_kernels(dtype);
    if (error == cudaSuccess) error = configure_sequence_kernels(dtype, head_dim, capacity, groups);
    if (error != cudaSuccess) return error;
    // (at least the 48 KiB a staged importance pooling may take in it)
    const size_t select = std::max<size_t>(select_shared_bytes(capacity), 48 * 1024);
    RKV_DISPATCH_DTYPE(dtype, T, { error = raise_shared_limit(select_compact_kernel<T>, select); })
    return error;
}

cudaError_t launch_key_norms(const CompressParams &p, cudaStream_t stream) {
    RKV_DISPATCH_DTYPE(p.cache.dtype, T, { key_norms_kernel<T><<<heads_jobs(p), kScoreThreads, 0, stream>>>(p); })
    return cudaGetLastError();
}

cudaError_t launch_importance_pool(const CompressParams &p, cudaStream_t stream) {
    const int32_t staged = importance_pool_staged(p.pooled_groups, p.cache.window, p.cache.capacity);
    const size_t bytes = importance_pool_shared_bytes(p.cache.window, p.cache.capacity, staged);
    importance_pool_kernel<<<heads_jobs(p), kPoolThreads, bytes, stream>>>(p, staged);
    return cudaGetLastError();
}

cudaError_t launch_gram_row_stats(const CompressParams &p, int32_t first_row, int32_t max_rows,
                                  cudaStream_t stream) {
    constexpr int kRowsPerBlock = kRowStatThreads / 32;
    const dim3 grid(unsigned((max_rows + kRowsPerBlock - 1) / kRowsPerBlock), unsigned(p.cache.kv_heads),
                    unsigned(p.num_jobs));
    gram_row_stats_kernel<<<grid, kRowStatThreads, 0, stream>>>(p, first_row);
    return cudaGetLastError();
}

cudaError_t launch_redundancy(const CompressParams &p, cudaStream_t stream) {
    redundancy_kernel<<<heads_jobs(p), kRedundancyThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_keydiff(const CompressParams &p, cudaStream_t stream) {
    const size_t shared = size_t(p.cache.head_dim) * sizeof(float);
    RKV_DISPATCH_DTYPE(p.cache.dtype, T, { keydiff_kernel<T><<<heads_jobs(p), kScoreThreads, shared, stream>>>(p); })
    return cudaGetLastError();
}

cudaError_t launch_select_compact(const CompressParams &p, cudaStream_t stream) {
    const size_t shared = select_compact_shared_bytes(p);
    RKV_DISPATCH_DTYPE(p.cache.dtype, T, {
        select_compact_kernel<T><<<heads_jobs(p), kSelectThreads, shared, stream>>>(p);
    })
    return cudaGetLastError();
}

cudaError_t launch_commit(const CompressParams &p, cudaStream_t stream) {
    commit_kernel<<<1, kMaxGroupJobs, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace rkv::kernels
