// CUDA errors as librkv statuses, the current-device guard, and owning device
// and pinned host buffers (allocated once, at create).
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

namespace rkv::cuda {

// Throws RKV_ERR_DEVICE naming `what` and the CUDA error, unless error is cudaSuccess.
void check(cudaError_t error, const char *what);

// Throws RKV_ERR_DEVICE if an earlier kernel left the context with a sticky
// error (a fault: illegal address, trap, ...): the cache memory is undefined
// after it. Errors that are not sticky (a failed launch of someone else's
// kernel) are cleared and ignored here, so they are not blamed on librkv.
void check_sticky(const char *function);
// True for the errors after which the context is unusable.
bool is_sticky(cudaError_t error);

// Makes `device` current for the lifetime of the guard, then restores the
// caller's device (librkv never changes the caller's current device).
class DeviceGuard {
 public:
    explicit DeviceGuard(int device);
    ~DeviceGuard();
    DeviceGuard(const DeviceGuard &) = delete;
    DeviceGuard &operator=(const DeviceGuard &) = delete;

 private:
    int previous_ = -1;
};

// One cudaMalloc of `bytes` (nothing for 0). Failure: RKV_ERR_OUT_OF_MEMORY
// with the buffer's name, its size and the device's free memory.
class DeviceBuffer {
 public:
    DeviceBuffer() = default;
    DeviceBuffer(uint64_t bytes, const char *name, int device);
    ~DeviceBuffer();
    DeviceBuffer(DeviceBuffer &&other) noexcept;
    DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer &operator=(const DeviceBuffer &) = delete;

    template <typename T = void>
    T *get() const { return static_cast<T *>(data_); }
    uint64_t bytes() const { return bytes_; }

 private:
    void *data_ = nullptr;
    uint64_t bytes_ = 0;
};

// Page-locked host memory (cudaMallocHost), for the synchronous bookkeeping copy.
class PinnedBuffer {
 public:
    PinnedBuffer() = default;
    PinnedBuffer(uint64_t bytes, const char *name);
    ~PinnedBuffer();
    PinnedBuffer(const PinnedBuffer &) = delete;
    PinnedBuffer &operator=(const PinnedBuffer &) = delete;

    template <typename T = void>
    T *get() const { return static_cast<T *>(data_); }

 private:
    void *data_ = nullptr;
};

}  // namespace rkv::cuda
