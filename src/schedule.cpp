#include "schedule.h"

#include <algorithm>
#include <limits>

#include "error.h"
#include "params.h"

namespace rkv {

namespace {

constexpr int64_t kMaxPosition = std::numeric_limits<int32_t>::max();

// Held tokens at which (seq, layer) is full.
int64_t fill_limit(const SeqLayerState &s, const ScheduleRules &r) {
    if (!r.method.evicts()) return r.capacity;
    return std::min<int64_t>(r.capacity, protected_prompt(s, r) + budget_of(s, r) + r.buffer);
}

// Protected prompt tokens go in without a compression, up to the capacity.
int64_t chunk_room(const SeqLayerState &s, const AppendCall &call, const ScheduleRules &r) {
    if (call.prompt && r.guards_prompt) return r.capacity - s.held;
    return room(s, r);
}

// The compression an append runs on a full sequence before `remaining` more
// tokens go in; throws when there is none or it lacks its queries.
CompressJob compression_before_append(int32_t seq, const SeqLayerState &s, int64_t remaining,
                                      const AppendCall &call, const ScheduleRules &r,
                                      const char *fn) {
    CompressJob job{};
    if (!r.auto_compress || !plan_compression(seq, s, r, &job))
        fail(RKV_ERR_CAPACITY,
             "%s: sequence %d, layer %d holds %d tokens, its capacity; %lld more do not fit (%s): %s", fn,
             seq, call.layer, s.held, (long long)remaining,
             r.method.evicts() ? "auto_compress is off" : "FULL never evicts",
             r.method.evicts() ? "call rkv_compress first" : "raise max_len at create");
    if (r.method.queries == QueryNeed::Window && s.queries_valid < r.window)
        fail(RKV_ERR_MISSING_QUERIES,
             "%s: sequence %d, layer %d is full and %s compresses with the queries of the last %d "
             "tokens, but only %d were appended with queries: pass args->q",
             fn, seq, call.layer, r.method.name, r.window, s.queries_valid);
    return job;
}

}  // namespace

ScheduleRules schedule_rules(const rkv_cache_params &p, int32_t capacity) {
    ScheduleRules r{};
    r.method = method_info(p.method);
    r.capacity = capacity;
    r.budget = p.budget;
    r.buffer = p.buffer;
    r.window = p.window;
    r.sink = p.sink;
    r.max_prompt_len = p.max_prompt_len;
    r.keeps_sink = keeps_sink(p);
    r.guards_prompt = guards_prompt(p);
    r.reference_resort = p.mode == RKV_MODE_REFERENCE;
    r.auto_compress = p.auto_compress != 0;
    r.max_rollback = p.max_rollback;
    r.queries_kept = std::max(p.window, query_history(p));
    return r;
}

int64_t protected_prompt(const SeqLayerState &s, const ScheduleRules &r) {
    return r.guards_prompt ? s.prompt_len : 0;
}

bool is_full(const SeqLayerState &s, const ScheduleRules &r) { return s.held >= fill_limit(s, r); }

int64_t room(const SeqLayerState &s, const ScheduleRules &r) {
    return std::max<int64_t>(0, fill_limit(s, r) - s.held);
}

bool plan_compression(int32_t seq, const SeqLayerState &s, const ScheduleRules &r, CompressJob *job) {
    if (!r.method.evicts()) return false;
    const int64_t prompt = protected_prompt(s, r);
    const int64_t generated = s.held - prompt;
    const int32_t budget = budget_of(s, r);
    int64_t keep;
    if (generated > budget)
        keep = prompt + budget;
    else if (r.reference_resort && generated == budget)
        keep = s.held;  // the official code re-sorts a cache of exactly the budget
    else
        return false;
    job->seq = seq;
    job->held = s.held;
    job->keep = int32_t(keep);
    job->protect_below = std::max<int64_t>(prompt, r.keeps_sink ? r.sink : 0);
    job->round = s.compressions;
    return true;
}

SeqLayerState after_compression(SeqLayerState s, const CompressJob &job) {
    s.evicted += uint64_t(job.held - job.keep);
    s.held = job.keep;
    s.compressions += 1;
    s.recent = 0;
    s.pending = 0;  // the compression committed them first
    return s;
}

SeqLayerState after_append(SeqLayerState s, int32_t count, bool prompt, bool has_queries, const ScheduleRules &r) {
    s.held += count;
    s.logical += count;
    if (prompt) s.prompt_len += count;
    s.queries_valid = has_queries ? int32_t(std::min<int64_t>(r.queries_kept, int64_t(s.queries_valid) + count)) : 0;
    s.recent += count;
    if (r.method.queries == QueryNeed::EveryToken) s.pending = std::min(s.pending + count, r.max_rollback);
    return s;
}

SeqLayerState after_truncate(SeqLayerState s, int32_t count) {
    s.held -= count;
    s.logical -= count;
    s.prompt_len = std::min(s.prompt_len, s.logical);
    s.queries_valid = std::max(0, s.queries_valid - count);
    s.recent -= count;
    s.pending = std::max(0, s.pending - count);
    return s;
}

int32_t rollback_limit(const SeqLayerState &s, const ScheduleRules &r) {
    int32_t limit = s.recent;
    switch (r.method.queries) {
        case QueryNeed::None: break;
        case QueryNeed::Window:
            if (s.queries_valid >= r.window) limit = std::min(limit, s.queries_valid - r.window);
            break;
        case QueryNeed::EveryToken: limit = std::min(limit, s.pending); break;
    }
    return limit;
}

void check_append_call(const AppendCall &call, const ScheduleRules &r, const char *fn) {
    if (r.method.queries == QueryNeed::EveryToken && !call.has_queries)
        fail(RKV_ERR_MISSING_QUERIES, "%s: the %s method accumulates the attention of every query: "
                                      "pass args->q on every append", fn, r.method.name);
}

EntryPlan plan_entry(int32_t entry, int32_t seq, int64_t tokens, const SeqLayerState &s,
                     const AppendCall &call, const ScheduleRules &r, const char *fn) {
    if (s.logical + tokens > kMaxPosition)
        fail(RKV_ERR_CAPACITY, "%s: sequence %d would pass position 2^31-1; reset it", fn, seq);
    if (call.prompt && s.logical > s.prompt_len)
        fail(RKV_ERR_BAD_STATE, "%s: RKV_APPEND_PROMPT on sequence %d, layer %d after %lld "
             "generated tokens: the prompt comes first (reset the sequence to start over)",
             fn, seq, call.layer, (long long)(s.logical - s.prompt_len));
    EntryPlan plan{entry, seq, tokens, false, 0, 1};
    if (call.prompt && r.guards_prompt && s.prompt_len + tokens > r.max_prompt_len)
        fail(RKV_ERR_CAPACITY, "%s: a prompt of %lld tokens exceeds max_prompt_len (%d) of "
             "sequence %d; raise max_prompt_len at create", fn,
             (long long)(s.prompt_len + tokens), r.max_prompt_len, seq);

    // Protected prompt tokens never trigger a compression: they all go in at once.
    SeqLayerState state = s;
    const bool protected_tokens = call.prompt && r.guards_prompt;
    if (!protected_tokens && is_full(state, r)) {
        state = after_compression(state, compression_before_append(seq, state, tokens, call, r, fn));
        plan.compress_first = true;
    }
    const int64_t first_room = chunk_room(state, call, r);
    if (first_room < (protected_tokens ? tokens : 1))
        fail(RKV_ERR_CAPACITY, "%s: sequence %d, layer %d holds %d tokens of its capacity %d; %lld more do "
             "not fit", fn, seq, call.layer, state.held, r.capacity, (long long)tokens);
    plan.first = int32_t(std::min(tokens, first_room));
    if (tokens == plan.first) return plan;

    // The sequence is full after chunk 0. Every later chunk follows a
    // compression of the same full state (prompt, budget and buffer do not
    // change within a call, and queries only accumulate), so the first such
    // compression stands for all of them.
    state = after_append(state, plan.first, call.prompt, call.has_queries, r);
    state = after_compression(state,
                              compression_before_append(seq, state, tokens - plan.first, call, r, fn));
    plan.stride = int32_t(chunk_room(state, call, r));
    if (plan.stride < 1)
        fail(RKV_ERR_INTERNAL, "%s: a compression of sequence %d left no room", fn, seq);
    return plan;
}

}  // namespace rkv
