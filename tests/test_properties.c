/* Invariants every method keeps during a long simulated decode, for every
 * method x mode x storage dtype (FP8 E4M3 included):
 *   - the budget holds per head (held <= capacity, == budget right after a compression)
 *   - the window (the most recent tokens) and protected sinks are always held
 *   - every held slot carries the K and V that were appended at its position
 *   - position mode keeps positions sorted; positions are distinct everywhere
 *   - memory does not grow with the generated length
 *   - sequences are independent: work on one leaves the others bit-identical
 * plus the special cases: FULL never evicts, a budget at least the sequence
 * length evicts nothing, the tie rule keeps the more recent token, Random is
 * reproducible from its seed, and the prompt guard never evicts the prompt. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { SEQS = 3, LAYERS = 2, KV_HEADS = 2, Q_HEADS = 4, DIM = 16 };
enum { BUDGET = 24, BUFFER = 8, WINDOW = 4, SINK = 4, STEPS = 150 };

/* What the test appended, per (seq, layer, head, position), to check rows against. */
typedef struct history {
    int32_t max_len;
    float *k, *v; /* [SEQS, LAYERS, KV_HEADS, max_len, DIM] */
} history;

static float *history_row(const history *h, float *base, int32_t seq, int32_t layer, int32_t head,
                          int32_t position) {
    return base + ((((int64_t)seq * LAYERS + layer) * KV_HEADS + head) * h->max_len + position) * DIM;
}

/* One decode token for sequence `seq`, every layer; records it in `hist`. */
static rkv_status decode_token(rkv_cache *cache, history *hist, int32_t seq, int32_t position,
                               uint64_t *rng) {
    float k[KV_HEADS * DIM], v[KV_HEADS * DIM], q[Q_HEADS * DIM];
    for (int32_t layer = 0; layer < LAYERS; ++layer) {
        test_fill_normal(k, KV_HEADS * DIM, rng);
        test_fill_normal(v, KV_HEADS * DIM, rng);
        test_fill_normal(q, Q_HEADS * DIM, rng);
        rkv_status status = test_append(cache, layer, seq, k, v, q, 1, 0);
        if (status != RKV_OK) return status;
        if (hist && position < hist->max_len)
            for (int32_t h = 0; h < KV_HEADS; ++h) {
                memcpy(history_row(hist, hist->k, seq, layer, h, position), k + h * DIM, sizeof(float) * DIM);
                memcpy(history_row(hist, hist->v, seq, layer, h, position), v + h * DIM, sizeof(float) * DIM);
            }
    }
    return RKV_OK;
}

static int holds(const int32_t *positions, int32_t n, int32_t position) {
    for (int32_t i = 0; i < n; ++i)
        if (positions[i] == position) return 1;
    return 0;
}

/* Every invariant of one (seq, layer) at one moment. */
static void check_invariants(const rkv_cache *cache, const rkv_cache_params *p, const history *hist,
                             int32_t seq, int32_t layer, int32_t capacity) {
    rkv_seq_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    ASSERT_OK(rkv_view(cache, seq, layer, &view));
    const int32_t logical = (int32_t)view.logical_length;
    assert_true(view.length <= capacity);
    assert_true(view.length <= logical);
    const int sinks = p->method == RKV_METHOD_STREAMINGLLM || (p->guards & RKV_GUARD_SINK);
    for (int32_t h = 0; h < KV_HEADS; ++h) {
        const int32_t *positions = view.positions + h * view.positions_stride_head;
        for (int32_t i = 0; i < view.length; ++i) {
            assert_true(positions[i] >= 0 && positions[i] < logical);
            for (int32_t j = 0; j < i; ++j) assert_int_not_equal(positions[i], positions[j]);
            if (p->mode == RKV_MODE_POSITION && i > 0) assert_true(positions[i - 1] < positions[i]);
            /* the slot holds what was appended at its position (rounded to storage;
             * FP8: quantised with the row's power-of-two scale, which moved with it) */
            const float *k_row = history_row(hist, hist->k, seq, layer, h, positions[i]);
            const float *v_row = history_row(hist, hist->v, seq, layer, h, positions[i]);
            float want_k[DIM], want_v[DIM], k_scale = 1.0f, v_scale = 1.0f;
            if (p->dtype == RKV_DTYPE_FP8_E4M3) {
                assert_true(fp8_reference_row(k_row, DIM, want_k) == view.k_scale[h * view.scale_stride_head + i]);
                assert_true(fp8_reference_row(v_row, DIM, want_v) == view.v_scale[h * view.scale_stride_head + i]);
                k_scale = view.k_scale[h * view.scale_stride_head + i];
                v_scale = view.v_scale[h * view.scale_stride_head + i];
            } else {
                assert_null(view.k_scale);
                for (int32_t e = 0; e < DIM; ++e) {
                    want_k[e] = round_through(p->dtype, k_row[e]);
                    want_v[e] = round_through(p->dtype, v_row[e]);
                }
            }
            for (int32_t e = 0; e < DIM; e += 5) {
                int64_t index = h * view.stride_head + i * view.stride_token + e;
                assert_true(element_as_float(view.k, p->dtype, (size_t)index) * k_scale == want_k[e]);
                assert_true(element_as_float(view.v, p->dtype, (size_t)index) * v_scale == want_v[e]);
            }
        }
        for (int32_t t = logical - WINDOW; t < logical; ++t)
            if (t >= 0) assert_true(holds(positions, view.length, t));
        if (sinks)
            for (int32_t t = 0; t < SINK && t < logical; ++t) assert_true(holds(positions, view.length, t));
    }
}

static void run_decode(rkv_method method, rkv_mode mode, rkv_dtype dtype, uint32_t guards) {
    rkv_cache_params p = test_params(SEQS, LAYERS, KV_HEADS, Q_HEADS, DIM, method, BUDGET, BUFFER, WINDOW);
    p.mode = mode;
    p.dtype = dtype;
    p.sink = SINK;
    p.guards = guards;
    p.max_len = STEPS + 10;
    p.seed = 42;
    rkv_cache *cache = test_create(&p);
    const int32_t capacity = method == RKV_METHOD_FULL ? p.max_len : BUDGET + BUFFER;
    history hist = {STEPS, NULL, NULL};
    size_t rows = (size_t)SEQS * LAYERS * KV_HEADS * STEPS * DIM;
    hist.k = calloc(rows, sizeof(float));
    hist.v = calloc(rows, sizeof(float));
    uint64_t rng = 1000 + (uint64_t)method * 10 + (uint64_t)mode;

    rkv_stats first;
    memset(&first, 0, sizeof first);
    first.struct_size = sizeof first;
    ASSERT_OK(rkv_cache_stats(cache, RKV_ALL, &first));
    int32_t length[SEQS] = {0};
    for (int32_t step = 0; step < STEPS; ++step) {
        /* Sequences advance at different rates, so they compress at different steps. */
        for (int32_t seq = 0; seq < SEQS; ++seq) {
            if (step % (seq + 1) != 0) continue;
            test_snapshot others[SEQS];
            for (int32_t s = 0; s < SEQS; ++s) others[s] = test_take_seq_snapshot(cache, s);
            ASSERT_OK(decode_token(cache, &hist, seq, length[seq]++, &rng));
            for (int32_t s = 0; s < SEQS; ++s) {
                if (s != seq) {
                    test_snapshot now = test_take_seq_snapshot(cache, s);
                    assert_true(test_snapshot_equal(&others[s], &now)); /* independence */
                    test_snapshot_free(&now);
                }
                test_snapshot_free(&others[s]);
            }
            for (int32_t layer = 0; layer < LAYERS; ++layer) {
                check_invariants(cache, &p, &hist, seq, layer, capacity);
                int32_t held = 0;
                ASSERT_OK(rkv_seq_length(cache, seq, layer, NULL, &held));
                if (method == RKV_METHOD_FULL) assert_int_equal(held, length[seq]);
                else if (length[seq] > capacity) assert_true(held >= BUDGET + 1);
            }
        }
    }
    /* Memory held is constant; the full cache would have needed more. */
    rkv_stats last;
    memset(&last, 0, sizeof last);
    last.struct_size = sizeof last;
    ASSERT_OK(rkv_cache_stats(cache, RKV_ALL, &last));
    assert_int_equal(first.bytes_allocated, last.bytes_allocated);
    assert_true(last.bytes_kv_held <= last.bytes_kv_capacity);
    assert_int_equal(last.tokens_held + last.tokens_evicted, last.tokens_appended);
    if (method == RKV_METHOD_FULL) {
        assert_int_equal(last.tokens_evicted, 0);
        assert_int_equal(last.compressions, 0);
    } else {
        assert_true(last.bytes_kv_full > last.bytes_kv_held);
        assert_true(last.compressions > 0);
    }
    rkv_cache_destroy(cache);
    free(hist.k);
    free(hist.v);
}

static void test_invariants_every_method(void **state) {
    (void)state;
    const rkv_method methods[] = {RKV_METHOD_RKV, RKV_METHOD_SNAPKV, RKV_METHOD_H2O,
                                  RKV_METHOD_STREAMINGLLM, RKV_METHOD_KEYDIFF, RKV_METHOD_RANDOM,
                                  RKV_METHOD_FULL};
    const rkv_dtype dtypes[] = {RKV_DTYPE_F32, RKV_DTYPE_F16, RKV_DTYPE_BF16, RKV_DTYPE_FP8_E4M3};
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; ++m)
        for (int mode = 0; mode < 2; ++mode)
            for (size_t d = 0; d < 4; ++d) run_decode(methods[m], (rkv_mode)mode, dtypes[d], 0);
    /* the sink guard on a scoring method */
    run_decode(RKV_METHOD_RKV, RKV_MODE_POSITION, RKV_DTYPE_F32, RKV_GUARD_SINK);
    run_decode(RKV_METHOD_H2O, RKV_MODE_POSITION, RKV_DTYPE_F32, RKV_GUARD_SINK);
}

/* A compression right after it runs leaves exactly `budget` tokens per head. */
static void test_compression_lands_on_budget(void **state) {
    (void)state;
    rkv_cache_params p = test_params(1, 1, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_RKV, BUDGET, BUFFER, WINDOW);
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 7;
    test_append_random(cache, 0, BUDGET + BUFFER, &rng);
    int32_t due = -1, held = 0;
    ASSERT_OK(rkv_compress_due(cache, 0, 0, &due));
    assert_int_equal(due, 1);
    ASSERT_OK(rkv_compress(cache, RKV_ALL, RKV_ALL, NULL));
    ASSERT_OK(rkv_seq_length(cache, 0, 0, NULL, &held));
    assert_int_equal(held, BUDGET);
    ASSERT_OK(rkv_compress_due(cache, RKV_ALL, RKV_ALL, &due));
    assert_int_equal(due, 0);
    rkv_cache_destroy(cache);
}

/* A budget at least the sequence length evicts nothing, even when asked to. */
static void test_large_budget_evicts_nothing(void **state) {
    (void)state;
    const rkv_method methods[] = {RKV_METHOD_RKV, RKV_METHOD_SNAPKV, RKV_METHOD_H2O,
                                  RKV_METHOD_STREAMINGLLM, RKV_METHOD_KEYDIFF, RKV_METHOD_RANDOM};
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; ++m) {
        rkv_cache_params p = test_params(1, 1, KV_HEADS, Q_HEADS, DIM, methods[m], 256, 16, WINDOW);
        rkv_cache *cache = test_create(&p);
        uint64_t rng = 3;
        test_append_random(cache, 0, 200, &rng);
        ASSERT_OK(rkv_compress(cache, 0, RKV_ALL, NULL));
        int32_t positions[256];
        for (int32_t h = 0; h < KV_HEADS; ++h) {
            assert_int_equal(test_sorted_positions(cache, 0, 0, h, positions, 256), 200);
            for (int32_t i = 0; i < 200; ++i) assert_int_equal(positions[i], i);
        }
        rkv_cache_destroy(cache);
    }
}

/* FULL holds everything up to max_len, then refuses more (it never evicts). */
static void test_full_never_evicts(void **state) {
    (void)state;
    rkv_cache_params p = test_params(1, 1, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_FULL, BUDGET, BUFFER, WINDOW);
    p.max_len = 100;
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 5;
    test_append_random(cache, 0, 100, &rng);
    ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
    int32_t positions[100];
    assert_int_equal(test_sorted_positions(cache, 0, 0, 1, positions, 100), 100);
    for (int32_t i = 0; i < 100; ++i) assert_int_equal(positions[i], i);
    float k[KV_HEADS * DIM] = {0}, v[KV_HEADS * DIM] = {0};
    ASSERT_STATUS(test_append(cache, 0, 0, k, v, NULL, 1, 0), RKV_ERR_CAPACITY);
    int32_t due = 1;
    ASSERT_OK(rkv_compress_due(cache, 0, 0, &due));
    assert_int_equal(due, 0);
    rkv_cache_destroy(cache);
}

/* Equal scores: the more recent token is kept. KeyDiff scores identical keys
 * identically, so with every candidate key equal the newest candidates win. */
static void test_ties_keep_the_more_recent_token(void **state) {
    (void)state;
    for (int mode = 0; mode < 2; ++mode) {
        rkv_cache_params p = test_params(1, 1, 1, 1, DIM, RKV_METHOD_KEYDIFF, 8, 8, 2);
        p.mode = (rkv_mode)mode;
        rkv_cache *cache = test_create(&p);
        float k[16 * DIM], v[16 * DIM];
        for (int i = 0; i < 16 * DIM; ++i) {
            k[i] = (float)(i % DIM) + 1.0f; /* the same key for every token */
            v[i] = (float)i;
        }
        ASSERT_OK(test_append(cache, 0, 0, k, v, NULL, 16, 0));
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        int32_t positions[16];
        assert_int_equal(test_sorted_positions(cache, 0, 0, 0, positions, 16), 8);
        for (int32_t i = 0; i < 8; ++i) assert_int_equal(positions[i], 8 + i);
        rkv_cache_destroy(cache);
    }
}

/* Random: the same seed evicts the same tokens; another seed, others. */
static void test_random_is_seeded(void **state) {
    (void)state;
    int32_t kept[3][KV_HEADS][BUDGET];
    const uint64_t seeds[3] = {1, 1, 2};
    for (int run = 0; run < 3; ++run) {
        rkv_cache_params p = test_params(1, 1, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_RANDOM, BUDGET, 40, WINDOW);
        p.seed = seeds[run];
        rkv_cache *cache = test_create(&p);
        uint64_t rng = 11;
        test_append_random(cache, 0, 64, &rng);
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        for (int32_t h = 0; h < KV_HEADS; ++h)
            assert_int_equal(test_sorted_positions(cache, 0, 0, h, kept[run][h], BUDGET), BUDGET);
        rkv_cache_destroy(cache);
    }
    assert_memory_equal(kept[0], kept[1], sizeof kept[0]);
    assert_memory_not_equal(kept[0], kept[2], sizeof kept[0]);
    assert_memory_not_equal(kept[0][0], kept[0][1], sizeof kept[0][0]); /* heads differ */
}

/* The prompt guard: prompt tokens are never evicted and the budget applies to
 * generated tokens; without it a long prompt is compressed as it arrives. */
static void test_prompt_guard(void **state) {
    (void)state;
    enum { PROMPT = 40 };
    for (int guarded = 0; guarded < 2; ++guarded) {
        rkv_cache_params p = test_params(1, 1, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_RKV, BUDGET, BUFFER, WINDOW);
        if (guarded) {
            p.guards = RKV_GUARD_PROMPT;
            p.max_prompt_len = 64;
        }
        rkv_cache *cache = test_create(&p);
        uint64_t rng = 17;
        float k[PROMPT * KV_HEADS * DIM], v[PROMPT * KV_HEADS * DIM], q[PROMPT * Q_HEADS * DIM];
        test_fill_normal(k, sizeof k / 4, &rng);
        test_fill_normal(v, sizeof v / 4, &rng);
        test_fill_normal(q, sizeof q / 4, &rng);
        ASSERT_OK(test_append(cache, 0, 0, k, v, q, PROMPT, RKV_APPEND_PROMPT));
        int32_t held = 0;
        ASSERT_OK(rkv_seq_length(cache, 0, 0, NULL, &held));
        /* unguarded, a 40-token prompt overflows the 32 slots and was compressed once */
        assert_int_equal(held, guarded ? PROMPT : BUDGET + (PROMPT - BUDGET - BUFFER));
        test_append_random(cache, 0, 100, &rng);
        int32_t positions[256];
        int32_t n = test_sorted_positions(cache, 0, 0, 0, positions, 256);
        if (guarded) {
            assert_true(n > PROMPT + BUDGET && n <= PROMPT + BUDGET + BUFFER);
            for (int32_t i = 0; i < PROMPT; ++i) assert_int_equal(positions[i], i);
        } else {
            assert_true(n <= BUDGET + BUFFER);
        }
        rkv_cache_destroy(cache);
    }
}

/* With auto_compress off a full sequence refuses tokens until compressed. */
static void test_auto_compress_off(void **state) {
    (void)state;
    rkv_cache_params p = test_params(1, 1, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_SNAPKV, BUDGET, BUFFER, WINDOW);
    p.auto_compress = 0;
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 19;
    test_append_random(cache, 0, BUDGET + BUFFER, &rng);
    float k[KV_HEADS * DIM] = {0}, v[KV_HEADS * DIM] = {0}, q[Q_HEADS * DIM] = {0};
    test_snapshot before = test_take_snapshot(cache);
    ASSERT_STATUS(test_append(cache, 0, 0, k, v, q, 1, 0), RKV_ERR_CAPACITY);
    test_snapshot after = test_take_snapshot(cache);
    assert_true(test_snapshot_equal(&before, &after));
    ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
    ASSERT_OK(test_append(cache, 0, 0, k, v, q, 1, 0));
    test_snapshot_free(&before);
    test_snapshot_free(&after);
    rkv_cache_destroy(cache);
}

/* A reset sequence behaves exactly like a fresh one. */
static void test_reset_reuses_a_slot(void **state) {
    (void)state;
    rkv_cache_params p = test_params(2, LAYERS, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_RKV, BUDGET, BUFFER, WINDOW);
    rkv_cache *fresh = test_create(&p), *reused = test_create(&p);
    uint64_t rng_a = 23, rng_b = 99, rng_c = 23;
    test_append_random(reused, 1, 77, &rng_b);
    ASSERT_OK(rkv_seq_reset(reused, 1, NULL));
    int64_t logical = -1;
    int32_t held = -1;
    ASSERT_OK(rkv_seq_length(reused, 1, 0, &logical, &held));
    assert_int_equal(logical, 0);
    assert_int_equal(held, 0);
    test_append_random(fresh, 1, 90, &rng_a);
    test_append_random(reused, 1, 90, &rng_c);
    test_snapshot a = test_take_seq_snapshot(fresh, 1), b = test_take_seq_snapshot(reused, 1);
    assert_true(test_snapshot_equal(&a, &b));
    test_snapshot_free(&a);
    test_snapshot_free(&b);
    rkv_cache_destroy(fresh);
    rkv_cache_destroy(reused);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_invariants_every_method),
        cmocka_unit_test(test_compression_lands_on_budget),
        cmocka_unit_test(test_large_budget_evicts_nothing),
        cmocka_unit_test(test_full_never_evicts),
        cmocka_unit_test(test_ties_keep_the_more_recent_token),
        cmocka_unit_test(test_random_is_seeded),
        cmocka_unit_test(test_prompt_guard),
        cmocka_unit_test(test_auto_compress_off),
        cmocka_unit_test(test_reset_reuses_a_slot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
