/* rkv_bench_cpu: time one compression of every layer of one sequence on the
 * CPU backend, for the shapes of performance.md, beside the sgemm rate of this
 * machine's BLAS measured in the same run (absolute times differ from machine
 * to machine; the two rates side by side say how close librkv gets to what the
 * BLAS can do here).
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

#ifdef RKV_BLAS_BLIS
#include <blis.h>
#endif

#define CHECK(call)                                                                      \
    do {                                                                                 \
        rkv_status status_ = (call);                                                     \
        if (status_ != RKV_OK) {                                                         \
            fprintf(stderr, "%s: %s: %s\n", #call, rkv_status_name(status_),             \
                    rkv_error_message());                                           \
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

/* The BLAS this build uses, its kernel set on this CPU and its thread count. */
static void describe_blas(char *out, size_t size) {
#ifdef RKV_BLAS_BLIS
    const long threads = (long)bli_thread_get_num_threads();
    snprintf(out, size, "BLIS %s, %s kernels, %ld thread%s (BLIS_NUM_THREADS)",
             bli_info_get_version_str(), bli_arch_string(bli_arch_query_id()), threads > 0 ? threads : 1,
             threads > 1 ? "s" : "");
#else
    char version[32] = "?";
    sscanf(openblas_get_config(), "OpenBLAS %31s", version);
    const int threads = openblas_get_num_threads();
    snprintf(out, size, "OpenBLAS %s, %s kernels, %d thread%s (OPENBLAS_NUM_THREADS)", version,
             openblas_get_corename(), threads, threads > 1 ? "s" : "");
#endif
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
    CHECK(rkv_params_default(&p, sizeof p));
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
    rkv_tensor kt = {k, RKV_DTYPE_F32, s->kv_heads, s->head_dim, 0, (int64_t)s->kv_heads * s->head_dim, s->head_dim, 0};
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
    printf("%-20s %-5s %5d %7d %9.1f %9.1f %9.1f\n", s->name,
           dtype == RKV_DTYPE_F32 ? "f32" : dtype == RKV_DTYPE_F16 ? "f16" : "bf16", n, s->layers,
           median * 1e3, flops / median / 1e9, gemm_gflops);
    rkv_cache_destroy(cache);
    free(k), free(v), free(q);
}

int main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        printf("usage: rkv_bench_cpu [repeats]   (1..63, default 5; the median is reported)\n");
        return 0;
    }
    const int repeats = argc > 1 ? atoi(argv[1]) : 5;
    if (repeats < 1 || repeats > 63) {
        fprintf(stderr, "rkv_bench_cpu: repeats must be 1..63, not '%s'\n", argv[1]);
        return 2;
    }
    const shape shapes[] = {
        {"SmolLM2-135M", 30, 3, 9, 64, 512, 128},
        {"R1-Distill-Llama-8B", 32, 8, 32, 128, 1024, 128},
    };
    char blas[160];
    describe_blas(blas, sizeof blas);
    printf("librkv %s CPU benchmark: one rkv_compress of every layer of one full sequence, median of %d\n"
           "BLAS: %s\n\n",
           rkv_version_string(), repeats, blas);
    printf("GFLOP/s = the flops of R-KV's two matrix products (importance 2*G*window*C*d and the key\n"
           "Gram 2*N*N*d per layer and KV head; N held tokens, C = N - window candidates, G query heads\n"
           "per KV head) divided by the time of the whole compression, which also normalises, takes\n"
           "softmaxes, selects and compacts. sgemm = this BLAS alone on the Gram's shape (N x N x d, one\n"
           "call), measured in this run: the rate of the products with nothing else to do. The backend\n"
           "computes the Gram in blocks of 256 rows, so its products can run faster than that one call.\n\n");
    printf("%-20s %-5s %5s %7s %9s %9s %9s\n", "model shape", "dtype", "N", "layers", "ms", "GFLOP/s",
           "sgemm");
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; ++i) {
        const shape *s = &shapes[i];
        const int n = s->budget + s->buffer;
        const double gemm = sgemm_rate(n, n, s->head_dim, 9);
        bench(s, RKV_DTYPE_F32, repeats, gemm);
        bench(s, RKV_DTYPE_BF16, repeats, gemm);
    }
    printf("\nsgemm 1024x1024x1024 (the figure BLAS vendors quote): %.1f GFLOP/s\n",
           sgemm_rate(1024, 1024, 1024, 5));
    return 0;
}
