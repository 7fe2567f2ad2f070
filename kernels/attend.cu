// Launcher of decode attention (kernels/attend.cuh).
#include "attend.cuh"
#include "launch.h"

namespace rkv::kernels {

cudaError_t launch_attend(const AttendParams &p, cudaStream_t stream) {
    const dim3 grid(unsigned(p.cache.kv_heads), unsigned(p.num_seqs));
    RKV_DISPATCH_DTYPE(p.cache.dtype, T, {
        RKV_DISPATCH_HEAD_DIM(p.cache.head_dim, D, { attend_kernel<T, D><<<grid, kAttendThreads, 0, stream>>>(p); })
    })
    return cudaGetLastError();
}

}  // namespace rkv::kernels
