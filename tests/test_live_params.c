/* A live parameter change (rkv_cache_set) reaches the backend at the
 * next call: a cache changed after create scores and keeps exactly what a cache
 * created with the new values does. Backends keep only the parameters that
 * never change; the live ones come with every call (src/params.h LiveParams). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { SEQS = 1, KV = 2, Q = 4, DIM = 16, BUDGET = 24, BUFFER = 8, WINDOW = 4, TOKENS = 40 };

typedef struct {
    rkv_param key;
    double value;
} change;

/* Appends the same random tokens (with queries) to a cache, then compresses. */
static void fill(rkv_cache *cache) {
    uint64_t rng = 99;
    float *k = malloc(sizeof(float) * TOKENS * KV * DIM), *v = malloc(sizeof(float) * TOKENS * KV * DIM);
    float *q = malloc(sizeof(float) * TOKENS * Q * DIM);
    test_fill_normal(k, (size_t)TOKENS * KV * DIM, &rng);
    test_fill_normal(v, (size_t)TOKENS * KV * DIM, &rng);
    test_fill_normal(q, (size_t)TOKENS * Q * DIM, &rng);
    ASSERT_OK(test_append(cache, 0, 0, k, v, q, TOKENS - 2, 0));
    ASSERT_OK(test_append(cache, 0, 0, k, v, q, 1, 0));
    free(k);
    free(v);
    free(q);
}

static void compare(rkv_method method, const change *changes, int count) {
    rkv_cache_params p = test_params(SEQS, 1, KV, Q, DIM, method, BUDGET, BUFFER, WINDOW);
    rkv_cache_params q = p;
    for (int i = 0; i < count; ++i) ASSERT_OK(rkv_params_set(&q, changes[i].key, changes[i].value));
    rkv_cache *changed = test_create(&p), *created = test_create(&q);
    for (int i = 0; i < count; ++i) ASSERT_OK(rkv_cache_set(changed, changes[i].key, changes[i].value));
    fill(changed);
    fill(created);
    for (int kind = RKV_SCORE_IMPORTANCE; kind <= RKV_SCORE_FINAL; ++kind) {
        float a[64], b[64];
        int32_t na = 0, nb = 0;
        const rkv_status sa = rkv_seq_scores(changed, 0, 0, 1, (rkv_score_kind)kind, a, 64, &na);
        const rkv_status sb = rkv_seq_scores(created, 0, 0, 1, (rkv_score_kind)kind, b, 64, &nb);
        assert_int_equal(sa, sb);
        if (sa != RKV_OK) continue;
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof(float) * (size_t)na);
    }
    ASSERT_OK(rkv_compress(changed, 0, 0, NULL));
    ASSERT_OK(rkv_compress(created, 0, 0, NULL));
    for (int32_t h = 0; h < KV; ++h) {
        int32_t a[64], b[64], na = 0, nb = 0;
        ASSERT_OK(rkv_seq_positions(changed, 0, 0, h, a, 64, &na));
        ASSERT_OK(rkv_seq_positions(created, 0, 0, h, b, 64, &nb));
        assert_int_equal(na, nb);
        assert_memory_equal(a, b, sizeof(int32_t) * (size_t)na);
    }
    rkv_cache_destroy(changed);
    rkv_cache_destroy(created);
}

static void test_changes_reach_the_backend(void **state) {
    (void)state;
    const change rkv[] = {{RKV_PARAM_LAMBDA, 0.7}, {RKV_PARAM_THRESHOLD, -0.2}, {RKV_PARAM_KERNEL, 3},
                          {RKV_PARAM_POOLING, RKV_POOLING_MEAN}};
    compare(RKV_METHOD_RKV, rkv, 4);
    const change random[] = {{RKV_PARAM_SEED, 12345}};
    compare(RKV_METHOD_RANDOM, random, 1);
    const change h2o[] = {{RKV_PARAM_POOLING, RKV_POOLING_MEAN}};
    compare(RKV_METHOD_H2O, h2o, 1);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_changes_reach_the_backend),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
