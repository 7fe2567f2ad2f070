/* rkv_attend (decode attention over the held tokens) against a float64
 * reference computed from the view (FP8: fp8 * scale), for every storage dtype, GQA, sequences
 * of different lengths, and q/out of several dtypes and strides. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum { SEQS = 3, KV_HEADS = 2, Q_HEADS = 8, DIM = 32 };

static void run(rkv_dtype storage, rkv_dtype io, double tolerance) {
    rkv_cache_params p = test_params(SEQS, 1, KV_HEADS, Q_HEADS, DIM, RKV_METHOD_RKV, 40, 20, 4);
    p.dtype = storage;
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 77 + (uint64_t)storage * 3 + (uint64_t)io;
    const int32_t lengths[SEQS] = {1, 33, 95}; /* the last one has compressed */
    for (int s = 0; s < SEQS; ++s) test_append_random(cache, s, lengths[s], &rng);
    /* q and out: [seq, head, dim] with a padded seq stride, in dtype `io` */
    const int64_t stride_seq = Q_HEADS * DIM + 5;
    const size_t bytes = (size_t)(SEQS * stride_seq) * 4;
    void *q = malloc(bytes), *out = malloc(bytes);
    memset(out, 0xff, bytes); /* poison: every element must be written */
    for (int64_t i = 0; i < SEQS * stride_seq; ++i) {
        const float x = 2.0f * test_rng_normal(&rng);
        convert_from_f32(&x, 1, io, (char *)q + i * (io == RKV_DTYPE_F32 ? 4 : 2));
    }
    int32_t seq_ids[SEQS] = {2, 0, 1};
    rkv_tensor qt = {q, io, Q_HEADS, DIM, stride_seq, 0, DIM, 0};
    rkv_tensor ot = {out, io, Q_HEADS, DIM, stride_seq, 0, DIM, 0};
    ASSERT_OK(test_attend(cache, 0, SEQS, seq_ids, &qt, &ot, 0.0f, NULL));

    double error2 = 0, norm2 = 0;
    for (int i = 0; i < SEQS; ++i) {
        rkv_seq_view view;
        memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        ASSERT_OK(rkv_view(cache, seq_ids[i], 0, &view));
        for (int h = 0; h < Q_HEADS; ++h) {
            const int kv = h / (Q_HEADS / KV_HEADS);
            double *weights = malloc(sizeof(double) * (size_t)view.length), max_logit = -INFINITY, sum = 0;
            for (int t = 0; t < view.length; ++t) {
                double dot = 0;
                const double k_scale = view.k_scale ? view.k_scale[kv * view.scale_stride_head + t] : 1.0;
                for (int e = 0; e < DIM; ++e)
                    dot += element_as_float(q, io, (size_t)i * stride_seq + h * DIM + e) * k_scale *
                           element_as_float(view.k, storage, (size_t)kv * view.stride_head + t * view.stride_token + e);
                weights[t] = dot / sqrt((double)DIM);
                max_logit = fmax(max_logit, weights[t]);
            }
            for (int t = 0; t < view.length; ++t) sum += (weights[t] = exp(weights[t] - max_logit));
            for (int e = 0; e < DIM; ++e) {
                double want = 0;
                for (int t = 0; t < view.length; ++t) /* FP8: the value is fp8 * scale */
                    want += weights[t] / sum * (view.v_scale ? view.v_scale[kv * view.scale_stride_head + t] : 1.0) *
                            element_as_float(view.v, storage, (size_t)kv * view.stride_head + t * view.stride_token + e);
                double got = element_as_float(out, io, (size_t)i * stride_seq + h * DIM + e);
                assert_false(isnan(got));
                error2 += (got - want) * (got - want);
                norm2 += want * want;
            }
            free(weights);
        }
    }
    double relative = sqrt(error2 / norm2);
    if (relative > tolerance)
        fail_msg("storage %d io %d: relative error %.3g > %.1g", storage, io, relative, tolerance);
    free(q);
    free(out);
    rkv_cache_destroy(cache);
}

static void test_attend_matches_float64(void **state) {
    (void)state;
    const rkv_dtype dtypes[] = {RKV_DTYPE_F32, RKV_DTYPE_F16, RKV_DTYPE_BF16, RKV_DTYPE_FP8_E4M3};
    for (int s = 0; s < 4; ++s) {
        run(dtypes[s], RKV_DTYPE_F32, 1e-5);  /* f32 arithmetic on the held values */
        run(dtypes[s], RKV_DTYPE_F16, 2e-3);  /* output rounding to f16 */
        run(dtypes[s], RKV_DTYPE_BF16, 1e-2); /* output rounding to bf16 */
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attend_matches_float64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
