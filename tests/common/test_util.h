/* Helpers shared by the CMocka tests: cache construction, deterministic random
 * data, appends from plain float32 arrays, and snapshots that prove a failed call
 * left a cache unchanged. Include after <cmocka.h>'s prerequisites. */
#ifndef RKV_TEST_UTIL_H
#define RKV_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "rkv/rkv.h"

/* Asserts that `call` returns `expected`; on mismatch prints the library's message. */
#define ASSERT_STATUS(call, expected)                                                         \
    do {                                                                                      \
        rkv_status status_ = (call);                                                          \
        if (status_ != (expected))                                                            \
            fail_msg("%s returned %s, expected %s: %s", #call, rkv_status_name(status_),      \
                     rkv_status_name(expected), rkv_error_message());                    \
    } while (0)
#define ASSERT_OK(call) ASSERT_STATUS(call, RKV_OK)

/* Defaults plus a shape; method and budget/buffer/window set explicitly. */
rkv_cache_params test_params(int32_t max_seqs, int32_t layers, int32_t kv_heads, int32_t q_heads,
                             int32_t head_dim, rkv_method method, int32_t budget, int32_t buffer,
                             int32_t window);
rkv_cache *test_create(const rkv_cache_params *params);

/* Deterministic generator (splitmix64) and standard normals. */
uint64_t test_rng_next(uint64_t *state);
float test_rng_uniform(uint64_t *state); /* [0, 1) */
float test_rng_normal(uint64_t *state);
void test_fill_normal(float *out, size_t count, uint64_t *state);

/* Storage dtypes on the host: x[0..count) as `dtype` (round to nearest even,
 * NaN kept) into out; element `index` of a `dtype` buffer as float; the value
 * `dtype` stores for x. FP8_E4M3 here is the bare format (no scale). */
void convert_from_f32(const float *x, size_t count, rkv_dtype dtype, void *out);
float element_as_float(const void *data, rkv_dtype dtype, size_t index);
float round_through(rkv_dtype dtype, float x);
size_t test_dtype_bytes(rkv_dtype dtype);

/* FP8 E4M3 written for the tests from the format's definition, independent of
 * the library: the nearest E4M3 value (ties to even, saturating to +-448);
 * and a row as an FP8 cache stores it, dequantised: out = fp8(x / s) * s with
 * s the smallest power of two with max|x| <= 448 s; returns s. */
float fp8_reference(float x);
float fp8_reference_row(const float *x, size_t count, float *out);

/* A float32 tensor laid out [tokens, heads, head_dim] (one entry). */
rkv_tensor test_tensor(float *data, int32_t heads, int32_t head_dim);

/* Append `tokens` tokens to (seq, layer): k, v [tokens, kv_heads, d], q
 * [tokens, q_heads, d] or NULL. Returns the status. */
rkv_status test_append(rkv_cache *cache, int32_t layer, int32_t seq, const float *k,
                       const float *v, const float *q, int32_t tokens, uint32_t flags);

/* rkv_attend with host seq_ids (args built from the parts, as in 0.1's signature). */
rkv_status test_attend(rkv_cache *cache, int32_t layer, int32_t num_seqs, const int32_t *seq_ids,
                       const rkv_tensor *q, const rkv_tensor *out, float scale, void *stream);

/* Append `tokens` random tokens (K, V, Q normal) to every layer of `seq`;
 * asserts success. */
void test_append_random(rkv_cache *cache, int32_t seq, int32_t tokens, uint64_t *rng);

/* Everything observable about a cache: params, per (seq, layer) lengths, the
 * held K, V, positions bytes, and per sequence its budget and rollback limit.
 * Two snapshots compare equal iff nothing changed. */
typedef struct test_snapshot {
    size_t size;
    unsigned char *bytes;
} test_snapshot;
test_snapshot test_take_snapshot(const rkv_cache *cache);
/* Only sequence `seq` (all layers), without its rollback limit (which depends
 * on its history, not only on its state: see rkv_seq_rollback_limit). */
test_snapshot test_take_seq_snapshot(const rkv_cache *cache, int32_t seq);
int test_snapshot_equal(const test_snapshot *a, const test_snapshot *b);
void test_snapshot_free(test_snapshot *s);

/* Positions held by one head, sorted ascending; returns the count. */
int32_t test_sorted_positions(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head,
                              int32_t *out, int32_t out_len);

/* Directory of the golden vectors: $RKV_GOLDEN_DIR if set, else the repository's tests/golden. */
const char *test_golden_dir(void);

#endif
