// Launcher of decode attention on tensor cores (kernels/attend_mma.cuh):
// one instance per 16-bit or E4M3 storage dtype and head_dim 64, 128, 256;
// the tensor maps its copies of 16-bit rows read.
#include <cudaTypedefs.h>

#include <climits>

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
cudaError_t launch_instance(MmaTag<T, D>, const AttendParams &p, const AttendRowMaps *maps, cudaStream_t stream) {
    if (MmaShape<T, D>::kTma && maps == nullptr) return cudaErrorInvalidValue;
    const AttendRowMaps none{};
    // The splits of a pair that merge in shared memory run as one cluster.
    const unsigned cluster = mma_cluster_merge<T>(p.splits) ? unsigned(p.splits) : 1u;
    return launch_dependent(mma_kernel_for<T, D>(p.q.dtype),
                            dim3(unsigned(p.splits), unsigned(p.cache.kv_heads), unsigned(p.num_seqs)),
                            dim3(kMmaThreads), mma_shared_bytes<T, D>(p.q.dtype), stream, cluster, p,
                            maps != nullptr ? *maps : none);
}

// cuTensorMapEncodeTiled from the driver the runtime uses (no link to libcuda).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
    static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
        void *function = nullptr;
        cudaDriverEntryPointQueryResult found{};
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &function, 12000, cudaEnableDefault, &found) !=
                cudaSuccess ||
            found != cudaDriverEntryPointSuccess) {
            cudaGetLastError();
            function = nullptr;
        }
        return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(function);
    }();
    return encoder;
}

// [rows, head_dim] elements from `base`, copied in boxes of 64 rows x 64
// elements (128 bytes: the widest the 128-byte swizzle takes). No L2
// promotion: the boxes ask for whole lines already, and measured on the H200
// (32 x 16K) promoting to 256 bytes took 8% longer (505 us against 467).
cudaError_t encode_row_map(CUtensorMapDataType type, int32_t head_dim, const void *base, int64_t rows,
                           CUtensorMap *map) {
    const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
    if (encode == nullptr) return cudaErrorNotSupported;
    const cuuint64_t extent[2] = {cuuint64_t(head_dim), cuuint64_t(rows)};
    const cuuint64_t row_bytes[1] = {cuuint64_t(head_dim) * 2};
    const cuuint32_t box[2] = {64, cuuint32_t(kMmaStageTokens)};
    const cuuint32_t element_strides[2] = {1, 1};
    const CUresult result =
        encode(map, type, 2, const_cast<void *>(base), extent, row_bytes, box, element_strides,
               CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE,
               CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return result == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

}  // namespace

bool attend_tensor_exists(int32_t dtype, int32_t head_dim) {
    return dtype != RKV_DTYPE_F32 && attend_splits_apply(head_dim);
}

bool attend_uses_row_maps(int32_t dtype, int32_t head_dim) {
    return (dtype == RKV_DTYPE_BF16 || dtype == RKV_DTYPE_F16) && attend_tensor_exists(dtype, head_dim);
}

cudaError_t make_attend_row_maps(int32_t dtype, int32_t head_dim, const void *keys, const void *values, int64_t rows,
                                 AttendRowMaps *maps) {
    // The kernel's row coordinates are int32; 16-byte aligned rows (cudaMalloc's memory is).
    if (!attend_uses_row_maps(dtype, head_dim) || rows <= 0 || rows > INT32_MAX ||
        (reinterpret_cast<uintptr_t>(keys) | reinterpret_cast<uintptr_t>(values)) % 16 != 0)
        return cudaErrorInvalidValue;
    const CUtensorMapDataType type = dtype == RKV_DTYPE_BF16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16
                                                             : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    const cudaError_t error = encode_row_map(type, head_dim, keys, rows, &maps->keys);
    return error != cudaSuccess ? error : encode_row_map(type, head_dim, values, rows, &maps->values);
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

cudaError_t launch_attend_mma(const AttendParams &p, const AttendRowMaps *maps, cudaStream_t stream) {
    return with_mma_instance(p.cache.dtype, p.cache.head_dim,
                             [&](auto tag) { return launch_instance(tag, p, maps, stream); });
}

}  // namespace rkv::kernels
