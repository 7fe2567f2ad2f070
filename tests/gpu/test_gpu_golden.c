/* Golden conformance on CUDA: every case of ../shared/golden (the official R-KV
 * code's outputs) replayed through a CUDA cache in reference mode, with the
 * checks of tests/test_golden.c:
 *   - float32 storage (the cuBLASLt path): R-KV kept sets identical per head,
 *     importance/redundancy/final scores within 1e-5 of the largest; SnapKV
 *     tie-aware sets; StreamingLLM exact; multi-step kept_rounds exact, order
 *     included, with explicit compressions and with automatic ones during
 *     decode; every held slot carries the K and V of its position.
 *   - bf16 storage, both matrix-product paths: CUDA against the CPU backend on
 *     the same bf16 keys (the golden values belong to float32 keys), kept sets
 *     identical except near ties (TIE_TOLERANCE). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"
#include "npy.h"

#define MAX_CASES 64
#define SCORE_TOLERANCE 1e-5

typedef struct golden_case {
    char name[64];
    char method[16];
    int num_kv_heads, num_q_heads, head_dim;
    int cache_len, budget, buffer, window, kernel, sink, rounds;
    double lambda;
    int compressed, multistep;
} golden_case;

static golden_case cases[MAX_CASES];
static int num_cases;

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

static int load_manifest(void **state) {
    (void)state;
    char path[1024];
    if (snprintf(path, sizeof path, "%s/manifest.json", test_golden_dir()) >= (int)sizeof path)
        fail_msg("golden path too long");
    FILE *file = fopen(path, "rb");
    if (!file) fail_msg("cannot open %s", path);
    fseek(file, 0, SEEK_END);
    long size = ftell(file);
    fseek(file, 0, SEEK_SET);
    char *text = malloc((size_t)size + 1);
    assert_int_equal(fread(text, 1, (size_t)size, file), (size_t)size);
    text[size] = 0;
    fclose(file);
    const char *cursor = strstr(text, "\"cases\"");
    assert_non_null(cursor);
    num_cases = 0;
    while ((cursor = strchr(cursor + 1, '{')) != NULL) {
        const char *end = strchr(cursor, '}');
        golden_case *c = &cases[num_cases++];
        assert_true(num_cases <= MAX_CASES);
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
    assert_true(num_cases >= 20);
    return 0;
}

static npy_array load(const golden_case *c, const char *file) {
    char path[4096], error[512];
    if (snprintf(path, sizeof path, "%s/%s/%s", test_golden_dir(), c->name, file) >= (int)sizeof path)
        fail_msg("golden path too long");
    npy_array a;
    if (npy_load(path, &a, error, sizeof error) != 0) fail_msg("%s", error);
    return a;
}

static rkv_method method_of(const golden_case *c) {
    if (strcmp(c->method, "rkv") == 0) return RKV_METHOD_RKV;
    if (strcmp(c->method, "snapkv") == 0) return RKV_METHOD_SNAPKV;
    if (strcmp(c->method, "streamingllm") == 0) return RKV_METHOD_STREAMINGLLM;
    fail_msg("unknown method %s in case %s", c->method, c->name);
    return RKV_METHOD_FULL;
}

static rkv_cache_params case_params(const golden_case *c, rkv_dtype dtype, int32_t capacity) {
    rkv_cache_params p = test_params(1, 1, c->num_kv_heads, c->num_q_heads, c->head_dim, method_of(c), c->budget,
                                     capacity > c->budget ? capacity - c->budget : 1, c->window);
    p.mode = RKV_MODE_REFERENCE;
    p.dtype = dtype;
    p.kernel = c->kernel;
    p.lambda = (float)c->lambda;
    p.threshold = 0.5f;
    p.sink = c->sink;
    return p;
}

/* Tokens [first, first+count) of x laid out [heads, total, d] (the .npy layout),
 * packed as [count, heads, d] for gpu_test_append. */
static float *pack(const float *x, int32_t heads, int32_t total, int32_t d, int32_t first, int32_t count) {
    float *out = malloc(sizeof(float) * (size_t)count * heads * d);
    for (int32_t t = 0; t < count; ++t)
        for (int32_t h = 0; h < heads; ++h)
            memcpy(out + ((size_t)t * heads + h) * d, x + ((size_t)h * total + first + t) * d, sizeof(float) * (size_t)d);
    return out;
}

/* Append tokens [first, first+count) of K (V = 2K + 1) with queries from
 * q [q_heads, q_total, d] starting at q_first, or none. */
static void append_range(rkv_cache *cache, const golden_case *c, const float *k, const float *v, int32_t total,
                         int32_t first, int32_t count, const float *q, int32_t q_total, int32_t q_first) {
    int32_t seq = 0;
    float *pk = pack(k, c->num_kv_heads, total, c->head_dim, first, count);
    float *pv = pack(v, c->num_kv_heads, total, c->head_dim, first, count);
    float *pq = q ? pack(q, c->num_q_heads, q_total, c->head_dim, q_first, count) : NULL;
    ASSERT_OK(gpu_test_append(cache, 0, 1, &seq, &count, pk, pv, pq, RKV_DTYPE_F32, 0));
    free(pk);
    free(pv);
    free(pq);
}

static float *values_for(const npy_array *k) {
    float *v = malloc((size_t)k->count * sizeof *v);
    for (int64_t i = 0; i < k->count; ++i) v[i] = 2.0f * ((float *)k->data)[i] + 1.0f;
    return v;
}

static void check_scores(rkv_cache *cache, const golden_case *c, rkv_score_kind kind, const char *file) {
    npy_array golden = load(c, file);
    const int32_t candidates = c->cache_len - c->window;
    const int32_t heads = golden.ndim == 1 ? 1 : (int32_t)golden.shape[0];
    float *ours = malloc((size_t)candidates * sizeof *ours);
    for (int32_t h = 0; h < heads; ++h) {
        int32_t count = 0;
        ASSERT_OK(rkv_inspect_scores(cache, 0, 0, h, kind, ours, candidates, &count));
        assert_int_equal(count, candidates);
        double diff = 0, largest = 0;
        const float *g = (const float *)golden.data + (int64_t)h * candidates;
        for (int32_t j = 0; j < candidates; ++j) {
            diff = fmax(diff, fabs((double)ours[j] - g[j]));
            largest = fmax(largest, fabs((double)g[j]));
        }
        const double error = largest > 0 ? diff / largest : diff;
        if (error > SCORE_TOLERANCE)
            fail_msg("%s head %d %s: relative error %.3g > %.0e", c->name, h, file, error, SCORE_TOLERANCE);
    }
    free(ours);
    npy_free(&golden);
}

/* Every held slot carries the K and V rows of the position it claims. */
static void check_rows_follow_positions(rkv_cache *cache, const golden_case *c, const float *k, const float *v,
                                        int32_t total) {
    rkv_kv_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    ASSERT_OK(rkv_view(cache, 0, 0, &view));
    const size_t bytes = (size_t)view.num_kv_heads * (size_t)view.stride_head * sizeof(float);
    float *hk = malloc(bytes), *hv = malloc(bytes);
    int32_t *positions = malloc(sizeof(int32_t) * (size_t)view.num_kv_heads * (size_t)view.positions_stride_head);
    gpu_download(hk, view.k, bytes);
    gpu_download(hv, view.v, bytes);
    gpu_download(positions, view.positions, sizeof(int32_t) * (size_t)view.num_kv_heads * (size_t)view.positions_stride_head);
    const size_t row = (size_t)c->head_dim * sizeof(float);
    for (int32_t h = 0; h < view.num_kv_heads; ++h)
        for (int32_t t = 0; t < view.length; ++t) {
            const int32_t position = positions[h * view.positions_stride_head + t];
            assert_memory_equal(hk + h * view.stride_head + t * view.stride_token, k + ((int64_t)h * total + position) * c->head_dim, row);
            assert_memory_equal(hv + h * view.stride_head + t * view.stride_token, v + ((int64_t)h * total + position) * c->head_dim, row);
        }
    free(hk);
    free(hv);
    free(positions);
}

static int contains(const int32_t *set, int32_t n, int64_t value) {
    for (int32_t i = 0; i < n; ++i)
        if (set[i] == value) return 1;
    return 0;
}

static void check_kept_head(const golden_case *c, int32_t h, const int32_t *ours, int32_t n, const int64_t *golden,
                            const float *scores) {
    const int32_t budget = c->budget, window = c->window, candidates = c->cache_len - window;
    assert_int_equal(n, budget);
    for (int32_t i = 0; i < window; ++i) assert_int_equal(ours[budget - window + i], candidates + i);
    if (!scores) {
        for (int32_t i = 0; i < budget; ++i)
            if (!contains(ours, n, golden[i]))
                fail_msg("%s head %d: golden keeps %lld, CUDA evicted it", c->name, h, (long long)golden[i]);
        return;
    }
    float boundary = INFINITY, largest = 0;
    for (int32_t i = 0; i < budget - window; ++i) boundary = fminf(boundary, scores[golden[i]]);
    for (int32_t j = 0; j < candidates; ++j) largest = fmaxf(largest, fabsf(scores[j]));
    const float tie = 1e-6f * largest;
    for (int32_t j = 0; j < candidates; ++j) {
        const int kept = contains(ours, n, j);
        if (scores[j] > boundary + tie && !kept) fail_msg("%s head %d: token %d above the boundary evicted", c->name, h, j);
        if (scores[j] < boundary - tie && kept) fail_msg("%s head %d: token %d below the boundary kept", c->name, h, j);
    }
}

static void run_single_step(const golden_case *c) {
    npy_array k = load(c, "K.npy"), q = load(c, "Q.npy");
    float *v = values_for(&k);
    const int32_t n = c->cache_len, window = c->window;
    rkv_cache_params p = case_params(c, RKV_DTYPE_F32, n);
    p.device_type = RKV_DEVICE_CUDA;
    rkv_cache *cache = test_create(&p);
    append_range(cache, c, k.data, v, n, 0, n - window, NULL, 0, 0);
    append_range(cache, c, k.data, v, n, n - window, window, q.data, window, 0);
    if (!c->compressed) {
        int32_t before[4096], after[4096];
        const int32_t held = kept_positions(cache, 0, 0, 0, before, 4096);
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        assert_int_equal(kept_positions(cache, 0, 0, 0, after, 4096), held);
        assert_memory_equal(before, after, sizeof(int32_t) * (size_t)held);
    } else {
        const rkv_method method = method_of(c);
        if (method != RKV_METHOD_STREAMINGLLM) check_scores(cache, c, RKV_SCORE_IMPORTANCE, "importance.npy");
        if (method == RKV_METHOD_RKV) {
            check_scores(cache, c, RKV_SCORE_REDUNDANCY, "redundancy.npy");
            check_scores(cache, c, RKV_SCORE_FINAL, "final.npy");
        }
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        npy_array kept = load(c, "kept.npy");
        npy_array final = {0};
        if (method == RKV_METHOD_SNAPKV) final = load(c, "final.npy");
        int32_t *ours = malloc((size_t)n * sizeof *ours);
        for (int32_t h = 0; h < c->num_kv_heads; ++h) {
            const int32_t count = kept_positions(cache, 0, 0, h, ours, n);
            const int64_t *golden = (const int64_t *)kept.data + (int64_t)h * c->budget;
            check_kept_head(c, h, ours, count, golden, final.data ? (const float *)final.data + (int64_t)h * (n - window) : NULL);
            if (method == RKV_METHOD_STREAMINGLLM)
                for (int32_t i = 0; i < count; ++i) assert_int_equal(ours[i], golden[i]);
        }
        check_rows_follow_positions(cache, c, k.data, v, n);
        free(ours);
        npy_free(&kept);
        npy_free(&final);
    }
    rkv_cache_destroy(cache);
    free(v);
    npy_free(&k);
    npy_free(&q);
}

static void compare_round(const golden_case *c, rkv_cache *cache, const npy_array *rounds, int r, const char *how) {
    int32_t ours[4096];
    for (int32_t h = 0; h < c->num_kv_heads; ++h) {
        const int64_t *golden = (const int64_t *)rounds->data + ((int64_t)r * c->num_kv_heads + h) * c->budget;
        const int32_t count = kept_positions(cache, 0, 0, h, ours, 4096);
        assert_true(count >= c->budget);
        for (int32_t i = 0; i < c->budget; ++i)
            if (ours[i] != golden[i])
                fail_msg("%s (%s) round %d head %d slot %d: position %d, golden %lld", c->name, how, r, h, i, ours[i],
                         (long long)golden[i]);
    }
}

static void run_multistep(const golden_case *c) {
    npy_array k = load(c, "K.npy"), q = load(c, "Q.npy"), rounds = load(c, "kept_rounds.npy");
    float *v = values_for(&k);
    const int32_t total = c->budget + c->buffer * c->rounds;
    rkv_cache_params p = case_params(c, RKV_DTYPE_F32, c->budget + c->buffer);
    p.device_type = RKV_DEVICE_CUDA;
    rkv_cache *cache = test_create(&p);
    append_range(cache, c, k.data, v, total, 0, c->budget + c->buffer, q.data, total, 0);
    for (int r = 0; r < c->rounds; ++r) {
        if (r > 0) {
            const int32_t first = c->budget + c->buffer * r;
            append_range(cache, c, k.data, v, total, first, c->buffer, q.data, total, first);
        }
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        compare_round(c, cache, &rounds, r, "explicit");
        check_rows_follow_positions(cache, c, k.data, v, total);
    }
    rkv_cache_destroy(cache);

    cache = test_create(&p);
    append_range(cache, c, k.data, v, total, 0, c->budget + c->buffer, q.data, total, 0);
    int r = 0;
    for (int32_t t = c->budget + c->buffer; t < total; ++t) {
        append_range(cache, c, k.data, v, total, t, 1, q.data, total, t);
        int32_t held = 0;
        ASSERT_OK(rkv_seq_length(cache, 0, 0, NULL, &held));
        if (held == c->budget + 1) compare_round(c, cache, &rounds, r++, "automatic");
    }
    assert_int_equal(r, c->rounds - 1);
    rkv_cache_destroy(cache);
    free(v);
    npy_free(&k);
    npy_free(&q);
    npy_free(&rounds);
}

static void test_every_golden_case_f32(void **state) {
    (void)state;
    int single = 0, multi = 0;
    for (int i = 0; i < num_cases; ++i) {
        if (cases[i].multistep) {
            run_multistep(&cases[i]);
            ++multi;
        } else {
            run_single_step(&cases[i]);
            ++single;
        }
    }
    print_message("golden on CUDA (f32, cuBLASLt): %d single-step and %d multi-step cases conform\n", single, multi);
    assert_int_equal(single + multi, num_cases);
}

/* bf16 storage: the CUDA backend (each path) against the CPU on the same keys. */
static void test_golden_cases_bf16_against_cpu(void **state) {
    (void)state;
    kept_compare kc = {0};
    for (int path = RKV_MATMUL_AUTO; path <= RKV_MATMUL_CUBLASLT; ++path)
        for (int i = 0; i < num_cases; ++i) {
            const golden_case *c = &cases[i];
            if (c->multistep || !c->compressed) continue;
            npy_array k = load(c, "K.npy"), q = load(c, "Q.npy");
            float *v = values_for(&k);
            const int32_t n = c->cache_len;
            rkv_cache_params p = case_params(c, RKV_DTYPE_BF16, n);
            twin t = twin_create(&p);
            if (path != RKV_MATMUL_AUTO) ASSERT_OK(rkv_cache_set_matmul_path(t.gpu, (rkv_matmul_path)path));
            rkv_cache *both[2] = {t.cpu, t.gpu};
            for (int b = 0; b < 2; ++b) {
                append_range(both[b], c, k.data, v, n, 0, n - c->window, NULL, 0, 0);
                append_range(both[b], c, k.data, v, n, n - c->window, c->window, q.data, c->window, 0);
            }
            score_snapshot before = snapshot_scores(&t);
            ASSERT_OK(rkv_compress(t.cpu, 0, 0, NULL));
            ASSERT_OK(rkv_compress(t.gpu, 0, 0, NULL));
            char what[160];
            snprintf(what, sizeof what, "%.64s bf16 path %d", c->name, path);
            compare_kept(&t, &before, &kc, what);
            snapshot_free(&before);
            twin_destroy(&t);
            free(v);
            npy_free(&k);
            npy_free(&q);
        }
    print_message("golden cases in bf16, CUDA vs CPU: %d heads, %d identical, %d near ties, %d mismatches\n",
                  kc.heads, kc.identical, kc.near_ties, kc.mismatches);
    assert_int_equal(kc.mismatches, 0);
    assert_int_equal(kc.order_errors, 0);
}

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_golden_case_f32),
        cmocka_unit_test(test_golden_cases_bf16_against_cpu),
    };
    return cmocka_run_group_tests(tests, load_manifest, NULL);
}
