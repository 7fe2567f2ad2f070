#include "cuda/cuda_check.h"

#include <utility>

#include "error.h"

namespace rkv::cuda {

namespace {

double gib(uint64_t bytes) { return double(bytes) / double(1ull << 30); }

}  // namespace

// Errors after which the context is unusable (CUDA reports them on every later call).
bool is_sticky(cudaError_t error) {
    switch (error) {
        case cudaErrorIllegalAddress:
        case cudaErrorLaunchFailure:
        case cudaErrorHardwareStackError:
        case cudaErrorIllegalInstruction:
        case cudaErrorMisalignedAddress:
        case cudaErrorInvalidAddressSpace:
        case cudaErrorInvalidPc:
        case cudaErrorAssert:
        case cudaErrorECCUncorrectable:
        case cudaErrorLaunchTimeout:
        case cudaErrorUnknown:
            return true;
        default:
            return false;
    }
}

void check(cudaError_t error, const char *what) {
    if (error == cudaSuccess) return;
    fail(RKV_ERR_DEVICE, "%s failed: %s (%s)", what, cudaGetErrorName(error), cudaGetErrorString(error));
}

void check_sticky(const char *function) {
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess && is_sticky(error))
        fail(RKV_ERR_DEVICE, "%s: an earlier kernel on this device faulted (%s: %s); the cache memory is "
             "undefined", function, cudaGetErrorName(error), cudaGetErrorString(error));
}

DeviceGuard::DeviceGuard(int device) {
    check(cudaGetDevice(&previous_), "cudaGetDevice");
    if (previous_ != device) check(cudaSetDevice(device), "cudaSetDevice");
}

DeviceGuard::~DeviceGuard() {
    int current = -1;
    if (cudaGetDevice(&current) == cudaSuccess && current != previous_) cudaSetDevice(previous_);
}

DeviceBuffer::DeviceBuffer(uint64_t bytes, const char *name, int device) : bytes_(bytes) {
    if (bytes == 0) return;
    const cudaError_t error = cudaMalloc(&data_, bytes);
    if (error == cudaSuccess) return;
    data_ = nullptr;
    cudaGetLastError();  // an allocation failure is not sticky: clear it
    size_t free_bytes = 0, total_bytes = 0;
    cudaMemGetInfo(&free_bytes, &total_bytes);
    cudaGetLastError();
    if (error == cudaErrorMemoryAllocation)
        fail(RKV_ERR_OUT_OF_MEMORY,
             "rkv_cache_create: cudaMalloc of %.3f GiB for %s failed on CUDA device %d: %.3f GiB free of "
             "%.3f GiB; lower max_seqs or the budget (rkv_cache_size gives the total before create)",
             gib(bytes), name, device, gib(free_bytes), gib(total_bytes));
    fail(RKV_ERR_DEVICE, "rkv_cache_create: cudaMalloc of %.3f GiB for %s failed on CUDA device %d: %s (%s)",
         gib(bytes), name, device, cudaGetErrorName(error), cudaGetErrorString(error));
}

DeviceBuffer::~DeviceBuffer() {
    if (data_) cudaFree(data_);
}

DeviceBuffer::DeviceBuffer(DeviceBuffer &&other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

DeviceBuffer &DeviceBuffer::operator=(DeviceBuffer &&other) noexcept {
    if (this != &other) {
        if (data_) cudaFree(data_);
        data_ = std::exchange(other.data_, nullptr);
        bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
}

PinnedBuffer::PinnedBuffer(uint64_t bytes, const char *name) {
    if (bytes == 0) return;
    const cudaError_t error = cudaMallocHost(&data_, bytes);
    if (error == cudaSuccess) return;
    data_ = nullptr;
    cudaGetLastError();
    fail(error == cudaErrorMemoryAllocation ? RKV_ERR_OUT_OF_MEMORY : RKV_ERR_DEVICE,
         "rkv_cache_create: cudaMallocHost of %llu bytes for %s failed: %s", (unsigned long long)bytes, name,
         cudaGetErrorName(error));
}

PinnedBuffer::~PinnedBuffer() {
    if (data_) cudaFreeHost(data_);
}

}  // namespace rkv::cuda
