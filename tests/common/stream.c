#include "stream.h"

#include <stdlib.h>
#include <string.h>

static uint64_t token_seed(uint64_t variant, int64_t position, int32_t layer) {
    uint64_t x = 0x243f6a8885a308d3ull ^ (variant * 0x9e3779b97f4a7c15ull);
    x ^= (uint64_t)position * 0xbf58476d1ce4e5b9ull;
    x ^= (uint64_t)(layer + 1) * 0x94d049bb133111ebull;
    return x;
}

void stream_tokens(const rkv_cache_params *p, uint64_t variant, int64_t first, int32_t count, int32_t layer,
                   float *k, float *v, float *q) {
    const size_t kv = (size_t)p->num_kv_heads * p->head_dim, qn = (size_t)p->num_q_heads * p->head_dim;
    for (int32_t t = 0; t < count; ++t) {
        uint64_t rng = token_seed(variant, first + t, layer);
        test_fill_normal(k + t * kv, kv, &rng);
        test_fill_normal(v + t * kv, kv, &rng);
        test_fill_normal(q + t * qn, qn, &rng);
    }
}

rkv_status stream_append(rkv_cache *cache, int32_t seq, uint64_t variant, int64_t first, int32_t count,
                         uint32_t flags) {
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    const size_t kv = (size_t)count * p.num_kv_heads * p.head_dim, qn = (size_t)count * p.num_q_heads * p.head_dim;
    float *k = malloc(kv * 4), *v = malloc(kv * 4), *q = malloc(qn * 4);
    rkv_status status = RKV_OK;
    for (int32_t layer = 0; layer < p.num_layers && status == RKV_OK; ++layer) {
        stream_tokens(&p, variant, first, count, layer, k, v, q);
        status = test_append(cache, layer, seq, k, v, q, count, flags);
    }
    free(k);
    free(v);
    free(q);
    return status;
}

int64_t stream_position(const rkv_cache *cache, int32_t seq) {
    int64_t logical = -1;
    ASSERT_OK(rkv_seq_length(cache, seq, 0, &logical, NULL));
    return logical;
}

void assert_same_scores(const rkv_cache *a, int32_t seq_a, const rkv_cache *b, int32_t seq_b) {
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(a, &p));
    enum { MAX_SLOTS = 4096 };
    static float sa[MAX_SLOTS], sb[MAX_SLOTS];
    for (int32_t layer = 0; layer < p.num_layers; ++layer)
        for (int32_t head = 0; head < p.num_kv_heads; ++head)
            for (int kind = RKV_SCORE_IMPORTANCE; kind <= RKV_SCORE_FINAL; ++kind) {
                int32_t ca = -1, cb = -1;
                const rkv_status ra = rkv_seq_scores(a, seq_a, layer, head, (rkv_score_kind)kind, sa, MAX_SLOTS, &ca);
                const rkv_status rb = rkv_seq_scores(b, seq_b, layer, head, (rkv_score_kind)kind, sb, MAX_SLOTS, &cb);
                if (ra != rb)
                    fail_msg("scores of layer %d, head %d, kind %d: %s against %s", layer, head, kind,
                             rkv_status_name(ra), rkv_status_name(rb));
                if (ra != RKV_OK) continue;
                assert_int_equal(ca, cb);
                if (memcmp(sa, sb, (size_t)ca * sizeof(float)) != 0)
                    fail_msg("scores of layer %d, head %d, kind %d differ", layer, head, kind);
            }
}

void assert_same_sequence(const rkv_cache *a, int32_t seq_a, const rkv_cache *b, int32_t seq_b,
                          const char *what) {
    test_snapshot sa = test_take_seq_snapshot(a, seq_a), sb = test_take_seq_snapshot(b, seq_b);
    const int same = test_snapshot_equal(&sa, &sb);
    test_snapshot_free(&sa);
    test_snapshot_free(&sb);
    if (!same) fail_msg("%s: the sequences hold different tokens", what);
    rkv_stats stats_a, stats_b;
    memset(&stats_a, 0, sizeof stats_a);
    memset(&stats_b, 0, sizeof stats_b);
    stats_a.struct_size = stats_b.struct_size = sizeof stats_a;
    ASSERT_OK(rkv_cache_stats(a, seq_a, &stats_a));
    ASSERT_OK(rkv_cache_stats(b, seq_b, &stats_b));
    if (stats_a.tokens_appended != stats_b.tokens_appended || stats_a.tokens_held != stats_b.tokens_held ||
        stats_a.tokens_evicted != stats_b.tokens_evicted || stats_a.compressions != stats_b.compressions)
        fail_msg("%s: statistics differ (appended %llu/%llu, held %llu/%llu, evicted %llu/%llu, compressions "
                 "%llu/%llu)", what, (unsigned long long)stats_a.tokens_appended,
                 (unsigned long long)stats_b.tokens_appended, (unsigned long long)stats_a.tokens_held,
                 (unsigned long long)stats_b.tokens_held, (unsigned long long)stats_a.tokens_evicted,
                 (unsigned long long)stats_b.tokens_evicted, (unsigned long long)stats_a.compressions,
                 (unsigned long long)stats_b.compressions);
    assert_same_scores(a, seq_a, b, seq_b);
}

void stream_draw_batch(uint64_t *rng, int32_t seqs, int32_t entries, int32_t *ids) {
    int32_t pool[256];
    assert_true(seqs >= entries && seqs <= 256);
    for (int32_t s = 0; s < seqs; ++s) pool[s] = s;
    for (int32_t i = 0; i < entries; ++i) ids[i] = -1;
    const int32_t members = 1 + (int32_t)(test_rng_next(rng) % (uint64_t)entries);
    for (int32_t m = 0; m < members; ++m) {
        const int32_t pick = m + (int32_t)(test_rng_next(rng) % (uint64_t)(seqs - m));
        const int32_t seq = pool[pick];
        pool[pick] = pool[m];
        pool[m] = seq;
        int32_t entry;
        do entry = (int32_t)(test_rng_next(rng) % (uint64_t)entries); while (ids[entry] >= 0);
        ids[entry] = seq;
    }
}
