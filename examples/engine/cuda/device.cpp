#include "device.h"

#include <cstdio>
#include <utility>

namespace engine::cuda {

namespace {

// Errors after which the context cannot run anything again (CUDA's "sticky" errors).
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
        case cudaErrorLaunchTimeout:
            return true;
        default:
            return false;
    }
}

}  // namespace

void check_cuda(cudaError_t error, const char *what) {
    if (error == cudaSuccess) return;
    if (!is_sticky(error)) cudaGetLastError();  // clear a non-sticky error so later calls start clean
    Error e(std::string(what) + ": " + cudaGetErrorName(error) + " (" + cudaGetErrorString(error) + ")" +
            (is_sticky(error) ? "; the CUDA context is unusable from here on" : ""));
    e.sticky = is_sticky(error);
    throw e;
}

void check_rkv(rkv_status status, const char *what) {
    if (status == RKV_OK) return;
    Error e(std::string(what) + ": " + rkv_status_name(status) + ": " + rkv_error_message());
    e.sticky = status == RKV_ERR_FAULTED;
    throw e;
}

std::string require_device() {
    int count = 0;
    const cudaError_t error = cudaGetDeviceCount(&count);
    if (error != cudaSuccess || count == 0) {
        cudaGetLastError();
        throw Error(std::string("no CUDA device: ") +
                    (error != cudaSuccess ? cudaGetErrorString(error) : "the driver reports none") +
                    ". The CUDA engine needs an NVIDIA GPU of compute capability 9.0 (H100/H200); "
                    "without one, run on the CPU (--device cpu, the default).");
    }
    cudaDeviceProp prop;
    check_cuda(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
    if (prop.major < 9)
        throw Error(std::string("CUDA device 0 (") + prop.name + ") has compute capability " +
                    std::to_string(prop.major) + "." + std::to_string(prop.minor) +
                    "; librkv's kernels and this engine are built for 9.0 (H100/H200)");
    check_cuda(cudaSetDevice(0), "cudaSetDevice");
    return prop.name;
}

void device_memory(uint64_t *free_bytes, uint64_t *total_bytes) {
    size_t f = 0, t = 0;
    check_cuda(cudaMemGetInfo(&f, &t), "cudaMemGetInfo");
    *free_bytes = f;
    *total_bytes = t;
}

std::string gib(uint64_t bytes) {
    char text[32];
    std::snprintf(text, sizeof text, "%.2f GiB", double(bytes) / double(1ull << 30));
    return text;
}

DeviceBuffer::DeviceBuffer(size_t bytes, const char *name) : bytes_(bytes) {
    if (bytes == 0) return;
    const cudaError_t error = cudaMalloc(&data_, bytes);
    if (error == cudaErrorMemoryAllocation) {
        cudaGetLastError();
        size_t free_bytes = 0, total = 0;
        cudaMemGetInfo(&free_bytes, &total);
        throw Error(std::string("out of GPU memory allocating ") + name + " (" + gib(bytes) + "; " +
                    gib(free_bytes) + " free of " + gib(total) + ")");
    }
    check_cuda(error, (std::string("cudaMalloc of ") + name).c_str());
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

PinnedBuffer::PinnedBuffer(size_t bytes, const char *name) : bytes_(bytes) {
    if (bytes == 0) return;
    check_cuda(cudaMallocHost(&data_, bytes), (std::string("cudaMallocHost of ") + name).c_str());
}

PinnedBuffer::~PinnedBuffer() {
    if (data_) cudaFreeHost(data_);
}

PinnedBuffer::PinnedBuffer(PinnedBuffer &&other) noexcept
    : data_(std::exchange(other.data_, nullptr)), bytes_(std::exchange(other.bytes_, 0)) {}

PinnedBuffer &PinnedBuffer::operator=(PinnedBuffer &&other) noexcept {
    if (this != &other) {
        if (data_) cudaFreeHost(data_);
        data_ = std::exchange(other.data_, nullptr);
        bytes_ = std::exchange(other.bytes_, 0);
    }
    return *this;
}

Stream::Stream() { check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate"); }
Stream::~Stream() {
    if (stream_) cudaStreamDestroy(stream_);
}
void Stream::synchronize(const char *what) const { check_cuda(cudaStreamSynchronize(stream_), what); }

EventTimer::EventTimer() {
    check_cuda(cudaEventCreate(&start_), "cudaEventCreate");
    check_cuda(cudaEventCreate(&stop_), "cudaEventCreate");
}
EventTimer::~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
}
void EventTimer::start(cudaStream_t stream) { check_cuda(cudaEventRecord(start_, stream), "cudaEventRecord"); }
double EventTimer::stop_ms(cudaStream_t stream) {
    check_cuda(cudaEventRecord(stop_, stream), "cudaEventRecord");
    check_cuda(cudaEventSynchronize(stop_), "cudaEventSynchronize (a kernel before it failed)");
    float ms = 0.0f;
    check_cuda(cudaEventElapsedTime(&ms, start_, stop_), "cudaEventElapsedTime");
    return double(ms);
}

}  // namespace engine::cuda
