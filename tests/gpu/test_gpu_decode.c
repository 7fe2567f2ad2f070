/* Decode on CUDA:
 *   - a long multi-step decode (1,024 tokens after the prompts) of 64
 *     sequences with prompts of different lengths, R-KV with automatic
 *     compression, f32 storage, on both backends: identical held positions per
 *     head, and identical K/V bytes, at the end (and at checkpoints on the way);
 *   - rkv_attend against a float64 reference computed from the view (FP8:
 *     fp8 * scale), for every storage dtype, q/out dtype, head dim (64, 128, 256
 *     and 32), GQA, and sequences of different lengths (some compressed);
 *     test_gpu_attend.c covers every length, group size and plan. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"

/* --- long decode ------------------------------------------------------------ */

static void decode_and_compare(rkv_method method, int32_t seqs, int32_t steps, int32_t checkpoint) {
    enum { LAYERS = 2, KV = 2, QH = 8, DIM = 64, BUDGET = 64, BUFFER = 16, WINDOW = 4 };
    rkv_cache_params p = test_params(seqs, LAYERS, KV, QH, DIM, method, BUDGET, BUFFER, WINDOW);
    twin t = twin_create(&p);
    uint64_t rng = 4242;
    int32_t *ids = malloc(sizeof(int32_t) * (size_t)seqs), *prompt = malloc(sizeof(int32_t) * (size_t)seqs);
    for (int32_t s = 0; s < seqs; ++s) {
        ids[s] = s;
        prompt[s] = 1 + (s * 37) % 150; /* 1 .. 150 tokens: some longer than the capacity */
    }
    twin_append_random(&t, seqs, ids, prompt, &rng, RKV_APPEND_PROMPT);
    const size_t kv = (size_t)seqs * KV * DIM, qn = (size_t)seqs * QH * DIM;
    float *k = malloc(kv * 4), *v = malloc(kv * 4), *q = malloc(qn * 4);
    kept_compare kc = {0};
    for (int32_t step = 1; step <= steps; ++step) {
        for (int32_t layer = 0; layer < LAYERS; ++layer) {
            test_fill_normal(k, kv, &rng);
            test_fill_normal(v, kv, &rng);
            test_fill_normal(q, qn, &rng);
            twin_append(&t, layer, seqs, ids, NULL, k, v, q, RKV_DTYPE_F32, 0, RKV_OK);
        }
        if (step % checkpoint == 0 || step == steps) {
            char what[64];
            snprintf(what, sizeof what, "decode step %d", step);
            compare_kept(&t, NULL, &kc, what);
            if (kc.identical != kc.heads)
                fail_msg("%s: %d of %d heads differ", what, kc.heads - kc.identical, kc.heads);
        }
    }
    /* Same K/V bytes in every held slot. */
    for (int32_t layer = 0; layer < LAYERS; ++layer)
        for (int32_t s = 0; s < seqs; ++s) {
            rkv_seq_view a, b;
            memset(&a, 0, sizeof a);
            memset(&b, 0, sizeof b);
            a.struct_size = b.struct_size = sizeof a;
            ASSERT_OK(rkv_view(t.cpu, s, layer, &a));
            ASSERT_OK(rkv_view(t.gpu, s, layer, &b));
            assert_int_equal(a.length, b.length);
            assert_int_equal(a.logical_length, b.logical_length);
            const size_t bytes = (size_t)KV * (size_t)b.stride_head * 4;
            float *hk = malloc(bytes);
            gpu_download(hk, b.k, bytes);
            for (int32_t h = 0; h < KV; ++h)
                assert_memory_equal(hk + h * b.stride_head, (const float *)a.k + h * a.stride_head,
                                    (size_t)a.length * DIM * 4);
            free(hk);
        }
    rkv_stats sa, sb;
    memset(&sa, 0, sizeof sa);
    memset(&sb, 0, sizeof sb);
    sa.struct_size = sb.struct_size = sizeof sa;
    ASSERT_OK(rkv_cache_stats(t.cpu, RKV_ALL, &sa));
    ASSERT_OK(rkv_cache_stats(t.gpu, RKV_ALL, &sb));
    assert_int_equal(sa.compressions, sb.compressions);
    assert_int_equal(sa.tokens_held, sb.tokens_held);
    print_message("%d sequences x %d decode steps: %llu compressions, %d head comparisons, all identical\n",
                  seqs, steps, (unsigned long long)sb.compressions, kc.heads);
    assert_true(sb.compressions >= (uint64_t)LAYERS * (steps / BUFFER));
    free(k);
    free(v);
    free(q);
    free(ids);
    free(prompt);
    twin_destroy(&t);
}

static void test_long_decode_64_sequences_f32(void **state) {
    (void)state;
    if (gpu_small() >= 2) decode_and_compare(RKV_METHOD_RKV, 4, 48, 16);
    else if (gpu_small()) decode_and_compare(RKV_METHOD_RKV, 8, 160, 40);
    else decode_and_compare(RKV_METHOD_RKV, 64, 1024, 128);
}

/* --- attention against float64 ------------------------------------------------ */

static void attend_case(rkv_dtype storage, rkv_dtype io, int32_t dim, double tolerance) {
    enum { SEQS = 3, KV = 2, QH = 8 };
    rkv_cache_params p = test_params(SEQS, 1, KV, QH, dim, RKV_METHOD_RKV, 40, 20, 4);
    p.dtype = storage;
    p.device_type = RKV_DEVICE_CUDA;
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 77 + (uint64_t)storage * 3 + (uint64_t)io + (uint64_t)dim;
    const int32_t lengths[SEQS] = {1, 33, 95}; /* the last one has compressed */
    for (int32_t s = 0; s < SEQS; ++s) {
        const size_t kv = (size_t)lengths[s] * KV * dim, qn = (size_t)lengths[s] * QH * dim;
        float *k = malloc(kv * 4), *v = malloc(kv * 4), *q = malloc(qn * 4);
        test_fill_normal(k, kv, &rng);
        test_fill_normal(v, kv, &rng);
        test_fill_normal(q, qn, &rng);
        ASSERT_OK(gpu_test_append(cache, 0, 1, &s, &lengths[s], k, v, q, RKV_DTYPE_F32, 0));
        free(k);
        free(v);
        free(q);
    }
    /* q and out: [seq, head, dim] with a padded seq stride, in dtype `io` */
    const int64_t stride_seq = (int64_t)QH * dim + 8;
    const size_t count = (size_t)(SEQS * stride_seq), bytes = count * dtype_bytes(io);
    float *qf = malloc(count * 4);
    for (size_t i = 0; i < count; ++i) qf[i] = 2.0f * test_rng_normal(&rng);
    void *qh = malloc(bytes), *oh = malloc(bytes);
    convert_from_f32(qf, count, io, qh);
    void *qd = gpu_upload(qh, bytes), *od = gpu_alloc(bytes);
    unsigned char poison[4] = {0xff, 0xff, 0xff, 0xff};
    for (size_t i = 0; i < bytes; ++i) ((unsigned char *)oh)[i] = poison[i % 4];
    void *tmp = gpu_upload(oh, bytes);
    gpu_free(od);
    od = tmp; /* poisoned: every element must be written */
    int32_t seq_ids[SEQS] = {2, 0, 1};
    rkv_tensor qt = {qd, io, QH, dim, stride_seq, 0, dim, 0};
    rkv_tensor ot = {od, io, QH, dim, stride_seq, 0, dim, 0};
    ASSERT_OK(test_attend(cache, 0, SEQS, seq_ids, &qt, &ot, 0.0f, NULL));
    gpu_download(oh, od, bytes);

    double error2 = 0, norm2 = 0;
    for (int i = 0; i < SEQS; ++i) {
        rkv_seq_view view;
        memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        ASSERT_OK(rkv_view(cache, seq_ids[i], 0, &view));
        const size_t kv_bytes = (size_t)KV * (size_t)view.stride_head * dtype_bytes(storage);
        void *k = malloc(kv_bytes), *v = malloc(kv_bytes);
        gpu_download(k, view.k, kv_bytes);
        gpu_download(v, view.v, kv_bytes);
        float k_scale[KV * 64], v_scale[KV * 64]; /* FP8: value = fp8 * scale (capacity 60) */
        for (int i = 0; i < KV * 64; ++i) k_scale[i] = v_scale[i] = 1.0f;
        if (view.k_scale) {
            for (int h = 0; h < KV; ++h) {
                gpu_download(k_scale + h * 64, view.k_scale + h * view.scale_stride_head, (size_t)view.length * 4);
                gpu_download(v_scale + h * 64, view.v_scale + h * view.scale_stride_head, (size_t)view.length * 4);
            }
        }
        for (int h = 0; h < QH; ++h) {
            const int kvh = h / (QH / KV);
            double *weights = malloc(sizeof(double) * (size_t)view.length), max_logit = -INFINITY, sum = 0;
            for (int t = 0; t < view.length; ++t) {
                double dot = 0;
                for (int e = 0; e < dim; ++e)
                    dot += (double)element_as_float(qh, io, (size_t)(i * stride_seq + h * dim + e)) *
                           element_as_float(k, storage, (size_t)(kvh * view.stride_head + t * view.stride_token + e)) *
                           k_scale[kvh * 64 + t];
                weights[t] = dot / sqrt((double)dim);
                max_logit = fmax(max_logit, weights[t]);
            }
            for (int t = 0; t < view.length; ++t) sum += (weights[t] = exp(weights[t] - max_logit));
            for (int e = 0; e < dim; ++e) {
                double want = 0;
                for (int t = 0; t < view.length; ++t)
                    want += weights[t] / sum * v_scale[kvh * 64 + t] *
                            element_as_float(v, storage, (size_t)(kvh * view.stride_head + t * view.stride_token + e));
                const double got = element_as_float(oh, io, (size_t)(i * stride_seq + h * dim + e));
                if (isnan(got)) fail_msg("storage %d io %d d %d: NaN (unwritten?) at seq %d head %d dim %d", storage, io, dim, i, h, e);
                error2 += (got - want) * (got - want);
                norm2 += want * want;
            }
            free(weights);
        }
        free(k);
        free(v);
    }
    const double relative = sqrt(error2 / norm2);
    if (relative > tolerance)
        fail_msg("storage %d io %d d %d: relative error %.3g > %.1g", storage, io, dim, relative, tolerance);
    gpu_free(qd);
    gpu_free(od);
    free(qf);
    free(qh);
    free(oh);
    rkv_cache_destroy(cache);
}

static void test_attend_matches_float64(void **state) {
    (void)state;
    const rkv_dtype dtypes[] = {RKV_DTYPE_F32, RKV_DTYPE_F16, RKV_DTYPE_BF16, RKV_DTYPE_FP8_E4M3};
    const int32_t dims[] = {64, 128, 256, 32};
    for (int d = 0; d < (gpu_small() >= 2 ? 1 : gpu_small() ? 2 : 4); ++d)
        for (int s = 0; s < 4; ++s) {
            attend_case(dtypes[s], RKV_DTYPE_F32, dims[d], 1e-5);
            attend_case(dtypes[s], RKV_DTYPE_F16, dims[d], 2e-3);
            attend_case(dtypes[s], RKV_DTYPE_BF16, dims[d], 1e-2);
        }
}

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attend_matches_float64),
        cmocka_unit_test(test_long_decode_64_sequences_f32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
