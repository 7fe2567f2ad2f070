#include "golden.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --- manifest: a flat list of objects with scalar fields --------------------- */

static const char *find_key(const char *begin, const char *end, const char *key) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\":", key);
    const char *at = strstr(begin, quoted);
    return (at && at < end) ? at + strlen(quoted) : NULL;
}

static double number_field(const char *begin, const char *end, const char *key, double fallback) {
    const char *at = find_key(begin, end, key);
    return at ? strtod(at, NULL) : fallback;
}

static int bool_field(const char *begin, const char *end, const char *key) {
    const char *at = find_key(begin, end, key);
    while (at && *at == ' ') ++at;
    return at && strncmp(at, "true", 4) == 0;
}

static void string_field(const char *begin, const char *end, const char *key, char *out, size_t len) {
    const char *at = find_key(begin, end, key);
    assert_non_null(at);
    at = strchr(at, '"') + 1;
    size_t n = (size_t)(strchr(at, '"') - at);
    assert_true(n < len);
    memcpy(out, at, n);
    out[n] = 0;
}

static char *read_file(const char *path) {
    FILE *file = fopen(path, "rb");
    if (!file) fail_msg("cannot open %s", path);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    assert_int_equal(fread(text, 1, (size_t)size, file), (size_t)size);
    text[size] = 0;
    fclose(file);
    return text;
}

int golden_load_manifest(golden_case *cases, int max_cases) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/manifest.json", test_golden_dir()) >= (int)sizeof path)
        fail_msg("golden path too long");
    char *text = read_file(path);
    const char *cursor = strstr(text, "\"cases\"");
    assert_non_null(cursor);
    int count = 0;
    while ((cursor = strchr(cursor + 1, '{')) != NULL) {
        const char *end = strchr(cursor, '}');
        assert_true(count < max_cases);
        golden_case *c = &cases[count++];
        memset(c, 0, sizeof *c);
        string_field(cursor, end, "name", c->name, sizeof c->name);
        string_field(cursor, end, "method", c->method, sizeof c->method);
        c->num_kv_heads = (int)number_field(cursor, end, "num_kv_heads", 0);
        c->num_q_heads = (int)number_field(cursor, end, "num_q_heads", 0);
        c->head_dim = (int)number_field(cursor, end, "head_dim", 0);
        c->cache_len = (int)number_field(cursor, end, "cache_len", 0);
        c->budget = (int)number_field(cursor, end, "budget", 0);
        c->buffer = (int)number_field(cursor, end, "buffer", 0);
        c->window = (int)number_field(cursor, end, "window", 0);
        c->kernel = (int)number_field(cursor, end, "kernel", 0);
        c->sink = (int)number_field(cursor, end, "sink", 4);
        c->rounds = (int)number_field(cursor, end, "rounds", 0);
        c->lambda = number_field(cursor, end, "lambda", 0.1);
        c->compressed = bool_field(cursor, end, "compressed");
        c->multistep = bool_field(cursor, end, "multistep");
        cursor = end;
    }
    free(text);
    assert_true(count >= 20); /* the manifest lists 22 cases today */
    return count;
}

npy_array golden_load(const golden_case *c, const char *file) {
    char path[4096], error[512];
    if (snprintf(path, sizeof path, "%s/%s/%s", test_golden_dir(), c->name, file) >= (int)sizeof path)
        fail_msg("golden path too long");
    npy_array a;
    if (npy_load(path, &a, error, sizeof error) != 0) fail_msg("%s", error);
    return a;
}

rkv_method golden_method(const golden_case *c) {
    if (strcmp(c->method, "rkv") == 0) return RKV_METHOD_RKV;
    if (strcmp(c->method, "snapkv") == 0) return RKV_METHOD_SNAPKV;
    if (strcmp(c->method, "streamingllm") == 0) return RKV_METHOD_STREAMINGLLM;
    fail_msg("unknown method %s in case %s", c->method, c->name);
    return RKV_METHOD_FULL;
}

rkv_cache_params golden_params(const golden_case *c, rkv_mode mode, rkv_dtype dtype,
                               int32_t capacity) {
    rkv_cache_params p = test_params(1, 1, c->num_kv_heads, c->num_q_heads, c->head_dim,
                                     golden_method(c), c->budget,
                                     capacity > c->budget ? capacity - c->budget : 1, c->window);
    p.mode = mode;
    p.dtype = dtype;
    p.kernel = c->kernel;
    p.lambda = (float)c->lambda;
    p.threshold = 0.5f;
    p.sink = c->sink;
    return p;
}

float *golden_values_for(const npy_array *k) {
    float *v = malloc((size_t)k->count * sizeof *v);
    for (int64_t i = 0; i < k->count; ++i) v[i] = 2.0f * ((float *)k->data)[i] + 1.0f;
    return v;
}

/* --- checks ------------------------------------------------------------------- */

static void check_scores(rkv_cache *cache, const golden_case *c, rkv_score_kind kind,
                         const char *file) {
    npy_array golden = golden_load(c, file);
    const int32_t candidates = c->cache_len - c->window;
    /* The golden README documents [num_kv_heads, C]; the redundancy file holds head 0 only. */
    const int32_t heads = golden.ndim == 1 ? 1 : (int32_t)golden.shape[0];
    assert_int_equal(golden.shape[golden.ndim - 1], candidates);
    float *ours = malloc((size_t)candidates * sizeof *ours);
    for (int32_t h = 0; h < heads; ++h) {
        int32_t count = 0;
        ASSERT_OK(rkv_seq_scores(cache, 0, 0, h, kind, ours, candidates, &count));
        assert_int_equal(count, candidates);
        const float *g = (const float *)golden.data + (int64_t)h * candidates;
        double diff = 0, largest = 0;
        for (int32_t j = 0; j < candidates; ++j) {
            diff = fmax(diff, fabs((double)ours[j] - g[j]));
            largest = fmax(largest, fabs((double)g[j]));
        }
        const double error = largest > 0 ? diff / largest : diff;
        if (error > GOLDEN_SCORE_TOLERANCE)
            fail_msg("%s head %d %s: relative error %.3g > %.0e", c->name, h, file, error,
                     GOLDEN_SCORE_TOLERANCE);
    }
    free(ours);
    npy_free(&golden);
}

/* Every held slot carries the K and V rows of the position it claims. */
static void check_rows_follow_positions(const golden_backend *backend, rkv_cache *cache,
                                        const golden_case *c, const float *k, const float *v,
                                        int32_t total) {
    rkv_seq_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    ASSERT_OK(rkv_view(cache, 0, 0, &view));
    const size_t elements = (size_t)view.num_kv_heads * (size_t)view.stride_head;
    float *held_k = malloc(elements * sizeof(float)), *held_v = malloc(elements * sizeof(float));
    int32_t *positions = malloc((size_t)view.num_kv_heads * (size_t)view.positions_stride_head * 4);
    backend->read_view(cache, &view, held_k, held_v, positions);
    const size_t row = (size_t)c->head_dim * sizeof(float);
    for (int32_t h = 0; h < view.num_kv_heads; ++h)
        for (int32_t t = 0; t < view.length; ++t) {
            const int32_t position = positions[h * view.positions_stride_head + t];
            const int64_t at = h * view.stride_head + t * view.stride_token;
            assert_memory_equal(held_k + at, k + ((int64_t)h * total + position) * c->head_dim, row);
            assert_memory_equal(held_v + at, v + ((int64_t)h * total + position) * c->head_dim, row);
        }
    free(held_k);
    free(held_v);
    free(positions);
}

static int contains(const int32_t *set, int32_t n, int64_t value) {
    for (int32_t i = 0; i < n; ++i)
        if (set[i] == value) return 1;
    return 0;
}

/* Kept set of one head against the golden one, aware of ties in `scores`
 * (NULL: exact set): tokens strictly above the boundary score kept, strictly
 * below evicted, free choice among equals. */
static void check_kept_head(const golden_backend *backend, const golden_case *c, int32_t h,
                            const int32_t *ours, int32_t n, const int64_t *golden,
                            const float *scores) {
    const int32_t budget = c->budget, window = c->window, candidates = c->cache_len - window;
    assert_int_equal(n, budget);
    for (int32_t i = 0; i < window; ++i) /* the window is always kept, last */
        assert_int_equal(ours[budget - window + i], candidates + i);
    if (!scores) {
        for (int32_t i = 0; i < budget; ++i)
            if (!contains(ours, n, golden[i]))
                fail_msg("%s head %d (%s): golden keeps %lld, we evicted it", c->name, h,
                         backend->name, (long long)golden[i]);
        return;
    }
    float boundary = INFINITY, largest = 0;
    for (int32_t i = 0; i < budget - window; ++i) boundary = fminf(boundary, scores[golden[i]]);
    for (int32_t j = 0; j < candidates; ++j) largest = fmaxf(largest, fabsf(scores[j]));
    const float tie = 1e-6f * largest; /* golden ties are exact; leave room for rounding */
    for (int32_t j = 0; j < candidates; ++j) {
        const int kept = contains(ours, n, j);
        if (scores[j] > boundary + tie && !kept)
            fail_msg("%s head %d (%s): token %d scores above the boundary but was evicted",
                     c->name, h, backend->name, j);
        if (scores[j] < boundary - tie && kept)
            fail_msg("%s head %d (%s): token %d scores below the boundary but was kept", c->name,
                     h, backend->name, j);
    }
}

static rkv_cache *create_case(const golden_backend *backend, const golden_case *c,
                              int32_t capacity) {
    rkv_cache_params p = golden_params(c, RKV_MODE_REFERENCE, RKV_DTYPE_F32, capacity);
    p.device_type = backend->device_type;
    return test_create(&p);
}

void golden_run_single_step(const golden_backend *backend, const golden_case *c) {
    npy_array k = golden_load(c, "K.npy"), q = golden_load(c, "Q.npy");
    float *v = golden_values_for(&k);
    const int32_t n = c->cache_len, window = c->window;
    rkv_cache *cache = create_case(backend, c, n);
    backend->append_range(cache, c, k.data, v, n, 0, n - window, NULL, 0, 0);
    backend->append_range(cache, c, k.data, v, n, n - window, window, q.data, window, 0);
    int32_t *ours = malloc((size_t)n * sizeof *ours);

    if (!c->compressed) {
        /* Nothing to evict: every head keeps every token, in place. */
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        for (int32_t h = 0; h < c->num_kv_heads; ++h) {
            int32_t count = 0;
            ASSERT_OK(rkv_seq_positions(cache, 0, 0, h, ours, n, &count));
            assert_int_equal(count, n);
            for (int32_t i = 0; i < n; ++i) assert_int_equal(ours[i], i);
        }
        check_rows_follow_positions(backend, cache, c, k.data, v, n);
    } else {
        const rkv_method method = golden_method(c);
        if (method != RKV_METHOD_STREAMINGLLM)
            check_scores(cache, c, RKV_SCORE_IMPORTANCE, "importance.npy");
        if (method == RKV_METHOD_RKV) {
            check_scores(cache, c, RKV_SCORE_REDUNDANCY, "redundancy.npy");
            check_scores(cache, c, RKV_SCORE_FINAL, "final.npy");
        }
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        npy_array kept = golden_load(c, "kept.npy");
        npy_array final = {0};
        if (method == RKV_METHOD_SNAPKV) final = golden_load(c, "final.npy");
        for (int32_t h = 0; h < c->num_kv_heads; ++h) {
            int32_t count = 0;
            ASSERT_OK(rkv_seq_positions(cache, 0, 0, h, ours, n, &count));
            const int64_t *golden = (const int64_t *)kept.data + (int64_t)h * c->budget;
            const float *scores =
                final.data ? (const float *)final.data + (int64_t)h * (n - window) : NULL;
            check_kept_head(backend, c, h, ours, count, golden, scores);
            if (method == RKV_METHOD_STREAMINGLLM) /* exact, order included */
                for (int32_t i = 0; i < count; ++i) assert_int_equal(ours[i], golden[i]);
        }
        check_rows_follow_positions(backend, cache, c, k.data, v, n);
        npy_free(&kept);
        npy_free(&final);
    }
    free(ours);
    rkv_cache_destroy(cache);
    free(v);
    npy_free(&k);
    npy_free(&q);
}

static void compare_round(const golden_backend *backend, const golden_case *c, rkv_cache *cache,
                          const npy_array *rounds, int r, const char *how) {
    int32_t ours[4096];
    for (int32_t h = 0; h < c->num_kv_heads; ++h) {
        const int64_t *golden =
            (const int64_t *)rounds->data + ((int64_t)r * c->num_kv_heads + h) * c->budget;
        int32_t count = 0;
        ASSERT_OK(rkv_seq_positions(cache, 0, 0, h, ours, 4096, &count));
        assert_true(count >= c->budget);
        for (int32_t i = 0; i < c->budget; ++i)
            if (ours[i] != golden[i])
                fail_msg("%s (%s, %s) round %d head %d slot %d: position %d, golden %lld", c->name,
                         backend->name, how, r, h, i, ours[i], (long long)golden[i]);
    }
}

void golden_run_multistep(const golden_backend *backend, const golden_case *c) {
    npy_array k = golden_load(c, "K.npy"), q = golden_load(c, "Q.npy"),
              rounds = golden_load(c, "kept_rounds.npy");
    float *v = golden_values_for(&k);
    const int32_t total = c->budget + c->buffer * c->rounds, full = c->budget + c->buffer;
    assert_int_equal(k.shape[2], total);
    assert_int_equal(rounds.shape[0], c->rounds);

    /* Explicit rkv_compress after each buffer. */
    rkv_cache *cache = create_case(backend, c, full);
    backend->append_range(cache, c, k.data, v, total, 0, full, q.data, total, 0);
    for (int r = 0; r < c->rounds; ++r) {
        if (r > 0) {
            const int32_t first = c->budget + c->buffer * r;
            backend->append_range(cache, c, k.data, v, total, first, c->buffer, q.data, total, first);
        }
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        compare_round(backend, c, cache, &rounds, r, "explicit");
        check_rows_follow_positions(backend, cache, c, k.data, v, total);
    }
    rkv_cache_destroy(cache);

    /* Decode one token at a time: automatic compression fires when a token
     * arrives at a full cache; the state right after it is the golden round. */
    cache = create_case(backend, c, full);
    backend->append_range(cache, c, k.data, v, total, 0, full, q.data, total, 0);
    int r = 0;
    for (int32_t t = full; t < total; ++t) {
        backend->append_range(cache, c, k.data, v, total, t, 1, q.data, total, t);
        int32_t held = 0;
        ASSERT_OK(rkv_seq_length(cache, 0, 0, NULL, &held));
        if (held == c->budget + 1) compare_round(backend, c, cache, &rounds, r++, "automatic");
    }
    assert_int_equal(r, c->rounds - 1); /* the last round is never followed by a token */
    rkv_cache_destroy(cache);
    free(v);
    npy_free(&k);
    npy_free(&q);
    npy_free(&rounds);
}
