// The FP8 keys of a compression group as bf16 for the scoring kernels (the
// helpers are in kernels/fp8.cuh, shared with append, attend and selection).
#include "fp8.cuh"
#include "launch.h"

namespace rkv::kernels {

constexpr int kDequantizeThreads = 256;

// grid (KV head, job), kDequantizeThreads threads: the held keys of each job
// as bf16, k = fp8 * scale (exact: the scale is a power of two, and 4
// significant bits fit in bf16's 8), into scratch.keys_dequantised.
__global__ void __launch_bounds__(kDequantizeThreads) dequantize_keys_kernel(CompressParams p) {
    const Job job = p.jobs[blockIdx.y];
    if (!job_active(p, job)) return;
    const CacheLayer c = job_cache(p, job);  // the job's layer
    const int32_t h = blockIdx.x, d = c.head_dim;
    const int64_t slot0 = slot_index(c, job.seq, h, 0);
    const uint8_t *keys = static_cast<const uint8_t *>(c.keys) + slot0 * d;
    const float *scales = c.k_scale + slot0;
    __nv_bfloat16 *out = static_cast<__nv_bfloat16 *>(p.scratch.keys_dequantised) + scratch_row(p, blockIdx.y, h) * d;
    const int64_t count = int64_t(job.held) * d;
    if (d % 4 == 0) {  // four bytes at a time
        for (int64_t i = int64_t(threadIdx.x) * 4; i < count; i += int64_t(blockDim.x) * 4) {
            float x[4];
            unpack_fp8x4(*reinterpret_cast<const uint32_t *>(keys + i), x);
            const float scale = scales[i / d];
            const __nv_bfloat162 a = __floats2bfloat162_rn(x[0] * scale, x[1] * scale);
            const __nv_bfloat162 b = __floats2bfloat162_rn(x[2] * scale, x[3] * scale);
            *reinterpret_cast<__nv_bfloat162 *>(out + i) = a;
            *reinterpret_cast<__nv_bfloat162 *>(out + i + 2) = b;
        }
    } else {
        for (int64_t i = threadIdx.x; i < count; i += blockDim.x)
            out[i] = __float2bfloat16_rn(fp8_byte_value(keys[i]) * scales[i / d]);
    }
}

cudaError_t launch_dequantize_keys(const CompressParams &p, cudaStream_t stream) {
    if (p.scratch.keys_dequantised == nullptr || p.cache.k_scale == nullptr) return cudaErrorInvalidValue;
    dequantize_keys_kernel<<<dim3(unsigned(p.cache.kv_heads), unsigned(p.num_jobs)), kDequantizeThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace rkv::kernels
