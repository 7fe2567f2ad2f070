// Launcher of decode attention (kernels/attend.cuh): the split kernel for
// head_dim 64, 128 and 256 in its two shapes (instantiated by attend_wide.cu
// and attend_narrow.cu), the tensor-core kernel (attend_mma.cu), the generic
// kernel for any other head_dim, and the rule that chooses the plan.
#include <algorithm>

#include "attend_split.cuh"
#include "launch.h"

namespace rkv::kernels {

extern template cudaError_t configure_split<false>(int32_t dtype);
extern template cudaError_t configure_split<true>(int32_t dtype);
extern template int32_t split_blocks_per_sm<false>(int32_t dtype, int32_t head_dim, int32_t groups);
extern template int32_t split_blocks_per_sm<true>(int32_t dtype, int32_t head_dim, int32_t groups);
extern template cudaError_t launch_split<false>(const AttendParams &p, cudaStream_t stream);
extern template cudaError_t launch_split<true>(const AttendParams &p, cudaStream_t stream);
// attend_mma.cu
cudaError_t configure_attend_mma(int32_t dtype);
int32_t attend_mma_blocks_per_sm(int32_t dtype, int32_t head_dim, int32_t q_dtype);
cudaError_t launch_attend_mma(const AttendParams &p, const AttendRowMaps *maps, cudaStream_t stream);

bool attend_splits_apply(int32_t head_dim) { return head_dim == 64 || head_dim == 128 || head_dim == 256; }

bool attend_narrow_exists(int32_t head_dim, int32_t groups) {
    return attend_splits_apply(head_dim) && group_pass(groups) <= 4;
}

cudaError_t configure_attend_kernels(int32_t dtype) {
    cudaError_t error = configure_split<false>(dtype);
    if (error == cudaSuccess) error = configure_split<true>(dtype);
    return error != cudaSuccess ? error : configure_attend_mma(dtype);
}

int32_t attend_resident_blocks(int32_t dtype, int32_t head_dim, int32_t groups, AttendKernel kernel) {
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        cudaGetLastError();
        return 1;
    }
    if (!attend_splits_apply(head_dim)) return kernel == AttendKernel::kWide ? sms : 0;
    int32_t per_sm = 0;
    switch (kernel) {
        case AttendKernel::kWide: per_sm = std::max(split_blocks_per_sm<false>(dtype, head_dim, groups), 1); break;
        case AttendKernel::kNarrow:
            per_sm = attend_narrow_exists(head_dim, groups) ? split_blocks_per_sm<true>(dtype, head_dim, groups) : 0;
            break;
        case AttendKernel::kTensor:
            per_sm = attend_tensor_exists(dtype, head_dim)
                         ? attend_mma_blocks_per_sm(dtype, head_dim, dtype == RKV_DTYPE_F16 ? RKV_DTYPE_F16 : RKV_DTYPE_BF16)
                         : 0;
            break;
    }
    return sms * per_sm;
}

int32_t choose_attend_splits(int32_t pairs, int32_t held, int32_t fill_blocks, int32_t min_split_tokens) {
    if (pairs <= 0 || 2 * pairs >= fill_blocks) return 1;
    const int32_t splits = std::min(fill_blocks / pairs, std::max(1, held / min_split_tokens));
    return std::max(1, std::min(splits, kAttendMaxPartials / pairs));
}

int32_t choose_kernel_splits(AttendKernel kernel, int32_t pairs, int32_t held, const AttendResidency &resident) {
    // Measured on the H200 (tools/bench_attend.py sweeps every plan): a split
    // costs a partial write and a share of the merge. Kernels that copy with
    // cp.async split while the pairs leave half the resident blocks idle, up
    // to one wave, keeping two stages (128 tokens) per split. The tensor-core
    // kernel on 16-bit rows (copied by the copy engine) streams best with one
    // split per SM and three stages (192 tokens) or more per split: at
    // 1 x 1152, 6 splits took 10.0 us where 9 took 10.5; at 8 x 1152, 2 took
    // 17.4 where 4 took 18.2.
    switch (kernel) {
        case AttendKernel::kWide: return choose_attend_splits(pairs, held, resident.wide, 128);
        case AttendKernel::kNarrow: return choose_attend_splits(pairs, held, resident.narrow, 128);
        case AttendKernel::kTensor:
            return resident.tensor_row_maps ? choose_attend_splits(pairs, held, resident.sms, 192)
                                            : choose_attend_splits(pairs, held, resident.tensor, 128);
    }
    return 1;
}

AttendPlan choose_attend_plan(int32_t pairs, int32_t held, const AttendResidency &resident) {
    // The narrow shape is chosen only when forced, until measured otherwise;
    // the tensor-core kernel wherever it exists (f16, bf16 and E4M3 rows:
    // measured faster than the wide shape in every case, kernels/README.md).
    const AttendKernel kernel = resident.tensor > 0 ? AttendKernel::kTensor : AttendKernel::kWide;
    return AttendPlan{choose_kernel_splits(kernel, pairs, held, resident), kernel};
}

cudaError_t launch_attend(const AttendParams &p, AttendKernel kernel, const AttendRowMaps *maps, cudaStream_t stream) {
    const CacheLayer &c = p.cache;
    if (!attend_splits_apply(c.head_dim)) {
        if (p.splits != 1) return cudaErrorInvalidValue;
        cudaError_t error = cudaErrorNotSupported;
        RKV_DISPATCH_STORAGE(c.dtype, T, {
            error = launch_dependent(attend_kernel<T>, dim3(unsigned(c.kv_heads), unsigned(p.num_seqs)),
                                     dim3(kAttendThreads), 0, stream, 1u, p);
        })
        return error;
    }
    if (p.splits < 1 || (p.splits > 1 && int64_t(p.splits) * c.kv_heads * p.num_seqs > kAttendMaxPartials))
        return cudaErrorInvalidValue;
    switch (kernel) {
        case AttendKernel::kNarrow:
            if (!attend_narrow_exists(c.head_dim, p.groups)) return cudaErrorInvalidValue;
            return launch_split<true>(p, stream);
        case AttendKernel::kTensor:
            if (!attend_tensor_exists(c.dtype, c.head_dim)) return cudaErrorInvalidValue;
            return launch_attend_mma(p, maps, stream);
        case AttendKernel::kWide: break;
    }
    return launch_split<false>(p, stream);
}

}  // namespace rkv::kernels
