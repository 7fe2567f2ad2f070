// Counts, in the test program that links call_counter.cpp, every call that
// makes the host wait for the GPU, allocates or frees memory through CUDA, or
// copies through pageable host memory, whoever makes it: the engine, librkv
// or the test. The program itself defines those CUDA runtime and librkv entry
// points, so the linker binds the engine's calls to them and the dynamic
// linker binds librkv.so's calls to them (the executable comes first in the
// lookup); each wrapper counts and forwards to the real function
// (dlsym(RTLD_NEXT)). A test proves the binding reaches calls made inside
// librkv.so by calling rkv_cache_sync_lengths, which waits with
// cudaStreamSynchronize inside the library (test_gpu_engine does).
#pragma once

#include <cstdint>
#include <string>

namespace engine::cuda::test {

struct CallCounts {
    // cudaStreamSynchronize, cudaDeviceSynchronize, cudaEventSynchronize, cudaMemcpy
    int64_t host_waits = 0;
    // cudaMemcpyAsync to or from pageable host memory (it may wait for the stream)
    int64_t pageable_copies = 0;
    // cudaMalloc, cudaFree, cudaMallocHost, cudaFreeHost, cudaHostAlloc
    int64_t allocations = 0;
    // librkv's calls that wait for the device: rkv_cache_sync_lengths, rkv_seq_positions, rkv_seq_scores
    int64_t rkv_waits = 0;

    CallCounts operator-(const CallCounts &earlier) const;
    bool none() const { return host_waits == 0 && pageable_copies == 0 && allocations == 0 && rkv_waits == 0; }
    std::string describe() const;  // "1 host wait, 0 pageable copies, 0 allocations, 0 librkv waits"
};

// The counts since the program started (one thread: the counters are plain integers).
CallCounts call_counts();

}  // namespace engine::cuda::test
