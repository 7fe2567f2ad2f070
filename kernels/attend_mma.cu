// Launcher of decode attention on tensor cores (kernels/attend_mma.cuh):
// one instance per 16-bit or E4M3 storage dtype and head_dim 64, 128, 256.
#include "attend_mma.cuh"
#include "launch.h"

namespace rkv::kernels {
namespace {

template <typename T, int D>
struct MmaTag {};

// f(MmaTag<T, D>()) for the storage dtypes and head dims the kernel serves.
template <typename F>
cudaError_t with_mma_instance(int32_t dtype, int32_t head_dim, F &&f) {
    cudaError_t error = cudaErrorNotSupported;
    RKV_DISPATCH_STORAGE(dtype, T, {
        if constexpr (!std::is_same_v<T, float>) {
            if (head_dim == 64) error = f(MmaTag<T, 64>());
            else if (head_dim == 128) error = f(MmaTag<T, 128>());
            else if (head_dim == 256) error = f(MmaTag<T, 256>());
        }
    })
    return error;
}

// The instance for queries of q_dtype: one piece, or up to kMmaMaxPieces.
template <typename T, int D>
auto *mma_kernel_for(int32_t q_dtype) {
    return mma_query_pieces(q_dtype, MmaShape<T, D>::kBf16) == 1 ? attend_mma_kernel<T, D, 1>
                                                                  : attend_mma_kernel<T, D, kMmaMaxPieces>;
}

template <typename T, int D>
size_t mma_shared_bytes(int32_t q_dtype) {
    return MmaShape<T, D>::shared_bytes(mma_query_pieces(q_dtype, MmaShape<T, D>::kBf16) == 1 ? 1 : kMmaMaxPieces);
}

template <typename T, int D>
cudaError_t configure_instance(MmaTag<T, D>) {
    const cudaError_t error = cudaFuncSetAttribute(attend_mma_kernel<T, D, 1>,
                                                   cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                   int(MmaShape<T, D>::shared_bytes(1)));
    if (error != cudaSuccess) return error;
    return cudaFuncSetAttribute(attend_mma_kernel<T, D, kMmaMaxPieces>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                int(MmaShape<T, D>::shared_bytes(kMmaMaxPieces)));
}

template <typename T, int D>
cudaError_t occupancy_instance(MmaTag<T, D>, int32_t q_dtype, int *blocks) {
    return cudaOccupancyMaxActiveBlocksPerMultiprocessor(blocks, mma_kernel_for<T, D>(q_dtype), kMmaThreads,
                                                         mma_shared_bytes<T, D>(q_dtype));
}

template <typename T, int D>
cudaError_t launch_instance(MmaTag<T, D>, const AttendParams &p, cudaStream_t stream) {
    const dim3 grid(unsigned(p.splits), unsigned(p.cache.kv_heads), unsigned(p.num_seqs));
    mma_kernel_for<T, D>(p.q.dtype)<<<grid, kMmaThreads, mma_shared_bytes<T, D>(p.q.dtype), stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

bool attend_tensor_exists(int32_t dtype, int32_t head_dim) {
    return dtype != RKV_DTYPE_F32 && attend_splits_apply(head_dim);
}

cudaError_t configure_attend_mma(int32_t dtype) {
    for (int32_t head_dim : {64, 128, 256}) {
        if (!attend_tensor_exists(dtype, head_dim)) continue;
        const cudaError_t error = with_mma_instance(dtype, head_dim, [](auto tag) { return configure_instance(tag); });
        if (error != cudaSuccess) return error;
    }
    return cudaSuccess;
}

// Blocks an SM holds at once for queries of q_dtype (0: no instance).
int32_t attend_mma_blocks_per_sm(int32_t dtype, int32_t head_dim, int32_t q_dtype) {
    int blocks = 0;
    const cudaError_t error =
        with_mma_instance(dtype, head_dim, [&](auto tag) { return occupancy_instance(tag, q_dtype, &blocks); });
    if (error != cudaSuccess) cudaGetLastError();
    return error == cudaSuccess ? blocks : 0;
}

cudaError_t launch_attend_mma(const AttendParams &p, cudaStream_t stream) {
    return with_mma_instance(p.cache.dtype, p.cache.head_dim,
                             [&](auto tag) { return launch_instance(tag, p, stream); });
}

}  // namespace rkv::kernels
