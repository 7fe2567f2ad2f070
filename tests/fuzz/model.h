// An independent model of one rkv_cache: what include/rkv/rkv.h and
// docs/algorithm.md promise about its state after each call. It is written
// from those two documents only (nothing from src/), and it predicts
//   - the statuses each call may return (a Verdict),
//   - lengths, prompt length, queries in the window, capacity,
//   - which positions each head holds, exactly where the documents determine
//     them (appends, FULL, StreamingLLM, resets) and as constraints where the
//     scores decide (the window, sinks and guarded prompt kept, nothing
//     invented, position order), and
//   - the K/V bits every held token must have, by position.
// The harness (program.cpp) checks the real cache against it (checks.cpp).
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "rkv/rkv.h"
#include "verdict.h"

namespace fuzz {

// A successful call compressed (seq, layer): the cache's choice is checked
// against these constraints, then becomes the model's list.
struct PendingCompression {
    std::vector<std::vector<int32_t>> before;  // [head] positions held before the call
    int64_t logical_before = 0;  // positions >= this arrived during the call
    int64_t tail_start = 0;      // positions >= this arrived after the last compression
    int32_t keep = 0;            // tokens the last compression kept
    bool reorder_only = false;   // reference mode re-sorting a cache of exactly the budget
};

// One (sequence, layer).
struct SeqLayerModel {
    int64_t logical = 0;        // tokens appended: the next position
    int64_t prompt_len = 0;     // tokens appended with RKV_APPEND_PROMPT
    int32_t queries_valid = 0;  // most recent tokens appended with queries (<= window)
    int32_t held = 0;           // tokens held per head
    int32_t budget = 0;         // the sequence's budget (rkv_seq_set_budget; the cache's by default)
    // Tokens appended since the last compression (or reset): what a rollback may
    // remove. `_low` counts reference mode's re-sorts as compressions, `_high` not
    // (the header does not say).
    int64_t since_compression_low = 0, since_compression_high = 0;
    std::vector<uint8_t> had_query;  // [position] appended with its query
    std::vector<std::vector<int32_t>> kept;  // [head] positions held, in slot order
    std::optional<PendingCompression> pending;
    // Compressions the stats may count: min counts the evicting ones, max
    // also reference mode's re-sorts (the header does not say if they count).
    uint64_t compressions_min = 0, compressions_max = 0;
    // Bits each token must be held with, [position][head][e]: the storage
    // dtype's (model_dtype: FP8 rows as the float32 bits of their values).
    std::vector<uint32_t> k_bits, v_bits;
    // FP8 storage: each row's scale, [position][head] (empty otherwise).
    std::vector<float> k_scale, v_scale;
};

// The verdict of rkv_cache_create / rkv_cache_size for `params` (NULL allowed).
// A CUDA device type may succeed or fail (this build or machine may lack it).
Verdict params_verdict(const rkv_cache_params *params);

// The capacities algorithm.md allows for params (FULL with the prompt guard:
// max_len, or max_len plus the prompt reserve: a decision the issue leaves open).
std::vector<int32_t> allowed_capacities(const rkv_cache_params &params);

class CacheModel {
 public:
    CacheModel(const rkv_cache_params &params, int32_t capacity, uint64_t bytes);

    const rkv_cache_params &params() const { return params_; }
    int32_t capacity() const { return capacity_; }
    uint64_t bytes() const { return bytes_; }
    SeqLayerModel &at(int32_t seq, int32_t layer) { return states_[size_t(layer) * params_.max_seqs + seq]; }
    const SeqLayerModel &at(int32_t seq, int32_t layer) const {
        return states_[size_t(layer) * params_.max_seqs + seq];
    }

    // Tokens the prompt guard protects (outside the budget).
    int64_t protected_prompt(const SeqLayerModel &s) const;
    // Held == capacity, not counting a guarded prompt: the next token compresses first.
    bool full(const SeqLayerModel &s) const;
    bool needs_window_queries() const;
    // Positions below this are never evicted (sinks, guarded prompt).
    int64_t protect_below(const SeqLayerModel &s) const;
    bool sink_protected() const;

    Verdict append_verdict(const rkv_append_args *args, bool null_cache) const;
    // After rkv_append returned OK: lengths, lists, and the bits of every new
    // token read from the caller's buffers at the header's addresses.
    void apply_append(const rkv_append_args &args);

    Verdict compress_verdict(int32_t seq, int32_t layer, bool null_cache) const;
    void apply_compress(int32_t seq, int32_t layer);

    void apply_reset(int32_t seq);
    // rkv_seq_set_budget / rkv_seq_copy: what they must return, and their effect.
    Verdict set_budget_verdict(int32_t seq, int32_t budget, bool null_cache) const;
    void apply_set_budget(int32_t seq, int32_t budget);
    Verdict copy_verdict(int32_t src, int32_t dst, bool null_cache) const;
    void apply_copy(int32_t src, int32_t dst);
    // A slot no token was appended to since create or reset.
    bool empty(int32_t seq) const;
    // rkv_seq_truncate's effect: the last `tokens` positions of every layer go.
    void apply_truncate(int32_t seq, int32_t tokens);
    // Bounds on rkv_seq_rollback_limit from "tokens appended since that layer's
    // last compression", the rule every method has.
    int64_t rollback_bound_low(int32_t seq) const;
    int64_t rollback_bound_high(int32_t seq) const;
    void apply_set_param(rkv_param param, double value);

 private:
    struct EntryPlan {
        int32_t compressions = 0;
        int32_t last_keep = 0;
        int64_t tail_start = 0;
        int32_t held = 0;
        int32_t queries_valid = 0;
    };
    // Runs one entry's schedule; adds its errors to *verdict. False on an error.
    bool plan_entry(const SeqLayerModel &s, int64_t tokens, bool prompt, bool has_queries,
                    Verdict *verdict, EntryPlan *plan) const;
    // The job rkv_compress would run on (seq, layer): 0 none, 1 evict, 2 re-sort.
    int compress_job(const SeqLayerModel &s, bool only_due) const;

    rkv_cache_params params_;
    int32_t capacity_;
    uint64_t bytes_;
    std::vector<SeqLayerModel> states_;  // [num_layers, max_seqs]
};

// Largest element index a tensor reaches over `entries` entries (128-bit, so
// that overflow is visible), or -1 if it has a negative stride.
__int128 tensor_last_index(const rkv_tensor &t, int32_t entries, const int32_t *num_tokens,
                           const int64_t *token_offsets, bool uses_tokens);

// Adds what a call must (or may) return for a tensor reaching element
// `last_index`: offsets past 64 bits, and an extent (if given) too small.
void extent_verdict(const rkv_tensor &t, __int128 last_index, Verdict *v);

// Element index of (entry, token, head, 0) by the header's formula.
inline int64_t tensor_index(const rkv_tensor &t, int64_t entry, int64_t token, int64_t head) {
    return entry * t.stride_seq + token * t.stride_token + head * t.stride_head;
}

}  // namespace fuzz
