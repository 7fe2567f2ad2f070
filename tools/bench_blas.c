/* rkv_bench_blas: sgemm GFLOP/s of every BLAS candidate this build found (or
 * the ones named on the command line), measured in one run, so that the
 * choice of RKV_BLAS rests on numbers taken side by side on this machine.
 *
 *   rkv_bench_blas [--rounds R] [KIND[@CORETYPE]:NAME:PATH ...]
 *     KIND is openblas, scipy-openblas or blis; PATH the shared library.
 *     Without candidates, the ones CMake found at configure time.
 *     @CORETYPE sets OPENBLAS_CORETYPE for that candidate alone: only to show
 *     what an OpenBLAS that does not know the CPU falls back to (Prescott);
 *     never a way to run librkv (a forced core type can compute wrong results
 *     on a processor that lacks its instructions).
 *
 * Each candidate runs in its own child process (its thread pool cannot steal
 * cores from the next one), once with one thread and once with all cores;
 * the rounds interleave the candidates, so a burst of load from elsewhere
 * hits them alike, and the best round is reported (the figure least
 * disturbed by the rest of the machine). Shapes: the key Gram of one head of
 * SmolLM2-135M and R1-Distill-Llama-8B (the GEMMs librkv's CPU backend runs),
 * and a square 1024 GEMM (what BLAS vendors quote). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if __has_include("bench_blas_candidates.h")
#include "bench_blas_candidates.h" /* RKV_BLAS_CANDIDATES, written by CMake */
#endif

typedef void sgemm_fn(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                      const float *a, int lda, const float *b, int ldb, float beta, float *c,
                      int ldc);
enum { ROW_MAJOR = 101, NO_TRANS = 111, TRANS = 112 }; /* the CBLAS enum values */

typedef struct candidate {
    const char *kind, *coretype, *name, *path; /* coretype: NULL, or forced (see above) */
} candidate;

typedef struct gemm_shape {
    const char *label;
    int m, n, k;
} gemm_shape;

static const gemm_shape shapes[] = {
    {"640x640x64 (SmolLM2 Gram)", 640, 640, 64},
    {"1152x1152x128 (8B Gram)", 1152, 1152, 128},
    {"1024x1024x1024", 1024, 1024, 1024},
};
enum { SHAPES = sizeof shapes / sizeof shapes[0], MAX_CANDIDATES = 8, MAX_ROUNDS = 9 };

/* What one child reports back through its pipe. */
typedef struct measurement {
    int ok;
    char kernels[96];
    double gflops[2][SHAPES]; /* [1 thread, all threads][shape] */
} measurement;

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

/* Median GFLOP/s of C[m,n] = A[m,k] B[n,k]^T (row-major, as librkv calls it). */
static double sgemm_rate(sgemm_fn *sgemm, const gemm_shape *s) {
    float *a = malloc(sizeof(float) * (size_t)s->m * s->k);
    float *b = malloc(sizeof(float) * (size_t)s->n * s->k);
    float *c = malloc(sizeof(float) * (size_t)s->m * s->n);
    uint64_t state = 1;
    fill(a, (size_t)s->m * s->k, &state);
    fill(b, (size_t)s->n * s->k, &state);
    const double flops = 2.0 * s->m * s->n * s->k;
    const int repeats = flops > 1e9 ? 5 : 15;
    double times[15];
    sgemm(ROW_MAJOR, NO_TRANS, TRANS, s->m, s->n, s->k, 1, a, s->k, b, s->k, 0, c, s->n);
    for (int r = 0; r < repeats; ++r) {
        double t0 = now();
        sgemm(ROW_MAJOR, NO_TRANS, TRANS, s->m, s->n, s->k, 1, a, s->k, b, s->k, 0, c, s->n);
        times[r] = now() - t0;
    }
    qsort(times, (size_t)repeats, sizeof *times, compare_double);
    free(a), free(b), free(c);
    return flops / times[repeats / 2] / 1e9;
}

/* Load the library, name its kernel set, set its thread count: each BLAS
 * spells these differently (and scipy-openblas prefixes every symbol). */
static int measure(const candidate *c, int threads_all, measurement *out) {
    if (c->coretype) setenv("OPENBLAS_CORETYPE", c->coretype, 1);
    else unsetenv("OPENBLAS_CORETYPE");
    void *lib = dlopen(c->path, RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        snprintf(out->kernels, sizeof out->kernels, "cannot load: %s", dlerror());
        return 0;
    }
    const int blis = strcmp(c->kind, "blis") == 0;
    const char *prefix = strcmp(c->kind, "scipy-openblas") == 0 ? "scipy_" : "";
    char symbol[64];
    snprintf(symbol, sizeof symbol, "%scblas_sgemm", prefix);
    sgemm_fn *sgemm = (sgemm_fn *)dlsym(lib, symbol);
    void (*set_threads)(int) = NULL;
    void (*set_threads_blis)(int64_t) = NULL;
    if (blis) {
        int (*arch_id)(void) = (int (*)(void))dlsym(lib, "bli_arch_query_id");
        const char *(*arch_name)(int) = (const char *(*)(int))dlsym(lib, "bli_arch_string");
        const char *(*version)(void) = (const char *(*)(void))dlsym(lib, "bli_info_get_version_str");
        snprintf(out->kernels, sizeof out->kernels, "BLIS %s, %s", version ? version() : "?",
                 arch_id && arch_name ? arch_name(arch_id()) : "?");
        set_threads_blis = (void (*)(int64_t))dlsym(lib, "bli_thread_set_num_threads");
    } else {
        snprintf(symbol, sizeof symbol, "%sopenblas_get_corename", prefix);
        char *(*corename)(void) = (char *(*)(void))dlsym(lib, symbol);
        snprintf(symbol, sizeof symbol, "%sopenblas_get_config", prefix);
        char *(*config)(void) = (char *(*)(void))dlsym(lib, symbol);
        char version[32] = "?";
        if (config) sscanf(config(), "OpenBLAS %31s", version);
        snprintf(out->kernels, sizeof out->kernels, "OpenBLAS %s, %s", version,
                 corename ? corename() : "?");
        snprintf(symbol, sizeof symbol, "%sopenblas_set_num_threads", prefix);
        set_threads = (void (*)(int))dlsym(lib, symbol);
    }
    if (!sgemm || !(set_threads || set_threads_blis)) {
        snprintf(out->kernels, sizeof out->kernels, "no %scblas_sgemm or thread control", prefix);
        return 0;
    }
    for (int t = 0; t < 2; ++t) {
        const int threads = t == 0 ? 1 : threads_all;
        if (set_threads) set_threads(threads);
        else set_threads_blis(threads);
        for (int s = 0; s < SHAPES; ++s) out->gflops[t][s] = sgemm_rate(sgemm, &shapes[s]);
    }
    return 1;
}

/* Run measure() in a child, so each BLAS has the process (and its cores) to itself. */
static measurement measure_in_child(const candidate *c, int threads_all) {
    measurement m;
    memset(&m, 0, sizeof m);
    int fds[2];
    if (pipe(fds) != 0) return m;
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        close(fds[0]);
        measurement mine;
        memset(&mine, 0, sizeof mine);
        mine.ok = measure(c, threads_all, &mine);
        ssize_t written = write(fds[1], &mine, sizeof mine);
        _exit(written == (ssize_t)sizeof mine ? 0 : 1);
    }
    close(fds[1]);
    ssize_t got = pid > 0 ? read(fds[0], &m, sizeof m) : -1;
    close(fds[0]);
    if (pid > 0) waitpid(pid, NULL, 0);
    if (got != (ssize_t)sizeof m) {
        memset(&m, 0, sizeof m);
        snprintf(m.kernels, sizeof m.kernels, "crashed while measuring");
    }
    return m;
}

static int parse_candidate(char *spec, candidate *c) {
    char *kind = strtok(spec, ":"), *name = strtok(NULL, ":"), *path = strtok(NULL, "");
    if (!kind || !name || !path) return 0;
    char *at = strchr(kind, '@');
    c->coretype = at ? at + 1 : NULL;
    if (at) *at = '\0';
    if (strcmp(kind, "openblas") && strcmp(kind, "scipy-openblas") && strcmp(kind, "blis")) return 0;
    if (c->coretype && !strcmp(kind, "blis")) return 0;
    c->kind = kind, c->name = name, c->path = path;
    return 1;
}

static void usage(FILE *to) {
    fprintf(to, "usage: rkv_bench_blas [--rounds R] [KIND[@CORETYPE]:NAME:PATH ...]\n"
                "  KIND: openblas | scipy-openblas | blis; PATH: the shared library.\n"
                "  @CORETYPE (OpenBLAS only, e.g. @Prescott): what that OpenBLAS falls back to on a\n"
                "  CPU it does not know; for comparison only, never to run librkv with.\n"
                "  Without candidates: the ones found when librkv was configured.\n"
                "  R: interleaved rounds, the best of which is reported (default 3, at most %d).\n",
            MAX_ROUNDS);
}

int main(int argc, char **argv) {
    candidate candidates[MAX_CANDIDATES];
    int count = 0, rounds = 3;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) {
            rounds = atoi(argv[++i]);
            if (rounds < 1 || rounds > MAX_ROUNDS) {
                fprintf(stderr, "--rounds must be 1..%d\n", MAX_ROUNDS);
                return 2;
            }
        } else if (count < MAX_CANDIDATES && parse_candidate(argv[i], &candidates[count])) {
            ++count;
        } else {
            fprintf(stderr, "rkv_bench_blas: bad argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
    }
#ifdef RKV_BLAS_CANDIDATES
    if (count == 0) {
        static char found[] = RKV_BLAS_CANDIDATES; /* "kind:name:path;..." from CMake */
        for (char *save = NULL, *spec = strtok_r(found, ";", &save); spec && count < MAX_CANDIDATES;
             spec = strtok_r(NULL, ";", &save)) {
            char *copy = strdup(spec);
            if (parse_candidate(copy, &candidates[count])) ++count;
        }
    }
#endif
    if (count == 0) {
        fprintf(stderr, "rkv_bench_blas: no BLAS candidate found at configure time; name some\n");
        usage(stderr);
        return 2;
    }
    const int threads_all = (int)sysconf(_SC_NPROCESSORS_ONLN);
    printf("sgemm GFLOP/s (C = A B^T, f32), best of %d interleaved rounds, 1 thread and %d threads\n",
           rounds, threads_all);
    measurement best[MAX_CANDIDATES];
    memset(best, 0, sizeof best);
    for (int r = 0; r < rounds; ++r) {
        for (int i = 0; i < count; ++i) {
            measurement m = measure_in_child(&candidates[i], threads_all);
            if (!m.ok) {
                if (!best[i].ok) best[i] = m; /* keeps the reason */
                continue;
            }
            if (!best[i].ok) {
                best[i] = m;
                continue;
            }
            for (int t = 0; t < 2; ++t)
                for (int s = 0; s < SHAPES; ++s)
                    if (m.gflops[t][s] > best[i].gflops[t][s]) best[i].gflops[t][s] = m.gflops[t][s];
        }
        fprintf(stderr, "\rround %d/%d done", r + 1, rounds);
    }
    fprintf(stderr, "\n");
    for (int i = 0; i < count; ++i) {
        printf("\n%s  [%s]\n  %s\n", candidates[i].name, best[i].kernels, candidates[i].path);
        if (!best[i].ok) continue;
        for (int s = 0; s < SHAPES; ++s)
            printf("  %-28s %7.1f (1 thread) %7.1f (%d threads)\n", shapes[s].label, best[i].gflops[0][s],
                   best[i].gflops[1][s], threads_all);
    }
    return 0;
}
