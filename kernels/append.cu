// Launchers of append (kernels/append.cuh).
#include "append.cuh"
#include "launch.h"
#include "shared_limit.cuh"

namespace rkv::kernels {

namespace {

// 16-byte copies are possible when the caller's tensor has the storage dtype
// and every row it points at starts on a 16-byte boundary.
bool rows_aligned(const Tensor &t, int32_t storage_dtype, int32_t head_dim) {
    if (t.data == nullptr) return true;
    if (t.dtype != storage_dtype) return false;
    const int64_t element = dtype_bytes(t.dtype);
    const bool strides = (t.stride_seq * element) % 16 == 0 && (t.stride_token * element) % 16 == 0 &&
                         (t.stride_head * element) % 16 == 0 && (head_dim * element) % 16 == 0;
    return strides && reinterpret_cast<uintptr_t>(t.data) % 16 == 0;
}

}  // namespace

cudaError_t launch_append(const AppendParams &p, cudaStream_t stream) {
    const CacheLayer &c = p.cache;
    const int32_t rows_per_token = 2 * c.kv_heads + (p.q.data ? c.q_heads : 0);
    const int64_t rows = int64_t(p.max_count) * rows_per_token;
    const dim3 grid(unsigned((rows + kAppendRowsPerBlock - 1) / kAppendRowsPerBlock), unsigned(p.num_chunks));
    const int vectorized = rows_aligned(p.k, c.dtype, c.head_dim) && rows_aligned(p.v, c.dtype, c.head_dim) &&
                           rows_aligned(p.q, c.dtype, c.head_dim);
    const size_t h2o_shared = h2o_shared_bytes(c.capacity, c.q_heads / c.kv_heads, c.head_dim);
    if (p.h2o && c.max_rollback > 0) {
        const cudaError_t committed = launch_h2o_commit_before_append(p, stream);
        if (committed != cudaSuccess) return committed;
    }
    RKV_DISPATCH_STORAGE(c.dtype, T, {
        append_kernel<T><<<grid, kAppendThreads, 0, stream>>>(p, vectorized);
        if (p.h2o) {
            const cudaError_t launched = cudaGetLastError();
            if (launched != cudaSuccess) return launched;
            h2o_kernel<T><<<dim3(unsigned(c.kv_heads), unsigned(p.num_chunks)), kAppendThreads, h2o_shared, stream>>>(p);
        }
    })
    return cudaGetLastError();
}

cudaError_t configure_append_kernels(int32_t dtype, int32_t head_dim, int32_t capacity, int32_t groups) {
    const size_t h2o = h2o_shared_bytes(capacity, groups, head_dim);
    cudaError_t error = cudaSuccess;
    RKV_DISPATCH_STORAGE(dtype, T, { error = raise_shared_limit(h2o_kernel<T>, h2o); })
    return error;
}

}  // namespace rkv::kernels
