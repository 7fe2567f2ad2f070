// Launcher of the key Gram with an int8 filter (kernels/gram_int8.cuh).
#include "gram_int8.cuh"
#include "launch.h"

namespace rkv::kernels {

namespace {

// Calls f(kernel) for the 16-bit dtype the scoring reads (FP8 storage: its bf16 copy).
template <typename F>
cudaError_t with_int8_instance(int32_t dtype, F &&f) {
    if (dtype == RKV_DTYPE_F16) return f(gram_int8_kernel<__half>);
    return f(gram_int8_kernel<__nv_bfloat16>);
}

}  // namespace

bool gram_int8_supported(int32_t dtype, int32_t head_dim, int32_t rows, int major, int minor) {
    return head_dim == kGramInt8Dim && gram_wgmma_supported(dtype, head_dim, rows, major, minor);
}

cudaError_t configure_gram_int8_kernels(int32_t dtype, int32_t head_dim) {
    if (dtype == RKV_DTYPE_F32 || head_dim != kGramInt8Dim) return cudaSuccess;
    return with_int8_instance(dtype, [&](auto kernel) {
        return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(GramInt8Shared::kBytes));
    });
}

cudaError_t launch_gram_int8(const CompressParams &p, int32_t max_held, cudaStream_t stream) {
    if (p.cache.head_dim != kGramInt8Dim || p.scratch.keys_int8 == nullptr ||
        !gram_fused_supported(p.cache.dtype, p.cache.head_dim, p.scratch.rows))
        return cudaErrorNotSupported;
    const int32_t row_tiles = (max_held + kGramTile - 1) / kGramTile;
    const dim3 grid(unsigned(row_tiles * p.cache.kv_heads * p.num_jobs));
    with_int8_instance(p.cache.dtype, [&](auto kernel) {
        kernel<<<grid, kGramInt8Threads, GramInt8Shared::kBytes, stream>>>(p);
        return cudaSuccess;
    });
    return cudaGetLastError();
}

}  // namespace rkv::kernels
