// Launcher of decode attention (kernels/attend.cuh): the split kernel for
// head_dim 64, 128 and 256 in its two shapes (instantiated by attend_wide.cu
// and attend_narrow.cu), the generic kernel for any other head_dim, and the
// rule that chooses the splits.
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

bool attend_splits_apply(int32_t head_dim) { return head_dim == 64 || head_dim == 128 || head_dim == 256; }

bool attend_narrow_exists(int32_t head_dim, int32_t groups) {
    return attend_splits_apply(head_dim) && group_pass(groups) <= 4;
}

cudaError_t configure_attend_kernels(int32_t dtype) {
    const cudaError_t error = configure_split<false>(dtype);
    return error != cudaSuccess ? error : configure_split<true>(dtype);
}

int32_t attend_resident_blocks(int32_t dtype, int32_t head_dim, int32_t groups, bool narrow) {
    int device = 0, sms = 0;
    if (cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess) {
        cudaGetLastError();
        return 1;
    }
    if (!attend_splits_apply(head_dim)) return sms;
    const int32_t per_sm = narrow ? split_blocks_per_sm<true>(dtype, head_dim, groups)
                                  : split_blocks_per_sm<false>(dtype, head_dim, groups);
    return sms * std::max(per_sm, 1);
}

int32_t choose_attend_splits(int32_t pairs, int32_t held, int32_t resident_blocks) {
    constexpr int32_t kWaves = 2;            // aim at about two waves of resident blocks
    constexpr int32_t kMinSplitTokens = 32;  // below this a split is all latency
    if (pairs <= 0 || pairs >= resident_blocks) return 1;
    int32_t splits = (kWaves * resident_blocks + pairs - 1) / pairs;
    splits = std::min(splits, std::max(1, held / kMinSplitTokens));
    return std::max(1, std::min(splits, kAttendMaxPartials / pairs));
}

AttendPlan choose_attend_plan(int32_t pairs, int32_t held, int32_t resident_wide, int32_t resident_narrow) {
    (void)resident_narrow;  // the narrow shape is chosen only when forced, until measured otherwise
    return AttendPlan{choose_attend_splits(pairs, held, resident_wide), false};
}

cudaError_t launch_attend(const AttendParams &p, bool narrow, cudaStream_t stream) {
    const CacheLayer &c = p.cache;
    if (!attend_splits_apply(c.head_dim)) {
        if (p.splits != 1) return cudaErrorInvalidValue;
        RKV_DISPATCH_STORAGE(c.dtype, T, {
            attend_kernel<T><<<dim3(unsigned(c.kv_heads), unsigned(p.num_seqs)), kAttendThreads, 0, stream>>>(p);
        })
        return cudaGetLastError();
    }
    if (p.splits < 1 || (p.splits > 1 && int64_t(p.splits) * c.kv_heads * p.num_seqs > kAttendMaxPartials))
        return cudaErrorInvalidValue;
    if (narrow && !attend_narrow_exists(c.head_dim, p.groups)) return cudaErrorInvalidValue;
    return narrow ? launch_split<true>(p, stream) : launch_split<false>(p, stream);
}

}  // namespace rkv::kernels
