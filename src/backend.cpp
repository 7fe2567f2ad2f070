// Chooses the backend for a cache's device.
#include "backend.h"

#include "cpu/cpu_backend.h"
#include "error.h"

#if defined(RKV_WITH_CUDA)
#include "cuda/cuda_backend.h"
#endif

namespace rkv {

void backend_check_device(const rkv_cache_params &params, const char *function) {
    if (params.device_type != RKV_DEVICE_CUDA) return;
#if defined(RKV_WITH_CUDA)
    cuda::check_cuda_params(params, function);
#else
    fail(RKV_ERR_UNSUPPORTED,
         "%s: device_type is CUDA but this librkv was built without CUDA (configure with "
         "-DRKV_CUDA=ON on a machine with nvcc)", function);
#endif
}

uint64_t backend_scratch_bytes(const rkv_cache_params &params, const MemoryPlan &layout) {
#if defined(RKV_WITH_CUDA)
    if (params.device_type == RKV_DEVICE_CUDA) return cuda::cuda_scratch_bytes(params, layout);
#endif
    return cpu::cpu_scratch_bytes(params, layout);
}

std::unique_ptr<Backend> make_backend(const rkv_cache_params &params, const MemoryPlan &plan) {
#if defined(RKV_WITH_CUDA)
    if (params.device_type == RKV_DEVICE_CUDA) return cuda::make_cuda_backend(params, plan);
#endif
    return cpu::make_cpu_backend(params, plan);
}

void Backend::check_memory(const void *, const char *, const char *) const {}

void Backend::set_matmul_path(int32_t path) {
    if (path != RKV_MATMUL_AUTO)
        fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_matmul_path: this backend has one matrix-product path; "
             "only RKV_MATMUL_AUTO applies");
}

void Backend::set_attend_plan(int32_t splits, int32_t variant) {
    if (splits != 0 || variant != RKV_ATTEND_AUTO)
        fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_attend_plan: this backend attends in one pass per sequence; "
             "only splits 0 and RKV_ATTEND_AUTO apply");
}

}  // namespace rkv
