#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "half.h"

rkv_cache_params test_params(int32_t max_seqs, int32_t layers, int32_t kv_heads, int32_t q_heads,
                             int32_t head_dim, rkv_method method, int32_t budget, int32_t buffer,
                             int32_t window) {
    rkv_cache_params p;
    ASSERT_OK(rkv_params_default(&p, sizeof p));
    p.max_seqs = max_seqs;
    p.num_layers = layers;
    p.num_kv_heads = kv_heads;
    p.num_q_heads = q_heads;
    p.head_dim = head_dim;
    p.method = method;
    p.budget = budget;
    p.buffer = buffer;
    p.window = window;
    if (p.kernel > budget) p.kernel = 1;
    return p;
}

rkv_cache *test_create(const rkv_cache_params *params) {
    rkv_cache *cache = NULL;
    ASSERT_OK(rkv_cache_create(params, &cache));
    assert_non_null(cache);
    return cache;
}

uint64_t test_rng_next(uint64_t *state) {
    uint64_t x = (*state += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

float test_rng_uniform(uint64_t *state) {
    return (float)(test_rng_next(state) >> 40) * (1.0f / 16777216.0f);
}

float test_rng_normal(uint64_t *state) {
    float u1 = test_rng_uniform(state), u2 = test_rng_uniform(state);
    if (u1 < 1e-7f) u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

void test_fill_normal(float *out, size_t count, uint64_t *state) {
    for (size_t i = 0; i < count; ++i) out[i] = test_rng_normal(state);
}

rkv_tensor test_tensor(float *data, int32_t heads, int32_t head_dim) {
    rkv_tensor t;
    memset(&t, 0, sizeof t);
    t.data = data;
    t.dtype = RKV_DTYPE_F32;
    t.num_heads = heads;
    t.head_dim = head_dim;
    t.stride_seq = 0;
    t.stride_token = (int64_t)heads * head_dim;
    t.stride_head = head_dim;
    return t;
}

rkv_status test_append(rkv_cache *cache, int32_t layer, int32_t seq, const float *k,
                       const float *v, const float *q, int32_t tokens, uint32_t flags) {
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    rkv_append_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = layer;
    a.num_seqs = 1;
    a.seq_ids = &seq;
    a.num_tokens = &tokens;
    a.k = test_tensor((float *)k, p.num_kv_heads, p.head_dim);
    a.v = test_tensor((float *)v, p.num_kv_heads, p.head_dim);
    a.q = test_tensor((float *)q, p.num_q_heads, p.head_dim);
    a.flags = flags;
    return rkv_append(cache, &a, NULL);
}

rkv_status test_attend(rkv_cache *cache, int32_t layer, int32_t num_seqs, const int32_t *seq_ids,
                       const rkv_tensor *q, const rkv_tensor *out, float scale, void *stream) {
    rkv_attend_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = layer;
    a.num_seqs = num_seqs;
    a.seq_ids = seq_ids;
    if (q) a.q = *q;
    if (out) a.out = *out;
    a.scale = scale;
    return rkv_attend(cache, &a, stream);
}

void test_append_random(rkv_cache *cache, int32_t seq, int32_t tokens, uint64_t *rng) {
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    size_t kv = (size_t)tokens * p.num_kv_heads * p.head_dim;
    size_t qn = (size_t)tokens * p.num_q_heads * p.head_dim;
    float *k = malloc(kv * 4), *v = malloc(kv * 4), *q = malloc(qn * 4);
    for (int32_t layer = 0; layer < p.num_layers; ++layer) {
        test_fill_normal(k, kv, rng);
        test_fill_normal(v, kv, rng);
        test_fill_normal(q, qn, rng);
        ASSERT_OK(test_append(cache, layer, seq, k, v, q, tokens, 0));
    }
    free(k);
    free(v);
    free(q);
}

/* --- storage dtypes ------------------------------------------------------ */

size_t test_dtype_bytes(rkv_dtype dtype) {
    return dtype == RKV_DTYPE_F32 ? 4 : dtype == RKV_DTYPE_FP8_E4M3 ? 1 : 2;
}

/* E4M3 from its definition, by search: the value of a positive code, and the
 * code nearest to |x| (ties to the even code, saturating at 448 = code 0x7e). */
static double fp8_code_value(int code) {
    static double table[0x80];
    static int filled = 0;
    if (!filled) { /* tests run one thread per process here; a race would write the same values */
        for (int c = 0; c < 0x80; ++c) {
            const int e = (c >> 3) & 15, m = c & 7;
            table[c] = e == 0 ? ldexp(m / 8.0, -6) : ldexp(1.0 + m / 8.0, e - 7);
        }
        filled = 1;
    }
    return table[code & 0x7f];
}

static int fp8_nearest_code(float x) {
    if (isnan(x)) return 0x7f;
    const double a = fabs((double)x);
    /* the largest code whose value is <= a (values grow with the code), then
     * the nearer of it and the next one */
    int lo = 0, hi = 0x7e;
    while (lo < hi) {
        const int mid = (lo + hi + 1) / 2;
        if (fp8_code_value(mid) <= a) lo = mid;
        else hi = mid - 1;
    }
    int best = lo;
    if (lo < 0x7e) {
        const double below = a - fp8_code_value(lo), above = fp8_code_value(lo + 1) - a;
        if (above < below || (above == below && (lo & 1))) best = lo + 1;
    }
    return best | (signbit(x) ? 0x80 : 0);
}

float fp8_reference(float x) {
    const int code = fp8_nearest_code(x);
    if ((code & 0x7f) == 0x7f) return NAN;
    const double v = fp8_code_value(code & 0x7f);
    return (float)(code & 0x80 ? -v : v);
}

float fp8_reference_row(const float *x, size_t count, float *out) {
    double amax = 0;
    for (size_t i = 0; i < count; ++i)
        if (!isnan(x[i]) && fabs((double)x[i]) > amax) amax = fabs((double)x[i]);
    int e = 0;
    if (amax > 0) {
        e = -126; /* the smallest e with amax <= 448 * 2^e, within [-126, 126] */
        while (e < 126 && amax > ldexp(448.0, e)) ++e;
    }
    const float scale = (float)ldexp(1.0, e);
    for (size_t i = 0; i < count; ++i) out[i] = fp8_reference((float)((double)x[i] / scale)) * scale;
    return scale;
}

void convert_from_f32(const float *x, size_t count, rkv_dtype dtype, void *out) {
    for (size_t i = 0; i < count; ++i) {
        if (dtype == RKV_DTYPE_F32) ((float *)out)[i] = x[i];
        else if (dtype == RKV_DTYPE_BF16) ((uint16_t *)out)[i] = bf16_from_float(x[i]);
        else if (dtype == RKV_DTYPE_FP8_E4M3) ((uint8_t *)out)[i] = (uint8_t)fp8_nearest_code(x[i]);
        else ((uint16_t *)out)[i] = f16_from_float(x[i]);
    }
}

float element_as_float(const void *data, rkv_dtype dtype, size_t index) {
    if (dtype == RKV_DTYPE_F32) return ((const float *)data)[index];
    if (dtype == RKV_DTYPE_FP8_E4M3) {
        const int code = ((const uint8_t *)data)[index];
        if ((code & 0x7f) == 0x7f) return NAN;
        const double v = fp8_code_value(code & 0x7f);
        return (float)(code & 0x80 ? -v : v);
    }
    const uint16_t raw = ((const uint16_t *)data)[index];
    return dtype == RKV_DTYPE_F16 ? f16_to_float(raw) : bf16_to_float(raw);
}

float round_through(rkv_dtype dtype, float x) {
    unsigned char raw[4];
    convert_from_f32(&x, 1, dtype, raw);
    return element_as_float(raw, dtype, 0);
}

/* --- snapshots ----------------------------------------------------------- */

typedef struct buffer {
    unsigned char *data;
    size_t size, capacity;
} buffer;

static void put(buffer *b, const void *data, size_t size) {
    if (b->size + size > b->capacity) {
        b->capacity = (b->size + size) * 2 + 256;
        b->data = realloc(b->data, b->capacity);
        assert_non_null(b->data);
    }
    memcpy(b->data + b->size, data, size);
    b->size += size;
}

static void put_seq(buffer *b, const rkv_cache *cache, const rkv_cache_params *p, int32_t seq, int with_rollback) {
    size_t element = test_dtype_bytes(p->dtype);
    for (int32_t layer = 0; layer < p->num_layers; ++layer) {
        rkv_seq_view view;
        memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        ASSERT_OK(rkv_view(cache, seq, layer, &view));
        put(b, &view.length, sizeof view.length);
        put(b, &view.logical_length, sizeof view.logical_length);
        for (int32_t h = 0; h < view.num_kv_heads; ++h) {
            size_t row = (size_t)view.head_dim * element;
            for (int32_t t = 0; t < view.length; ++t) {
                size_t offset = (size_t)(h * view.stride_head + t * view.stride_token) * element;
                put(b, (const unsigned char *)view.k + offset, row);
                put(b, (const unsigned char *)view.v + offset, row);
                if (view.k_scale) {
                    put(b, view.k_scale + h * view.scale_stride_head + t, 4);
                    put(b, view.v_scale + h * view.scale_stride_head + t, 4);
                }
            }
            put(b, view.positions + h * view.positions_stride_head, (size_t)view.length * 4);
        }
    }
    int32_t budget = -1, rollback = -1;
    ASSERT_OK(rkv_seq_get_budget(cache, seq, &budget));
    ASSERT_OK(rkv_seq_rollback_limit(cache, seq, &rollback));
    put(b, &budget, sizeof budget);
    if (with_rollback) put(b, &rollback, sizeof rollback);
}

static test_snapshot finish(buffer *b) {
    test_snapshot s = {b->size, b->data};
    return s;
}

test_snapshot test_take_snapshot(const rkv_cache *cache) {
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    buffer b = {0};
    put(&b, &p, sizeof p);
    for (int32_t seq = 0; seq < p.max_seqs; ++seq) put_seq(&b, cache, &p, seq, 1);
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(cache, RKV_ALL, &stats));
    stats.compress_seconds = 0; /* time is not state */
    put(&b, &stats, sizeof stats);
    return finish(&b);
}

test_snapshot test_take_seq_snapshot(const rkv_cache *cache, int32_t seq) {
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    buffer b = {0};
    put_seq(&b, cache, &p, seq, 0);
    return finish(&b);
}

int test_snapshot_equal(const test_snapshot *a, const test_snapshot *b) {
    return a->size == b->size && memcmp(a->bytes, b->bytes, a->size) == 0;
}

void test_snapshot_free(test_snapshot *s) {
    free(s->bytes);
    s->bytes = NULL;
}

static int compare_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int32_t test_sorted_positions(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head,
                              int32_t *out, int32_t out_len) {
    int32_t count = 0;
    ASSERT_OK(rkv_seq_positions(cache, seq, layer, head, out, out_len, &count));
    qsort(out, (size_t)count, sizeof *out, compare_int32);
    return count;
}

const char *test_golden_dir(void) {
    const char *dir = getenv("RKV_GOLDEN_DIR");
    return dir && *dir ? dir : RKV_TEST_GOLDEN_DIR;
}
