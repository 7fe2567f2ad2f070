// RKV_HOST_DEVICE marks the functions of core/ that the host and the CUDA
// kernels both call, so CPU and GPU compute them with one definition.
#pragma once

#if defined(__CUDACC__)
#define RKV_HOST_DEVICE __host__ __device__
#else
#define RKV_HOST_DEVICE
#endif
