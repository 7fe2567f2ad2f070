// Every device buffer a CUDA cache holds besides the ones of src/backend.h's
// layout, sized from the params alone: the size query (rkv_cache_size) and
// create use this one definition, so they always agree.
#pragma once

#include <cstdint>

#include "params.h"
#include "rkv/rkv.h"

namespace rkv::cuda {

constexpr uint64_t kLtWorkspaceBytes = 8ull << 20;  // cuBLASLt workspace

struct ScratchPlan {
    int32_t jobs = 0;     // J: (seq, layer) jobs compressed per group (bounds everything below)
    int32_t tiles = 0;    // ceil(capacity / kGramTile): partial row-stat slots
    int32_t rows = 0;     // G * window: query rows per KV head
    bool compresses = false;   // the method evicts (all but FULL)
    bool attention = false;    // importance: window-query logits (R-KV, SnapKV)
    bool redundancy = false;   // redundancy: the key Gram (R-KV)
    bool gather = false;       // reference-order compaction (a permutation) goes through scratch

    // Bytes of each buffer (0 when the method does not need it).
    uint64_t per_head_f32 = 0;  // each of importance, redundancy, final_scores, aux, inv_norm,
                                // first_column: [J, H, cap] f32
    uint64_t corrections = 0;   // [J, H, cap] int64
    uint64_t partials = 0;      // each of partial_sum, partial_latest, partial_value: [J, H, tiles, cap]
    uint64_t partial_w = 0;     // [J, H, tiles, head_dim] f32 (fused path)
    uint64_t logits = 0;        // [J, H, rows, cap] f32
    uint64_t gram = 0;          // [J, H, kGramTile, cap] f32
    uint64_t gather_bytes = 0;  // [J, H, cap, head_dim] storage dtype
    uint64_t workspace = 0;     // cuBLASLt
    uint64_t bookkeeping = 0;   // logical, queries_valid, compressions, dropped: [layers, seqs] int32
                                // (lengths, the first array, is counted by MemoryPlan)
    uint64_t counter = 0;       // the append kernel's grid counter
    uint64_t pinned = 0;        // host copy of the 5 bookkeeping arrays (rkv_cache_sync_lengths)
    // decode attention (kernels/attend.cuh), head_dim 64/128/256:
    uint64_t attend_state = 0;     // [kAttendMaxPartials, G, 2] f32 partial max and sum
    uint64_t attend_acc = 0;       // [kAttendMaxPartials, G, head_dim] f32 partial weighted V
    uint64_t attend_counters = 0;  // [min(max_seqs, kMaxAttendSeqs), kv_heads] uint32
    // FP8 storage, methods that score keys: [J, H, cap, head_dim] bf16 dequantised keys
    uint64_t keys_dequantised = 0;

    ScratchPlan(const rkv_cache_params &params, const MemoryPlan &plan);
    uint64_t total() const;
};

}  // namespace rkv::cuda
