/* rkv_bench_cpu: time one compression of every layer of one sequence on the
 * CPU backend, for the shapes of performance.md, against the sgemm rate of
 * this machine measured in the same run (so the ratio, not the absolute time,
 * is what compares across machines).
 *
 *   rkv_bench_cpu [repeats]      (default 5; the median is reported)
 *
 * Work counted per (layer, KV head), N = budget + buffer, C = N - window:
 *   importance 2*G*window*C*d flops, redundancy (key Gram) 2*N*N*d flops. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rkv/rkv.h"

#define CHECK(call)                                                                      \
    do {                                                                                 \
        rkv_status status_ = (call);                                                     \
        if (status_ != RKV_OK) {                                                         \
            fprintf(stderr, "%s: %s: %s\n", #call, rkv_status_name(status_),             \
                    rkv_last_error_message());                                           \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

typedef struct shape {
    const char *name;
    int layers, kv_heads, q_heads, head_dim, budget, buffer;
} shape;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int compare_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void fill(float *x, size_t n, uint64_t *state) {
    for (size_t i = 0; i < n; ++i) {
        *state = *state * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int64_t)(*state >> 33) - (1ll << 30)) / (float)(1ll << 30);
    }
}

/* GFLOP/s of sgemm C[m,n] = A[m,k] B[n,k]^T, median of `repeats`. */
static double sgemm_rate(int m, int n, int k, int repeats) {
    float *a = malloc(sizeof(float) * (size_t)m * k), *b = malloc(sizeof(float) * (size_t)n * k);
    float *c = malloc(sizeof(float) * (size_t)m * n);
    uint64_t state = 1;
    fill(a, (size_t)m * k, &state);
    fill(b, (size_t)n * k, &state);
    double times[64];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
    for (int r = 0; r < repeats; ++r) {
        double t0 = now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
        times[r] = now() - t0;
    }
    qsort(times, (size_t)repeats, sizeof *times, compare_double);
    free(a), free(b), free(c);
    return 2.0 * m * n * k / times[repeats / 2] / 1e9;
}

static void bench(const shape *s, rkv_dtype dtype, int repeats, double gemm_gflops) {
    rkv_cache_params p;
    CHECK(rkv_cache_params_default(&p, sizeof p));
    p.max_seqs = 1;
    p.num_layers = s->layers;
    p.num_kv_heads = s->kv_heads;
    p.num_q_heads = s->q_heads;
    p.head_dim = s->head_dim;
    p.budget = s->budget;
    p.buffer = s->buffer;
    p.dtype = dtype;
    rkv_cache *cache;
    CHECK(rkv_cache_create(&p, &cache));
    const int n = s->budget + s->buffer;
    size_t kv = (size_t)n * s->kv_heads * s->head_dim, qn = (size_t)n * s->q_heads * s->head_dim;
    float *k = malloc(kv * 4), *v = malloc(kv * 4), *q = malloc(qn * 4);
    uint64_t state = 7;
    fill(k, kv, &state);
    fill(v, kv, &state);
    fill(q, qn, &state);
    int32_t seq = 0, count = n;
    rkv_append_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.num_seqs = 1;
    a.seq_ids = &seq;
    a.num_tokens = &count;
    rkv_tensor kt = {k, RKV_DTYPE_F32, s->kv_heads, s->head_dim, 0, (int64_t)s->kv_heads * s->head_dim, s->head_dim};
    rkv_tensor vt = kt, qt = {q, RKV_DTYPE_F32, s->q_heads, s->head_dim, 0, (int64_t)s->q_heads * s->head_dim, s->head_dim};
    vt.data = v;
    a.k = kt, a.v = vt, a.q = qt;
    double times[64];
    for (int r = 0; r <= repeats; ++r) { /* r == 0 warms up */
        CHECK(rkv_seq_reset(cache, 0, NULL));
        for (int layer = 0; layer < s->layers; ++layer) {
            a.layer = layer;
            CHECK(rkv_append(cache, &a, NULL));
        }
        double t0 = now();
        CHECK(rkv_compress(cache, 0, RKV_ALL, NULL));
        if (r > 0) times[r - 1] = now() - t0;
    }
    qsort(times, (size_t)repeats, sizeof *times, compare_double);
    const double median = times[repeats / 2];
    const double group = (double)s->q_heads / s->kv_heads, window = p.window, c = n - window;
    const double flops = (double)s->layers * s->kv_heads *
                         (2.0 * group * window * c * s->head_dim + 2.0 * (double)n * n * s->head_dim);
    printf("%-22s %-5s N %4d  %8.1f ms per compression (all %d layers)  %6.1f GFLOP/s = %4.0f%% of sgemm\n",
           s->name, dtype == RKV_DTYPE_F32 ? "f32" : dtype == RKV_DTYPE_F16 ? "f16" : "bf16", n,
           median * 1e3, s->layers, flops / median / 1e9, 100.0 * flops / median / 1e9 / gemm_gflops);
    rkv_cache_destroy(cache);
    free(k), free(v), free(q);
}

int main(int argc, char **argv) {
    int repeats = argc > 1 ? atoi(argv[1]) : 5;
    if (repeats < 1 || repeats > 63) repeats = 5;
    const shape shapes[] = {
        {"SmolLM2-135M", 30, 3, 9, 64, 512, 128},
        {"R1-Distill-Llama-8B", 32, 8, 32, 128, 1024, 128},
    };
    printf("librkv %s CPU benchmark, %d repeats (median), OpenBLAS %s with %d threads\n",
           rkv_version_string(), repeats, openblas_get_config(), openblas_get_num_threads());
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
        const shape *s = &shapes[i];
        const int n = s->budget + s->buffer;
        const double gemm = sgemm_rate(n, n, s->head_dim, 9);
        printf("sgemm %4dx%4dx%3d (the key Gram of one head): %6.1f GFLOP/s\n", n, n, s->head_dim, gemm);
        bench(s, RKV_DTYPE_F32, repeats, gemm);
        bench(s, RKV_DTYPE_BF16, repeats, gemm);
    }
    printf("sgemm 1024x1024x1024: %.1f GFLOP/s\n", sgemm_rate(1024, 1024, 1024, 5));
    return 0;
}
