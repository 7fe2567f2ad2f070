/* Golden conformance on CUDA: every case of tests/golden (the official R-KV
 * code's outputs) replayed through a CUDA cache in reference mode, with the
 * checks of tests/test_golden.c:
 *   - float32 storage (the cuBLASLt path): R-KV kept sets identical per head,
 *     importance/redundancy/final scores within 1e-5 of the largest; SnapKV
 *     tie-aware sets; StreamingLLM exact; multi-step kept_rounds exact, order
 *     included, with explicit compressions and with automatic ones during
 *     decode; every held slot carries the K and V of its position.
 *   - bf16 and FP8 E4M3 storage, both matrix-product paths: CUDA against the
 *     CPU backend on the same stored keys (the golden values belong to float32
 *     keys), kept sets identical except near ties (TIE_TOLERANCE). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "golden.h"
#include "gpu_util.h"

static golden_case cases[GOLDEN_MAX_CASES];
static int num_cases;

static int load_manifest(void **state) {
    (void)state;
    num_cases = golden_load_manifest(cases, GOLDEN_MAX_CASES);
    return 0;
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

/* Append through device memory (gpu_test_append uploads the packed tokens). */
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

/* The view is device memory: download it. */
static void read_view(const rkv_cache *cache, const rkv_seq_view *view, float *k, float *v, int32_t *positions) {
    (void)cache;
    const size_t bytes = (size_t)view->num_kv_heads * (size_t)view->stride_head * sizeof(float);
    gpu_download(k, view->k, bytes);
    gpu_download(v, view->v, bytes);
    gpu_download(positions, view->positions,
                 sizeof(int32_t) * (size_t)view->num_kv_heads * (size_t)view->positions_stride_head);
}

static const golden_backend cuda_backend = {"cuda", RKV_DEVICE_CUDA, append_range, read_view};

static void test_every_golden_case_f32(void **state) {
    (void)state;
    int single = 0, multi = 0;
    for (int i = 0; i < num_cases; ++i) {
        if (cases[i].multistep) {
            golden_run_multistep(&cuda_backend, &cases[i]);
            ++multi;
        } else {
            golden_run_single_step(&cuda_backend, &cases[i]);
            ++single;
        }
    }
    print_message("golden on CUDA (f32, cuBLASLt): %d single-step and %d multi-step cases conform\n", single, multi);
    assert_int_equal(single + multi, num_cases);
}

/* bf16 and FP8 storage: the CUDA backend (each path that applies to a case:
 * FUSED and WGMMA need head_dim 64, 128 or 256, WGMMA a GPU of compute
 * capability 9.0, WGMMA_INT8 also head_dim 128) against the CPU on the same
 * keys. */
static void golden_cases_against_cpu(rkv_dtype dtype, const char *name) {
    kept_compare kc = {0};
    int runs[RKV_MATMUL_WGMMA_INT8 + 1] = {0};
    for (int path = RKV_MATMUL_AUTO; path <= RKV_MATMUL_WGMMA_INT8; ++path)
        for (int i = 0; i < num_cases; ++i) {
            const golden_case *c = &cases[i];
            if (c->multistep || !c->compressed) continue;
            const int32_t n = c->cache_len;
            rkv_cache_params p = golden_params(c, RKV_MODE_REFERENCE, dtype, n);
            twin t = twin_create(&p);
            if (path != RKV_MATMUL_AUTO) {
                const rkv_status status = rkv_cache_set_matmul_path(t.gpu, (rkv_matmul_path)path);
                if (status == RKV_ERR_UNSUPPORTED) { /* the path does not apply to this case or GPU */
                    twin_destroy(&t);
                    continue;
                }
                ASSERT_OK(status);
            }
            runs[path]++;
            npy_array k = golden_load(c, "K.npy"), q = golden_load(c, "Q.npy");
            float *v = golden_values_for(&k);
            rkv_cache *both[2] = {t.cpu, t.gpu};
            for (int b = 0; b < 2; ++b) {
                append_range(both[b], c, k.data, v, n, 0, n - c->window, NULL, 0, 0);
                append_range(both[b], c, k.data, v, n, n - c->window, c->window, q.data, c->window, 0);
            }
            score_snapshot before = snapshot_scores(&t);
            ASSERT_OK(rkv_compress(t.cpu, 0, 0, NULL));
            ASSERT_OK(rkv_compress(t.gpu, 0, 0, NULL));
            char what[160];
            snprintf(what, sizeof what, "%.64s %s path %d", c->name, name, path);
            compare_kept(&t, &before, &kc, what);
            snapshot_free(&before);
            twin_destroy(&t);
            free(v);
            npy_free(&k);
            npy_free(&q);
        }
    print_message("golden cases in %s, CUDA vs CPU: %d heads, %d identical, %d near ties, %d mismatches (cases "
                  "run: auto %d, cublaslt %d, fused %d, wgmma %d, wgmma int8 %d)\n",
                  name, kc.heads, kc.identical, kc.near_ties, kc.mismatches, runs[0], runs[1], runs[2], runs[3],
                  runs[4]);
    assert_int_equal(kc.mismatches, 0);
    assert_int_equal(kc.order_errors, 0);
}

static void test_golden_cases_bf16_against_cpu(void **state) {
    (void)state;
    golden_cases_against_cpu(RKV_DTYPE_BF16, "bf16");
}

static void test_golden_cases_fp8_against_cpu(void **state) {
    (void)state;
    golden_cases_against_cpu(RKV_DTYPE_FP8_E4M3, "fp8_e4m3");
}

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_golden_case_f32),
        cmocka_unit_test(test_golden_cases_bf16_against_cpu),
        cmocka_unit_test(test_golden_cases_fp8_against_cpu),
    };
    return cmocka_run_group_tests(tests, load_manifest, NULL);
}
