// The CUDA engine's contact with the runtime: errors that name what failed,
// device memory owned by one object, and the one check every program makes
// before touching the GPU.
//
// Every failure becomes an engine::cuda::Error (a std::runtime_error) whose
// message says what was being done and what CUDA or librkv answered, so a
// program can print it and exit instead of crashing.
#pragma once

#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "rkv/rkv.h"

namespace engine::cuda {

struct Error : std::runtime_error {
    using std::runtime_error::runtime_error;
    // The CUDA context is unusable (a kernel faulted): nothing more can run in this process.
    bool sticky = false;
};

// Throws Error("what: <CUDA's name and text>") unless error is cudaSuccess.
void check_cuda(cudaError_t error, const char *what);
// Throws Error("what: <status name>: <librkv's message>") unless status is RKV_OK.
void check_rkv(rkv_status status, const char *what);

// The first CUDA device's name, or throws Error with a message for a user
// without one ("no CUDA device: ... --device cpu").
std::string require_device();
// Free and total bytes of the current device.
void device_memory(uint64_t *free_bytes, uint64_t *total_bytes);
std::string gib(uint64_t bytes);  // "12.34 GiB"

// One cudaMalloc'd buffer, freed with its owner. An allocation that fails says
// which buffer, how large, and how much memory was free.
class DeviceBuffer {
  public:
    DeviceBuffer() = default;
    DeviceBuffer(size_t bytes, const char *name);
    ~DeviceBuffer();
    DeviceBuffer(DeviceBuffer &&other) noexcept;
    DeviceBuffer &operator=(DeviceBuffer &&other) noexcept;
    DeviceBuffer(const DeviceBuffer &) = delete;
    DeviceBuffer &operator=(const DeviceBuffer &) = delete;

    template <typename T> T *as() const { return static_cast<T *>(data_); }
    void *data() const { return data_; }
    size_t bytes() const { return bytes_; }

  private:
    void *data_ = nullptr;
    size_t bytes_ = 0;
};

// Page-locked host memory (asynchronous copies from the device land here).
class PinnedBuffer {
  public:
    PinnedBuffer() = default;
    PinnedBuffer(size_t bytes, const char *name);
    ~PinnedBuffer();
    PinnedBuffer(PinnedBuffer &&other) noexcept;
    PinnedBuffer &operator=(PinnedBuffer &&other) noexcept;
    PinnedBuffer(const PinnedBuffer &) = delete;
    PinnedBuffer &operator=(const PinnedBuffer &) = delete;

    template <typename T> T *as() const { return static_cast<T *>(data_); }

  private:
    void *data_ = nullptr;
    size_t bytes_ = 0;
};

// A stream owned by one object (non-blocking: it never waits for the legacy default stream).
class Stream {
  public:
    Stream();
    ~Stream();
    Stream(const Stream &) = delete;
    Stream &operator=(const Stream &) = delete;
    cudaStream_t get() const { return stream_; }
    void synchronize(const char *what) const;

  private:
    cudaStream_t stream_ = nullptr;
};

// Elapsed device time between two points of a stream.
class EventTimer {
  public:
    EventTimer();
    ~EventTimer();
    EventTimer(const EventTimer &) = delete;
    EventTimer &operator=(const EventTimer &) = delete;
    void start(cudaStream_t stream);
    // Records the stop event, waits for it, returns milliseconds since start().
    double stop_ms(cudaStream_t stream);

  private:
    cudaEvent_t start_ = nullptr, stop_ = nullptr;
};

}  // namespace engine::cuda
