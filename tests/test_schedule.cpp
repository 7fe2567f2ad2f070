// The append schedule (src/schedule.h):
//   - issue 11, finding 1: a FULL cache with RKV_GUARD_PROMPT took a prompt
//     longer than max_len (it wrote past the sequence's slots); now every path
//     checks capacity, and a failed append changes nothing
//   - plan_entry against a model that appends token by token, compressing
//     whenever the sequence is full: same compressions, same final state, same
//     verdict, for random states, calls and parameters of every method
// The library's headers first: cmocka defines a macro named fail.
#include <string>
#include <vector>

#include "error.h"
#include "params.h"
#include "schedule.h"

extern "C" {
#include "test_util.h"
}

namespace {

// --- through the C API -------------------------------------------------------

void append_prompt(rkv_cache *cache, int32_t seq, int32_t tokens, rkv_status expected) {
    std::vector<float> k(size_t(tokens) * 2 * 4, 0.5f), v(k.size(), 0.25f);
    const rkv_status status = test_append(cache, 0, seq, k.data(), v.data(), nullptr, tokens, RKV_APPEND_PROMPT);
    if (status != expected)
        fail_msg("a prompt of %d tokens: %s (%s), expected %s", tokens, rkv_status_name(status),
                 rkv_error_message(), rkv_status_name(expected));
}

void test_full_with_prompt_guard_keeps_max_len(void **) {
    rkv_cache_params p = test_params(2, 1, 2, 2, 4, RKV_METHOD_FULL, 8, 4, 2);
    p.max_len = 4;
    p.guards = RKV_GUARD_PROMPT;
    p.max_prompt_len = 64;
    rkv_cache *cache = test_create(&p);
    test_snapshot before = test_take_snapshot(cache);
    append_prompt(cache, 0, 16, RKV_ERR_CAPACITY);  // was RKV_OK, 16 tokens in 4 slots
    test_snapshot after = test_take_snapshot(cache);
    assert_true(test_snapshot_equal(&before, &after));
    test_snapshot_free(&before);
    test_snapshot_free(&after);
    int64_t logical = -1;
    int32_t physical = -1;
    ASSERT_OK(rkv_seq_length(cache, 0, 0, &logical, &physical));
    assert_int_equal(logical, 0);
    assert_int_equal(physical, 0);
    // max_len is the whole capacity, prompt or not; the guard reserves nothing.
    append_prompt(cache, 0, 3, RKV_OK);
    append_prompt(cache, 0, 2, RKV_ERR_CAPACITY);
    append_prompt(cache, 0, 1, RKV_OK);
    append_prompt(cache, 0, 1, RKV_ERR_CAPACITY);
    ASSERT_OK(rkv_seq_length(cache, 0, 0, &logical, &physical));
    assert_int_equal(physical, 4);
    // The neighbour is untouched.
    ASSERT_OK(rkv_seq_length(cache, 1, 0, &logical, &physical));
    assert_int_equal(physical, 0);
    uint64_t size = 0, size_unguarded = 0;
    ASSERT_OK(rkv_cache_size(&p, &size));
    p.guards = 0;
    ASSERT_OK(rkv_cache_size(&p, &size_unguarded));
    assert_true(size == size_unguarded);
    rkv_cache_destroy(cache);
}

// --- plan_entry against a token-by-token model --------------------------------

struct Outcome {
    rkv_status status = RKV_OK;
    rkv::SeqLayerState state;
    std::vector<int32_t> compressed_at;  // held before each compression
};

// The header's rules one token at a time: a full sequence compresses (to the
// budget) before the next token; protected prompt tokens never compress; a
// token that does not fit the capacity fails the call.
Outcome model(rkv::SeqLayerState s, int64_t tokens, const rkv::AppendCall &call, const rkv::ScheduleRules &r) {
    Outcome out;
    out.state = s;
    const bool guarded = call.prompt && r.guards_prompt;
    if (s.logical + tokens > 2147483647LL) return {RKV_ERR_CAPACITY, s, {}};
    if (call.prompt && s.logical > s.prompt_len) return {RKV_ERR_BAD_STATE, s, {}};
    if (guarded && s.prompt_len + tokens > r.max_prompt_len) return {RKV_ERR_CAPACITY, s, {}};
    for (int64_t t = 0; t < tokens; ++t) {
        const int64_t prompt = r.guards_prompt ? s.prompt_len : 0;
        const bool full = r.method.evicts() ? s.held - prompt >= int64_t(r.budget) + r.buffer : s.held >= r.capacity;
        if (!guarded && full) {
            if (!r.method.evicts() || !r.auto_compress) return {RKV_ERR_CAPACITY, out.state, {}};
            if (r.method.queries == rkv::QueryNeed::Window && s.queries_valid < r.window)
                return {RKV_ERR_MISSING_QUERIES, out.state, {}};
            out.compressed_at.push_back(s.held);
            s.evicted += uint64_t(s.held - (prompt + r.budget));
            s.held = int32_t(prompt + r.budget);
            s.compressions += 1;
        }
        if (s.held >= r.capacity) return {RKV_ERR_CAPACITY, out.state, {}};
        s.held += 1;
        s.logical += 1;
        if (call.prompt) s.prompt_len += 1;
        s.queries_valid = call.has_queries ? std::min(r.window, s.queries_valid + 1) : 0;
    }
    out.state = s;
    return out;
}

// The same through plan_entry and the pure step functions, as Cache::append runs it.
Outcome planned(rkv::SeqLayerState s, int64_t tokens, const rkv::AppendCall &call, const rkv::ScheduleRules &r) {
    Outcome out;
    out.state = s;
    rkv::EntryPlan plan;
    try {
        plan = rkv::plan_entry(0, 0, tokens, s, call, r, "test");
    } catch (const rkv::Error &e) {
        out.status = e.status();
        return out;
    }
    for (int64_t k = 0; k < plan.chunks(); ++k) {
        if (plan.compresses_before(k)) {
            rkv::CompressJob job{};
            if (!rkv::plan_compression(0, s, r, &job)) fail_msg("the plan compresses before chunk %lld, the state does not", (long long)k);
            out.compressed_at.push_back(s.held);
            s = rkv::after_compression(s, job);
        }
        const int32_t count = plan.chunk_tokens(k);
        assert_true(count >= 1);
        if (s.held + count > r.capacity) fail_msg("chunk %lld of %d tokens passes the capacity %d", (long long)k, count, r.capacity);
        s = rkv::after_append(s, count, call.prompt, call.has_queries, r);
    }
    out.state = s;
    return out;
}

void test_plan_matches_token_by_token(void **) {
    uint64_t rng = 2024;
    auto pick = [&](int64_t n) { return int64_t(test_rng_next(&rng) % uint64_t(n)); };
    int cases = 0, failures_seen = 0;
    for (int round = 0; round < 20000; ++round) {
        rkv_cache_params p;
        ASSERT_OK(rkv_params_default(&p, sizeof p));
        p.method = rkv_method(pick(rkv::kNumMethods));
        p.mode = rkv_mode(pick(2));
        p.window = int32_t(1 + pick(4));
        p.budget = p.window + int32_t(1 + pick(12));
        p.buffer = int32_t(1 + pick(6));
        p.sink = int32_t(pick(p.budget - p.window + 1));
        p.guards = uint32_t(pick(4));
        p.max_prompt_len = int32_t(1 + pick(20));
        p.max_len = int32_t(1 + pick(40));
        p.auto_compress = int32_t(pick(5) != 0);
        const rkv::ScheduleRules r = rkv::schedule_rules(p, rkv::params_capacity(p));

        // A reachable state: a prompt (maybe), then generated tokens.
        rkv::SeqLayerState s;
        const rkv::AppendCall prompt_call{0, true, true}, decode_call{0, false, true};
        Outcome start = model(s, pick(p.max_prompt_len + 1), prompt_call, r);
        if (start.status == RKV_OK) s = start.state;
        Outcome more = model(s, pick(60), decode_call, r);
        if (more.status == RKV_OK) s = more.state;
        s.queries_valid = int32_t(pick(p.window + 1));

        const rkv::AppendCall call{0, pick(3) == 0, pick(4) != 0};
        const int64_t tokens = 1 + pick(pick(2) ? 8 : 200);
        const Outcome expected = model(s, tokens, call, r);
        const Outcome got = planned(s, tokens, call, r);
        ++cases;
        failures_seen += expected.status != RKV_OK;
        if (got.status != expected.status || got.compressed_at != expected.compressed_at ||
            got.state.held != expected.state.held || got.state.logical != expected.state.logical ||
            got.state.prompt_len != expected.state.prompt_len ||
            got.state.queries_valid != expected.state.queries_valid ||
            got.state.compressions != expected.state.compressions || got.state.evicted != expected.state.evicted)
            fail_msg("round %d (method %d, budget %d, buffer %d, guards %u, held %d, prompt %lld, %lld tokens, "
                     "prompt call %d, q %d): plan %s held %d after %zu compressions, token by token %s held %d "
                     "after %zu", round, int(p.method), p.budget, p.buffer, p.guards, s.held,
                     (long long)s.prompt_len, (long long)tokens, call.prompt, call.has_queries,
                     rkv_status_name(got.status), got.state.held, got.compressed_at.size(),
                     rkv_status_name(expected.status), expected.state.held, expected.compressed_at.size());
    }
    // Both verdicts were exercised.
    assert_true(failures_seen > cases / 20);
    assert_true(failures_seen < cases - cases / 20);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_with_prompt_guard_keeps_max_len),
        cmocka_unit_test(test_plan_matches_token_by_token),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
