/* rkv_attend on CUDA against a float64 reference computed from the stored
 * values (the views; FP8: fp8 * scale), for every storage dtype, head dim (64,
 * 128, 256 through the split kernels, 32 through the generic one), group size
 * (1 to 20 query heads per KV head: one pass of 1, 2, 4 or 8 heads, or
 * several; the tensor-core kernel's 8 columns with P's pieces packed (up to
 * 4 heads) or not, in one to three passes), every held
 * length 1 .. capacity at once (sequence s holds s + 1 tokens), and every
 * plan: the automatic one, and forced splits (1, 2, 3, 5, 7, 16, 64: most
 * split the lengths unevenly, many leave splits empty) of each kernel (wide,
 * narrow, tensor cores); q and out in f32, f16 and bf16; magnitudes that need
 * the tensor-core kernel's scaling. Also long sequences split in up to 64 blocks, the
 * copy pipelines under load (test_pipelines_under_load), and the CPU
 * backend's rkv_attend on the same K/V (the CPU oracle) within the same bound.
 * Output buffers are poisoned with NaN: every element must be written; so are,
 * in test_unwritten_slots_hold_nan, the cache's slots before the append: a
 * kernel that reads rows past a sequence's end (the tensor-core kernel's
 * copies take whole 64-row stages) must not let them reach the output. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"

enum { KV = 2 };

typedef struct plan {
    int32_t splits;
    rkv_attend_variant variant;
} plan;

static const plan kPlans[] = {{0, RKV_ATTEND_AUTO},    {1, RKV_ATTEND_WIDE},    {2, RKV_ATTEND_WIDE},
                              {3, RKV_ATTEND_WIDE},    {7, RKV_ATTEND_WIDE},    {16, RKV_ATTEND_WIDE},
                              {64, RKV_ATTEND_WIDE},   {0, RKV_ATTEND_NARROW},  {1, RKV_ATTEND_NARROW},
                              {3, RKV_ATTEND_NARROW},  {13, RKV_ATTEND_NARROW}, {0, RKV_ATTEND_TENSOR},
                              {1, RKV_ATTEND_TENSOR},  {2, RKV_ATTEND_TENSOR},  {5, RKV_ATTEND_TENSOR},
                              {16, RKV_ATTEND_TENSOR}, {64, RKV_ATTEND_TENSOR}};
enum { PLANS = sizeof kPlans / sizeof kPlans[0] };

static int split_kernel(int32_t dim) { return dim == 64 || dim == 128 || dim == 256; }
static int plan_applies(const plan *pl, rkv_dtype storage, int32_t dim, int32_t groups) {
    if (pl->variant == RKV_ATTEND_NARROW && !(split_kernel(dim) && groups <= 4)) return 0;
    if (pl->variant == RKV_ATTEND_TENSOR && !(split_kernel(dim) && storage != RKV_DTYPE_F32)) return 0;
    if (pl->splits > 1 && !split_kernel(dim)) return 0;
    return 1;
}

static double worst_error;  /* largest relative error seen, for the summary */
/* test_magnitudes: scales of the keys and queries, and values whose rows span 2^-8 .. 2^8 */
static double key_magnitude = 1, query_magnitude = 1;
static int value_spread;
static int poison_slots; /* NaN in every K/V byte of layer 0 before the append */
static int attend_calls;

/* The stored K or V value (FP8: fp8 * scale) of (seq, head, token, e) from a
 * downloaded layer view. */
typedef struct host_layer {
    rkv_layer_view view;
    unsigned char *k, *v;  /* [seqs, heads, capacity, dim] storage bytes */
    float *k_scale, *v_scale;
    int32_t *lengths;
} host_layer;

static host_layer download_layer(rkv_cache *cache, int32_t seqs) {
    host_layer h;
    memset(&h, 0, sizeof h);
    h.view.struct_size = sizeof h.view;
    ASSERT_OK(rkv_view_layer(cache, 0, &h.view));
    const size_t elements = (size_t)seqs * (size_t)h.view.stride_seq, bytes = elements * dtype_bytes(h.view.dtype);
    h.k = malloc(bytes);
    h.v = malloc(bytes);
    gpu_download(h.k, h.view.k, bytes);
    gpu_download(h.v, h.view.v, bytes);
    h.lengths = malloc(sizeof(int32_t) * (size_t)seqs);
    gpu_download(h.lengths, h.view.lengths, sizeof(int32_t) * (size_t)seqs);
    if (h.view.k_scale) {
        const size_t scales = (size_t)seqs * (size_t)h.view.scale_stride_seq * 4;
        h.k_scale = malloc(scales);
        h.v_scale = malloc(scales);
        gpu_download(h.k_scale, h.view.k_scale, scales);
        gpu_download(h.v_scale, h.view.v_scale, scales);
    }
    return h;
}

static void free_layer(host_layer *h) {
    free(h->k);
    free(h->v);
    free(h->k_scale);
    free(h->v_scale);
    free(h->lengths);
}

static double stored(const host_layer *h, int which, int32_t seq, int32_t head, int32_t t, int32_t e) {
    const rkv_layer_view *w = &h->view;
    const size_t index = (size_t)(seq * w->stride_seq + head * w->stride_head + t * w->stride_token + e);
    double x = element_as_float(which ? h->v : h->k, w->dtype, index);
    if (h->k_scale) x *= (which ? h->v_scale : h->k_scale)[seq * w->scale_stride_seq + head * w->scale_stride_head + t];
    return x;
}

/* out[i, qh, e] in float64 for entry i attending sequence seq_ids[i]. */
static double *reference(const host_layer *h, const void *q, rkv_dtype io, int64_t stride_seq, int32_t entries,
                         const int32_t *seq_ids, int32_t q_heads, int32_t dim) {
    const int32_t groups = q_heads / KV;
    double *out = calloc((size_t)entries * q_heads * dim, sizeof(double));
    double *weights = NULL;
    for (int32_t i = 0; i < entries; ++i) {
        const int32_t seq = seq_ids[i], n = h->lengths[seq];
        weights = realloc(weights, sizeof(double) * (size_t)(n > 0 ? n : 1));
        for (int32_t qh = 0; qh < q_heads; ++qh) {
            const int32_t kv = qh / groups;
            double max_logit = -INFINITY, sum = 0;
            for (int32_t t = 0; t < n; ++t) {
                double dot = 0;
                for (int32_t e = 0; e < dim; ++e)
                    dot += (double)element_as_float(q, io, (size_t)(i * stride_seq + qh * dim + e)) *
                           stored(h, 0, seq, kv, t, e);
                weights[t] = dot / sqrt((double)dim);
                max_logit = fmax(max_logit, weights[t]);
            }
            for (int32_t t = 0; t < n; ++t) sum += (weights[t] = exp(weights[t] - max_logit));
            for (int32_t e = 0; e < dim; ++e) {
                double acc = 0;
                for (int32_t t = 0; t < n; ++t) acc += weights[t] / sum * stored(h, 1, seq, kv, t, e);
                out[((size_t)i * q_heads + qh) * dim + e] = acc;
            }
        }
    }
    free(weights);
    return out;
}

/* sqrt(sum (got - want)^2 / sum want^2) over the output, NaN (unwritten) fails. */
static double relative_error(const void *got, rkv_dtype io, int64_t stride_seq, const double *want, int32_t entries,
                             int32_t q_heads, int32_t dim, const char *what) {
    double error2 = 0, norm2 = 0;
    for (int32_t i = 0; i < entries; ++i)
        for (int32_t qh = 0; qh < q_heads; ++qh)
            for (int32_t e = 0; e < dim; ++e) {
                const double x = element_as_float(got, io, (size_t)(i * stride_seq + qh * dim + e));
                const double y = want[((size_t)i * q_heads + qh) * dim + e];
                if (isnan(x)) fail_msg("%s: entry %d head %d dim %d not written (NaN)", what, i, qh, e);
                error2 += (x - y) * (x - y);
                norm2 += y * y;
            }
    return sqrt(error2 / fmax(norm2, 1e-300));
}

/* One cache of `seqs` sequences holding `length(s)` tokens; every plan attends
 * all sequences at once (in reversed order) and is checked against float64. */
static void run_config(rkv_dtype storage, int32_t dim, int32_t groups, int32_t seqs, int32_t max_len,
                       int32_t (*length)(int32_t seq, int32_t max_len), rkv_dtype io, int with_cpu) {
    const int32_t q_heads = KV * groups;
    char what[160];
    rkv_cache_params p = test_params(seqs, 1, KV, q_heads, dim, RKV_METHOD_FULL, 16, 8, 4);
    p.dtype = storage;
    p.max_len = max_len;
    p.device_type = RKV_DEVICE_CUDA;
    twin t;
    if (with_cpu) {
        t = twin_create(&p);
    } else {
        t.gpu = test_create(&p);
        t.cpu = NULL;
        t.params = p;
    }
    uint64_t rng = 1000 + (uint64_t)storage * 7919 + (uint64_t)dim * 31 + (uint64_t)groups + (uint64_t)max_len;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)seqs), *tokens = malloc(sizeof(int32_t) * (size_t)seqs);
    int64_t total = 0;
    for (int32_t s = 0; s < seqs; ++s) {
        ids[s] = s;
        tokens[s] = length(s, max_len);
        total += tokens[s];
    }
    const size_t kv = (size_t)total * KV * dim;
    float *k = malloc(kv * 4), *v = malloc(kv * 4);
    for (size_t i = 0; i < kv; ++i) { /* rows of different ranges: the FP8 scales differ per row */
        const size_t row = i / (size_t)dim;
        k[i] = test_rng_normal(&rng) * (1.0f + (float)(row % 5)) * (float)key_magnitude;
        v[i] = test_rng_normal(&rng) * (value_spread ? ldexpf(1.0f, (int)(row % 17) - 8) : 1.0f);
    }
    if (poison_slots) {
        rkv_layer_view view;
        memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        ASSERT_OK(rkv_view_layer(t.gpu, 0, &view));
        const size_t bytes = (size_t)seqs * (size_t)view.stride_seq * dtype_bytes(view.dtype);
        gpu_fill(view.k, 0xff, bytes); /* NaN in bf16, f16 and E4M3 */
        gpu_fill(view.v, 0xff, bytes);
    }
    if (with_cpu) twin_append(&t, 0, seqs, ids, tokens, k, v, NULL, RKV_DTYPE_F32, 0, RKV_OK);
    else ASSERT_OK(gpu_test_append(t.gpu, 0, seqs, ids, tokens, k, v, NULL, RKV_DTYPE_F32, 0));
    free(k);
    free(v);

    /* q and out [entry, q_heads, dim] with a padded entry stride, in dtype io */
    const int64_t stride_seq = (int64_t)q_heads * dim + 8;
    const size_t count = (size_t)seqs * (size_t)stride_seq, bytes = count * dtype_bytes(io);
    float *qf = malloc(count * 4);
    for (size_t i = 0; i < count; ++i) qf[i] = 1.5f * test_rng_normal(&rng) * (float)query_magnitude;
    void *qh = malloc(bytes), *oh = malloc(bytes), *poison = malloc(bytes);
    convert_from_f32(qf, count, io, qh);
    memset(poison, 0xff, bytes); /* NaN in every dtype */
    void *qd = gpu_upload(qh, bytes), *od = gpu_alloc(bytes);
    int32_t *entry_seq = malloc(sizeof(int32_t) * (size_t)seqs);
    for (int32_t i = 0; i < seqs; ++i) entry_seq[i] = seqs - 1 - i;
    const rkv_tensor qt = {qd, io, q_heads, dim, stride_seq, 0, dim, 0};
    const rkv_tensor ot = {od, io, q_heads, dim, stride_seq, 0, dim, 0};

    host_layer layer = download_layer(t.gpu, seqs);
    for (int32_t s = 0; s < seqs; ++s) assert_int_equal(layer.lengths[s], tokens[s]);
    double *want = reference(&layer, qh, io, stride_seq, seqs, entry_seq, q_heads, dim);
    const double tolerance = io == RKV_DTYPE_F32 ? 2e-5 : io == RKV_DTYPE_F16 ? 2e-3 : 1e-2;
    for (int pi = 0; pi < PLANS; ++pi) {
        const plan *pl = &kPlans[pi];
        if (!plan_applies(pl, storage, dim, groups)) continue;
        snprintf(what, sizeof what, "storage %d io %d d=%d groups %d lengths up to %d, splits %d variant %d",
                 storage, io, dim, groups, max_len, pl->splits, pl->variant);
        ASSERT_OK(rkv_cache_set_attend_plan(t.gpu, pl->splits, pl->variant));
        gpu_free(od);
        od = gpu_upload(poison, bytes);
        rkv_tensor o = ot;
        o.data = od;
        ASSERT_OK(test_attend(t.gpu, 0, seqs, entry_seq, &qt, &o, 0.0f, NULL));
        gpu_download(oh, od, bytes);
        const double error = relative_error(oh, io, stride_seq, want, seqs, q_heads, dim, what);
        if (error > worst_error && io == RKV_DTYPE_F32) worst_error = error;
        if (error > tolerance) fail_msg("%s: relative error %.3g > %.1g", what, error, tolerance);
        ++attend_calls;
    }
    if (with_cpu) { /* the CPU oracle on the same stored values */
        rkv_tensor qc = qt, oc = ot;
        qc.data = qh;
        oc.data = oh;
        memcpy(oh, poison, bytes);
        ASSERT_OK(test_attend(t.cpu, 0, seqs, entry_seq, &qc, &oc, 0.0f, NULL));
        snprintf(what, sizeof what, "CPU storage %d d=%d groups %d", storage, dim, groups);
        const double error = relative_error(oh, io, stride_seq, want, seqs, q_heads, dim, what);
        if (error > tolerance) fail_msg("%s: relative error %.3g > %.1g", what, error, tolerance);
    }
    free_layer(&layer);
    free(want);
    gpu_free(qd);
    gpu_free(od);
    free(qf);
    free(qh);
    free(oh);
    free(poison);
    free(entry_seq);
    free(ids);
    free(tokens);
    if (with_cpu) twin_destroy(&t);
    else rkv_cache_destroy(t.gpu);
}

static int32_t one_more_than_slot(int32_t seq, int32_t max_len) { (void)max_len; return seq + 1; }
static int32_t nearly_full(int32_t seq, int32_t max_len) { return max_len - 3 * seq; }

static void test_every_dtype_dim_group_length_and_plan(void **state) {
    (void)state;
    const rkv_dtype dtypes[] = {RKV_DTYPE_F32, RKV_DTYPE_F16, RKV_DTYPE_BF16, RKV_DTYPE_FP8_E4M3};
    const int32_t all_dims[] = {64, 128, 256, 32}, small_dims[] = {64, 32};
    /* 1-4: the tensor-core kernel packs P's two pieces into its 8 columns; 7, 8: it
     * does not; 12, 20: two and three passes of 8 query heads (every kernel) */
    const int32_t all_groups[] = {1, 2, 3, 4, 7, 8, 12, 20}, small_groups[] = {1, 4, 20};
    const int small = gpu_small();
    const int32_t *dims = small ? small_dims : all_dims, *groups = small ? small_groups : all_groups;
    const int num_dims = small ? 2 : 4, num_groups = small ? 3 : 8;
    const int32_t capacity = small ? 24 : 96;
    int configs = 0;
    for (int dt = small ? 2 : 0; dt < 4; ++dt)
        for (int di = 0; di < num_dims; ++di)
            for (int gi = 0; gi < num_groups; ++gi) {
                run_config(dtypes[dt], dims[di], groups[gi], capacity, capacity, one_more_than_slot, RKV_DTYPE_F32,
                           gi == 0);
                ++configs;
            }
    /* q and out in 16-bit dtypes: one query piece in the storage's own MMA type, two in the other */
    run_config(RKV_DTYPE_BF16, 128, 4, capacity, capacity, one_more_than_slot, RKV_DTYPE_BF16, 0);
    run_config(RKV_DTYPE_BF16, 64, 4, capacity, capacity, one_more_than_slot, RKV_DTYPE_F16, 0);
    run_config(RKV_DTYPE_F16, 128, 4, capacity, capacity, one_more_than_slot, RKV_DTYPE_F16, 0);
    run_config(RKV_DTYPE_F16, 64, 4, capacity, capacity, one_more_than_slot, RKV_DTYPE_BF16, 0);
    run_config(RKV_DTYPE_FP8_E4M3, 128, 4, capacity, capacity, one_more_than_slot, RKV_DTYPE_F16, 0);
    run_config(RKV_DTYPE_FP8_E4M3, 256, 4, capacity, capacity, one_more_than_slot, RKV_DTYPE_BF16, 0);
    print_message("%d configurations, lengths 1 .. %d each, %d attention calls: worst relative error %.3g (f32 "
                  "output) against float64\n", configs + 6, capacity, attend_calls, worst_error);
}

/* Long sequences: splits of hundreds of tokens, up to 64 of them. */
static void test_long_sequences(void **state) {
    (void)state;
    const int32_t max_len = gpu_small() ? 600 : 6000;
    run_config(RKV_DTYPE_BF16, 128, 4, 3, max_len, nearly_full, RKV_DTYPE_F32, 0);
    run_config(RKV_DTYPE_FP8_E4M3, 128, 4, 3, max_len, nearly_full, RKV_DTYPE_F32, 0);
    if (!gpu_small()) run_config(RKV_DTYPE_F16, 64, 8, 3, max_len, nearly_full, RKV_DTYPE_F32, 0);
}

/* Copy pipelines under load: the tensor-core kernel's 4-stage shapes (E4M3 at
 * head_dim 128, bf16 at 64) and a 3-stage one (bf16 at 128) over a batch whose
 * K/V (~450 MB) streams from HBM while every SM copies, so copies land late;
 * each split is many stages long. A wait for the wrong number of copy groups
 * passes the small tests above (their copies land while the query is
 * prepared) and fails here. Checked against float64 on the first and last 64
 * entries (the reference is the slow part). */
static void test_pipelines_under_load(void **state) {
    (void)state;
    const int32_t seqs = gpu_small() ? 16 : 768, length = 1152, chunk = 128, groups = 4, q_heads = KV * groups;
    const int32_t checked = seqs < 128 ? seqs : 128, half = checked / 2;
    const struct {
        rkv_dtype storage;
        int32_t dim;
    } shapes[] = {{RKV_DTYPE_FP8_E4M3, 128}, {RKV_DTYPE_BF16, 64}, {RKV_DTYPE_BF16, 128}};
    const plan plans[] = {{1, RKV_ATTEND_TENSOR}, {3, RKV_ATTEND_TENSOR}, {0, RKV_ATTEND_AUTO}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; ++si) {
        const int32_t dim = shapes[si].dim;
        rkv_cache_params p = test_params(seqs, 1, KV, q_heads, dim, RKV_METHOD_FULL, 16, 8, 4);
        p.dtype = shapes[si].storage;
        p.max_len = length;
        p.device_type = RKV_DEVICE_CUDA;
        rkv_cache *cache = test_create(&p);
        uint64_t rng = 77 + (uint64_t)si;
        int32_t *ids = malloc(sizeof(int32_t) * (size_t)seqs), *tokens = malloc(sizeof(int32_t) * (size_t)seqs);
        for (int32_t s = 0; s < seqs; ++s) {
            ids[s] = s;
            tokens[s] = chunk;
        }
        const size_t kv = (size_t)seqs * chunk * KV * dim;
        float *k = malloc(kv * 4), *v = malloc(kv * 4);
        for (int32_t appended = 0; appended < length; appended += chunk) {
            for (size_t i = 0; i < kv; ++i) {
                k[i] = test_rng_normal(&rng) * (1.0f + (float)((i / (size_t)dim) % 5));
                v[i] = test_rng_normal(&rng);
            }
            ASSERT_OK(gpu_test_append(cache, 0, seqs, ids, tokens, k, v, NULL, RKV_DTYPE_F32, 0));
        }
        free(k);
        free(v);

        const int64_t stride_seq = (int64_t)q_heads * dim;
        const size_t count = (size_t)seqs * (size_t)stride_seq, bytes = count * 4;
        float *q = malloc(bytes), *out = malloc(bytes), *poison = malloc(bytes);
        for (size_t i = 0; i < count; ++i) q[i] = 1.5f * test_rng_normal(&rng);
        memset(poison, 0xff, bytes);
        void *qd = gpu_upload(q, bytes), *od = gpu_alloc(bytes);
        const rkv_tensor qt = {qd, RKV_DTYPE_F32, q_heads, dim, stride_seq, 0, dim, 0};
        rkv_tensor ot = {od, RKV_DTYPE_F32, q_heads, dim, stride_seq, 0, dim, 0};
        host_layer layer = download_layer(cache, seqs);
        const int32_t tail = seqs - half;  /* entry i attends sequence i */
        double *want_head = reference(&layer, q, RKV_DTYPE_F32, stride_seq, half, ids, q_heads, dim);
        double *want_tail =
            reference(&layer, q + (size_t)tail * (size_t)stride_seq, RKV_DTYPE_F32, stride_seq, half, ids + tail, q_heads, dim);
        for (size_t pi = 0; pi < sizeof plans / sizeof plans[0]; ++pi) {
            char what[160];
            snprintf(what, sizeof what, "under load: storage %d d=%d, %d sequences of %d, splits %d variant %d",
                     p.dtype, dim, seqs, length, plans[pi].splits, plans[pi].variant);
            ASSERT_OK(rkv_cache_set_attend_plan(cache, plans[pi].splits, plans[pi].variant));
            gpu_free(od);
            ot.data = od = gpu_upload(poison, bytes);
            ASSERT_OK(test_attend(cache, 0, seqs, ids, &qt, &ot, 0.0f, NULL));
            gpu_download(out, od, bytes);
            const double error = fmax(relative_error(out, RKV_DTYPE_F32, stride_seq, want_head, half, q_heads, dim, what),
                                      relative_error(out + (size_t)tail * (size_t)stride_seq, RKV_DTYPE_F32, stride_seq,
                                                     want_tail, half, q_heads, dim, what));
            if (error > 2e-5) fail_msg("%s: relative error %.3g > 2e-5", what, error);
            ++attend_calls;
        }
        free_layer(&layer);
        free(want_head);
        free(want_tail);
        gpu_free(qd);
        gpu_free(od);
        free(q);
        free(out);
        free(poison);
        free(ids);
        free(tokens);
        rkv_cache_destroy(cache);
    }
}

/* Magnitudes the tensor-core kernel handles with scaling (attend_mma.cuh):
 * queries far beyond f16's range over tiny keys, and tiny queries over large
 * keys (its per-row power of two for f16 products); values whose rows span
 * 2^-8 .. 2^8 (FP8: value scales far apart, so a warp's value reference moves
 * while it accumulates). Every kernel is held to the same float64 bound. */
static void test_magnitudes(void **state) {
    (void)state;
    const rkv_dtype dtypes[] = {RKV_DTYPE_BF16, RKV_DTYPE_F16, RKV_DTYPE_FP8_E4M3};
    const int32_t capacity = gpu_small() ? 24 : 96;
    value_spread = 1;
    for (int d = 0; d < 3; ++d) {
        key_magnitude = ldexp(1.0, -16); /* logits of order 1 */
        query_magnitude = 1e5;
        run_config(dtypes[d], 128, 4, capacity, capacity, one_more_than_slot, RKV_DTYPE_F32, 0);
        key_magnitude = ldexp(1.0, 10);
        query_magnitude = 1e-4;
        run_config(dtypes[d], 64, 3, capacity, capacity, one_more_than_slot, RKV_DTYPE_F32, 0);
    }
    key_magnitude = query_magnitude = 1;
    value_spread = 0;
}

static void test_unwritten_slots_hold_nan(void **state) {
    (void)state;
    const rkv_dtype dtypes[] = {RKV_DTYPE_BF16, RKV_DTYPE_F16, RKV_DTYPE_FP8_E4M3};
    const int32_t dims[] = {64, 128, 256};
    const int32_t capacity = gpu_small() ? 40 : 150; /* sequences end inside a 64-row stage */
    poison_slots = 1;
    for (int d = 0; d < 3; ++d)
        for (int di = 0; di < 3; ++di)
            run_config(dtypes[d], dims[di], 4, 6, capacity, nearly_full, RKV_DTYPE_BF16, 0);
    poison_slots = 0;
}

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_dtype_dim_group_length_and_plan),
        cmocka_unit_test(test_long_sequences),
        cmocka_unit_test(test_magnitudes),
        cmocka_unit_test(test_unwritten_slots_hold_nan),
        cmocka_unit_test(test_pipelines_under_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
