/* A program built against the 0.1.0 header runs against this library (rkv.h,
 * "ABI: how structs grow"). Its structs (tests/compat/rkv_0_1_layouts.h, with
 * struct_size = their sizeof) go to the current entry points:
 *   - the library reads them up to their last field, ignores what lies beyond
 *     (0.1's tail padding, where 0.2 has max_rollback), and gives the missing
 *     fields their defaults;
 *   - it never writes past the caller's struct_size (canaries behind them);
 *   - 0.1's rkv_append_args, whose tensors have no extent, append exactly what
 *     the current struct does;
 *   - a key the old struct lacks is UNSUPPORTED for the setter and reads as its
 *     default; sizes of neither version are STRUCT_SIZE. */
#include <string.h>

#include "compat/rkv_0_1_layouts.h"
#include "expect.h"
#include "stream.h"

enum { CANARY = 0xab, CANARY_BYTES = 64 };

/* A 0.1 struct followed by canary bytes. */
typedef struct {
    rkv01_cache_params p;
    unsigned char canary[CANARY_BYTES];
} guarded_params;

static void fill_canaries(void *object, size_t size) { memset(object, CANARY, size); }

static void assert_canaries(const unsigned char *canary) {
    for (int i = 0; i < CANARY_BYTES; ++i)
        if (canary[i] != CANARY) fail_msg("the library wrote %d bytes past a 0.1 struct", i + 1);
}

static rkv01_cache_params old_params(void) {
    guarded_params g;
    fill_canaries(&g, sizeof g);  /* the tail padding holds garbage, as it may in a 0.1 program */
    ASSERT_OK(rkv_params_default((rkv_cache_params *)&g.p, sizeof g.p));
    assert_canaries(g.canary);
    g.p.max_seqs = 2;
    g.p.num_layers = 2;
    g.p.num_kv_heads = 2;
    g.p.num_q_heads = 4;
    g.p.head_dim = 8;
    g.p.budget = 10;
    g.p.buffer = 4;
    g.p.window = 2;
    g.p.kernel = 3;
    return g.p;
}

static void test_struct_sizes_differ(void **state) {
    (void)state;
    /* Every version has its own sizeof, so struct_size names the version. */
    assert_true(sizeof(rkv01_cache_params) != sizeof(rkv_cache_params));
    assert_true(sizeof(rkv01_append_args) != sizeof(rkv_append_args));
    /* the views grew in 0.2 by the FP8 scales, at the end */
    assert_true(sizeof(rkv01_kv_view) < sizeof(rkv_seq_view));
    assert_true(sizeof(rkv01_layer_view) < sizeof(rkv_layer_view));
    assert_int_equal(sizeof(rkv01_stats), sizeof(rkv_stats));
}

static void test_old_params(void **state) {
    (void)state;
    guarded_params g;
    fill_canaries(&g, sizeof g);
    ASSERT_OK(rkv_params_default((rkv_cache_params *)&g.p, sizeof g.p));
    assert_canaries(g.canary);
    assert_int_equal(g.p.struct_size, sizeof(rkv01_cache_params));
    assert_int_equal(g.p.budget, 1024);
    assert_int_equal(g.p.window, 8);
    assert_int_equal(g.p.auto_compress, 1);
    assert_int_equal(g.p.max_len, 4096);

    rkv01_cache_params p = old_params();
    double value = -1;
    ASSERT_OK(rkv_params_set((rkv_cache_params *)&p, RKV_PARAM_BUDGET, 12));
    assert_int_equal(p.budget, 12);
    rkv01_cache_params copy = p;
    EXPECT_FAIL(rkv_params_set((rkv_cache_params *)&p, RKV_PARAM_MAX_ROLLBACK, 4), RKV_ERR_UNSUPPORTED);
    assert_memory_equal(&p, &copy, sizeof p);
    ASSERT_OK(rkv_params_get((const rkv_cache_params *)&p, RKV_PARAM_MAX_ROLLBACK, &value));
    assert_true(value == 0.0);
    ASSERT_OK(rkv_params_get((const rkv_cache_params *)&p, RKV_PARAM_BUDGET, &value));
    assert_true(value == 12.0);

    /* The same cache as the current struct with defaults for the new fields. */
    rkv_cache_params now;
    ASSERT_OK(rkv_params_default(&now, sizeof now));
    memcpy(&now, &p, offsetof(rkv_cache_params, max_rollback));
    now.struct_size = sizeof now;
    uint64_t old_bytes = 0, new_bytes = 0;
    ASSERT_OK(rkv_cache_size((const rkv_cache_params *)&p, &old_bytes));
    ASSERT_OK(rkv_cache_size(&now, &new_bytes));
    assert_int_equal(old_bytes, new_bytes);
    rkv_cache *cache = NULL;
    ASSERT_OK(rkv_cache_create((const rkv_cache_params *)&p, &cache));
    ASSERT_OK(rkv_cache_get(cache, RKV_PARAM_MAX_ROLLBACK, &value));
    assert_true(value == 0.0);

    /* get_params writes no further than 0.1's struct. */
    fill_canaries(&g, sizeof g);
    g.p.struct_size = sizeof g.p;
    ASSERT_OK(rkv_cache_get_params(cache, (rkv_cache_params *)&g.p));
    assert_canaries(g.canary);
    assert_int_equal(g.p.struct_size, sizeof(rkv01_cache_params));
    assert_int_equal(g.p.budget, 12);
    assert_int_equal(g.p.head_dim, 8);
    assert_int_equal(g.p.auto_compress, 1);

    /* Sizes of neither version. */
    for (size_t bad = sizeof(rkv01_cache_params) - 8; bad <= sizeof(rkv_cache_params) + 8; bad += 4) {
        if (bad == sizeof(rkv01_cache_params) || bad == sizeof(rkv_cache_params)) continue;
        rkv01_cache_params b = p;
        b.struct_size = bad;
        EXPECT_FAIL(rkv_cache_size((const rkv_cache_params *)&b, &old_bytes), RKV_ERR_STRUCT_SIZE);
        EXPECT_FAIL(rkv_params_default((rkv_cache_params *)&b, bad), RKV_ERR_STRUCT_SIZE);
    }
    rkv_cache_destroy(cache);
}

static rkv01_tensor old_tensor(float *data, int32_t heads) {
    rkv01_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = RKV_DTYPE_F32;
    t.num_heads = heads;
    t.head_dim = 8;
    t.stride_token = (int64_t)heads * 8;
    t.stride_head = 8;
    return t;
}

/* 0.1's append args (tensors without extent) append what the current ones do. */
static void test_old_append_args(void **state) {
    (void)state;
    rkv01_cache_params p = old_params();
    rkv_cache *old = NULL, *now = NULL;
    ASSERT_OK(rkv_cache_create((const rkv_cache_params *)&p, &old));
    ASSERT_OK(rkv_cache_create((const rkv_cache_params *)&p, &now));
    rkv_cache_params full;
    full.struct_size = sizeof full;
    ASSERT_OK(rkv_cache_get_params(now, &full));
    enum { TOKENS = 19 };
    static float k[TOKENS * 2 * 8], v[TOKENS * 2 * 8], q[TOKENS * 4 * 8];
    for (int32_t layer = 0; layer < 2; ++layer) {
        stream_tokens(&full, 0, 0, TOKENS, layer, k, v, q);
        int32_t seq = 1, tokens = TOKENS;
        rkv01_append_args a;
        memset(&a, 0xcd, sizeof a);  /* padding garbage */
        a.struct_size = sizeof a;
        a.layer = layer;
        a.num_seqs = 1;
        a.seq_ids = &seq;
        a.num_tokens = &tokens;
        a.token_offsets = NULL;
        a.k = old_tensor(k, 2);
        a.v = old_tensor(v, 2);
        a.q = old_tensor(q, 4);
        a.flags = RKV_APPEND_PROMPT;
        ASSERT_OK(rkv_append(old, (const rkv_append_args *)&a, NULL));
        ASSERT_OK(test_append(now, layer, seq, k, v, q, TOKENS, RKV_APPEND_PROMPT));
    }
    assert_same_sequence(old, 1, now, 1, "0.1 append args against 0.2's");

    /* Views and statistics of 0.1's sizes. */
    rkv01_kv_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    ASSERT_OK(rkv_view(old, 1, 0, (rkv_seq_view *)&view));
    int32_t physical = -1;
    ASSERT_OK(rkv_seq_length(old, 1, 0, NULL, &physical));
    assert_int_equal(view.length, physical);
    assert_int_equal(view.logical_length, TOKENS);
    rkv01_layer_view layer_view;
    memset(&layer_view, 0, sizeof layer_view);
    layer_view.struct_size = sizeof layer_view;
    ASSERT_OK(rkv_view_layer(old, 0, (rkv_layer_view *)&layer_view));
    assert_int_equal(layer_view.capacity, 14);
    rkv01_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(old, 1, (rkv_stats *)&stats));
    assert_int_equal(stats.tokens_appended, 2 * TOKENS);

    /* A struct_size of neither version. */
    rkv01_append_args bad;
    memset(&bad, 0, sizeof bad);
    bad.struct_size = sizeof bad + 8;
    EXPECT_REJECTED(old, rkv_append(old, (const rkv_append_args *)&bad, NULL), RKV_ERR_STRUCT_SIZE);
    rkv_cache_destroy(old);
    rkv_cache_destroy(now);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_struct_sizes_differ),
        cmocka_unit_test(test_old_params),
        cmocka_unit_test(test_old_append_args),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
