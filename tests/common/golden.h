/* The golden vectors of tests/golden (outputs of the official R-KV code)
 * and the checks every backend must pass against them, shared by the CPU test
 * (tests/test_golden.c) and the CUDA test (tests/gpu/test_gpu_golden.c). A
 * backend supplies how tokens reach its cache and how to read its K/V back. */
#ifndef RKV_TEST_GOLDEN_H
#define RKV_TEST_GOLDEN_H

#include "npy.h"
#include "test_util.h"

#define GOLDEN_MAX_CASES 64
#define GOLDEN_SCORE_TOLERANCE 1e-5 /* max |diff| / max |value| per head */

typedef struct golden_case {
    char name[64];
    char method[16];
    int num_kv_heads, num_q_heads, head_dim;
    int cache_len, budget, buffer, window, kernel, sink, rounds;
    double lambda;
    int compressed, multistep;
} golden_case;

/* How a test drives one backend through the golden schedule. */
typedef struct golden_backend {
    const char *name;
    rkv_device_type device_type;
    /* Append tokens [first, first+count) of k and v (laid out [heads, total, d],
     * the .npy layout) with queries from q [q_heads, q_total, d] starting at
     * q_first, or none when q is NULL. */
    void (*append_range)(rkv_cache *cache, const golden_case *c, const float *k, const float *v,
                         int32_t total, int32_t first, int32_t count, const float *q,
                         int32_t q_total, int32_t q_first);
    /* Copy the held K, V ([heads, capacity, d] at the view's strides) and
     * positions of (seq 0, layer 0) into host memory. */
    void (*read_view)(const rkv_cache *cache, const rkv_seq_view *view, float *k, float *v,
                      int32_t *positions);
} golden_backend;

/* Reads manifest.json; returns the number of cases (fails the test on error). */
int golden_load_manifest(golden_case *cases, int max_cases);
npy_array golden_load(const golden_case *c, const char *file);
rkv_method golden_method(const golden_case *c);
/* A one-sequence, one-layer cache of the case's parameters holding `capacity`. */
rkv_cache_params golden_params(const golden_case *c, rkv_mode mode, rkv_dtype dtype,
                               int32_t capacity);
/* V distinct from K so that compaction must move both: v = 2k + 1. */
float *golden_values_for(const npy_array *k);

/* One single-step case in reference mode: scores within GOLDEN_SCORE_TOLERANCE,
 * kept sets (tie-aware for SnapKV, exact for StreamingLLM), rows that follow
 * their positions, or no change when the case is not compressed. */
void golden_run_single_step(const golden_backend *backend, const golden_case *c);
/* One multi-step case: kept_rounds exactly, order included, with explicit
 * compressions and with automatic ones during a token-by-token decode. */
void golden_run_multistep(const golden_backend *backend, const golden_case *c);

#endif
