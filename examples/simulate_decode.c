/* rkv_simulate: drive librkv through a simulated decode, the way an engine's
 * loop would, and show what compression buys and what it keeps.
 *
 * Keys are synthetic but shaped like a reasoning trace: a slowly drifting
 * "topic" direction, a shared mean direction, and phrases that repeat (the
 * redundancy R-KV is built to find). Each step appends one token's K, V and Q
 * for every sequence with one rkv_append call per layer, attends over the held
 * tokens with rkv_attend, and lets automatic compression keep the budget.
 *
 *   rkv_simulate --help lists the options (HELP below).
 * Defaults: the SmolLM2-135M shape (30 layers, 9 query / 3 KV heads, d 64),
 * R-KV, budget 256, buffer 128, 4 sequences of 1024 tokens. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rkv/rkv.h"

#define CHECK(call)                                                                      \
    do {                                                                                 \
        rkv_status status_ = (call);                                                     \
        if (status_ != RKV_OK) {                                                         \
            fprintf(stderr, "%s failed: %s: %s\n", #call, rkv_status_name(status_),      \
                    rkv_error_message());                                           \
            exit(1);                                                                     \
        }                                                                                \
    } while (0)

enum { LAYERS = 30, KV_HEADS = 3, Q_HEADS = 9, DIM = 64 };

static uint64_t rng_state = 12345;
/* Approximately standard normal (sum of four uniforms): cheap, and the shape
 * of the noise does not matter here. */
static float normal(void) {
    float sum = 0.0f;
    for (int i = 0; i < 4; ++i) {
        rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
        sum += (float)(rng_state >> 40) * (1.0f / 16777216.0f);
    }
    return (sum - 2.0f) * 1.7320508f;
}

/* Synthetic key of token t: mean + drifting topic + noise; every 97 tokens a
 * phrase of 12 tokens repeats an earlier one almost exactly. */
static void make_key(float *key, const float *mean, const float *topic, float *phrase, int t) {
    int in_repeat = (t % 97) < 12 && t >= 97;
    for (int e = 0; e < DIM; ++e) {
        float fresh = mean[e] + topic[e] + 0.8f * normal();
        if (t % 97 < 12 && t < 97) phrase[(t % 97) * DIM + e] = fresh;
        key[e] = in_repeat ? phrase[(t % 97) * DIM + e] + 0.05f * normal() : fresh;
    }
}

static const char *const method_names[] = {"rkv", "snapkv", "h2o", "streamingllm", "keydiff", "random", "full"};
static const char *const dtype_names[] = {"f32", "f16", "bf16", "fp8"};  /* rkv_dtype order (fp8: E4M3) */

static const char *const HELP =
    "usage: %s [options]\n"
    "Drives librkv through a simulated decode (synthetic keys shaped like a reasoning trace) and\n"
    "prints the memory held, the compressions and which positions each head kept.\n"
    "  --method M    rkv snapkv h2o streamingllm keydiff random full (default rkv)\n"
    "  --budget B    tokens kept per head after a compression (default 256)\n"
    "  --buffer N    tokens appended between compressions (default 128)\n"
    "  --window W    most recent tokens, always kept (default 8)\n"
    "  --tokens T    tokens decoded per sequence (default 1024)\n"
    "  --seqs S      sequences decoded as one batch (default 4)\n"
    "  --dtype D     storage of the cache: f32 f16 bf16 fp8 (default f32)\n"
    "  -h, --help    this help\n";

/* A usage error: say what is wrong (and what is valid, if not NULL), exit 2. */
static void usage_error(const char *program, const char *what, const char *value, const char *valid) {
    fprintf(stderr, "%s: %s '%s'", program, what, value);
    if (valid) fprintf(stderr, " (%s)", valid);
    fprintf(stderr, "\n(%s --help lists the options)\n", program);
    exit(2);
}

/* Index of `value` in names[0 .. n-1]; a usage error naming them all otherwise. */
static int parse_name(const char *program, const char *option, const char *value, const char *const *names,
                      int n) {
    char valid[128] = "valid:";
    for (int i = 0; i < n; ++i) {
        if (strcmp(value, names[i]) == 0) return i;
        strncat(valid, " ", sizeof valid - strlen(valid) - 1);
        strncat(valid, names[i], sizeof valid - strlen(valid) - 1);
    }
    char what[64];
    snprintf(what, sizeof what, "unknown value for %s:", option);
    usage_error(program, what, value, valid);
    return -1;
}

/* An integer in [min, max]; a usage error otherwise. */
static int parse_int(const char *program, const char *option, const char *value, long min, long max) {
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (*value == '\0' || *end != '\0' || errno == ERANGE || v < min || v > max) {
        char what[64], valid[64];
        snprintf(what, sizeof what, "%s takes an integer, not", option);
        snprintf(valid, sizeof valid, "from %ld to %ld", min, max);
        usage_error(program, what, value, valid);
    }
    return (int)v;
}

/* An integer within librkv's bounds for `param`. */
static int parse_param(const char *program, const char *option, const char *value, rkv_param param) {
    double lower = 0, upper = 0;
    CHECK(rkv_params_bounds(param, &lower, &upper));
    return parse_int(program, option, value, (long)lower, (long)upper);
}

/* Print sorted positions as ranges: "0-3 17 25-31". */
static void print_ranges(const int32_t *sorted, int32_t n) {
    for (int32_t i = 0; i < n;) {
        int32_t j = i;
        while (j + 1 < n && sorted[j + 1] == sorted[j] + 1) ++j;
        if (j == i) printf(" %d", sorted[i]);
        else printf(" %d-%d", sorted[i], sorted[j]);
        i = j + 1;
    }
    printf("\n");
}

static int compare_int32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    rkv_cache_params params;
    CHECK(rkv_params_default(&params, sizeof params));
    params.num_layers = LAYERS;
    params.num_kv_heads = KV_HEADS;
    params.num_q_heads = Q_HEADS;
    params.head_dim = DIM;
    params.budget = 256;
    params.buffer = 128;
    params.max_seqs = 4;
    int tokens = 1024;
    const char *program = argv[0];
    static const char *const options[] = {"--method", "--budget", "--buffer", "--window",
                                          "--tokens", "--seqs",   "--dtype"};
    for (int i = 1; i < argc; ++i) {
        const char *flag = argv[i];
        if (strcmp(flag, "-h") == 0 || strcmp(flag, "--help") == 0) {
            printf(HELP, program);
            return 0;
        }
        int option = -1;
        for (int k = 0; k < 7; ++k)
            if (strcmp(flag, options[k]) == 0) option = k;
        if (option < 0) usage_error(program, "unknown option", flag, NULL);
        if (i + 1 >= argc) usage_error(program, "no value after", flag, NULL);
        const char *value = argv[++i];
        switch (option) {
            case 0: params.method = (rkv_method)parse_name(program, flag, value, method_names, 7); break;
            case 1: params.budget = parse_param(program, flag, value, RKV_PARAM_BUDGET); break;
            case 2: params.buffer = parse_param(program, flag, value, RKV_PARAM_BUFFER); break;
            case 3: params.window = parse_param(program, flag, value, RKV_PARAM_WINDOW); break;
            case 4: tokens = parse_int(program, flag, value, 1, 1 << 20); break;
            case 5: params.max_seqs = parse_param(program, flag, value, RKV_PARAM_MAX_SEQS); break;
            default: params.dtype = (rkv_dtype)parse_name(program, flag, value, dtype_names, 4); break;
        }
    }
    params.max_len = tokens;
    const int seqs = params.max_seqs;

    uint64_t bytes = 0;
    CHECK(rkv_cache_size(&params, &bytes));
    rkv_cache *cache = NULL;
    CHECK(rkv_cache_create(&params, &cache));
    /* What it runs with, first; the budget only where the method has one. */
    printf("rkv_simulate: method %s", method_names[params.method]);
    if (params.method == RKV_METHOD_FULL) printf(" (keeps every token)");
    else printf(", budget %d + buffer %d, window %d", params.budget, params.buffer, params.window);
    printf(", %s cache, %d sequence%s x %d tokens\n", dtype_names[params.dtype], seqs, seqs == 1 ? "" : "s", tokens);
    printf("librkv %s, the SmolLM2-135M shape: %d layers, %d KV heads (%d query heads), head_dim %d\n",
           rkv_version_string(), LAYERS, KV_HEADS, Q_HEADS, DIM);
    printf("%.1f MiB allocated once at create\n\n", (double)bytes / (1 << 20));

    /* Per (sequence, layer, head): the slowly drifting state of the synthetic trace. */
    const size_t streams = (size_t)seqs * LAYERS * KV_HEADS;
    float *mean = malloc(streams * DIM * sizeof(float)), *topic = calloc(streams * DIM, sizeof(float));
    float *phrase = malloc(streams * 12 * DIM * sizeof(float));
    for (size_t i = 0; i < streams * DIM; ++i) mean[i] = 0.7f * normal();
    float *k = malloc((size_t)seqs * KV_HEADS * DIM * sizeof(float));
    float *v = malloc((size_t)seqs * KV_HEADS * DIM * sizeof(float));
    float *q = malloc((size_t)seqs * Q_HEADS * DIM * sizeof(float));
    float *out = malloc((size_t)seqs * Q_HEADS * DIM * sizeof(float));
    int32_t *seq_ids = malloc((size_t)seqs * sizeof(int32_t));
    for (int s = 0; s < seqs; ++s) seq_ids[s] = s;

    /* One decode step = one append per layer for the whole batch, then attention. */
    rkv_append_args args;
    memset(&args, 0, sizeof args);
    args.struct_size = sizeof args;
    args.num_seqs = seqs;
    args.seq_ids = seq_ids;
    rkv_tensor kt = {k, RKV_DTYPE_F32, KV_HEADS, DIM, KV_HEADS * DIM, 0, DIM, 0};
    rkv_tensor vt = {v, RKV_DTYPE_F32, KV_HEADS, DIM, KV_HEADS * DIM, 0, DIM, 0};
    rkv_tensor qt = {q, RKV_DTYPE_F32, Q_HEADS, DIM, Q_HEADS * DIM, 0, DIM, 0};
    rkv_tensor ot = {out, RKV_DTYPE_F32, Q_HEADS, DIM, Q_HEADS * DIM, 0, DIM, 0};
    args.k = kt;
    args.v = vt;
    args.q = qt;
    for (int t = 0; t < tokens; ++t) {
        for (int layer = 0; layer < LAYERS; ++layer) {
            for (int s = 0; s < seqs; ++s)
                for (int h = 0; h < KV_HEADS; ++h) {
                    size_t stream = ((size_t)s * LAYERS + layer) * KV_HEADS + h;
                    for (int e = 0; e < DIM; ++e) topic[stream * DIM + e] += 0.05f * normal();
                    make_key(k + ((size_t)s * KV_HEADS + h) * DIM, mean + stream * DIM,
                             topic + stream * DIM, phrase + stream * 12 * DIM, t);
                    for (int e = 0; e < DIM; ++e) v[((size_t)s * KV_HEADS + h) * DIM + e] = normal();
                    /* queries look for keys like the recent ones */
                    for (int g = 0; g < Q_HEADS / KV_HEADS; ++g)
                        for (int e = 0; e < DIM; ++e)
                            q[((size_t)s * Q_HEADS + h * (Q_HEADS / KV_HEADS) + g) * DIM + e] =
                                0.3f * (mean[stream * DIM + e] + topic[stream * DIM + e]) + normal();
                }
            args.layer = layer;
            CHECK(rkv_append(cache, &args, NULL));
            rkv_attend_args attend;
            memset(&attend, 0, sizeof attend);
            attend.struct_size = sizeof attend;
            attend.layer = layer;
            attend.num_seqs = seqs;
            attend.seq_ids = seq_ids;
            attend.q = qt;
            attend.out = ot;
            CHECK(rkv_attend(cache, &attend, NULL));
        }
    }

    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    CHECK(rkv_cache_stats(cache, RKV_ALL, &stats));
    printf("after %d tokens x %d sequences:\n", tokens, seqs);
    printf("  KV held now          %8.2f MiB\n", (double)stats.bytes_kv_held / (1 << 20));
    printf("  a full cache needs   %8.2f MiB  (%.1fx more)\n", (double)stats.bytes_kv_full / (1 << 20),
           (double)stats.bytes_kv_full / (double)stats.bytes_kv_held);
    printf("  compressions         %8llu  (%.1f ms in total, %.3f ms each)\n",
           (unsigned long long)stats.compressions, stats.compress_seconds * 1e3,
           stats.compressions ? stats.compress_seconds * 1e3 / (double)stats.compressions : 0.0);
    printf("  tokens evicted       %8llu of %llu per head\n\n", (unsigned long long)stats.tokens_evicted,
           (unsigned long long)stats.tokens_appended);

    const int32_t layers_shown[2] = {0, LAYERS - 1};
    int32_t *positions = malloc((size_t)tokens * sizeof(int32_t));
    for (int i = 0; i < 2; ++i)
        for (int h = 0; h < KV_HEADS; ++h) {
            int32_t count = 0;
            CHECK(rkv_seq_positions(cache, 0, layers_shown[i], h, positions, tokens, &count));
            qsort(positions, (size_t)count, sizeof *positions, compare_int32);
            printf("sequence 0, layer %2d, head %d keeps %d positions:", layers_shown[i], h, count);
            print_ranges(positions, count);
        }
    rkv_cache_destroy(cache);
    free(mean), free(topic), free(phrase), free(k), free(v), free(q), free(out), free(seq_ids), free(positions);
    return 0;
}
