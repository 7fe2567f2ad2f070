#include "cuda/scratch_plan.h"

#include <algorithm>

#include "core/method.h"
#include "dtype.h"
#include "kernels/launch.h"
#include "kernels/params.h"

namespace rkv::cuda {

ScratchPlan::ScratchPlan(const rkv_cache_params &p, const MemoryPlan &plan) {
    const uint64_t cap = uint64_t(plan.capacity);
    const uint64_t seq_layers = plan.length_entries;
    bookkeeping = seq_layers * 4 * (kernels::kBookkeepingArrays - 1);
    counter = 256;
    pinned = seq_layers * 4 * kernels::kBookkeepingArrays;
    if (kernels::attend_splits_apply(p.head_dim)) {
        const uint64_t groups = uint64_t(p.num_q_heads / p.num_kv_heads);
        attend_state = uint64_t(kernels::kAttendMaxPartials) * groups * 2 * 4;
        attend_acc = uint64_t(kernels::kAttendMaxPartials) * groups * uint64_t(p.head_dim) * 4;
        attend_counters = uint64_t(std::min<int32_t>(p.max_seqs, kernels::kMaxAttendSeqs)) * uint64_t(p.num_kv_heads) * 4;
    }
    const MethodInfo method = method_info(p.method);
    compresses = method.evicts();
    if (!compresses) return;
    // A group holds jobs of any layers: rkv_compress of every layer of one
    // sequence is one group of num_layers jobs.
    jobs = int32_t(std::min<int64_t>(int64_t(p.max_seqs) * p.num_layers, kernels::kMaxGroupJobs));
    tiles = int32_t((cap + kernels::kGramTile - 1) / kernels::kGramTile);
    rows = (p.num_q_heads / p.num_kv_heads) * p.window;
    attention = method.queries == QueryNeed::Window;
    redundancy = method.scorer == Scorer::ImportanceRedundancy;
    gather = kept_in_reference_order(p);
    const uint64_t heads = uint64_t(jobs) * uint64_t(p.num_kv_heads);
    per_head_f32 = heads * cap * 4;
    corrections = redundancy ? heads * cap * 8 : 0;
    partials = redundancy ? heads * uint64_t(tiles) * cap * 4 : 0;
    partial_w = redundancy ? heads * uint64_t(tiles) * uint64_t(p.head_dim) * 4 : 0;
    logits = attention ? heads * uint64_t(rows) * cap * 4 : 0;
    gram = redundancy ? heads * uint64_t(kernels::kGramTile) * cap * 4 : 0;
    gather_bytes = gather ? heads * cap * uint64_t(p.head_dim) * dtype_size(p.dtype) : 0;
    workspace = attention ? kLtWorkspaceBytes : 0;
    const bool scores_keys = method.scorer == Scorer::ImportanceRedundancy || method.scorer == Scorer::Importance ||
                             method.scorer == Scorer::KeyDiff;
    keys_dequantised = is_fp8(p.dtype) && scores_keys ? heads * cap * uint64_t(p.head_dim) * 2 : 0;
}

uint64_t ScratchPlan::total() const {
    return 6 * per_head_f32 + corrections + 3 * partials + partial_w + logits + gram + gather_bytes + workspace +
           bookkeeping + counter + pinned + attend_state + attend_acc + attend_counters + keys_dequantised;
}

}  // namespace rkv::cuda
