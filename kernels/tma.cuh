// Tensor copies into shared memory (Hopper's copy engine, TMA:
// cp.async.bulk.tensor) and the shared-memory barriers (mbarrier) that count
// their bytes.
#pragma once

#include <cuda.h>

#include <cstdint>

#include "common.cuh"

namespace rkv::kernels {

// One thread: the barrier completes a phase when `arrivals` threads arrived
// and every byte they announced landed. The fence makes the initialisation
// visible to the copy engine; a __syncthreads must follow before others use it.
__device__ __forceinline__ void mbarrier_init(uint64_t *barrier, uint32_t arrivals) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(barrier)), "r"(arrivals));
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
}

// This thread's arrival, announcing `bytes` that tensor copies will complete.
__device__ __forceinline__ void mbarrier_arrive_expect_bytes(uint64_t *barrier, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(shared_address(barrier)),
                 "r"(bytes)
                 : "memory");
}

// Wait until the barrier's phase of parity `parity` (0 for its 1st, 3rd, ...
// phase; 1 for the 2nd, 4th, ...) has completed.
__device__ __forceinline__ void mbarrier_wait(uint64_t *barrier, uint32_t parity) {
    uint32_t done = 0;
    do {
        asm volatile(
            "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}\n"
            : "=r"(done)
            : "r"(shared_address(barrier)), "r"(parity)
            : "memory");
    } while (!done);
}

// An L2 cache policy under which the lines a copy brings in are the first
// the L2 evicts: for data read once, such as attention's K/V rows.
__device__ __forceinline__ uint64_t l2_evict_first_policy() {
    uint64_t policy;
    asm volatile("createpolicy.fractional.L2::evict_first.b64 %0, 1.0;\n" : "=l"(policy));
    return policy;
}

// The box at element column x, row y of a 2D tensor map (a cp.async.bulk
// tensor copy) into shared memory at `shared` (1024-byte aligned for the
// 128-byte swizzle), its lines cached in the L2 under `l2_policy`
// (createpolicy); the landed bytes (the whole box, zeros past the tensor's
// rows included) complete on `barrier`. `map` lives in parameter space
// (a __grid_constant__ kernel argument).
__device__ __forceinline__ void tensor_copy_to_shared(uint32_t shared, const CUtensorMap *map, int32_t x, int32_t y,
                                                      uint64_t *barrier, uint64_t l2_policy) {
    asm volatile(
        "cp.async.bulk.tensor.2d.shared::cluster.global.tile.mbarrier::complete_tx::bytes.L2::cache_hint"
        " [%0], [%1, {%2, %3}], [%4], %5;\n" ::"r"(shared),
        "l"(reinterpret_cast<uint64_t>(map)), "r"(x), "r"(y), "r"(shared_address(barrier)), "l"(l2_policy)
        : "memory");
}

// `bytes` contiguous bytes (16-byte aligned, a multiple of 16) from global
// memory into shared memory at `shared` by the copy engine (one thread);
// completes on `barrier`, which must expect the bytes.
__device__ __forceinline__ void bulk_copy_to_shared(uint32_t shared, const void *global, uint32_t bytes,
                                                    uint64_t *barrier) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(shared),
                 "l"(global), "r"(bytes), "r"(shared_address(barrier))
                 : "memory");
}

// Order this thread's earlier shared-memory writes before later bulk copies
// into the same bytes (the copy engine is another proxy).
__device__ __forceinline__ void fence_proxy_async_shared() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

}  // namespace rkv::kernels
