/* Batches on the CPU (the CUDA backend's graph replays: tests/gpu/test_gpu_batch.c):
 *   - decode steps through a batch whose members change (padding included),
 *     advanced on the host, hold and attend bit for bit as the same steps made
 *     with host ids, for every method, across compressions;
 *   - several batch steps accounted by one rkv_batch_advance;
 *   - padding entries leave their output rows alone;
 *   - a step past a sequence's capacity drops the token, and the advance that
 *     accounts for it faults the cache with CAPACITY naming the sequence;
 *   - bad input (ids out of range, repeated, too many; a batch of another
 *     cache; a mismatched num_seqs; host ids or the prompt flag with a batch;
 *     missing queries; small extents): a status, a message, the cache and the
 *     batch unchanged. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "stream.h"

void test_mark_faulted(rkv_cache *cache, const char *why);

enum { SEQS = 5, ENTRIES = 4, LAYERS = 2, KV = 2, QH = 4, DIM = 16, BUDGET = 12, BUFFER = 6, WINDOW = 3 };
enum { KV_ROW = KV * DIM, Q_ROW = QH * DIM };

/* One decode step's inputs and outputs, [ENTRIES] rows each. */
typedef struct step_rows {
    float k[ENTRIES * KV_ROW], v[ENTRIES * KV_ROW], q[ENTRIES * Q_ROW];
    float out[LAYERS][ENTRIES * Q_ROW];
} step_rows;

static rkv_cache_params batch_params(rkv_method method) {
    rkv_cache_params p = test_params(SEQS, LAYERS, KV, QH, DIM, method, BUDGET, BUFFER, WINDOW);
    p.kernel = 3;
    p.sink = 2;
    p.max_len = 64;
    return p;
}

static rkv_tensor rows_tensor(float *data, int32_t heads, int32_t rows) {
    rkv_tensor t = test_tensor(data, heads, DIM);
    t.stride_seq = (int64_t)heads * DIM;
    t.stride_token = 0;
    t.extent = (int64_t)rows * heads * DIM;
    return t;
}

static rkv_append_args batch_append_args(const rkv_batch *batch, int32_t layer, step_rows *r) {
    rkv_append_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = layer;
    a.num_seqs = ENTRIES;
    a.batch = batch;
    a.k = rows_tensor(r->k, KV, ENTRIES);
    a.v = rows_tensor(r->v, KV, ENTRIES);
    a.q = rows_tensor(r->q, QH, ENTRIES);
    return a;
}

static rkv_attend_args batch_attend_args(const rkv_batch *batch, int32_t layer, step_rows *r) {
    rkv_attend_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = layer;
    a.num_seqs = ENTRIES;
    a.batch = batch;
    a.q = rows_tensor(r->q, QH, ENTRIES);
    a.out = rows_tensor(r->out[layer], QH, ENTRIES);
    return a;
}

/* The next position of every sequence, before a step. */
static void positions_of(const rkv_cache *reference, int64_t *positions) {
    for (int32_t s = 0; s < SEQS; ++s) positions[s] = stream_position(reference, s);
}

/* The step's tokens at `layer` for each entry (padding rows get huge values,
 * which no sequence may see). */
static void fill_rows(const rkv_cache_params *p, const int64_t *positions, const int32_t *ids, int32_t layer,
                      step_rows *r) {
    for (int32_t i = 0; i < ENTRIES; ++i) {
        if (ids[i] < 0) {
            for (int e = 0; e < KV_ROW; ++e) r->k[i * KV_ROW + e] = r->v[i * KV_ROW + e] = 1e30f;
            for (int e = 0; e < Q_ROW; ++e) r->q[i * Q_ROW + e] = 1e30f;
            continue;
        }
        stream_tokens(p, 0, positions[ids[i]], 1, layer, r->k + i * KV_ROW, r->v + i * KV_ROW, r->q + i * Q_ROW);
    }
}

/* The same step with host ids: the non-padding entries, compacted. */
static void eager_step(rkv_cache *cache, const int32_t *ids, int32_t layer, const step_rows *r, float *out) {
    int32_t active[ENTRIES], n = 0;
    static float k[ENTRIES * KV_ROW], v[ENTRIES * KV_ROW], q[ENTRIES * Q_ROW];
    for (int32_t i = 0; i < ENTRIES; ++i) {
        if (ids[i] < 0) continue;
        memcpy(k + n * KV_ROW, r->k + i * KV_ROW, sizeof(float) * KV_ROW);
        memcpy(v + n * KV_ROW, r->v + i * KV_ROW, sizeof(float) * KV_ROW);
        memcpy(q + n * Q_ROW, r->q + i * Q_ROW, sizeof(float) * Q_ROW);
        active[n++] = ids[i];
    }
    if (n == 0) return;
    rkv_append_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = layer;
    a.num_seqs = n;
    a.seq_ids = active;
    a.k = rows_tensor(k, KV, n);
    a.v = rows_tensor(v, KV, n);
    a.q = rows_tensor(q, QH, n);
    ASSERT_OK(rkv_append(cache, &a, NULL));
    const rkv_tensor qt = rows_tensor(q, QH, n), ot = rows_tensor(out, QH, n);
    ASSERT_OK(test_attend(cache, layer, n, active, &qt, &ot, 0.0f, NULL));
}

static void compress_due(rkv_cache *cache) {
    int32_t due = 0;
    ASSERT_OK(rkv_compress_due(cache, RKV_ALL, RKV_ALL, &due));
    if (due) ASSERT_OK(rkv_compress(cache, RKV_ALL, RKV_ALL, NULL));
}

static void batch_against_eager(rkv_method method) {
    rkv_cache_params p = batch_params(method);
    rkv_cache *batched = test_create(&p), *eager = test_create(&p);
    rkv_batch *batch = NULL;
    ASSERT_OK(rkv_batch_create(batched, ENTRIES, &batch));
    for (int32_t s = 0; s < SEQS; ++s) { /* prompts of different lengths */
        ASSERT_OK(stream_append(batched, s, 0, 0, 2 + s, RKV_APPEND_PROMPT));
        ASSERT_OK(stream_append(eager, s, 0, 0, 2 + s, RKV_APPEND_PROMPT));
    }
    uint64_t rng = 99 + (uint64_t)method;
    static step_rows r;
    static float eager_out[ENTRIES * Q_ROW];
    int32_t ids[ENTRIES];
    for (int32_t step = 0; step < 60; ++step) {
        if (method == RKV_METHOD_FULL && step >= 40) break; /* max_len */
        if (step % 3 == 0) {
            stream_draw_batch(&rng, SEQS, ENTRIES, ids);
            ASSERT_OK(rkv_batch_set(batch, ids, ENTRIES, NULL));
        }
        compress_due(batched);
        compress_due(eager);
        int64_t positions[SEQS];
        positions_of(eager, positions);
        for (int32_t layer = 0; layer < LAYERS; ++layer) {
            fill_rows(&p, positions, ids, layer, &r);
            for (int e = 0; e < ENTRIES * Q_ROW; ++e) r.out[layer][e] = -7.0f; /* padding rows stay */
            rkv_append_args a = batch_append_args(batch, layer, &r);
            ASSERT_OK(rkv_append(batched, &a, NULL));
            rkv_attend_args at = batch_attend_args(batch, layer, &r);
            ASSERT_OK(rkv_attend(batched, &at, NULL));
            eager_step(eager, ids, layer, &r, eager_out);
            for (int32_t i = 0, n = 0; i < ENTRIES; ++i) {
                if (ids[i] < 0) {
                    for (int e = 0; e < Q_ROW; ++e) assert_true(r.out[layer][i * Q_ROW + e] == -7.0f);
                    continue;
                }
                if (memcmp(r.out[layer] + i * Q_ROW, eager_out + n * Q_ROW, sizeof(float) * Q_ROW) != 0)
                    fail_msg("method %d, step %d, layer %d: the attention of entry %d differs", (int)method, step,
                             layer, i);
                ++n;
            }
        }
        ASSERT_OK(rkv_batch_advance(batch, 1));
        for (int32_t s = 0; s < SEQS; ++s) assert_same_sequence(batched, s, eager, s, "batch against host ids");
    }
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(batched, RKV_ALL, &stats));
    if (method != RKV_METHOD_FULL) assert_true(stats.compressions > 0);
    rkv_batch_destroy(batch);
    rkv_cache_destroy(batched);
    rkv_cache_destroy(eager);
}

static void test_batch_every_method(void **state) {
    (void)state;
    for (int m = RKV_METHOD_RKV; m <= RKV_METHOD_FULL; ++m) batch_against_eager((rkv_method)m);
}

/* Three batch steps, one advance: as three steps with host ids. */
static void test_advance_many_steps(void **state) {
    (void)state;
    rkv_cache_params p = batch_params(RKV_METHOD_H2O);
    rkv_cache *batched = test_create(&p), *eager = test_create(&p);
    rkv_batch *batch = NULL;
    ASSERT_OK(rkv_batch_create(batched, ENTRIES, &batch));
    const int32_t ids[ENTRIES] = {3, -1, 0, -1};
    ASSERT_OK(rkv_batch_set(batch, ids, 3, NULL)); /* the 4th entry is padding anyway */
    static step_rows r;
    static float eager_out[ENTRIES * Q_ROW];
    for (int32_t step = 0; step < 3; ++step) {
        int64_t positions[SEQS];
        positions_of(eager, positions);
        for (int32_t layer = 0; layer < LAYERS; ++layer) {
            fill_rows(&p, positions, ids, layer, &r);
            eager_step(eager, ids, layer, &r, eager_out);
            rkv_append_args a = batch_append_args(batch, layer, &r);
            ASSERT_OK(rkv_append(batched, &a, NULL));
        }
    }
    int64_t logical = -1;
    ASSERT_OK(rkv_seq_length(batched, 3, 1, &logical, NULL));
    assert_int_equal(logical, 0); /* the host has not heard of the steps yet */
    ASSERT_OK(rkv_batch_advance(batch, 3));
    for (int32_t s = 0; s < SEQS; ++s) assert_same_sequence(batched, s, eager, s, "three steps, one advance");
    ASSERT_OK(rkv_batch_advance(batch, 0)); /* nothing */
    assert_same_sequence(batched, 0, eager, 0, "advance 0");
    rkv_batch_destroy(batch);
    rkv_cache_destroy(batched);
    rkv_cache_destroy(eager);
}

/* A full sequence that is not compressed drops the batch's token; the
 * advance learns it and faults the cache. */
static void test_advance_past_capacity_faults(void **state) {
    (void)state;
    rkv_cache_params p = batch_params(RKV_METHOD_RKV);
    rkv_cache *cache = test_create(&p);
    ASSERT_OK(stream_append(cache, 2, 0, 0, BUDGET + BUFFER, 0));
    rkv_batch *batch = NULL;
    ASSERT_OK(rkv_batch_create(cache, ENTRIES, &batch));
    const int32_t ids[ENTRIES] = {-1, 2, -1, -1};
    ASSERT_OK(rkv_batch_set(batch, ids, 2, NULL));
    static step_rows r;
    int64_t positions[SEQS];
    positions_of(cache, positions);
    for (int32_t layer = 0; layer < LAYERS; ++layer) {
        fill_rows(&p, positions, ids, layer, &r);
        rkv_append_args a = batch_append_args(batch, layer, &r);
        ASSERT_OK(rkv_append(cache, &a, NULL));
    }
    prime_message();
    ASSERT_STATUS(rkv_batch_advance(batch, 1), RKV_ERR_CAPACITY);
    check_fresh_message("rkv_batch_advance past the capacity");
    if (!strstr(rkv_error_message(), "sequence 2")) fail_msg("the message does not name the sequence: %s",
                                                             rkv_error_message());
    int32_t due = 0;
    ASSERT_STATUS(rkv_compress_due(cache, RKV_ALL, RKV_ALL, &due), RKV_ERR_FAULTED);
    ASSERT_STATUS(rkv_batch_set(batch, ids, 2, NULL), RKV_ERR_FAULTED);
    /* A batch may outlive its cache (only destroying it is allowed then). */
    rkv_cache_destroy(cache);
    rkv_batch_destroy(batch);
    rkv_batch_destroy(NULL);
}

static void test_batch_errors(void **state) {
    (void)state;
    rkv_cache_params p = batch_params(RKV_METHOD_RKV);
    rkv_cache *cache = test_create(&p), *other = test_create(&p);
    for (int32_t s = 0; s < SEQS; ++s) ASSERT_OK(stream_append(cache, s, 0, 0, 4, 0));
    rkv_batch *batch = NULL, *foreign = NULL;
    EXPECT_REJECTED(cache, rkv_batch_create(cache, 0, &batch), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_batch_create(cache, 65536, &batch), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_batch_create(cache, ENTRIES, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_batch_create(NULL, ENTRIES, &batch), RKV_ERR_INVALID_ARGUMENT);
    assert_null(batch);
    ASSERT_OK(rkv_batch_create(cache, ENTRIES, &batch));
    ASSERT_OK(rkv_batch_create(other, ENTRIES, &foreign));

    /* rkv_batch_set: bad ids fail before anything changes. */
    const int32_t good[ENTRIES] = {1, -1, 4, 0};
    ASSERT_OK(rkv_batch_set(batch, good, ENTRIES, NULL));
    const int32_t out_of_range[ENTRIES] = {1, SEQS, 4, 0}, negative[ENTRIES] = {1, -2, 4, 0};
    const int32_t repeated[ENTRIES] = {1, -1, 1, 0}, huge[ENTRIES] = {INT32_MAX, 1, 2, 3};
    EXPECT_REJECTED(cache, rkv_batch_set(batch, out_of_range, ENTRIES, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_batch_set(batch, negative, ENTRIES, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_batch_set(batch, huge, ENTRIES, NULL), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_batch_set(batch, repeated, ENTRIES, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_batch_set(batch, good, ENTRIES + 1, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_batch_set(batch, good, -1, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_batch_set(batch, NULL, 2, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_batch_set(NULL, good, ENTRIES, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_batch_advance(batch, -1), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_batch_advance(NULL, 1), RKV_ERR_INVALID_ARGUMENT);

    /* Append and attend with a batch. */
    static step_rows r;
    int64_t positions[SEQS];
    positions_of(cache, positions);
    fill_rows(&p, positions, good, 0, &r);
    rkv_append_args a = batch_append_args(batch, 0, &r);
    a.num_seqs = ENTRIES - 1;
    EXPECT_REJECTED(cache, rkv_append(cache, &a, NULL), RKV_ERR_INVALID_ARGUMENT);
    a = batch_append_args(batch, 0, &r);
    a.seq_ids = good;
    EXPECT_REJECTED(cache, rkv_append(cache, &a, NULL), RKV_ERR_INVALID_ARGUMENT);
    a = batch_append_args(batch, 0, &r);
    const int32_t two[ENTRIES] = {2, 2, 2, 2};
    a.num_tokens = two;
    EXPECT_REJECTED(cache, rkv_append(cache, &a, NULL), RKV_ERR_INVALID_ARGUMENT);
    a = batch_append_args(batch, 0, &r);
    a.flags = RKV_APPEND_PROMPT;
    EXPECT_REJECTED(cache, rkv_append(cache, &a, NULL), RKV_ERR_INVALID_ARGUMENT);
    a = batch_append_args(batch, 0, &r);
    a.q.data = NULL;
    EXPECT_REJECTED(cache, rkv_append(cache, &a, NULL), RKV_ERR_MISSING_QUERIES);
    a = batch_append_args(foreign, 0, &r);
    EXPECT_REJECTED(cache, rkv_append(cache, &a, NULL), RKV_ERR_INVALID_ARGUMENT);
    a = batch_append_args(batch, 0, &r);
    a.k.extent = (ENTRIES - 1) * KV_ROW + KV_ROW - 1; /* one element short (of a padding row, too) */
    EXPECT_REJECTED(cache, rkv_append(cache, &a, NULL), RKV_ERR_CAPACITY);
    a = batch_append_args(batch, LAYERS, &r);
    EXPECT_REJECTED(cache, rkv_append(cache, &a, NULL), RKV_ERR_OUT_OF_RANGE);
    rkv_attend_args at = batch_attend_args(batch, 0, &r);
    at.num_seqs = ENTRIES + 1;
    EXPECT_REJECTED(cache, rkv_attend(cache, &at, NULL), RKV_ERR_INVALID_ARGUMENT);
    at = batch_attend_args(batch, 0, &r);
    at.seq_ids = good;
    EXPECT_REJECTED(cache, rkv_attend(cache, &at, NULL), RKV_ERR_INVALID_ARGUMENT);
    at = batch_attend_args(foreign, 0, &r);
    EXPECT_REJECTED(cache, rkv_attend(cache, &at, NULL), RKV_ERR_INVALID_ARGUMENT);
    at = batch_attend_args(batch, 0, &r);
    at.out.extent = ENTRIES * Q_ROW - 1;
    EXPECT_REJECTED(cache, rkv_attend(cache, &at, NULL), RKV_ERR_CAPACITY);

    /* The rejected sets left the batch as set: a step with it equals one with `good`. */
    rkv_cache *eager = test_create(&p);
    for (int32_t s = 0; s < SEQS; ++s) ASSERT_OK(stream_append(eager, s, 0, 0, 4, 0));
    static float eager_out[ENTRIES * Q_ROW];
    positions_of(eager, positions);
    for (int32_t layer = 0; layer < LAYERS; ++layer) {
        fill_rows(&p, positions, good, layer, &r);
        a = batch_append_args(batch, layer, &r);
        ASSERT_OK(rkv_append(cache, &a, NULL));
        eager_step(eager, good, layer, &r, eager_out);
    }
    ASSERT_OK(rkv_batch_advance(batch, 1));
    for (int32_t s = 0; s < SEQS; ++s) assert_same_sequence(cache, s, eager, s, "after rejected sets");

    /* A faulted cache refuses its batches. */
    test_mark_faulted(cache, "a test fault");
    prime_message();
    ASSERT_STATUS(rkv_batch_advance(batch, 1), RKV_ERR_FAULTED);
    check_fresh_message("rkv_batch_advance on a faulted cache");
    rkv_batch *late = NULL;
    ASSERT_STATUS(rkv_batch_create(cache, 2, &late), RKV_ERR_FAULTED);
    rkv_batch_destroy(batch);
    rkv_batch_destroy(foreign);
    rkv_cache_destroy(cache);
    rkv_cache_destroy(other);
    rkv_cache_destroy(eager);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_every_method),
        cmocka_unit_test(test_advance_many_steps),
        cmocka_unit_test(test_advance_past_capacity_faults),
        cmocka_unit_test(test_batch_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
