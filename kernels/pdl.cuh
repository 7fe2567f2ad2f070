// Programmatic dependent launch (compute capability 9.0). A kernel launched
// with cudaLaunchAttributeProgrammaticStreamSerialization may become resident
// while the kernel before it in the stream is still finishing, so its
// prologue (barrier inits, a cluster's first barrier) and its launch overlap
// that kernel's tail. It must then wait for the earlier grid before it reads
// any global memory that grid may have written (lengths, batch entries, K/V,
// queries) or writes any that grid may read.
#pragma once

namespace rkv::kernels {

// Returns once every grid this one depends on has completed and its writes are
// visible (at once for a kernel launched without the attribute).
__device__ __forceinline__ void wait_for_prior_grids() { asm volatile("griddepcontrol.wait;" ::: "memory"); }

// Lets the next kernel of the stream, if launched as a programmatic dependent,
// start its prologue now; it still waits for this grid's end before its reads.
__device__ __forceinline__ void allow_dependent_launch() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

}  // namespace rkv::kernels
