// The CPU backend: host buffers in the layout of backend.h, compute in float32
// with CBLAS. It is the readable oracle the CUDA backend is tested against.
#pragma once

#include <memory>

#include "backend.h"

namespace rkv::cpu {

std::unique_ptr<Backend> make_cpu_backend(const rkv_cache_params &params, const MemoryPlan &plan);
uint64_t cpu_scratch_bytes(const rkv_cache_params &params, const MemoryPlan &plan);

}  // namespace rkv::cpu
