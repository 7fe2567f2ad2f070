// Launchers of the sequence kernels (kernels/sequence.cuh): H2O's deferred
// commits, reset, rollback, fork and batch ids.
#include "launch.h"
#include "sequence.cuh"
#include "shared_limit.cuh"

namespace rkv::kernels {

namespace {

size_t h2o_shared(const CacheLayer &c) { return h2o_shared_bytes(c.capacity, c.q_heads / c.kv_heads, c.head_dim); }

}  // namespace

cudaError_t launch_h2o_commit_before_append(const AppendParams &p, cudaStream_t stream) {
    const CacheLayer &c = p.cache;
    RKV_DISPATCH_STORAGE(c.dtype, T, {
        h2o_commit_before_append_kernel<T>
            <<<dim3(unsigned(c.kv_heads), unsigned(p.num_chunks)), kAppendThreads, h2o_shared(c), stream>>>(p);
    })
    return cudaGetLastError();
}

cudaError_t launch_h2o_commit_all(const CommitParams &p, cudaStream_t stream) {
    const CacheLayer &c = p.cache;
    RKV_DISPATCH_STORAGE(c.dtype, T, {
        h2o_commit_all_kernel<T>
            <<<dim3(unsigned(c.kv_heads), unsigned(p.num_jobs)), kAppendThreads, h2o_shared(c), stream>>>(p);
    })
    return cudaGetLastError();
}

cudaError_t launch_truncate(const SequenceParams &p, cudaStream_t stream) {
    RKV_DISPATCH_STORAGE(p.layer0.dtype, T, {
        truncate_kernel<T><<<unsigned(p.layers), kSequenceThreads, 0, stream>>>(p);
    })
    return cudaGetLastError();
}

cudaError_t launch_copy(const SequenceParams &p, cudaStream_t stream) {
    constexpr unsigned kBlocksPerLayer = 32;
    RKV_DISPATCH_STORAGE(p.layer0.dtype, T, {
        copy_kernel<T><<<dim3(kBlocksPerLayer, unsigned(p.layers)), kSequenceThreads, 0, stream>>>(p);
    })
    return cudaGetLastError();
}

cudaError_t launch_clear_sequence(const ClearParams &p, cudaStream_t stream) {
    clear_sequence_kernel<<<unsigned(p.layers), 256, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t launch_batch_set(const BatchSetParams &p, cudaStream_t stream) {
    batch_set_kernel<<<1, kSequenceThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

cudaError_t configure_sequence_kernels(int32_t dtype, int32_t head_dim, int32_t capacity, int32_t groups) {
    const size_t shared = h2o_shared_bytes(capacity, groups, head_dim);
    cudaError_t error = cudaSuccess;
    RKV_DISPATCH_STORAGE(dtype, T, {
        error = raise_shared_limit(h2o_commit_before_append_kernel<T>, shared);
        if (error == cudaSuccess) error = raise_shared_limit(h2o_commit_all_kernel<T>, shared);
    })
    return error;
}

}  // namespace rkv::kernels
