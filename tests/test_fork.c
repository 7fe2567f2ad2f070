/* Fork (rkv_seq_copy) on the CPU:
 *   - a fork holds what its source holds, bit for bit, and from then on the two
 *     evolve like two sequences fed the same tokens from the start (every
 *     method but RANDOM, whose draws depend on the slot), including its budget,
 *     prompt and rollback history;
 *   - the source is unchanged, and the fork is independent of it;
 *   - bad input: copying onto a busy slot or onto itself, slots out of range,
 *     a faulted cache: a status, a message, the cache unchanged.
 * tests/gpu/test_gpu_sequences.c runs the same against the CUDA backend. */
#include <string.h>

#include "expect.h"
#include "stream.h"

void test_mark_faulted(rkv_cache *cache, const char *why);

enum { SEQS = 4, LAYERS = 2, KV = 2, QH = 4, DIM = 16, BUDGET = 12, BUFFER = 6, WINDOW = 3, ROLLBACK = 4 };

static rkv_cache_params fork_params(rkv_method method) {
    rkv_cache_params p = test_params(SEQS, LAYERS, KV, QH, DIM, method, BUDGET, BUFFER, WINDOW);
    p.kernel = 3;
    p.sink = 2;
    p.max_len = 80;
    p.max_rollback = ROLLBACK;
    p.guards = method == RKV_METHOD_KEYDIFF ? RKV_GUARD_PROMPT : 0;
    p.max_prompt_len = 6;
    return p;
}

/* Source 0 of `cache` and sequence 1 of `reference` take the same tokens; 0 is
 * forked onto 1 midway (after compressions, with a smaller budget); then all
 * three take the same tokens again (the fork with drafts rolled back on the
 * way): the fork equals its source and the reference after every step. */
static void fork_and_follow(rkv_method method) {
    rkv_cache_params p = fork_params(method);
    rkv_cache *cache = test_create(&p), *reference = test_create(&p);
    const int evicts = method != RKV_METHOD_FULL;
    if (evicts) {
        ASSERT_OK(rkv_seq_set_budget(cache, 0, BUDGET - 2));
        ASSERT_OK(rkv_seq_set_budget(reference, 1, BUDGET - 2));
    }
    /* The history before the fork: prompt, generated tokens through compressions. */
    ASSERT_OK(stream_append(cache, 0, 0, 0, 5, RKV_APPEND_PROMPT));
    ASSERT_OK(stream_append(reference, 1, 0, 0, 5, RKV_APPEND_PROMPT));
    int64_t position = 5;
    for (int32_t step = 0; step < 12; ++step) {
        const int32_t count = 1 + step % 3;
        ASSERT_OK(stream_append(cache, 0, 0, position, count, 0));
        ASSERT_OK(stream_append(reference, 1, 0, position, count, 0));
        position += count;
    }
    test_snapshot source_before = test_take_seq_snapshot(cache, 0);
    ASSERT_OK(rkv_seq_copy(cache, 0, 1, NULL));
    test_snapshot source_after = test_take_seq_snapshot(cache, 0);
    assert_true(test_snapshot_equal(&source_before, &source_after));
    test_snapshot_free(&source_before);
    test_snapshot_free(&source_after);
    int32_t budget = 0;
    ASSERT_OK(rkv_seq_get_budget(cache, 1, &budget));
    assert_int_equal(budget, evicts ? BUDGET - 2 : p.max_len);
    test_snapshot source = test_take_seq_snapshot(cache, 0), fork = test_take_seq_snapshot(cache, 1);
    assert_true(test_snapshot_equal(&source, &fork));
    test_snapshot_free(&source);
    test_snapshot_free(&fork);
    /* RANDOM's draws depend on the slot: its fork holds the source's tokens
     * (above) and is compared with nothing else. */
    const int comparable = method != RKV_METHOD_RANDOM;
    if (comparable) {
        assert_same_sequence(cache, 0, cache, 1, "the fork");
        assert_same_sequence(cache, 1, reference, 1, "the fork against a fresh sequence");
    }
    int32_t limit_source = -1, limit_fork = -1;
    ASSERT_OK(rkv_seq_rollback_limit(cache, 0, &limit_source));
    ASSERT_OK(rkv_seq_rollback_limit(cache, 1, &limit_fork));
    assert_int_equal(limit_source, limit_fork);

    /* Both branches decode on, with drafts rolled back on the fork. */
    for (int32_t step = 0; step < 20 && position + 4 < p.max_len; ++step) {
        const int32_t count = 1 + step % 2;
        int32_t limit = 0;
        ASSERT_OK(rkv_seq_rollback_limit(cache, 1, &limit));
        int32_t held = 0;
        ASSERT_OK(rkv_seq_length(cache, 1, 0, NULL, &held));
        if (step % 3 == 0 && held + 2 <= BUDGET - 2 + BUFFER) {
            ASSERT_OK(stream_append(cache, 1, 7, position, 2, 0));
            ASSERT_OK(rkv_seq_truncate(cache, 1, 2, NULL));
        }
        ASSERT_OK(stream_append(cache, 0, 0, position, count, 0));
        ASSERT_OK(stream_append(cache, 1, 0, position, count, 0));
        ASSERT_OK(stream_append(reference, 1, 0, position, count, 0));
        position += count;
        if (comparable) {
            assert_same_sequence(cache, 0, cache, 1, "source and fork");
            assert_same_sequence(cache, 1, reference, 1, "fork and fresh sequence");
        }
    }
    /* Independent: resetting the source leaves the fork alone. */
    test_snapshot fork_before = test_take_seq_snapshot(cache, 1);
    ASSERT_OK(rkv_seq_reset(cache, 0, NULL));
    test_snapshot fork_after = test_take_seq_snapshot(cache, 1);
    assert_true(test_snapshot_equal(&fork_before, &fork_after));
    test_snapshot_free(&fork_before);
    test_snapshot_free(&fork_after);
    rkv_cache_destroy(cache);
    rkv_cache_destroy(reference);
}

static void test_fork_every_method(void **state) {
    (void)state;
    for (int m = RKV_METHOD_RKV; m <= RKV_METHOD_FULL; ++m) fork_and_follow((rkv_method)m);
}

/* A fork of an empty sequence is empty (and allowed); a fork keeps the
 * source's budget and a reset gives the cache's back. */
static void test_fork_of_empty_and_budget(void **state) {
    (void)state;
    rkv_cache_params p = fork_params(RKV_METHOD_RKV);
    rkv_cache *cache = test_create(&p);
    ASSERT_OK(rkv_seq_set_budget(cache, 2, WINDOW + 1));
    ASSERT_OK(rkv_seq_copy(cache, 2, 3, NULL));
    int32_t budget = 0;
    ASSERT_OK(rkv_seq_get_budget(cache, 3, &budget));
    assert_int_equal(budget, WINDOW + 1);
    ASSERT_OK(rkv_seq_reset(cache, 3, NULL));
    ASSERT_OK(rkv_seq_get_budget(cache, 3, &budget));
    assert_int_equal(budget, BUDGET);
    int64_t logical = -1;
    ASSERT_OK(rkv_seq_length(cache, 3, 1, &logical, NULL));
    assert_int_equal(logical, 0);
    rkv_cache_destroy(cache);
}

static void test_copy_errors(void **state) {
    (void)state;
    rkv_cache_params p = fork_params(RKV_METHOD_RKV);
    rkv_cache *cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 0, 0, 0, 8, 0));
    ASSERT_OK(stream_append(cache, 1, 0, 0, 1, 0));
    EXPECT_REJECTED(cache, rkv_seq_copy(cache, 0, 1, NULL), RKV_ERR_BAD_STATE);   /* busy */
    EXPECT_REJECTED(cache, rkv_seq_copy(cache, 0, 0, NULL), RKV_ERR_INVALID_ARGUMENT); /* itself */
    EXPECT_REJECTED(cache, rkv_seq_copy(cache, 2, 2, NULL), RKV_ERR_INVALID_ARGUMENT); /* itself, empty */
    EXPECT_REJECTED(cache, rkv_seq_copy(cache, 0, SEQS, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_copy(cache, -1, 2, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_copy(cache, 0, RKV_ALL, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_copy(NULL, 0, 2, NULL), RKV_ERR_INVALID_ARGUMENT);
    ASSERT_OK(rkv_seq_copy(cache, 0, 2, NULL)); /* the control */
    test_mark_faulted(cache, "a test fault");
    prime_message();
    ASSERT_STATUS(rkv_seq_copy(cache, 0, 3, NULL), RKV_ERR_FAULTED);
    check_fresh_message("rkv_seq_copy on a faulted cache");
    rkv_cache_destroy(cache);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fork_every_method),
        cmocka_unit_test(test_fork_of_empty_and_budget),
        cmocka_unit_test(test_copy_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
