// The wide shape of the split attention kernel (kernels/attend_split.cuh).
#include "attend_split.cuh"

namespace rkv::kernels {

template cudaError_t configure_split<false>(int32_t dtype);
template int32_t split_blocks_per_sm<false>(int32_t dtype, int32_t head_dim, int32_t groups);
template cudaError_t launch_split<false>(const AttendParams &p, cudaStream_t stream);

}  // namespace rkv::kernels
