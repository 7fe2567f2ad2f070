/* H2O against an independent float64 computation of accumulated attention:
 * every query, on arrival, attends causally over the tokens held at that moment
 * (group-pooled raw logits, softmax), and each token's probability is summed
 * into its score; a compression keeps the top budget - window candidates by
 * that score (ties: the more recent) plus the window, and scores survive it.
 * The simulation below shares no code with the library. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { KV_HEADS = 2, Q_HEADS = 4, GROUP = Q_HEADS / KV_HEADS, DIM = 16 };
enum { BUDGET = 16, BUFFER = 8, WINDOW = 4, CAPACITY = BUDGET + BUFFER, PREFILL = 10, STEPS = 120 };

typedef struct head_model {
    int32_t count;
    int32_t position[CAPACITY];
    double score[CAPACITY];
    double key[CAPACITY][DIM];
} head_model;

static void model_compress(head_model *m) {
    const int32_t candidates = m->count - WINDOW;
    int32_t chosen[CAPACITY] = {0};
    for (int32_t pick = 0; pick < BUDGET - WINDOW; ++pick) { /* selection by repeated max */
        int32_t best = -1;
        for (int32_t j = 0; j < candidates; ++j)
            if (!chosen[j] && (best < 0 || m->score[j] > m->score[best] ||
                               (m->score[j] == m->score[best] && j > best)))
                best = j;
        chosen[best] = 1;
    }
    for (int32_t j = candidates; j < m->count; ++j) chosen[j] = 1;
    int32_t out = 0;
    for (int32_t j = 0; j < m->count; ++j) {
        if (!chosen[j]) continue;
        m->position[out] = m->position[j];
        m->score[out] = m->score[j];
        memcpy(m->key[out], m->key[j], sizeof m->key[j]);
        ++out;
    }
    m->count = out;
}

/* One token arrives: compress if full, store its key, accumulate its query. */
static void model_append(head_model *m, int32_t position, const float *key, const float *queries) {
    if (m->count == CAPACITY) model_compress(m);
    m->position[m->count] = position;
    m->score[m->count] = 0;
    for (int e = 0; e < DIM; ++e) m->key[m->count][e] = key[e];
    m->count++;
    double logits[CAPACITY], max_logit = -INFINITY, sum = 0;
    for (int32_t j = 0; j < m->count; ++j) {
        logits[j] = -INFINITY;
        for (int g = 0; g < GROUP; ++g) {
            double dot = 0;
            for (int e = 0; e < DIM; ++e) dot += (double)queries[g * DIM + e] * m->key[j][e];
            logits[j] = fmax(logits[j], dot / sqrt((double)DIM));
        }
        max_logit = fmax(max_logit, logits[j]);
    }
    for (int32_t j = 0; j < m->count; ++j) sum += exp(logits[j] - max_logit);
    for (int32_t j = 0; j < m->count; ++j) m->score[j] += exp(logits[j] - max_logit) / sum;
}

static void compare(const rkv_cache *cache, head_model *model, int32_t step) {
    for (int32_t h = 0; h < KV_HEADS; ++h) {
        int32_t positions[CAPACITY], count = 0;
        ASSERT_OK(rkv_seq_positions(cache, 0, 0, h, positions, CAPACITY, &count));
        assert_int_equal(count, model[h].count);
        for (int32_t i = 0; i < count; ++i)
            if (positions[i] != model[h].position[i])
                fail_msg("step %d head %d slot %d: library holds %d, model %d", step, h, i,
                         positions[i], model[h].position[i]);
        if (count <= WINDOW) continue;
        float scores[CAPACITY];
        int32_t candidates = 0;
        ASSERT_OK(rkv_seq_scores(cache, 0, 0, h, RKV_SCORE_FINAL, scores, CAPACITY, &candidates));
        assert_int_equal(candidates, count - WINDOW);
        for (int32_t j = 0; j < candidates; ++j)
            if (fabs(scores[j] - model[h].score[j]) > 1e-5 * fmax(1.0, model[h].score[j]))
                fail_msg("step %d head %d slot %d: accumulated %.7g, model %.7g", step, h, j,
                         scores[j], model[h].score[j]);
    }
}

static void test_h2o_matches_independent_accumulation(void **state) {
    (void)state;
    rkv_cache_params p = test_params(1, 1, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_H2O, BUDGET, BUFFER, WINDOW);
    rkv_cache *cache = test_create(&p);
    head_model model[KV_HEADS];
    memset(model, 0, sizeof model);
    uint64_t rng = 2024;
    const int32_t total = PREFILL + STEPS;
    float *k = malloc(sizeof(float) * total * KV_HEADS * DIM);
    float *v = malloc(sizeof(float) * total * KV_HEADS * DIM);
    float *q = malloc(sizeof(float) * total * Q_HEADS * DIM);
    test_fill_normal(k, (size_t)total * KV_HEADS * DIM, &rng);
    test_fill_normal(v, (size_t)total * KV_HEADS * DIM, &rng);
    test_fill_normal(q, (size_t)total * Q_HEADS * DIM, &rng);
    /* A prompt in one call: each of its queries sees only the tokens before it. */
    ASSERT_OK(test_append(cache, 0, 0, k, v, q, PREFILL, RKV_APPEND_PROMPT));
    for (int32_t t = 0; t < PREFILL; ++t)
        for (int32_t h = 0; h < KV_HEADS; ++h)
            model_append(&model[h], t, k + (t * KV_HEADS + h) * DIM, q + (t * Q_HEADS + h * GROUP) * DIM);
    compare(cache, model, 0);
    for (int32_t t = PREFILL; t < total; ++t) {
        ASSERT_OK(test_append(cache, 0, 0, k + t * KV_HEADS * DIM, v + t * KV_HEADS * DIM,
                              q + t * Q_HEADS * DIM, 1, 0));
        for (int32_t h = 0; h < KV_HEADS; ++h)
            model_append(&model[h], t, k + (t * KV_HEADS + h) * DIM, q + (t * Q_HEADS + h * GROUP) * DIM);
        compare(cache, model, t);
    }
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(cache, 0, &stats));
    assert_true(stats.compressions >= 10); /* the schedule really ran */
    rkv_cache_destroy(cache);
    free(k);
    free(v);
    free(q);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_h2o_matches_independent_accumulation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
