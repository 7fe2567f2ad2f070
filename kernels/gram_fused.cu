// Launcher of the fused tensor-core Gram statistics (kernels/gram_fused.cuh).
#include "gram_fused.cuh"
#include "launch.h"

namespace rkv::kernels {

bool gram_fused_supported(int32_t dtype, int32_t head_dim) {
    return dtype != kF32 && (head_dim == 64 || head_dim == 128 || head_dim == 256);
}

cudaError_t configure_gram_kernels(int32_t dtype, int32_t head_dim) {
    if (!gram_fused_supported(dtype, head_dim)) return cudaSuccess;
    const int bytes = int(gram_fused_shared_bytes(head_dim));
    const cudaFuncAttribute limit = cudaFuncAttributeMaxDynamicSharedMemorySize;
    if (dtype == kF16) {
        switch (head_dim) {
            case 64: return cudaFuncSetAttribute(gram_fused_kernel<__half, 64>, limit, bytes);
            case 128: return cudaFuncSetAttribute(gram_fused_kernel<__half, 128>, limit, bytes);
            default: return cudaFuncSetAttribute(gram_fused_kernel<__half, 256>, limit, bytes);
        }
    }
    switch (head_dim) {
        case 64: return cudaFuncSetAttribute(gram_fused_kernel<__nv_bfloat16, 64>, limit, bytes);
        case 128: return cudaFuncSetAttribute(gram_fused_kernel<__nv_bfloat16, 128>, limit, bytes);
        default: return cudaFuncSetAttribute(gram_fused_kernel<__nv_bfloat16, 256>, limit, bytes);
    }
}

cudaError_t launch_gram_fused(const CompressParams &p, int32_t max_held, cudaStream_t stream) {
    const int32_t d = p.cache.head_dim;
    if (!gram_fused_supported(p.cache.dtype, d)) return cudaErrorNotSupported;
    const int32_t tiles = (max_held + kGramTile - 1) / kGramTile;
    const dim3 grid(unsigned(tiles * p.cache.kv_heads * p.num_jobs));
    const size_t shared = gram_fused_shared_bytes(d);
    if (p.cache.dtype == kF16) {
        switch (d) {
            case 64: gram_fused_kernel<__half, 64><<<grid, kGramThreads, shared, stream>>>(p); break;
            case 128: gram_fused_kernel<__half, 128><<<grid, kGramThreads, shared, stream>>>(p); break;
            default: gram_fused_kernel<__half, 256><<<grid, kGramThreads, shared, stream>>>(p); break;
        }
    } else {
        switch (d) {
            case 64: gram_fused_kernel<__nv_bfloat16, 64><<<grid, kGramThreads, shared, stream>>>(p); break;
            case 128: gram_fused_kernel<__nv_bfloat16, 128><<<grid, kGramThreads, shared, stream>>>(p); break;
            default: gram_fused_kernel<__nv_bfloat16, 256><<<grid, kGramThreads, shared, stream>>>(p); break;
        }
    }
    return cudaGetLastError();
}

}  // namespace rkv::kernels
