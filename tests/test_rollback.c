/* Rollback (rkv_seq_truncate) on the CPU:
 *   - exactness: for every method, a cache that takes drafted tokens and rolls
 *     them back holds, after every step, bit for bit what a cache that never
 *     saw the drafts holds (K, V, positions, lengths, statistics, and every
 *     score the next compression would rank, which covers the query window and
 *     H2O's accumulated attention), through many compressions, with prompt
 *     tokens rolled back too, in f32 and in bf16 storage;
 *   - H2O's deferred accumulation (max_rollback > 0) gives bit-identical
 *     scores to the eager one (max_rollback 0) when q has the storage dtype;
 *   - rkv_seq_rollback_limit follows its documented rules, and truncating more
 *     than it is rejected with BAD_STATE naming the limit, the cache unchanged.
 * tests/gpu/test_gpu_sequences.c runs the same against the CUDA backend. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "stream.h"

enum { SEQS = 2, LAYERS = 2, KV = 2, QH = 4, DIM = 16, BUDGET = 12, BUFFER = 6, WINDOW = 3, ROLLBACK = 5 };
enum { STEPS = 70 };

static rkv_cache_params rollback_params(rkv_method method, rkv_dtype dtype, int32_t max_rollback) {
    rkv_cache_params p = test_params(SEQS, LAYERS, KV, QH, DIM, method, BUDGET, BUFFER, WINDOW);
    p.dtype = dtype;
    p.kernel = 3;
    p.sink = 2;
    p.max_len = 96;
    p.max_rollback = max_rollback;
    return p;
}

static int keeps_queries(rkv_method m) {
    return m == RKV_METHOD_RKV || m == RKV_METHOD_SNAPKV || m == RKV_METHOD_H2O;
}

static int32_t rollback_limit(const rkv_cache *cache, int32_t seq) {
    int32_t limit = -1;
    ASSERT_OK(rkv_seq_rollback_limit(cache, seq, &limit));
    return limit;
}

static int32_t held(const rkv_cache *cache, int32_t seq) {
    int32_t physical = -1;
    ASSERT_OK(rkv_seq_length(cache, seq, 0, NULL, &physical));
    return physical;
}

/* Drafts and real tokens into `drafted`, real tokens alone into `clean`;
 * after every step the two hold the same. Returns the drafts rolled back. */
static int32_t run_drafts(rkv_method method, rkv_dtype dtype, int32_t max_rollback, uint64_t seed) {
    rkv_cache_params p = rollback_params(method, dtype, max_rollback);
    rkv_cache *drafted = test_create(&p), *clean = test_create(&p);
    const int32_t seq = 1, fill = method == RKV_METHOD_FULL ? p.max_len : BUDGET + BUFFER;
    const int drafts_allowed = !keeps_queries(method) || max_rollback > 0;
    uint64_t rng = seed;
    int32_t rolled_back = 0;
    char what[160];

    /* The prompt, with two wrong prompt tokens rolled back (when allowed). */
    ASSERT_OK(stream_append(drafted, seq, 0, 0, 5, RKV_APPEND_PROMPT));
    ASSERT_OK(stream_append(clean, seq, 0, 0, 5, RKV_APPEND_PROMPT));
    if (drafts_allowed) {
        ASSERT_OK(stream_append(drafted, seq, 1, 5, 2, RKV_APPEND_PROMPT));
        ASSERT_OK(rkv_seq_truncate(drafted, seq, 2, NULL));
        rolled_back += 2;
    }
    assert_same_sequence(drafted, seq, clean, seq, "after the prompt");

    for (int step = 0; step < STEPS && stream_position(clean, seq) + 4 < p.max_len; ++step) {
        const int32_t drafts = 1 + (int32_t)(test_rng_next(&rng) % 4);
        if (drafts_allowed && held(drafted, seq) + drafts <= fill && test_rng_next(&rng) % 2) {
            /* Speculative decoding: drafts in one call, all rejected, then rolled back. */
            const int64_t position = stream_position(drafted, seq);
            ASSERT_OK(stream_append(drafted, seq, 100 + (uint64_t)step, position, drafts, 0));
            const int32_t limit = rollback_limit(drafted, seq);
            if (limit < drafts)
                fail_msg("step %d: %d drafts went in but only %d can roll back", step, drafts, limit);
            ASSERT_OK(rkv_seq_truncate(drafted, seq, drafts, NULL));
            rolled_back += drafts;
        }
        /* The accepted tokens (1..3), into both. */
        const int32_t real = 1 + (int32_t)(test_rng_next(&rng) % 3);
        const int64_t position = stream_position(clean, seq);
        ASSERT_OK(stream_append(drafted, seq, 0, position, real, 0));
        ASSERT_OK(stream_append(clean, seq, 0, position, real, 0));
        snprintf(what, sizeof what, "method %d, dtype %d, max_rollback %d, step %d", (int)method, (int)dtype,
                 max_rollback, step);
        assert_same_sequence(drafted, seq, clean, seq, what);
    }
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(clean, seq, &stats));
    if (method != RKV_METHOD_FULL && stats.compressions < 4 * LAYERS)
        fail_msg("method %d: only %llu compressions: the test did not cross compressions", (int)method,
                 (unsigned long long)stats.compressions);
    rkv_cache_destroy(drafted);
    rkv_cache_destroy(clean);
    return rolled_back;
}

static void test_rollback_is_exact_every_method(void **state) {
    (void)state;
    for (int m = RKV_METHOD_RKV; m <= RKV_METHOD_FULL; ++m) {
        const int32_t f32 = run_drafts((rkv_method)m, RKV_DTYPE_F32, ROLLBACK, 11 + (uint64_t)m);
        const int32_t bf16 = run_drafts((rkv_method)m, RKV_DTYPE_BF16, ROLLBACK, 29 + (uint64_t)m);
        assert_true(f32 > 20 && bf16 > 20);  /* the drafts path ran */
        /* Without max_rollback only the query-free methods roll back. */
        const int32_t plain = run_drafts((rkv_method)m, RKV_DTYPE_F32, 0, 47 + (uint64_t)m);
        if (keeps_queries((rkv_method)m)) assert_int_equal(plain, 0);
        else assert_true(plain > 20);
    }
}

/* With q in the storage dtype, H2O's deferred accumulation adds the same
 * probabilities in the same order as the eager one: bit-identical scores. */
static void test_h2o_deferred_equals_eager(void **state) {
    (void)state;
    rkv_cache_params eager_params = rollback_params(RKV_METHOD_H2O, RKV_DTYPE_F32, 0);
    rkv_cache_params deferred_params = rollback_params(RKV_METHOD_H2O, RKV_DTYPE_F32, ROLLBACK);
    rkv_cache *eager = test_create(&eager_params), *deferred = test_create(&deferred_params);
    uint64_t rng = 5;
    int64_t position = 0;
    for (int step = 0; step < 40; ++step) {
        const int32_t count = step == 0 ? 9 : 1 + (int32_t)(test_rng_next(&rng) % 7);
        ASSERT_OK(stream_append(eager, 0, 0, position, count, 0));
        ASSERT_OK(stream_append(deferred, 0, 0, position, count, 0));
        position += count;
        assert_same_sequence(eager, 0, deferred, 0, "H2O deferred against eager");
    }
    rkv_cache_destroy(eager);
    rkv_cache_destroy(deferred);
}

/* The limit's rules, number by number. */
static void test_rollback_limits(void **state) {
    (void)state;
    /* FULL: everything since the reset. */
    rkv_cache_params p = rollback_params(RKV_METHOD_FULL, RKV_DTYPE_F32, 0);
    rkv_cache *cache = test_create(&p);
    assert_int_equal(rollback_limit(cache, 0), 0);
    ASSERT_OK(stream_append(cache, 0, 0, 0, 40, 0));
    assert_int_equal(rollback_limit(cache, 0), 40);
    ASSERT_OK(rkv_seq_truncate(cache, 0, 40, NULL));
    assert_int_equal(held(cache, 0), 0);
    assert_int_equal(stream_position(cache, 0), 0);
    rkv_cache_destroy(cache);

    /* StreamingLLM: the tokens since the last compression. */
    p = rollback_params(RKV_METHOD_STREAMINGLLM, RKV_DTYPE_F32, 0);
    cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 0, 0, 0, BUDGET + BUFFER, 0));
    assert_int_equal(rollback_limit(cache, 0), BUDGET + BUFFER);
    ASSERT_OK(stream_append(cache, 0, 0, BUDGET + BUFFER, 2, 0)); /* compresses first */
    assert_int_equal(rollback_limit(cache, 0), 2);
    ASSERT_OK(rkv_compress(cache, 0, RKV_ALL, NULL)); /* 14 held > budget: compresses */
    assert_int_equal(rollback_limit(cache, 0), 0);
    rkv_cache_destroy(cache);

    /* R-KV without max_rollback: nothing once the window is full; before that,
     * the window's queries are not at stake. */
    p = rollback_params(RKV_METHOD_RKV, RKV_DTYPE_F32, 0);
    cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 0, 0, 0, WINDOW - 1, 0));
    assert_int_equal(rollback_limit(cache, 0), WINDOW - 1);
    ASSERT_OK(stream_append(cache, 0, 0, WINDOW - 1, 1, 0));
    assert_int_equal(rollback_limit(cache, 0), 0);
    rkv_cache_destroy(cache);

    /* R-KV with max_rollback: the queries held beyond the window. */
    p = rollback_params(RKV_METHOD_RKV, RKV_DTYPE_F32, ROLLBACK);
    cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 0, 0, 0, 10, 0));
    assert_int_equal(rollback_limit(cache, 0), ROLLBACK);
    ASSERT_OK(rkv_seq_truncate(cache, 0, 2, NULL));
    assert_int_equal(rollback_limit(cache, 0), ROLLBACK - 2); /* those queries are gone */
    ASSERT_OK(stream_append(cache, 0, 0, 8, 1, 0));
    assert_int_equal(rollback_limit(cache, 0), ROLLBACK - 1);
    ASSERT_OK(stream_append(cache, 0, 0, 9, 4, 0));
    assert_int_equal(rollback_limit(cache, 0), ROLLBACK);
    rkv_cache_destroy(cache);

    /* H2O with max_rollback: the queries not accumulated yet. */
    p = rollback_params(RKV_METHOD_H2O, RKV_DTYPE_F32, ROLLBACK);
    cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 0, 0, 0, 3, 0));
    assert_int_equal(rollback_limit(cache, 0), 3);
    ASSERT_OK(stream_append(cache, 0, 0, 3, 7, 0));
    assert_int_equal(rollback_limit(cache, 0), ROLLBACK);
    ASSERT_OK(rkv_seq_truncate(cache, 0, 3, NULL));
    assert_int_equal(rollback_limit(cache, 0), ROLLBACK - 3);
    ASSERT_OK(rkv_compress(cache, 0, RKV_ALL, NULL)); /* below the budget: nothing happens */
    assert_int_equal(rollback_limit(cache, 0), ROLLBACK - 3);
    rkv_cache_destroy(cache);

    /* The least over the layers (an engine appends layer by layer). */
    p = rollback_params(RKV_METHOD_KEYDIFF, RKV_DTYPE_F32, 0);
    cache = test_create(&p);
    float k[10 * KV * DIM], v[10 * KV * DIM], q[10 * QH * DIM];
    stream_tokens(&p, 0, 0, 10, 0, k, v, q);
    ASSERT_OK(test_append(cache, 0, 0, k, v, q, 10, 0));
    stream_tokens(&p, 0, 0, 4, 1, k, v, q);
    ASSERT_OK(test_append(cache, 1, 0, k, v, q, 4, 0));
    assert_int_equal(rollback_limit(cache, 0), 4);
    rkv_cache_destroy(cache);
}

/* Prompt tokens roll back and the prompt length shrinks with them: a prompt
 * can then continue (RKV_APPEND_PROMPT is refused after generated tokens). */
static void test_prompt_rolls_back(void **state) {
    (void)state;
    rkv_cache_params p = rollback_params(RKV_METHOD_KEYDIFF, RKV_DTYPE_F32, 0);
    p.guards = RKV_GUARD_PROMPT;
    p.max_prompt_len = 8;
    rkv_cache *cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 0, 0, 0, 6, RKV_APPEND_PROMPT));
    ASSERT_OK(stream_append(cache, 0, 0, 6, 2, 0));
    ASSERT_STATUS(stream_append(cache, 0, 0, 8, 1, RKV_APPEND_PROMPT), RKV_ERR_BAD_STATE);
    ASSERT_OK(rkv_seq_truncate(cache, 0, 4, NULL)); /* 2 generated and 2 prompt tokens */
    ASSERT_OK(stream_append(cache, 0, 0, 4, 4, RKV_APPEND_PROMPT)); /* the prompt again, to 8 */
    ASSERT_STATUS(stream_append(cache, 0, 0, 8, 1, RKV_APPEND_PROMPT), RKV_ERR_CAPACITY); /* max_prompt_len */
    rkv_cache_destroy(cache);
}

/* Appends one token of the stream at `position` to every layer of `seq`
 * without queries (args->q NULL). */
static rkv_status append_without_queries(rkv_cache *cache, const rkv_cache_params *p, int32_t seq, int64_t position) {
    float k[KV * DIM], v[KV * DIM], q[QH * DIM];
    for (int32_t layer = 0; layer < p->num_layers; ++layer) {
        stream_tokens(p, 0, position, 1, layer, k, v, q);
        const rkv_status status = test_append(cache, layer, seq, k, v, NULL, 1, 0);
        if (status != RKV_OK) return status;
    }
    return RKV_OK;
}

/* rkv.h's one exception to "exactly": rolling back over a token appended
 * without queries leaves R-KV's window counted empty (the library keeps no
 * record of the queries before that token), so a compression needs `window`
 * tokens with queries first; truncating `window` tokens and appending them
 * again with queries recovers, to the cache that never saw the token. Found by
 * the fuzzer (tests/fuzz/regressions/rollback-over-unqueried-token), whose
 * model expected the window back. */
static void test_rollback_over_a_token_without_queries(void **state) {
    (void)state;
    rkv_cache_params p = rollback_params(RKV_METHOD_RKV, RKV_DTYPE_F32, 0);
    rkv_cache *cache = test_create(&p), *clean = test_create(&p);
    const int32_t capacity = BUDGET + BUFFER;
    ASSERT_OK(stream_append(cache, 0, 0, 0, capacity - 1, 0));
    ASSERT_OK(append_without_queries(cache, &p, 0, capacity - 1)); /* held = capacity */
    assert_int_equal(rollback_limit(cache, 0), capacity);          /* the window is not whole */
    ASSERT_OK(rkv_seq_truncate(cache, 0, 1, NULL));                /* the unqueried token goes */
    ASSERT_OK(stream_append(cache, 0, 0, capacity - 1, 1, 0));     /* full again, 1 query on record */
    ASSERT_STATUS(stream_append(cache, 0, 0, capacity, 1, 0), RKV_ERR_MISSING_QUERIES);
    if (!strstr(rkv_error_message(), "only 1 were appended with queries"))
        fail_msg("the message does not count the queries on record: %s", rkv_error_message());

    ASSERT_OK(rkv_seq_truncate(cache, 0, WINDOW, NULL));
    ASSERT_OK(stream_append(cache, 0, 0, capacity - WINDOW, WINDOW, 0));
    ASSERT_OK(stream_append(cache, 0, 0, capacity, 1, 0)); /* compresses first */
    ASSERT_OK(stream_append(clean, 0, 0, 0, capacity + 1, 0));
    assert_same_sequence(cache, 0, clean, 0, "recovered after a rollback over a token without queries");
    rkv_cache_destroy(cache);
    rkv_cache_destroy(clean);
}

/* Bad input: each a status, a fresh message, the cache unchanged. */
static void test_truncate_errors(void **state) {
    (void)state;
    rkv_cache_params p = rollback_params(RKV_METHOD_RKV, RKV_DTYPE_F32, ROLLBACK);
    rkv_cache *cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 0, 0, 0, 10, 0));
    ASSERT_OK(stream_append(cache, 1, 0, 0, 2, 0));
    EXPECT_REJECTED(cache, rkv_seq_truncate(cache, 0, ROLLBACK + 1, NULL), RKV_ERR_BAD_STATE);
    char limit[32];
    snprintf(limit, sizeof limit, "roll back %d token", ROLLBACK);
    if (!strstr(rkv_error_message(), limit)) fail_msg("the message does not name the limit: %s", rkv_error_message());
    EXPECT_REJECTED(cache, rkv_seq_truncate(cache, 1, 3, NULL), RKV_ERR_BAD_STATE);
    EXPECT_REJECTED(cache, rkv_seq_truncate(cache, 0, -1, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_seq_truncate(cache, 0, INT32_MAX, NULL), RKV_ERR_BAD_STATE);
    EXPECT_REJECTED(cache, rkv_seq_truncate(cache, SEQS, 1, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_truncate(cache, RKV_ALL, 1, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_truncate(NULL, 0, 1, NULL), RKV_ERR_INVALID_ARGUMENT);
    int32_t tokens = -1;
    EXPECT_REJECTED(cache, rkv_seq_rollback_limit(cache, 0, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_seq_rollback_limit(cache, -2, &tokens), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_rollback_limit(NULL, 0, &tokens), RKV_ERR_INVALID_ARGUMENT);
    /* The controls: the limit itself, and 0, are accepted. */
    ASSERT_OK(rkv_seq_truncate(cache, 1, 0, NULL));
    ASSERT_OK(rkv_seq_truncate(cache, 0, ROLLBACK, NULL));
    rkv_cache_destroy(cache);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rollback_is_exact_every_method),
        cmocka_unit_test(test_h2o_deferred_equals_eager),
        cmocka_unit_test(test_rollback_limits),
        cmocka_unit_test(test_prompt_rolls_back),
        cmocka_unit_test(test_rollback_over_a_token_without_queries),
        cmocka_unit_test(test_truncate_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
