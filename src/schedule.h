// The schedule: when a sequence compresses, to how many tokens, and where the
// tokens of an append go. Pure functions of a (sequence, layer)'s state, the
// call and the parameters; they change nothing and allocate nothing.
//
// An append is planned before anything happens: plan_entry gives each entry's
// whole schedule (or throws the error the call returns), and the cache then
// executes exactly those plans. A call that fails therefore fails before it
// changed anything: "on error the cache is unchanged" (rkv.h) holds by
// construction, not because a dry run and the real run happen to agree.
//
// Capacity. A method that evicts holds at most budget + buffer tokens beyond
// the protected prompt: a full sequence is compressed to the budget before
// more tokens go in. With RKV_GUARD_PROMPT the prompt (at most max_prompt_len
// tokens, reserved at create) is never evicted and never triggers a
// compression. FULL never evicts: its capacity is max_len, the guards are moot
// (max_prompt_len is neither reserved nor checked), and tokens past max_len
// fail with RKV_ERR_CAPACITY. Every chunk of every plan fits in the capacity
// the memory was sized for.
#pragma once

#include <cstdint>

#include "core/method.h"
#include "rkv/rkv.h"

namespace rkv {

// Host bookkeeping of one (layer, sequence).
struct SeqLayerState {
    int32_t held = 0;           // physical length: tokens per head
    int32_t queries_valid = 0;  // most recent tokens whose queries are held (window ring and
                                // history; <= ScheduleRules::queries_kept)
    int64_t logical = 0;        // tokens appended: the next token's position
    int64_t prompt_len = 0;     // tokens appended with RKV_APPEND_PROMPT
    uint64_t compressions = 0;
    uint64_t evicted = 0;       // tokens evicted per head
    int32_t recent = 0;         // tokens appended since the last compression (or reset)
    int32_t pending = 0;        // H2O: latest tokens whose query's attention is not yet
                                // accumulated (<= max_rollback)
    int32_t budget = 0;         // the sequence's budget (rkv_seq_set_budget); 0: the cache's
};

// One entry's run of consecutive tokens into one sequence.
struct AppendChunk {
    int32_t seq;
    int32_t entry;        // index into rkv_append_args arrays
    int64_t first_token;  // token index within the entry, before token_offsets
    int32_t count;
    int32_t slot;         // first destination slot (as planned; a backend reads its own
                          // bookkeeping, which agrees)
    int64_t position;     // original position of the first token
};

// Compress one (sequence, layer) from `held` tokens to `keep` tokens. A
// backend commits H2O's pending queries before it scores.
struct CompressJob {
    int32_t seq;
    int32_t held;
    int32_t keep;                   // keep <= held; keep == held only reorders (reference mode)
    int64_t protect_below;          // tokens at positions < protect_below are never evicted
    uint64_t round;                 // how many compressions this (seq, layer) had before (seeds Random)
    int32_t layer;                  // set by the cache (plan_compression knows only the state)
};

// What the schedule reads from the parameters: a snapshot, taken at create and
// after each rkv_cache_set.
struct ScheduleRules {
    MethodInfo method;
    int32_t capacity;        // slots per head (params_capacity)
    int32_t budget;          // the cache's; a sequence's own is SeqLayerState::budget
    int32_t buffer;
    int32_t window;
    int32_t sink;            // positions below are kept when keeps_sink
    int32_t max_prompt_len;
    bool keeps_sink;
    bool guards_prompt;      // RKV_GUARD_PROMPT on a method that evicts
    bool reference_resort;   // RKV_MODE_REFERENCE: exactly `budget` generated tokens re-sort
    bool auto_compress;
    int32_t max_rollback;
    int32_t queries_kept;    // queries a (sequence, layer) holds: window, plus the history
                             // (query_history) when there is one
};
ScheduleRules schedule_rules(const rkv_cache_params &params, int32_t capacity);

// The budget (seq, layer) compresses to.
inline int32_t budget_of(const SeqLayerState &s, const ScheduleRules &r) { return s.budget ? s.budget : r.budget; }

// Prompt tokens the prompt guard protects (they lie outside the budget).
int64_t protected_prompt(const SeqLayerState &s, const ScheduleRules &r);
// True when the next token would not fit without a compression.
bool is_full(const SeqLayerState &s, const ScheduleRules &r);
// Tokens (seq, layer) takes before it is full; held + room <= capacity.
int64_t room(const SeqLayerState &s, const ScheduleRules &r);
// Fills *job and returns true if compressing now would change (seq, layer).
bool plan_compression(int32_t seq, const SeqLayerState &s, const ScheduleRules &r, CompressJob *job);
// The state after a compression, or after `count` tokens went in, or after
// the last `count` tokens were rolled back.
SeqLayerState after_compression(SeqLayerState s, const CompressJob &job);
SeqLayerState after_append(SeqLayerState s, int32_t count, bool prompt, bool has_queries, const ScheduleRules &r);
SeqLayerState after_truncate(SeqLayerState s, int32_t count);

// Tokens rkv_seq_truncate may remove from (seq, layer) so that appending them
// again restores the state exactly (rkv.h, rkv_seq_rollback_limit):
//   - never through a compression: at most `recent`;
//   - QueryNeed::Window: once the window is full, at most the queries held
//     beyond it (a rollback must leave the last `window` queries held);
//   - QueryNeed::EveryToken (H2O): at most the pending queries (an accumulated
//     one cannot be taken back).
int32_t rollback_limit(const SeqLayerState &s, const ScheduleRules &r);

// What an rkv_append call asks for, besides each entry's tokens.
struct AppendCall {
    int32_t layer;
    bool prompt;       // RKV_APPEND_PROMPT
    bool has_queries;  // args->q.data != NULL
};

// Throws unless the call suits the method (H2O needs q on every append).
void check_append_call(const AppendCall &call, const ScheduleRules &r, const char *function);

// The schedule of one entry: chunk 0 takes `first` tokens (after a compression
// if compress_first), every later chunk comes after a compression and takes
// `stride` tokens (the last one what is left). A compression of a full
// sequence always leaves the same room, so two numbers describe any length.
struct EntryPlan {
    int32_t entry;         // index into rkv_append_args arrays
    int32_t seq;
    int64_t tokens;        // of the entry
    bool compress_first;
    int32_t first;         // >= 1
    int32_t stride;        // >= 1

    int64_t chunks() const { return tokens <= first ? 1 : 1 + (tokens - first + stride - 1) / stride; }
    bool compresses_before(int64_t chunk) const { return chunk > 0 || compress_first; }
    int64_t chunk_start(int64_t chunk) const { return chunk == 0 ? 0 : first + (chunk - 1) * stride; }
    int32_t chunk_tokens(int64_t chunk) const {
        const int64_t left = tokens - chunk_start(chunk);
        return int32_t(chunk == 0 ? (left < first ? left : first) : (left < stride ? left : stride));
    }
};

// The whole schedule of `tokens` tokens into `seq` from state `s`. Throws the
// error the append returns (CAPACITY, BAD_STATE, MISSING_QUERIES) if they
// cannot all go in.
EntryPlan plan_entry(int32_t entry, int32_t seq, int64_t tokens, const SeqLayerState &s,
                     const AppendCall &call, const ScheduleRules &r, const char *function);

}  // namespace rkv
