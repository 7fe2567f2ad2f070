// The CUDA backend: device buffers in the layout of src/backend.h, allocated
// once at create, and the kernels of kernels/ enqueued on the caller's stream.
// What the three entry points below promise is what src/backend.cpp expects.
#pragma once

#include <memory>

#include "backend.h"

namespace rkv::cuda {

// Allocates every buffer on params.device_id (RKV_ERR_OUT_OF_MEMORY when one
// does not fit) and makes the cuBLASLt plans.
std::unique_ptr<Backend> make_cuda_backend(const rkv_cache_params &params, const MemoryPlan &plan);

// Device (and pinned host) bytes beyond the shared layout: scratch, the
// device bookkeeping, the cuBLASLt workspace.
uint64_t cuda_scratch_bytes(const rkv_cache_params &params, const MemoryPlan &plan);

// Throws unless a CUDA cache with these params can exist on this machine:
// a device with that ordinal, compute capability 9.0 or newer, head_dim <= 256,
// a capacity the selection kernel holds in shared memory.
void check_cuda_params(const rkv_cache_params &params, const char *function);

}  // namespace rkv::cuda
