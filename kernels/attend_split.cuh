// Host side of the split attention kernel (kernels/attend.cuh), per shape:
// attend_wide.cu and attend_narrow.cu each instantiate one shape (two
// translation units that compile in parallel); attend.cu chooses.
#pragma once

#include "attend.cuh"

namespace rkv::kernels {

// Query heads per pass: the group size rounded up to a power of two, at most
// kSplitMaxGroup (larger groups take several passes).
inline int32_t group_pass(int32_t groups) {
    return groups <= 1 ? 1 : groups <= 2 ? 2 : groups <= 4 ? 4 : kSplitMaxGroup;
}

// The narrow shape exists for passes of at most 4 query heads.
template <bool kNarrow, int G>
inline constexpr bool kSplitShapeExists = !kNarrow || G <= 4;

template <typename T, int D, int G>
struct SplitTag {};

template <typename T, int D, typename F>
cudaError_t with_group_pass(int32_t groups, F &&f) {
    switch (group_pass(groups)) {
        case 1: return f(SplitTag<T, D, 1>());
        case 2: return f(SplitTag<T, D, 2>());
        case 4: return f(SplitTag<T, D, 4>());
        default: return f(SplitTag<T, D, kSplitMaxGroup>());
    }
}

// f(SplitTag<T, D, G>()) for a storage dtype, head_dim 64/128/256 and group size.
template <typename F>
cudaError_t with_split_instance(int32_t dtype, int32_t head_dim, int32_t groups, F &&f) {
    cudaError_t error = cudaErrorNotSupported;
    RKV_DISPATCH_STORAGE(dtype, T, {
        if (head_dim == 64) error = with_group_pass<T, 64>(groups, f);
        else if (head_dim == 128) error = with_group_pass<T, 128>(groups, f);
        else if (head_dim == 256) error = with_group_pass<T, 256>(groups, f);
    })
    return error;
}

template <bool kNarrow, typename T, int D, int G>
cudaError_t configure_split_instance(SplitTag<T, D, G>) {
    if constexpr (!kSplitShapeExists<kNarrow, G>) {
        return cudaSuccess;
    } else {
        return cudaFuncSetAttribute(attend_split_kernel<T, D, G, kNarrow>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                    int(SplitShape<T, D, G, kNarrow>::kSharedBytes));
    }
}

template <bool kNarrow, typename T, int D, int G>
cudaError_t split_occupancy_instance(SplitTag<T, D, G>, int *blocks) {
    if constexpr (!kSplitShapeExists<kNarrow, G>) {
        *blocks = 0;
        return cudaErrorNotSupported;
    } else {
        return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, attend_split_kernel<T, D, G, kNarrow>,
                                                             kSplitThreads, SplitShape<T, D, G, kNarrow>::kSharedBytes);
    }
}

template <bool kNarrow, typename T, int D, int G>
cudaError_t launch_split_instance(SplitTag<T, D, G>, const AttendParams &p, cudaStream_t stream) {
    if constexpr (!kSplitShapeExists<kNarrow, G>) {
        return cudaErrorNotSupported;
    } else {
        const dim3 grid(unsigned(p.splits), unsigned(p.cache.kv_heads), unsigned(p.num_seqs));
        return launch_dependent(attend_split_kernel<T, D, G, kNarrow>, grid, dim3(kSplitThreads),
                                SplitShape<T, D, G, kNarrow>::kSharedBytes, stream, 1u, p);
    }
}

// The shared-memory limits of every instance of a dtype.
template <bool kNarrow>
cudaError_t configure_split(int32_t dtype) {
    for (int32_t head_dim : {64, 128, 256})
        for (int32_t groups : {1, 2, 4, kSplitMaxGroup}) {
            const cudaError_t error = with_split_instance(
                dtype, head_dim, groups, [](auto tag) { return configure_split_instance<kNarrow>(tag); });
            if (error != cudaSuccess) return error;
        }
    return cudaSuccess;
}

// Blocks of one instance an SM holds at once (0: the shape does not exist).
template <bool kNarrow>
int32_t split_blocks_per_sm(int32_t dtype, int32_t head_dim, int32_t groups) {
    int blocks = 0;
    const cudaError_t error = with_split_instance(
        dtype, head_dim, groups, [&](auto tag) { return split_occupancy_instance<kNarrow>(tag, &blocks); });
    if (error != cudaSuccess) cudaGetLastError();
    return error == cudaSuccess ? blocks : 0;
}

template <bool kNarrow>
cudaError_t launch_split(const AttendParams &p, cudaStream_t stream) {
    return with_split_instance(p.cache.dtype, p.cache.head_dim, p.groups,
                               [&](auto tag) { return launch_split_instance<kNarrow>(tag, p, stream); });
}

}  // namespace rkv::kernels
