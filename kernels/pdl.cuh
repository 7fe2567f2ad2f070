// Programmatic dependent launch (compute capability 9.0). A kernel launched
// with cudaLaunchAttributeProgrammaticStreamSerialization may become resident
// while the kernel before it in the stream is still finishing, so its
// prologue (barrier inits, a cluster's first barrier) and its launch overlap
// that kernel's tail. It must then wait for the earlier grid before it reads
// any global memory that grid may have written (lengths, batch entries, K/V,
// queries) or writes any that grid may read.
#pragma once

#include <cuda_runtime.h>

#include <utility>

namespace rkv::kernels {

// kernel<<<grid, block, shared_bytes, stream>>>(args...) as a programmatic
// dependent launch, its blocks in clusters of `cluster` along x when cluster > 1;
// the kernel calls wait_for_prior_grids before any global access.
template <typename... Params, typename... Args>
cudaError_t launch_dependent(void (*kernel)(Params...), dim3 grid, dim3 block, size_t shared_bytes,
                             cudaStream_t stream, unsigned cluster, Args &&...args) {
    cudaLaunchAttribute attributes[2] = {};
    attributes[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[0].val.programmaticStreamSerializationAllowed = 1;
    attributes[1].id = cudaLaunchAttributeClusterDimension;
    attributes[1].val.clusterDim.x = cluster;
    attributes[1].val.clusterDim.y = 1;
    attributes[1].val.clusterDim.z = 1;
    cudaLaunchConfig_t config = {};
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = shared_bytes;
    config.stream = stream;
    config.attrs = attributes;
    config.numAttrs = cluster > 1 ? 2 : 1;
    return cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...);
}

// Returns once every grid this one depends on has completed and its writes are
// visible (at once for a kernel launched without the attribute).
__device__ __forceinline__ void wait_for_prior_grids() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// Lets the next kernel of the stream, if launched as a programmatic dependent,
// start its prologue now; it still waits for this grid's end before its reads.
__device__ __forceinline__ void allow_dependent_launch() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

}  // namespace rkv::kernels
