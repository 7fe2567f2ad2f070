// Launcher of decode attention (kernels/attend.cuh): the pipelined kernel for
// head_dim 64, 128 and 256, the register kernel for any other head_dim.
#include "attend.cuh"
#include "launch.h"

namespace rkv::kernels {

cudaError_t configure_attend_kernels(int32_t dtype) {
    cudaError_t error = cudaSuccess;
    const cudaFuncAttribute limit = cudaFuncAttributeMaxDynamicSharedMemorySize;
    RKV_DISPATCH_DTYPE(dtype, T, {
        error = cudaFuncSetAttribute(attend_pipelined_kernel<T, 64>, limit, int(PipelineShape<T, 64>::kSharedBytes));
        if (error == cudaSuccess)
            error = cudaFuncSetAttribute(attend_pipelined_kernel<T, 128>, limit, int(PipelineShape<T, 128>::kSharedBytes));
        if (error == cudaSuccess)
            error = cudaFuncSetAttribute(attend_pipelined_kernel<T, 256>, limit, int(PipelineShape<T, 256>::kSharedBytes));
    })
    return error;
}

namespace {

template <typename T, int D>
void launch_typed(const AttendParams &p, dim3 grid, cudaStream_t stream) {
    if constexpr (D > 0)
        attend_pipelined_kernel<T, D><<<grid, kAttendThreads, PipelineShape<T, D>::kSharedBytes, stream>>>(p);
    else
        attend_kernel<T, 0><<<grid, kAttendThreads, 0, stream>>>(p);
}

}  // namespace

cudaError_t launch_attend(const AttendParams &p, cudaStream_t stream) {
    const dim3 grid(unsigned(p.cache.kv_heads), unsigned(p.num_seqs));
    RKV_DISPATCH_DTYPE(p.cache.dtype, T, {
        RKV_DISPATCH_HEAD_DIM(p.cache.head_dim, D, { launch_typed<T, D>(p, grid, stream); })
    })
    return cudaGetLastError();
}

}  // namespace rkv::kernels
