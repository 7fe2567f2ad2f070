// Launcher of the warpgroup-MMA key Gram (kernels/gram_wgmma.cuh).
#include "gram_wgmma.cuh"
#include "launch.h"

namespace rkv::kernels {

namespace {

// Calls f(kernel) for the (16-bit dtype, head dim) instantiation.
template <typename F>
cudaError_t with_wgmma_instance(int32_t dtype, int32_t head_dim, F &&f) {
    if (dtype == RKV_DTYPE_F16) {
        switch (head_dim) {
            case 64: return f(gram_wgmma_kernel<__half, 64>);
            case 128: return f(gram_wgmma_kernel<__half, 128>);
            default: return f(gram_wgmma_kernel<__half, 256>);
        }
    }
    switch (head_dim) {
        case 64: return f(gram_wgmma_kernel<__nv_bfloat16, 64>);
        case 128: return f(gram_wgmma_kernel<__nv_bfloat16, 128>);
        default: return f(gram_wgmma_kernel<__nv_bfloat16, 256>);
    }
}

}  // namespace

bool gram_wgmma_supported(int32_t dtype, int32_t head_dim, int32_t rows, int major, int minor) {
    // sm_90a code runs on compute capability 9.0 only (later GPUs get the
    // compute_90 PTX, where this kernel is a trap).
    return major == 9 && minor == 0 && gram_fused_supported(dtype, head_dim, rows);
}

cudaError_t configure_gram_wgmma_kernels(int32_t dtype, int32_t head_dim) {
    if (dtype == RKV_DTYPE_F32 || !(head_dim == 64 || head_dim == 128 || head_dim == 256)) return cudaSuccess;
    return with_wgmma_instance(dtype, head_dim, [&](auto kernel) {
        return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(gram_wgmma_shared_bytes(head_dim)));
    });
}

cudaError_t launch_gram_wgmma(const CompressParams &p, int32_t max_held, cudaStream_t stream) {
    const int32_t d = p.cache.head_dim;
    if (!gram_fused_supported(p.cache.dtype, d, p.scratch.rows)) return cudaErrorNotSupported;
    const int32_t tiles = (max_held + kGramTile - 1) / kGramTile;
    const dim3 grid(unsigned(tiles * p.cache.kv_heads * p.num_jobs));
    const size_t shared = gram_wgmma_shared_bytes(d);
    with_wgmma_instance(p.cache.dtype, d, [&](auto kernel) {
        kernel<<<grid, kGramWgmmaThreads, shared, stream>>>(p);
        return cudaSuccess;
    });
    return cudaGetLastError();
}

}  // namespace rkv::kernels
