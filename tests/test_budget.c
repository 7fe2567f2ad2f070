/* Per-request budgets (rkv_seq_set_budget) on the CPU:
 *   - a sequence given budget b in a cache created with budget B > b holds,
 *     step by step, bit for bit what a cache created with budget b holds (every
 *     method that evicts, with and without the prompt guard), while its
 *     neighbours keep the cache's budget;
 *   - rkv_seq_get_budget reports it, a reset restores the cache's;
 *   - bad input: above the cache's budget, at or below the window, below
 *     sink + window where sinks are kept, a busy sequence, FULL, out-of-range
 *     slots: a status, a message (naming the bounds), the cache unchanged.
 * tests/gpu/test_gpu_sequences.c runs the same against the CUDA backend. */
#include <string.h>

#include "expect.h"
#include "stream.h"

enum { SEQS = 3, LAYERS = 2, KV = 2, QH = 4, DIM = 16, BUDGET = 20, SMALL = 9, BUFFER = 5, WINDOW = 3 };

static rkv_cache_params budget_params(rkv_method method, int32_t budget, uint32_t guards) {
    rkv_cache_params p = test_params(SEQS, LAYERS, KV, QH, DIM, method, budget, BUFFER, WINDOW);
    p.kernel = 3;
    p.sink = 2;
    p.guards = guards;
    p.max_prompt_len = guards & RKV_GUARD_PROMPT ? 7 : 0;
    return p;
}

static void follow_smaller_budget(rkv_method method, uint32_t guards) {
    rkv_cache_params big = budget_params(method, BUDGET, guards), small = budget_params(method, SMALL, guards);
    rkv_cache *shared = test_create(&big), *own = test_create(&small), *plain = test_create(&big);
    const int32_t seq = 1;
    ASSERT_OK(rkv_seq_set_budget(shared, seq, SMALL));
    int32_t budget = 0;
    ASSERT_OK(rkv_seq_get_budget(shared, seq, &budget));
    assert_int_equal(budget, SMALL);
    ASSERT_OK(rkv_seq_get_budget(shared, 0, &budget));
    assert_int_equal(budget, BUDGET);
    const uint32_t prompt = guards & RKV_GUARD_PROMPT ? RKV_APPEND_PROMPT : 0;
    ASSERT_OK(stream_append(shared, seq, 0, 0, 6, prompt));
    ASSERT_OK(stream_append(own, seq, 0, 0, 6, prompt));
    ASSERT_OK(stream_append(shared, 0, 0, 0, 6, prompt));
    ASSERT_OK(stream_append(plain, 0, 0, 0, 6, prompt));
    int64_t position = 6;
    for (int32_t step = 0; step < 30; ++step) {
        const int32_t count = 1 + step % 4;
        ASSERT_OK(stream_append(shared, seq, 0, position, count, 0));
        ASSERT_OK(stream_append(own, seq, 0, position, count, 0));
        ASSERT_OK(stream_append(shared, 0, 0, position, count, 0));
        ASSERT_OK(stream_append(plain, 0, 0, position, count, 0));
        position += count;
        assert_same_sequence(shared, seq, own, seq, "a budget of its own against a cache of that budget");
        assert_same_sequence(shared, 0, plain, 0, "its neighbour against a cache of the cache's budget");
    }
    int32_t held = 0;
    ASSERT_OK(rkv_seq_length(shared, seq, 0, NULL, &held));
    assert_true(held <= SMALL + BUFFER + (prompt ? 7 : 0));
    ASSERT_OK(rkv_seq_reset(shared, seq, NULL));
    ASSERT_OK(rkv_seq_get_budget(shared, seq, &budget));
    assert_int_equal(budget, BUDGET);
    rkv_cache_destroy(shared);
    rkv_cache_destroy(own);
    rkv_cache_destroy(plain);
}

static void test_budget_every_method(void **state) {
    (void)state;
    for (int m = RKV_METHOD_RKV; m < RKV_METHOD_FULL; ++m) {
        follow_smaller_budget((rkv_method)m, 0);
        follow_smaller_budget((rkv_method)m, RKV_GUARD_PROMPT | RKV_GUARD_SINK);
    }
}

static void test_budget_errors(void **state) {
    (void)state;
    rkv_cache_params p = budget_params(RKV_METHOD_RKV, BUDGET, 0);
    rkv_cache *cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 0, 0, 0, 2, 0));
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, 1, BUDGET + 1), RKV_ERR_OUT_OF_RANGE);
    if (!strstr(rkv_error_message(), "[4, 20]")) fail_msg("the bounds are not named: %s", rkv_error_message());
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, 1, WINDOW), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, 1, 0), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, 1, -5), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, 0, SMALL), RKV_ERR_BAD_STATE); /* busy */
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, SEQS, SMALL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, RKV_ALL, SMALL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_set_budget(NULL, 1, SMALL), RKV_ERR_INVALID_ARGUMENT);
    int32_t budget = 0;
    EXPECT_REJECTED(cache, rkv_seq_get_budget(cache, 1, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_seq_get_budget(cache, SEQS, &budget), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_get_budget(NULL, 0, &budget), RKV_ERR_INVALID_ARGUMENT);
    /* The controls: both bounds are accepted. */
    ASSERT_OK(rkv_seq_set_budget(cache, 1, WINDOW + 1));
    ASSERT_OK(rkv_seq_set_budget(cache, 1, BUDGET));
    rkv_cache_destroy(cache);

    /* Where sinks are kept, the budget holds them and the window. */
    p = budget_params(RKV_METHOD_STREAMINGLLM, BUDGET, 0);
    cache = test_create(&p);
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, 0, p.sink + WINDOW - 1), RKV_ERR_OUT_OF_RANGE);
    ASSERT_OK(rkv_seq_set_budget(cache, 0, p.sink + WINDOW));
    rkv_cache_destroy(cache);

    /* FULL has no budget. */
    p = budget_params(RKV_METHOD_FULL, BUDGET, 0);
    cache = test_create(&p);
    EXPECT_REJECTED(cache, rkv_seq_set_budget(cache, 0, SMALL), RKV_ERR_UNSUPPORTED);
    ASSERT_OK(rkv_seq_get_budget(cache, 0, &budget));
    assert_int_equal(budget, p.max_len);
    rkv_cache_destroy(cache);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_budget_every_method),
        cmocka_unit_test(test_budget_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
