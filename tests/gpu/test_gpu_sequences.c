/* Rollback, fork and per-request budgets on the CUDA backend:
 *   - on the device, drafts rolled back leave the cache bit for bit as a cache
 *     that never saw them (K, V, FP8 scales, positions, lengths, every score),
 *     every method, f32, bf16 and FP8 storage, through many compressions (the
 *     rollback, H2O-commit and copy kernels);
 *   - against the CPU oracle (twin caches fed the same calls): the same
 *     lengths, rollback limits and budgets after every step, and the same kept
 *     tokens after every compression (near ties of bf16 storage explained by
 *     the CPU's scores, as in test_gpu_methods);
 *   - a fork on the device equals its source, and a budget of its own equals a
 *     cache created with that budget, bit for bit;
 *   - bad input on a CUDA cache: each a status, a message, the device memory
 *     unchanged.
 * Exit 77 without a GPU. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "gpu_util.h"

enum { SEQS = 3, LAYERS = 2, KV = 2, QH = 8, DIM = 64, BUDGET = 24, SMALL = 14, BUFFER = 8, WINDOW = 4 };
enum { ROLLBACK = 6, STEPS = 60, RACECHECK_STEPS = 40 };

/* Under racecheck (RKV_GPU_TEST_SMALL=2) each launch is ~100x slower: there the
 * test runs R-KV and H2O alone (between them every sequence kernel: rollback
 * with the query history, fork, H2O's deferred commits) for fewer steps (still
 * two compressions of the small-budget sequence). */
static int32_t steps(void) { return gpu_small() >= 2 ? RACECHECK_STEPS : STEPS; }
static int method_runs(rkv_method method) {
    return gpu_small() < 2 || method == RKV_METHOD_RKV || method == RKV_METHOD_H2O;
}

static const char *method_names[] = {"rkv", "snapkv", "h2o", "streamingllm", "keydiff", "random", "full"};

static const char *dtype_names[] = {"f32", "f16", "bf16", "fp8_e4m3"};

static kept_compare g_kept[4];

static rkv_cache_params sequence_params(rkv_method method, rkv_dtype dtype, rkv_device_type device) {
    rkv_cache_params p = test_params(SEQS, LAYERS, KV, QH, DIM, method, BUDGET, BUFFER, WINDOW);
    p.dtype = dtype;
    p.device_type = device;
    p.kernel = 5;
    p.sink = 2;
    p.max_len = 160;
    p.max_rollback = ROLLBACK;
    p.auto_compress = 0; /* compressions happen where the test compares them */
    return p;
}

static int32_t limit_of(const rkv_cache *cache, int32_t seq) {
    int32_t limit = -1;
    ASSERT_OK(rkv_seq_rollback_limit(cache, seq, &limit));
    return limit;
}

static int32_t held_of(const rkv_cache *cache, int32_t seq) {
    int32_t held = -1;
    ASSERT_OK(rkv_seq_length(cache, seq, 0, NULL, &held));
    return held;
}

/* CPU and CUDA agree on every host-visible number of every sequence. */
static void assert_same_bookkeeping(const twin *t, const char *what) {
    for (int32_t s = 0; s < SEQS; ++s)
        for (int32_t l = 0; l < LAYERS; ++l) {
            int64_t la = -1, lb = -2;
            int32_t ha = -1, hb = -2;
            ASSERT_OK(rkv_seq_length(t->cpu, s, l, &la, &ha));
            ASSERT_OK(rkv_seq_length(t->gpu, s, l, &lb, &hb));
            if (la != lb || ha != hb) fail_msg("%s: seq %d layer %d: lengths %lld/%d on the CPU, %lld/%d on CUDA", what,
                                               s, l, (long long)la, ha, (long long)lb, hb);
        }
    /* The device bookkeeping (the layer view's lengths) agrees with the host's. */
    for (int32_t l = 0; l < LAYERS; ++l) {
        rkv_layer_view view;
        memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        ASSERT_OK(rkv_view_layer(t->gpu, l, &view));
        int32_t lengths[SEQS];
        gpu_download(lengths, view.lengths, sizeof lengths);
        for (int32_t s = 0; s < SEQS; ++s) {
            int32_t held = -1;
            ASSERT_OK(rkv_seq_length(t->gpu, s, l, NULL, &held));
            if (lengths[s] != held) fail_msg("%s: seq %d layer %d: the device holds %d, the host %d", what, s, l,
                                            lengths[s], held);
        }
    }
    for (int32_t s = 0; s < SEQS; ++s) {
        assert_int_equal(limit_of(t->cpu, s), limit_of(t->gpu, s));
        int32_t ba = -1, bb = -2;
        ASSERT_OK(rkv_seq_get_budget(t->cpu, s, &ba));
        ASSERT_OK(rkv_seq_get_budget(t->gpu, s, &bb));
        assert_int_equal(ba, bb);
    }
}

/* Compress every due sequence of the twin and of `clean`, comparing the kept
 * tokens of the twin (explained near ties allowed). Returns 1 once CPU and
 * CUDA diverged (a near tie), after which only CUDA against CUDA is compared. */
static int compress_due(twin *t, rkv_cache *clean, rkv_dtype dtype, int diverged, const char *what) {
    int32_t due = 0, gpu_due = 0;
    ASSERT_OK(rkv_compress_due(t->gpu, RKV_ALL, RKV_ALL, &gpu_due));
    if (!diverged) {
        ASSERT_OK(rkv_compress_due(t->cpu, RKV_ALL, RKV_ALL, &due));
        assert_int_equal(due, gpu_due);
    }
    if (!gpu_due) return diverged;
    score_snapshot before = snapshot_scores(t);
    ASSERT_OK(rkv_compress(t->cpu, RKV_ALL, RKV_ALL, NULL));
    ASSERT_OK(rkv_compress(t->gpu, RKV_ALL, RKV_ALL, NULL));
    ASSERT_OK(rkv_compress(clean, RKV_ALL, RKV_ALL, NULL));
    if (!diverged) {
        const kept_compare was = g_kept[dtype];
        compare_kept(t, &before, &g_kept[dtype], what);
        diverged = g_kept[dtype].near_ties != was.near_ties;
    }
    snapshot_free(&before);
    return diverged;
}

/* Every sequence: prompt, then decode with drafts rolled back, into the twin;
 * the real tokens alone into `clean` (CUDA). Sequence 2 has a budget of its
 * own; sequence 1 is forked from 0 midway. */
static void run_method(rkv_method method, rkv_dtype dtype) {
    char what[96];
    snprintf(what, sizeof what, "%s %s", method_names[method], dtype_names[dtype]);
    const rkv_dtype io = dtype == RKV_DTYPE_FP8_E4M3 ? RKV_DTYPE_BF16 : dtype; /* FP8 is storage only */
    rkv_cache_params p = sequence_params(method, dtype, RKV_DEVICE_CUDA);
    twin t = twin_create(&p);
    rkv_cache *clean = test_create(&p);
    const int evicts = method != RKV_METHOD_FULL;
    if (evicts) {
        ASSERT_OK(rkv_seq_set_budget(t.cpu, 2, SMALL));
        ASSERT_OK(rkv_seq_set_budget(t.gpu, 2, SMALL));
        ASSERT_OK(rkv_seq_set_budget(clean, 2, SMALL));
    }
    const int32_t starts[2] = {0, 2}; /* 1 is forked later */
    for (int i = 0; i < 2; ++i) {
        const int32_t s = starts[i];
        ASSERT_OK(gpu_stream_append(t.cpu, s, 0, 0, 6 + s, io, RKV_APPEND_PROMPT));
        ASSERT_OK(gpu_stream_append(t.gpu, s, 0, 0, 6 + s, io, RKV_APPEND_PROMPT));
        ASSERT_OK(gpu_stream_append(clean, s, 0, 0, 6 + s, io, RKV_APPEND_PROMPT));
    }
    uint64_t rng = 17 + (uint64_t)method * 3 + (uint64_t)dtype;
    int diverged = 0, forked = 0, rolled_back = 0;
    for (int32_t step = 0; step < steps(); ++step) {
        if (!forked && step == steps() / 3) {
            ASSERT_OK(rkv_seq_copy(t.cpu, 0, 1, NULL));
            ASSERT_OK(rkv_seq_copy(t.gpu, 0, 1, NULL));
            ASSERT_OK(rkv_seq_copy(clean, 0, 1, NULL));
            test_snapshot source = gpu_seq_snapshot(t.gpu, 0), fork = gpu_seq_snapshot(t.gpu, 1);
            assert_true(test_snapshot_equal(&source, &fork)); /* the copy kernel */
            test_snapshot_free(&source);
            test_snapshot_free(&fork);
            forked = 1;
        }
        diverged = compress_due(&t, clean, dtype, diverged, what);
        for (int32_t s = 0; s < SEQS; ++s) {
            if (s == 1 && !forked) continue;
            const int64_t position = stream_position(clean, s);
            if (method == RKV_METHOD_FULL && position + 8 > p.max_len) continue;
            const int32_t fill = method == RKV_METHOD_FULL ? p.max_len : (s == 2 ? SMALL : BUDGET) + BUFFER;
            const int32_t drafts = 1 + (int32_t)(test_rng_next(&rng) % 4);
            if (held_of(t.gpu, s) + drafts + 1 <= fill && test_rng_next(&rng) % 2) {
                ASSERT_OK(gpu_stream_append(t.cpu, s, 100 + (uint64_t)step, position, drafts, io, 0));
                ASSERT_OK(gpu_stream_append(t.gpu, s, 100 + (uint64_t)step, position, drafts, io, 0));
                const int32_t limit = limit_of(t.gpu, s);
                if (limit < drafts) fail_msg("%s: %d drafts, but the limit is %d", what, drafts, limit);
                ASSERT_OK(rkv_seq_truncate(t.cpu, s, drafts, NULL));
                ASSERT_OK(rkv_seq_truncate(t.gpu, s, drafts, NULL));
                rolled_back += drafts;
            }
            if (held_of(t.gpu, s) + 1 > fill) continue; /* due: compressed next step */
            ASSERT_OK(gpu_stream_append(t.cpu, s, 0, position, 1, io, 0));
            ASSERT_OK(gpu_stream_append(t.gpu, s, 0, position, 1, io, 0));
            ASSERT_OK(gpu_stream_append(clean, s, 0, position, 1, io, 0));
        }
        for (int32_t s = 0; s < SEQS; ++s) {
            if (s == 1 && !forked) continue;
            gpu_assert_same_sequence(t.gpu, s, clean, s, what);
            if (method != RKV_METHOD_RANDOM && s == 1)
                gpu_assert_same_sequence(t.gpu, 0, t.gpu, 1, "source and fork");
        }
        if (!diverged) assert_same_bookkeeping(&t, what);
    }
    assert_true(rolled_back > 20);

    /* The budget of its own against a cache created with it (CUDA, bit for bit). */
    if (evicts) {
        rkv_cache_params own_params = p;
        own_params.budget = SMALL;
        rkv_cache *own = test_create(&own_params);
        ASSERT_OK(gpu_stream_append(own, 2, 0, 0, 8, io, RKV_APPEND_PROMPT));
        int64_t position = 8;
        rkv_cache *fresh = test_create(&p);
        ASSERT_OK(rkv_seq_set_budget(fresh, 2, SMALL));
        ASSERT_OK(gpu_stream_append(fresh, 2, 0, 0, 8, io, RKV_APPEND_PROMPT));
        for (int32_t step = 0; step < 40; ++step) {
            int32_t due = 0;
            ASSERT_OK(rkv_compress_due(own, 2, RKV_ALL, &due));
            if (due) {
                ASSERT_OK(rkv_compress(own, 2, RKV_ALL, NULL));
                ASSERT_OK(rkv_compress(fresh, 2, RKV_ALL, NULL));
            }
            ASSERT_OK(gpu_stream_append(own, 2, 0, position, 1, io, 0));
            ASSERT_OK(gpu_stream_append(fresh, 2, 0, position, 1, io, 0));
            position += 1;
        }
        gpu_assert_same_sequence(fresh, 2, own, 2, "a budget of its own against a cache of that budget");
        rkv_cache_destroy(own);
        rkv_cache_destroy(fresh);
    }
    rkv_cache_destroy(clean);
    twin_destroy(&t);
}

static void test_sequences_every_method(void **state) {
    (void)state;
    for (int m = RKV_METHOD_RKV; m <= RKV_METHOD_FULL; ++m) {
        if (!method_runs((rkv_method)m)) continue;
        run_method((rkv_method)m, RKV_DTYPE_F32);
        if (!gpu_small()) run_method((rkv_method)m, RKV_DTYPE_BF16);
        if (!gpu_small()) run_method((rkv_method)m, RKV_DTYPE_FP8_E4M3);
    }
    const rkv_dtype dtypes[3] = {RKV_DTYPE_F32, RKV_DTYPE_BF16, RKV_DTYPE_FP8_E4M3};
    for (int i = 0; i < 3; ++i) {
        const kept_compare *kc = &g_kept[dtypes[i]];
        print_message("%s storage: %d head comparisons: %d identical, %d near ties, %d mismatches, %d order errors\n",
                      dtype_names[dtypes[i]], kc->heads, kc->identical, kc->near_ties, kc->mismatches, kc->order_errors);
        assert_int_equal(kc->mismatches, 0);
        assert_int_equal(kc->order_errors, 0);
    }
    assert_int_equal(g_kept[RKV_DTYPE_F32].near_ties, 0);
}

/* The cache's device memory and host bookkeeping, for "unchanged" checks. */
static test_snapshot whole_snapshot(const rkv_cache *cache) {
    test_snapshot all = {0, NULL};
    for (int32_t s = 0; s < SEQS; ++s) {
        test_snapshot one = gpu_seq_snapshot(cache, s);
        int32_t limit = limit_of(cache, s);
        all.bytes = realloc(all.bytes, all.size + one.size + sizeof limit);
        memcpy(all.bytes + all.size, one.bytes, one.size);
        memcpy(all.bytes + all.size + one.size, &limit, sizeof limit);
        all.size += one.size + sizeof limit;
        test_snapshot_free(&one);
    }
    return all;
}

#define EXPECT_REJECTED_GPU(cache, call, expected)                  \
    do {                                                            \
        test_snapshot before_ = whole_snapshot(cache);              \
        prime_message();                                            \
        ASSERT_STATUS(call, expected);                              \
        check_fresh_message(#call);                                 \
        test_snapshot after_ = whole_snapshot(cache);               \
        const int same_ = test_snapshot_equal(&before_, &after_);   \
        test_snapshot_free(&before_);                               \
        test_snapshot_free(&after_);                                \
        if (!same_) fail_msg("%s failed but changed the cache", #call); \
    } while (0)

static void test_sequence_errors_on_cuda(void **state) {
    (void)state;
    rkv_cache_params p = sequence_params(RKV_METHOD_RKV, RKV_DTYPE_BF16, RKV_DEVICE_CUDA);
    rkv_cache *cache = test_create(&p);
    ASSERT_OK(gpu_stream_append(cache, 0, 0, 0, 12, RKV_DTYPE_BF16, 0));
    ASSERT_OK(gpu_stream_append(cache, 1, 0, 0, 3, RKV_DTYPE_BF16, 0));
    EXPECT_REJECTED_GPU(cache, rkv_seq_truncate(cache, 0, ROLLBACK + 1, NULL), RKV_ERR_BAD_STATE);
    EXPECT_REJECTED_GPU(cache, rkv_seq_truncate(cache, 0, -1, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED_GPU(cache, rkv_seq_copy(cache, 0, 1, NULL), RKV_ERR_BAD_STATE);
    EXPECT_REJECTED_GPU(cache, rkv_seq_copy(cache, 0, 0, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED_GPU(cache, rkv_seq_copy(cache, 0, SEQS, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED_GPU(cache, rkv_seq_set_budget(cache, 2, BUDGET + 1), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED_GPU(cache, rkv_seq_set_budget(cache, 2, WINDOW), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED_GPU(cache, rkv_seq_set_budget(cache, 0, SMALL), RKV_ERR_BAD_STATE);
    rkv_cache_destroy(cache);
}

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sequence_errors_on_cuda),
        cmocka_unit_test(test_sequences_every_method),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
