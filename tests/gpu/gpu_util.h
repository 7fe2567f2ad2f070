/* Helpers of the GPU tests: device detection (exit 77 = skipped without a
 * GPU), device buffers, dtype conversion of host data, appends that feed a CPU
 * cache from host memory and a CUDA cache from device memory with the same
 * values, and twin caches (the CPU oracle and a CUDA cache with equal params).
 *
 * RKV_GPU_TEST_SMALL=1 shrinks the problem sizes (for compute-sanitizer runs). */
#ifndef RKV_GPU_UTIL_H
#define RKV_GPU_UTIL_H

#include "stream.h"
#include "test_util.h"

#define GPU_SKIP_CODE 77

/* Number of CUDA devices (0 when there is no driver or device). */
int gpu_device_count(void);
/* RKV_GPU_TEST_SMALL as a level: 0 full size, 1 smaller (memcheck), 2 smallest (racecheck). */
int gpu_small(void);
/* 1 if device 0 runs the wgmma path (RKV_MATMUL_WGMMA: compute capability 9.0). */
int gpu_wgmma(void);

/* In main(): exit 77 (CTest SKIP_RETURN_CODE) without a CUDA device. */
#define GPU_SKIP_WITHOUT_DEVICE()                                          \
    do {                                                                   \
        if (gpu_device_count() < 1) {                                      \
            /* ./rkv test quotes this line in its list of skipped tests */ \
            printf("SKIP: no CUDA device (run on an H100/H200: tools/gpu_check.sh)\n"); \
            return GPU_SKIP_CODE;                                          \
        }                                                                  \
    } while (0)

/* A CUDA runtime call that must succeed, else the test fails with the call and
 * the error (where used, cuda_runtime_api.h is included). */
#define CUDA_OK(call)                                                                     \
    do {                                                                                  \
        const cudaError_t error_ = (call);                                                \
        if (error_ != cudaSuccess) fail_msg("%s: %s", #call, cudaGetErrorString(error_)); \
    } while (0)

void *gpu_alloc(size_t bytes);
void *gpu_upload(const void *host, size_t bytes);
void gpu_download(void *host, const void *device, size_t bytes);
void gpu_fill(void *device, int byte, size_t bytes); /* every byte set to `byte` */
void gpu_free(void *device);
void gpu_sync(void);

size_t dtype_bytes(rkv_dtype dtype);
/* convert_from_f32, element_as_float, round_through: tests/common/test_util.h */

/* Append packed tokens: entry i's num_tokens[i] tokens follow entry i-1's in
 *   k, v [total, kv_heads, d] and q [total, q_heads, d] (q may be NULL), float32,
 * passed to librkv as `io` dtype, from host memory (CPU cache) or device memory
 * (CUDA cache). Returns the status of rkv_append. */
rkv_status gpu_test_append(rkv_cache *cache, int32_t layer, int32_t num_seqs, const int32_t *seq_ids,
                           const int32_t *num_tokens, const float *k, const float *v, const float *q,
                           rkv_dtype io, uint32_t flags);

/* A CPU cache and a CUDA cache with the same params. */
typedef struct twin {
    rkv_cache *cpu;
    rkv_cache *gpu;
    rkv_cache_params params;
} twin;
twin twin_create(const rkv_cache_params *params);
void twin_destroy(twin *t);
/* The same append on both; asserts both return `expected`. */
void twin_append(twin *t, int32_t layer, int32_t num_seqs, const int32_t *seq_ids, const int32_t *num_tokens,
                 const float *k, const float *v, const float *q, rkv_dtype io, uint32_t flags,
                 rkv_status expected);
/* Random tokens (normal K, V, Q) for every layer of every listed sequence. */
void twin_append_random(twin *t, int32_t num_seqs, const int32_t *seq_ids, const int32_t *num_tokens,
                        uint64_t *rng, uint32_t flags);

/* Held positions of (seq, layer, head), slot order; returns the count. */
int32_t kept_positions(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head, int32_t *out,
                       int32_t out_len);

/* Outcome of comparing the kept tokens of a CPU and a CUDA cache, per head. */
typedef struct kept_compare {
    int heads;        /* heads compared */
    int identical;    /* same tokens in the same slots */
    int near_ties;    /* different sets or orders, every swapped pair scored within the tie tolerance */
    int mismatches;   /* different sets beyond the tolerance (or no scores to explain them) */
    int order_errors; /* same set, different slot order */
} kept_compare;

/* Two candidates count as tied when their CPU scores differ by less than this
 * fraction of the head's largest |score|: float32 summation order alone moves
 * scores by about 1e-7 relative, so the sets may differ there and nowhere else. */
#define TIE_TOLERANCE 1e-5

/* What the CPU held and scored before a compression, to classify differences. */
typedef struct score_snapshot {
    int32_t cap;
    int32_t *held;       /* [seqs, layers] */
    int32_t *candidates; /* [seqs, layers] scored candidates (0: none) */
    int32_t *positions;  /* [seqs, layers, heads, cap] held positions, slot order */
    float *scores;       /* [seqs, layers, heads, cap] final scores by slot */
} score_snapshot;
score_snapshot snapshot_scores(const twin *t);
void snapshot_free(score_snapshot *s);

/* Compare every (seq, layer, head) of the twin; `before` (NULL: exact) explains
 * differences as ties. Adds to *out; prints each difference. */
void compare_kept(const twin *t, const score_snapshot *before, kept_compare *out, const char *what);

/* stream_append (tests/common/stream.h) for a CPU or a CUDA cache: the same
 * tokens, from host or device memory, in `io` dtype. */
rkv_status gpu_stream_append(rkv_cache *cache, int32_t seq, uint64_t variant, int64_t first, int32_t count,
                             rkv_dtype io, uint32_t flags);

/* What test_take_seq_snapshot records (lengths, held K, V and positions, the
 * budget), for a CPU or a CUDA cache (device memory is downloaded after a
 * device sync). */
test_snapshot gpu_seq_snapshot(const rkv_cache *cache, int32_t seq);
/* Asserts that two sequences (same or different caches, CPU or CUDA) hold the
 * same bytes and the same scores. */
void gpu_assert_same_sequence(const rkv_cache *a, int32_t seq_a, const rkv_cache *b, int32_t seq_b,
                              const char *what);

/* Slots of the capacity of a cache with these params. */
int32_t capacity_of(const rkv_cache_params *p);

#endif
