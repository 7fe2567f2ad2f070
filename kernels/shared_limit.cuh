// Host side of the launchers: a kernel's dynamic shared-memory limit. The
// limit (cudaFuncAttributeMaxDynamicSharedMemorySize) belongs to the kernel,
// for the whole process, while what the selection, H2O and commit kernels
// need grows with a cache's capacity: each create raises it to its own need,
// never lowers it, so that a cache of a smaller capacity created later does
// not leave an earlier, larger cache's launches above the limit. (CUDA calls
// such a launch invalid; the H200 with CUDA 13 was measured to run it anyway,
// test_caches_of_different_capacities on the old set-to-this-cache's-need
// rule: no launch here depends on that leniency.)
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <mutex>

namespace rkv::kernels {

// One lock for every kernel: creates on several threads read and raise limits.
inline std::mutex &shared_limit_mutex() {
    static std::mutex mutex;
    return mutex;
}

// Allow launches of `kernel` with `bytes` of dynamic shared memory (on the
// current device); above the 48 KiB every kernel may use without asking.
template <typename Kernel>
cudaError_t raise_shared_limit(Kernel kernel, size_t bytes) {
    if (bytes <= 48 * 1024) return cudaSuccess;
    std::lock_guard<std::mutex> lock(shared_limit_mutex());
    cudaFuncAttributes attributes;
    const cudaError_t error = cudaFuncGetAttributes(&attributes, kernel);
    if (error != cudaSuccess) return error;
    if (size_t(attributes.maxDynamicSharedSizeBytes) >= bytes) return cudaSuccess;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes));
}

}  // namespace rkv::kernels
