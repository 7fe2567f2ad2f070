// The wrappers of call_counter.h. Each has the exact signature of the
// function it stands for (the headers declare them extern "C") and forwards
// to the next definition in the dynamic linker's lookup order: the CUDA
// runtime's or librkv's.
#include "call_counter.h"

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdio>
#include <cstdlib>

#include "rkv/rkv.h"
#include "rkv/rkv_experimental.h"

namespace {

engine::cuda::test::CallCounts g_counts;

// The real function `name`, looked up once; a missing one ends the test with a message.
template <typename F> F real(F *cached, const char *name) {
    if (!*cached) {
        *cached = reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
        if (!*cached) {
            std::fprintf(stderr, "call_counter: %s not found after this program (%s)\n", name, dlerror());
            std::abort();
        }
    }
    return *cached;
}

#define FORWARD(name, ...)                                  \
    static decltype(&name) real_##name = nullptr;           \
    return real(&real_##name, #name)(__VA_ARGS__)

// Memory the CUDA runtime neither allocated nor registered: a copy through it is staged
// and may wait for the stream.
bool pageable(const void *pointer) {
    const cudaError_t pending = cudaPeekAtLastError();
    cudaPointerAttributes attributes{};
    const cudaError_t error = cudaPointerGetAttributes(&attributes, pointer);
    if (error != cudaSuccess && pending == cudaSuccess) cudaGetLastError();  // forget only the error this query set
    return error != cudaSuccess || attributes.type == cudaMemoryTypeUnregistered;
}

}  // namespace

namespace engine::cuda::test {

CallCounts CallCounts::operator-(const CallCounts &e) const {
    CallCounts d;
    d.host_waits = host_waits - e.host_waits;
    d.pageable_copies = pageable_copies - e.pageable_copies;
    d.allocations = allocations - e.allocations;
    d.rkv_waits = rkv_waits - e.rkv_waits;
    return d;
}

std::string CallCounts::describe() const {
    char text[160];
    std::snprintf(text, sizeof text, "%lld host waits, %lld pageable copies, %lld allocations, %lld librkv waits",
                  (long long)host_waits, (long long)pageable_copies, (long long)allocations, (long long)rkv_waits);
    return text;
}

CallCounts call_counts() { return g_counts; }

}  // namespace engine::cuda::test

// Exported (the build hides symbols by default) so that librkv.so's calls bind to them too.
#define WRAPPER __attribute__((visibility("default")))

extern "C" {

WRAPPER cudaError_t cudaStreamSynchronize(cudaStream_t stream) {
    ++g_counts.host_waits;
    FORWARD(cudaStreamSynchronize, stream);
}

WRAPPER cudaError_t cudaDeviceSynchronize(void) {
    ++g_counts.host_waits;
    FORWARD(cudaDeviceSynchronize);
}

WRAPPER cudaError_t cudaEventSynchronize(cudaEvent_t event) {
    ++g_counts.host_waits;
    FORWARD(cudaEventSynchronize, event);
}

WRAPPER cudaError_t cudaMemcpy(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind) {
    ++g_counts.host_waits;
    FORWARD(cudaMemcpy, dst, src, count, kind);
}

WRAPPER cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, enum cudaMemcpyKind kind,
                            cudaStream_t stream) {
    const bool either = kind == cudaMemcpyHostToHost || kind == cudaMemcpyDefault;
    const bool host_source = either || kind == cudaMemcpyHostToDevice;
    const bool host_target = either || kind == cudaMemcpyDeviceToHost;
    if ((host_source && pageable(src)) || (host_target && pageable(dst))) ++g_counts.pageable_copies;
    FORWARD(cudaMemcpyAsync, dst, src, count, kind, stream);
}

WRAPPER cudaError_t cudaMalloc(void **pointer, size_t size) {
    ++g_counts.allocations;
    FORWARD(cudaMalloc, pointer, size);
}

WRAPPER cudaError_t cudaFree(void *pointer) {
    ++g_counts.allocations;
    FORWARD(cudaFree, pointer);
}

WRAPPER cudaError_t cudaMallocHost(void **pointer, size_t size) {
    ++g_counts.allocations;
    FORWARD(cudaMallocHost, pointer, size);
}

WRAPPER cudaError_t cudaFreeHost(void *pointer) {
    ++g_counts.allocations;
    FORWARD(cudaFreeHost, pointer);
}

WRAPPER cudaError_t cudaHostAlloc(void **pointer, size_t size, unsigned int flags) {
    ++g_counts.allocations;
    FORWARD(cudaHostAlloc, pointer, size, flags);
}

WRAPPER rkv_status rkv_cache_sync_lengths(rkv_cache *cache, void *stream) {
    ++g_counts.rkv_waits;
    FORWARD(rkv_cache_sync_lengths, cache, stream);
}

WRAPPER rkv_status rkv_seq_positions(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head,
                                     int32_t *out, int32_t out_len, int32_t *count) {
    ++g_counts.rkv_waits;
    FORWARD(rkv_seq_positions, cache, seq, layer, head, out, out_len, count);
}

WRAPPER rkv_status rkv_seq_scores(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head,
                                  rkv_score_kind kind, float *out, int32_t out_len, int32_t *count) {
    ++g_counts.rkv_waits;
    FORWARD(rkv_seq_scores, cache, seq, layer, head, kind, out, out_len, count);
}

}  // extern "C"
