// Launchers of the fused tensor-core kernels (kernels/gram_fused.cuh).
#include "gram_fused.cuh"
#include "launch.h"

namespace rkv::kernels {

namespace {

// Calls f(kernel tag) for the (16-bit dtype, head dim) instantiation.
template <template <typename, int> class Kernel, typename F>
cudaError_t with_instance(int32_t dtype, int32_t head_dim, F &&f) {
    if (dtype == RKV_DTYPE_F16) {
        switch (head_dim) {
            case 64: return f(Kernel<__half, 64>());
            case 128: return f(Kernel<__half, 128>());
            default: return f(Kernel<__half, 256>());
        }
    }
    switch (head_dim) {
        case 64: return f(Kernel<__nv_bfloat16, 64>());
        case 128: return f(Kernel<__nv_bfloat16, 128>());
        default: return f(Kernel<__nv_bfloat16, 256>());
    }
}

template <typename T, int D>
struct GramKernel {
    static constexpr auto kernel = gram_fused_kernel<T, D>;
};
template <typename T, int D>
struct ImportanceKernel {
    static constexpr auto kernel = importance_fused_kernel<T, D>;
};

}  // namespace

bool gram_fused_supported(int32_t dtype, int32_t head_dim, int32_t rows) {
    return dtype != RKV_DTYPE_F32 && (head_dim == 64 || head_dim == 128 || head_dim == 256) && rows <= kFusedMaxRows;
}

cudaError_t configure_gram_kernels(int32_t dtype, int32_t head_dim) {
    if (dtype == RKV_DTYPE_F32 || !(head_dim == 64 || head_dim == 128 || head_dim == 256)) return cudaSuccess;
    const cudaFuncAttribute limit = cudaFuncAttributeMaxDynamicSharedMemorySize;
    cudaError_t error = with_instance<GramKernel>(dtype, head_dim, [&](auto instance) {
        return cudaFuncSetAttribute(instance.kernel, limit, int(gram_fused_shared_bytes(head_dim)));
    });
    if (error != cudaSuccess) return error;
    return with_instance<ImportanceKernel>(dtype, head_dim, [&](auto instance) {
        return cudaFuncSetAttribute(instance.kernel, limit, int(importance_fused_shared_bytes(head_dim, kFusedMaxRows)));
    });
}

cudaError_t launch_importance_fused(const CompressParams &p, int32_t max_held, int32_t with_norms,
                                    cudaStream_t stream) {
    const int32_t d = p.cache.head_dim;
    if (!gram_fused_supported(p.cache.dtype, d, p.scratch.rows)) return cudaErrorNotSupported;
    const dim3 grid(unsigned((max_held + kGramTile - 1) / kGramTile), unsigned(p.cache.kv_heads), unsigned(p.num_jobs));
    const size_t shared = importance_fused_shared_bytes(d, p.scratch.rows);
    with_instance<ImportanceKernel>(p.cache.dtype, d, [&](auto instance) {
        instance.kernel<<<grid, kImportanceThreads, shared, stream>>>(p, with_norms);
        return cudaSuccess;
    });
    return cudaGetLastError();
}

cudaError_t launch_gram_fused(const CompressParams &p, int32_t max_held, cudaStream_t stream) {
    const int32_t d = p.cache.head_dim;
    if (!gram_fused_supported(p.cache.dtype, d, p.scratch.rows)) return cudaErrorNotSupported;
    const int32_t tiles = (max_held + kGramTile - 1) / kGramTile;
    const dim3 grid(unsigned(tiles * p.cache.kv_heads * p.num_jobs));
    const size_t shared = gram_fused_shared_bytes(d);
    with_instance<GramKernel>(p.cache.dtype, d, [&](auto instance) {
        instance.kernel<<<grid, kGramThreads, shared, stream>>>(p);
        return cudaSuccess;
    });
    return cudaGetLastError();
}

}  // namespace rkv::kernels
