/* Appends from every input layout an engine uses land identically:
 *   - one call for a decode step of many sequences ([batch, heads, dim])
 *   - transformers' [batch, heads, T, dim] with left padding (token_offsets)
 *   - packed varlen [total_tokens, heads, dim] (stride_seq 0, token_offsets)
 *   - f16 / bf16 inputs converted into f32 storage
 * and the views, lengths and statistics describe what was appended. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { SEQS = 4, LAYERS = 2, KV_HEADS = 2, Q_HEADS = 6, DIM = 8, BUDGET = 12, BUFFER = 6, WINDOW = 3 };

static rkv_cache *make(void) {
    rkv_cache_params p = test_params(SEQS, LAYERS, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_RKV, BUDGET, BUFFER, WINDOW);
    return test_create(&p);
}

static void assert_same_cache(const rkv_cache *a, const rkv_cache *b) {
    test_snapshot x = test_take_snapshot(a), y = test_take_snapshot(b);
    assert_true(test_snapshot_equal(&x, &y));
    test_snapshot_free(&x);
    test_snapshot_free(&y);
}

/* Token t of sequence s, head h, element e: a value unique to all four. */
static float value(int s, int t, int h, int e, int which) {
    return (float)(which * 10000 + s * 1000 + t * 10 + h) + (float)e / 16.0f;
}

/* Reference: each sequence appended on its own from a contiguous [T, H, D] array. */
static void append_one_by_one(rkv_cache *cache, int layer, const int32_t *lengths) {
    for (int s = 0; s < SEQS; ++s) {
        int32_t n = lengths[s];
        float *k = malloc(sizeof(float) * n * KV_HEADS * DIM), *v = malloc(sizeof(float) * n * KV_HEADS * DIM);
        float *q = malloc(sizeof(float) * n * Q_HEADS * DIM);
        for (int t = 0; t < n; ++t)
            for (int e = 0; e < DIM; ++e) {
                for (int h = 0; h < KV_HEADS; ++h) {
                    k[(t * KV_HEADS + h) * DIM + e] = value(s, t, h, e, 1);
                    v[(t * KV_HEADS + h) * DIM + e] = value(s, t, h, e, 2);
                }
                for (int h = 0; h < Q_HEADS; ++h) q[(t * Q_HEADS + h) * DIM + e] = value(s, t, h, e, 3);
            }
        ASSERT_OK(test_append(cache, layer, s, k, v, q, n, 0));
        free(k);
        free(v);
        free(q);
    }
}

static rkv_tensor tensor(float *data, int heads, int64_t seq, int64_t token, int64_t head) {
    rkv_tensor t = {data, RKV_DTYPE_F32, heads, DIM, seq, token, head, 0};
    return t;
}

/* One call appends a decode token to every sequence ([batch, heads, dim]). */
static void test_batched_decode_step(void **state) {
    (void)state;
    rkv_cache *batched = make(), *single = make();
    const int32_t ones[SEQS] = {1, 1, 1, 1};
    int32_t seq_ids[SEQS] = {2, 0, 3, 1}; /* any order */
    for (int step = 0; step < 40; ++step) {
        float k[SEQS][KV_HEADS][DIM], v[SEQS][KV_HEADS][DIM], q[SEQS][Q_HEADS][DIM];
        for (int i = 0; i < SEQS; ++i)
            for (int e = 0; e < DIM; ++e) {
                for (int h = 0; h < KV_HEADS; ++h) {
                    k[i][h][e] = value(seq_ids[i], step, h, e, 1);
                    v[i][h][e] = value(seq_ids[i], step, h, e, 2);
                }
                for (int h = 0; h < Q_HEADS; ++h) q[i][h][e] = sinf(value(seq_ids[i], step, h, e, 3));
            }
        for (int layer = 0; layer < LAYERS; ++layer) {
            rkv_append_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.layer = layer;
            a.num_seqs = SEQS;
            a.seq_ids = seq_ids;
            a.num_tokens = NULL; /* one token each */
            a.k = tensor(&k[0][0][0], KV_HEADS, KV_HEADS * DIM, 0, DIM);
            a.v = tensor(&v[0][0][0], KV_HEADS, KV_HEADS * DIM, 0, DIM);
            a.q = tensor(&q[0][0][0], Q_HEADS, Q_HEADS * DIM, 0, DIM);
            ASSERT_OK(rkv_append(batched, &a, NULL));
            for (int i = 0; i < SEQS; ++i)
                ASSERT_OK(test_append(single, layer, seq_ids[i], &k[i][0][0], &v[i][0][0], &q[i][0][0], ones[i], 0));
        }
    }
    assert_same_cache(batched, single);
    rkv_cache_destroy(batched);
    rkv_cache_destroy(single);
}

/* transformers' [batch, heads, T, dim], left padded: sequence s's tokens sit at
 * T - length[s] .. T-1, given through token_offsets. */
static void test_left_padded_batch(void **state) {
    (void)state;
    enum { T = 25 };
    const int32_t lengths[SEQS] = {25, 7, 19, 1};
    rkv_cache *padded = make(), *single = make();
    static float k[SEQS][KV_HEADS][T][DIM], v[SEQS][KV_HEADS][T][DIM], q[SEQS][Q_HEADS][T][DIM];
    int64_t offsets[SEQS];
    int32_t seq_ids[SEQS] = {0, 1, 2, 3};
    for (int s = 0; s < SEQS; ++s) {
        offsets[s] = T - lengths[s];
        for (int t = 0; t < T; ++t) {
            int token = t - (int)offsets[s]; /* negative: padding */
            for (int e = 0; e < DIM; ++e) {
                for (int h = 0; h < KV_HEADS; ++h) {
                    k[s][h][t][e] = token < 0 ? NAN : value(s, token, h, e, 1);
                    v[s][h][t][e] = token < 0 ? NAN : value(s, token, h, e, 2);
                }
                for (int h = 0; h < Q_HEADS; ++h) q[s][h][t][e] = token < 0 ? NAN : value(s, token, h, e, 3);
            }
        }
    }
    for (int layer = 0; layer < LAYERS; ++layer) {
        rkv_append_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.layer = layer;
        a.num_seqs = SEQS;
        a.seq_ids = seq_ids;
        a.num_tokens = lengths;
        a.token_offsets = offsets;
        a.k = tensor(&k[0][0][0][0], KV_HEADS, KV_HEADS * T * DIM, DIM, T * DIM);
        a.v = tensor(&v[0][0][0][0], KV_HEADS, KV_HEADS * T * DIM, DIM, T * DIM);
        a.q = tensor(&q[0][0][0][0], Q_HEADS, Q_HEADS * T * DIM, DIM, T * DIM);
        ASSERT_OK(rkv_append(padded, &a, NULL));
        append_one_by_one(single, layer, lengths);
    }
    assert_same_cache(padded, single);
    rkv_cache_destroy(padded);
    rkv_cache_destroy(single);
}

/* Packed varlen: every sequence's tokens back to back, starts in token_offsets. */
static void test_packed_varlen(void **state) {
    (void)state;
    const int32_t lengths[SEQS] = {5, 30, 2, 11};
    int64_t starts[SEQS];
    int total = 0;
    for (int s = 0; s < SEQS; ++s) {
        starts[s] = total;
        total += lengths[s];
    }
    float *k = malloc(sizeof(float) * total * KV_HEADS * DIM), *v = malloc(sizeof(float) * total * KV_HEADS * DIM);
    float *q = malloc(sizeof(float) * total * Q_HEADS * DIM);
    for (int s = 0; s < SEQS; ++s)
        for (int t = 0; t < lengths[s]; ++t)
            for (int e = 0; e < DIM; ++e) {
                int64_t row = starts[s] + t;
                for (int h = 0; h < KV_HEADS; ++h) {
                    k[(row * KV_HEADS + h) * DIM + e] = value(s, t, h, e, 1);
                    v[(row * KV_HEADS + h) * DIM + e] = value(s, t, h, e, 2);
                }
                for (int h = 0; h < Q_HEADS; ++h) q[(row * Q_HEADS + h) * DIM + e] = value(s, t, h, e, 3);
            }
    rkv_cache *packed = make(), *single = make();
    int32_t seq_ids[SEQS] = {0, 1, 2, 3};
    for (int layer = 0; layer < LAYERS; ++layer) {
        rkv_append_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.layer = layer;
        a.num_seqs = SEQS;
        a.seq_ids = seq_ids;
        a.num_tokens = lengths;
        a.token_offsets = starts;
        a.k = tensor(k, KV_HEADS, 0, KV_HEADS * DIM, DIM);
        a.v = tensor(v, KV_HEADS, 0, KV_HEADS * DIM, DIM);
        a.q = tensor(q, Q_HEADS, 0, Q_HEADS * DIM, DIM);
        ASSERT_OK(rkv_append(packed, &a, NULL));
        append_one_by_one(single, layer, lengths);
    }
    assert_same_cache(packed, single);
    rkv_cache_destroy(packed);
    rkv_cache_destroy(single);
    free(k);
    free(v);
    free(q);
}

/* f16 and bf16 inputs are converted exactly into f32 storage. */
static void test_half_inputs(void **state) {
    (void)state;
    /* 1.5, -2.25, 0.0078125 (2^-7), 65504 (f16 max): exact in both formats */
    const uint16_t f16[4] = {0x3e00, 0xc080, 0x2000, 0x7bff};
    const uint16_t bf16[4] = {0x3fc0, 0xc010, 0x3c00, 0x477f};
    const float expect_f16[4] = {1.5f, -2.25f, 0.0078125f, 65504.0f};
    const float expect_bf16[4] = {1.5f, -2.25f, 0.0078125f, 65280.0f};
    for (int which = 0; which < 2; ++which) {
        rkv_cache_params p = test_params(1, 1, 1, 1, 4, RKV_METHOD_RKV, 8, 4, 2);
        rkv_cache *cache = test_create(&p);
        int32_t seq = 0;
        rkv_append_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.num_seqs = 1;
        a.seq_ids = &seq;
        rkv_tensor t = {(void *)(which ? bf16 : f16), which ? RKV_DTYPE_BF16 : RKV_DTYPE_F16, 1, 4, 0, 4, 4, 0};
        a.k = t;
        a.v = t;
        ASSERT_OK(rkv_append(cache, &a, NULL));
        rkv_seq_view view;
        memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        ASSERT_OK(rkv_view(cache, 0, 0, &view));
        assert_int_equal(view.length, 1);
        assert_memory_equal(view.k, which ? expect_bf16 : expect_f16, sizeof expect_f16);
        assert_memory_equal(view.v, which ? expect_bf16 : expect_f16, sizeof expect_f16);
        rkv_cache_destroy(cache);
    }
}

/* The layer view, per-sequence views, lengths and statistics agree. */
static void test_views_and_statistics(void **state) {
    (void)state;
    rkv_cache *cache = make();
    uint64_t rng = 31;
    const int32_t tokens[SEQS] = {3, 0, 40, 18};
    for (int s = 0; s < SEQS; ++s)
        if (tokens[s]) test_append_random(cache, s, tokens[s], &rng);
    for (int layer = 0; layer < LAYERS; ++layer) {
        rkv_layer_view lv;
        memset(&lv, 0, sizeof lv);
        lv.struct_size = sizeof lv;
        ASSERT_OK(rkv_view_layer(cache, layer, &lv));
        assert_int_equal(lv.max_seqs, SEQS);
        assert_int_equal(lv.capacity, BUDGET + BUFFER);
        for (int s = 0; s < SEQS; ++s) {
            rkv_seq_view v;
            memset(&v, 0, sizeof v);
            v.struct_size = sizeof v;
            ASSERT_OK(rkv_view(cache, s, layer, &v));
            assert_int_equal(lv.lengths[s], v.length);
            assert_ptr_equal((float *)lv.k + s * lv.stride_seq, v.k);
            assert_ptr_equal((float *)lv.v + s * lv.stride_seq, v.v);
            assert_ptr_equal(lv.positions + s * lv.positions_stride_seq, v.positions);
            assert_int_equal(v.logical_length, tokens[s]);
            assert_int_equal(v.stride_head, lv.stride_head);
        }
    }
    rkv_stats all, one, sum;
    memset(&all, 0, sizeof all);
    memset(&sum, 0, sizeof sum);
    all.struct_size = sizeof all;
    ASSERT_OK(rkv_cache_stats(cache, RKV_ALL, &all));
    for (int s = 0; s < SEQS; ++s) {
        memset(&one, 0, sizeof one);
        one.struct_size = sizeof one;
        ASSERT_OK(rkv_cache_stats(cache, s, &one));
        sum.tokens_appended += one.tokens_appended;
        sum.tokens_held += one.tokens_held;
        sum.tokens_evicted += one.tokens_evicted;
        sum.bytes_kv_held += one.bytes_kv_held;
        assert_int_equal(one.tokens_appended, (uint64_t)tokens[s] * LAYERS);
    }
    assert_int_equal(sum.tokens_appended, all.tokens_appended);
    assert_int_equal(sum.tokens_held, all.tokens_held);
    assert_int_equal(sum.tokens_evicted, all.tokens_evicted);
    assert_int_equal(all.bytes_kv_held, all.tokens_held * KV_HEADS * DIM * 4 * 2);
    uint64_t size = 0;
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    ASSERT_OK(rkv_cache_size(&p, &size));
    assert_int_equal(size, all.bytes_allocated);
    rkv_cache_destroy(cache);
}

/* rkv_compress(RKV_ALL, layer) compresses the sequences that are due, no others. */
static void test_compress_all_takes_only_due(void **state) {
    (void)state;
    rkv_cache *cache = make();
    uint64_t rng = 37;
    test_append_random(cache, 0, BUDGET + BUFFER, &rng); /* full: due */
    test_append_random(cache, 1, BUDGET + 2, &rng);      /* over budget, not full */
    test_snapshot before = test_take_seq_snapshot(cache, 1);
    ASSERT_OK(rkv_compress(cache, RKV_ALL, 1, NULL));
    int32_t held = 0;
    ASSERT_OK(rkv_seq_length(cache, 0, 1, NULL, &held));
    assert_int_equal(held, BUDGET);
    ASSERT_OK(rkv_seq_length(cache, 0, 0, NULL, &held));
    assert_int_equal(held, BUDGET + BUFFER); /* other layer untouched */
    test_snapshot after = test_take_seq_snapshot(cache, 1);
    assert_true(test_snapshot_equal(&before, &after));
    test_snapshot_free(&before);
    test_snapshot_free(&after);
    ASSERT_OK(rkv_compress(cache, 1, RKV_ALL, NULL)); /* explicit: over budget is enough */
    ASSERT_OK(rkv_seq_length(cache, 1, 0, NULL, &held));
    assert_int_equal(held, BUDGET);
    rkv_cache_destroy(cache);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batched_decode_step),
        cmocka_unit_test(test_left_padded_batch),
        cmocka_unit_test(test_packed_varlen),
        cmocka_unit_test(test_half_inputs),
        cmocka_unit_test(test_views_and_statistics),
        cmocka_unit_test(test_compress_all_takes_only_due),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
