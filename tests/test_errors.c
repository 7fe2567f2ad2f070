/* Error paths of every public entry point.
 *
 * The header promises, for every function: on any status other than RKV_OK the
 * cache is unchanged, and rkv_error_message() says what was wrong. So every
 * rejected call below is checked three ways:
 *   1. it returns the exact status the header documents;
 *   2. it leaves the cache exactly as it was: a snapshot (params, lengths, held
 *      K, V and positions of every sequence and layer, statistics) of a cache
 *      that holds tokens and has compressed once compares equal afterwards;
 *   3. it sets a non-empty message of its own (the message of a different,
 *      earlier failure is primed before the call and must have been replaced).
 * Each bad call breaks one field of an argument set that a "control" test shows
 * to succeed, so the status is caused by that one field. Where the header lists
 * statuses but does not say which one a case gets, the test pins the current
 * choice and says so in a comment. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expect.h"
#include "test_util.h"

/* tests/common/fault_hook.cpp: puts a cache in the state a device fault leaves it in. */
void test_mark_faulted(rkv_cache *cache, const char *why);

/* Shape of every cache in this file. */
enum {
    SEQS = 3,
    LAYERS = 2,
    KV = 2,
    QH = 4,
    D = 8,
    BUDGET = 8,
    BUFFER = 4,
    WINDOW = 2,
    CAPACITY = BUDGET + BUFFER,
    MAX_TOKENS = 64 /* tokens the data buffers below hold, for any head count */
};

/* Input data for appends and attends (normal noise), and an attend output. */
static float g_k[MAX_TOKENS * QH * D], g_v[MAX_TOKENS * QH * D], g_q[MAX_TOKENS * QH * D];
static float g_out[MAX_TOKENS * QH * D];

/* Out-of-range indices tried wherever a sequence or layer index is taken. */
static const int32_t kBadSeqs[] = {SEQS, -2, INT32_MIN, INT32_MAX};
static const int32_t kBadLayers[] = {LAYERS, -2, INT32_MIN, INT32_MAX};
#define COUNT(array) (sizeof(array) / sizeof((array)[0]))

/* Struct sizes that are not this header's: unset, an older header (one field
 * less), a newer header (one field more). */
#define BAD_SIZES(type) \
    { 0, sizeof(type) - 8, sizeof(type) + 8 }
/* rkv_cache_params also has 0.1's size (112 bytes on LP64, accepted: see
 * test_abi_v0_1.c), so its bad sizes are between and around the two. */
#define PARAMS_BAD_SIZES \
    { 0, sizeof(rkv_cache_params) - 4, sizeof(rkv_cache_params) + 8, sizeof(rkv_cache_params) - 16 }

/* Message and snapshot checks (prime_message, EXPECT_FAIL, EXPECT_REJECTED):
 * tests/common/expect.h. */

/* ---------------------------------------------------------------------------
 * Caches and valid argument sets
 * ------------------------------------------------------------------------- */

/* Caches a test creates for itself: released by the test, or by the teardown
 * when an assertion ends the test early (so a failure reports no leaks). */
enum { MAX_OWNED = 4 };
static rkv_cache *g_owned[MAX_OWNED];
static int g_num_owned;

static rkv_cache *own(rkv_cache *cache) {
    if (g_num_owned == MAX_OWNED) fail_msg("a test owns more than %d caches", MAX_OWNED);
    g_owned[g_num_owned++] = cache;
    return cache;
}

static int release_owned(void **state) {
    (void)state;
    for (int i = 0; i < g_num_owned; ++i) rkv_cache_destroy(g_owned[i]);
    g_num_owned = 0;
    return 0;
}

static rkv_cache_params shape_params(rkv_method method) {
    return test_params(SEQS, LAYERS, KV, QH, D, method, BUDGET, BUFFER, WINDOW);
}

static rkv_cache *make_cache(rkv_method method) {
    rkv_cache_params p = shape_params(method);
    if (method == RKV_METHOD_FULL) p.max_len = 16;
    return own(test_create(&p));
}

static rkv_status append_tokens(rkv_cache *cache, int32_t layer, int32_t seq, int32_t tokens,
                                int with_queries, uint32_t flags) {
    return test_append(cache, layer, seq, g_k, g_v, with_queries ? g_q : NULL, tokens, flags);
}

/* The same tokens to every layer of `seq`. */
static void append_all_layers(rkv_cache *cache, int32_t seq, int32_t tokens, int with_queries) {
    for (int32_t layer = 0; layer < LAYERS; ++layer)
        ASSERT_OK(append_tokens(cache, layer, seq, tokens, with_queries, 0));
}

static int64_t held(const rkv_cache *cache, int32_t seq, int32_t layer) {
    int32_t physical = -1;
    ASSERT_OK(rkv_seq_length(cache, seq, layer, NULL, &physical));
    return physical;
}

/* The fixture: an R-KV cache where sequence 0 went past its capacity once
 * (compressed to the budget, then 2 more tokens: 10 held), sequence 1 holds
 * exactly `window` generated tokens, and sequence 2 is empty. */
static int setup_fixture(void **state) {
    rkv_cache_params p = shape_params(RKV_METHOD_RKV);
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 42;
    test_append_random(cache, 0, CAPACITY + 2, &rng);
    test_append_random(cache, 1, WINDOW, &rng);
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(cache, 0, &stats));
    assert_int_equal(stats.compressions, LAYERS);
    assert_int_equal(held(cache, 0, 0), BUDGET + 2);
    assert_int_equal(held(cache, 1, 0), WINDOW);
    assert_int_equal(held(cache, 2, 0), 0);
    *state = cache;
    return 0;
}

static int teardown_fixture(void **state) {
    rkv_cache_destroy(*state);
    return release_owned(NULL);
}

static int setup_data(void **state) {
    (void)state;
    uint64_t rng = 7;
    test_fill_normal(g_k, COUNT(g_k), &rng);
    test_fill_normal(g_v, COUNT(g_v), &rng);
    test_fill_normal(g_q, COUNT(g_q), &rng);
    return 0;
}

/* A valid append of one token (with queries) to sequence 1, layer 0 of the
 * fixture; tests break one field. The arrays have room for SEQS + 1 entries. */
typedef struct append_call {
    rkv_append_args args;
    int32_t seq_ids[SEQS + 1];
    int32_t num_tokens[SEQS + 1];
    int64_t token_offsets[SEQS + 1];
} append_call;

static void base_append(append_call *c) {
    memset(c, 0, sizeof *c);
    for (int i = 0; i <= SEQS; ++i) {
        c->seq_ids[i] = i;
        c->num_tokens[i] = 1;
        c->token_offsets[i] = 0;
    }
    c->seq_ids[0] = 1;
    c->args.struct_size = sizeof c->args;
    c->args.layer = 0;
    c->args.num_seqs = 1;
    c->args.seq_ids = c->seq_ids;
    c->args.num_tokens = c->num_tokens;
    c->args.token_offsets = NULL;
    c->args.k = test_tensor(g_k, KV, D);
    c->args.v = test_tensor(g_v, KV, D);
    c->args.q = test_tensor(g_q, QH, D);
    c->args.flags = 0;
}

/* A valid decode attention of sequences 0 and 1 at layer 0 of the fixture. */
typedef struct attend_call {
    int32_t layer;
    int32_t num_seqs;
    int32_t seq_ids[SEQS + 1];
    rkv_tensor q, out;
    float scale;
} attend_call;

static void base_attend(attend_call *c) {
    memset(c, 0, sizeof *c);
    c->layer = 0;
    c->num_seqs = 2;
    for (int i = 0; i <= SEQS; ++i) c->seq_ids[i] = i;
    c->q = test_tensor(g_q, QH, D);
    c->q.stride_seq = QH * D;
    c->out = test_tensor(g_out, QH, D);
    c->out.stride_seq = QH * D;
    c->scale = 0.0f;
}

/* The same call through rkv_attend_args, with the tensors' extents. */
static rkv_status attend_args_call(rkv_cache *cache, const attend_call *c) {
    rkv_attend_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = c->layer;
    a.num_seqs = c->num_seqs;
    a.seq_ids = c->seq_ids;
    a.q = c->q;
    a.out = c->out;
    a.scale = c->scale;
    return rkv_attend(cache, &a, NULL);
}
#define ATTEND_ARGS(cache, c) attend_args_call(cache, &(c))

#define ATTEND(cache, c) \
    test_attend(cache, (c).layer, (c).num_seqs, (c).seq_ids, &(c).q, &(c).out, (c).scale, NULL)

/* ---------------------------------------------------------------------------
 * Functions without a cache
 * ------------------------------------------------------------------------- */

/* Every status has its pinned value and its own static name; values not in the
 * enum are named RKV_UNKNOWN_STATUS (never NULL). */
static void test_status_names(void **state) {
    (void)state;
    static const struct {
        rkv_status status;
        int value;
        const char *name;
    } kStatuses[] = {
        {RKV_OK, 0, "RKV_OK"},
        {RKV_ERR_INVALID_ARGUMENT, 1, "RKV_ERR_INVALID_ARGUMENT"},
        {RKV_ERR_OUT_OF_RANGE, 2, "RKV_ERR_OUT_OF_RANGE"},
        {RKV_ERR_UNSUPPORTED, 3, "RKV_ERR_UNSUPPORTED"},
        {RKV_ERR_SHAPE_MISMATCH, 4, "RKV_ERR_SHAPE_MISMATCH"},
        {RKV_ERR_STRUCT_SIZE, 5, "RKV_ERR_STRUCT_SIZE"},
        {RKV_ERR_CAPACITY, 6, "RKV_ERR_CAPACITY"},
        {RKV_ERR_MISSING_QUERIES, 7, "RKV_ERR_MISSING_QUERIES"},
        {RKV_ERR_BAD_STATE, 8, "RKV_ERR_BAD_STATE"},
        {RKV_ERR_OVERFLOW, 9, "RKV_ERR_OVERFLOW"},
        {RKV_ERR_OUT_OF_MEMORY, 20, "RKV_ERR_OUT_OF_MEMORY"},
        {RKV_ERR_DEVICE, 30, "RKV_ERR_DEVICE"},
        {RKV_ERR_FAULTED, 31, "RKV_ERR_FAULTED"},
        {RKV_ERR_INTERNAL, 99, "RKV_ERR_INTERNAL"},
    };
    for (size_t i = 0; i < COUNT(kStatuses); ++i) {
        assert_int_equal((int)kStatuses[i].status, kStatuses[i].value);
        const char *name = rkv_status_name(kStatuses[i].status);
        assert_non_null(name);
        assert_string_equal(name, kStatuses[i].name);
    }
    static const int kUnknown[] = {10, 19, 21, 29, 32, 98, 100, 12345, -1};
    for (size_t i = 0; i < COUNT(kUnknown); ++i) {
        const char *name = rkv_status_name((rkv_status)kUnknown[i]);
        assert_non_null(name);
        assert_string_equal(name, "RKV_UNKNOWN_STATUS");
    }
}

/* The loaded library reports the version of the header it was built from. */
static void test_version_matches_header(void **state) {
    (void)state;
    assert_int_equal(rkv_version_number(), RKV_VERSION_NUMBER);
    assert_int_equal(RKV_VERSION_NUMBER,
                     RKV_VERSION_MAJOR * 10000 + RKV_VERSION_MINOR * 100 + RKV_VERSION_PATCH);
    char expected[64];
    snprintf(expected, sizeof expected, "%d.%d.%d", RKV_VERSION_MAJOR, RKV_VERSION_MINOR,
             RKV_VERSION_PATCH);
    assert_non_null(rkv_version_string());
    assert_string_equal(rkv_version_string(), expected);
}

/* Destroying NULL is a no-op (no crash, nothing reported), and the message
 * getter never returns NULL. */
static void test_destroy_null_is_noop(void **state) {
    (void)state;
    prime_message();
    rkv_cache_destroy(NULL);
    assert_non_null(rkv_error_message());
    assert_string_equal(rkv_error_message(), primed_message());
}

/* rkv_params_default: NULL params, and struct sizes it does not know; a
 * rejected size leaves the caller's struct untouched. */
static void test_params_default_errors(void **state) {
    (void)state;
    EXPECT_FAIL(rkv_params_default(NULL, sizeof(rkv_cache_params)), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = PARAMS_BAD_SIZES;
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        rkv_cache_params p, copy;
        memset(&p, 0xab, sizeof p);
        memcpy(&copy, &p, sizeof p);
        EXPECT_FAIL(rkv_params_default(&p, sizes[i]), RKV_ERR_STRUCT_SIZE);
        assert_memory_equal(&p, &copy, sizeof p);
    }
}

/* rkv_params_bounds: NULL outputs and unknown keys. */
static void test_param_bounds_errors(void **state) {
    (void)state;
    double lower, upper;
    EXPECT_FAIL(rkv_params_bounds(RKV_PARAM_BUDGET, NULL, &upper), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(rkv_params_bounds(RKV_PARAM_BUDGET, &lower, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(rkv_params_bounds(RKV_PARAM_BUDGET, NULL, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(rkv_params_bounds((rkv_param)(RKV_PARAM_MAX_ROLLBACK + 1), &lower, &upper),
                RKV_ERR_UNSUPPORTED);
    EXPECT_FAIL(rkv_params_bounds((rkv_param)-1, &lower, &upper), RKV_ERR_UNSUPPORTED);
    EXPECT_FAIL(rkv_params_bounds((rkv_param)1000, &lower, &upper), RKV_ERR_UNSUPPORTED);
}

/* Enumerations, and the guard flags: a value outside them is unsupported. */
static int is_enum_param(int key) {
    return key == RKV_PARAM_DTYPE || key == RKV_PARAM_DEVICE_TYPE || key == RKV_PARAM_METHOD ||
           key == RKV_PARAM_MODE || key == RKV_PARAM_POOLING || key == RKV_PARAM_GUARDS;
}

static int is_real_param(int key) {
    return key == RKV_PARAM_LAMBDA || key == RKV_PARAM_THRESHOLD;
}

/* rkv_params_set(p, key, value) fails with `expected` and leaves *p byte for byte unchanged. */
static void expect_params_set_rejected(int key, double value, rkv_status expected) {
    rkv_cache_params p = shape_params(RKV_METHOD_RKV), copy;
    memcpy(&copy, &p, sizeof p);
    prime_message();
    const rkv_status status = rkv_params_set(&p, (rkv_param)key, value);
    if (status != expected)
        fail_msg("rkv_params_set(key %d, %g) returned %s, expected %s: %s", key, value,
                 rkv_status_name(status), rkv_status_name(expected), rkv_error_message());
    check_fresh_message("rkv_params_set");
    if (memcmp(&p, &copy, sizeof p) != 0)
        fail_msg("rkv_params_set(key %d, %g) failed but changed the params", key, value);
}

/* rkv_params_set: every key below and above its bounds, NaN, infinities and
 * non-integral values of integer keys are OUT_OF_RANGE; the same for enum keys
 * is UNSUPPORTED (an unknown enum value); *params is unchanged each time. */
static void test_params_set_errors(void **state) {
    (void)state;
    EXPECT_FAIL(rkv_params_set(NULL, RKV_PARAM_BUDGET, 16), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = PARAMS_BAD_SIZES;
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        rkv_cache_params p = shape_params(RKV_METHOD_RKV);
        p.struct_size = sizes[i];
        EXPECT_FAIL(rkv_params_set(&p, RKV_PARAM_BUDGET, 16), RKV_ERR_STRUCT_SIZE);
        assert_int_equal(p.budget, BUDGET);
    }
    expect_params_set_rejected(RKV_PARAM_MAX_ROLLBACK + 1, 0, RKV_ERR_UNSUPPORTED);
    expect_params_set_rejected(-1, 0, RKV_ERR_UNSUPPORTED);

    for (int key = 0; key <= RKV_PARAM_MAX_ROLLBACK; ++key) {
        double lower, upper;
        ASSERT_OK(rkv_params_bounds((rkv_param)key, &lower, &upper));
        const rkv_status bad = is_enum_param(key) ? RKV_ERR_UNSUPPORTED : RKV_ERR_OUT_OF_RANGE;
        expect_params_set_rejected(key, lower - 1, bad);
        expect_params_set_rejected(key, upper + 2, bad); /* + 2: exact even at seed's 2^53 */
        expect_params_set_rejected(key, NAN, bad);
        expect_params_set_rejected(key, INFINITY, bad);
        expect_params_set_rejected(key, -INFINITY, bad);
        if (!is_real_param(key)) expect_params_set_rejected(key, lower + 0.5, bad);
    }
    /* Within [1, 255] but even: max-pooling is centred. The header does not say
     * which status; pinned to OUT_OF_RANGE, as create does (below). */
    expect_params_set_rejected(RKV_PARAM_KERNEL, 4, RKV_ERR_OUT_OF_RANGE);
    /* An unknown guard bit is unsupported, like an unknown append flag. */
    expect_params_set_rejected(RKV_PARAM_GUARDS, 4, RKV_ERR_UNSUPPORTED);
}

/* rkv_params_get: NULL pointers, struct size, unknown key. */
static void test_params_get_errors(void **state) {
    (void)state;
    rkv_cache_params p = shape_params(RKV_METHOD_RKV);
    double value = 0;
    EXPECT_FAIL(rkv_params_get(NULL, RKV_PARAM_BUDGET, &value), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(rkv_params_get(&p, RKV_PARAM_BUDGET, NULL), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = PARAMS_BAD_SIZES;
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        rkv_cache_params bad = p;
        bad.struct_size = sizes[i];
        EXPECT_FAIL(rkv_params_get(&bad, RKV_PARAM_BUDGET, &value), RKV_ERR_STRUCT_SIZE);
    }
    EXPECT_FAIL(rkv_params_get(&p, (rkv_param)(RKV_PARAM_MAX_ROLLBACK + 1), &value),
                RKV_ERR_UNSUPPORTED);
    EXPECT_FAIL(rkv_params_get(&p, (rkv_param)-1, &value), RKV_ERR_UNSUPPORTED);
}

/* ---------------------------------------------------------------------------
 * rkv_cache_size and rkv_cache_create (same validation)
 * ------------------------------------------------------------------------- */

static int g_sentinel_object;
#define SENTINEL_CACHE ((rkv_cache *)(void *)&g_sentinel_object)

/* Both rkv_cache_size and rkv_cache_create reject *p with `expected`, each with
 * a message of its own; create leaves *cache as it was. */
static void expect_params_rejected(const rkv_cache_params *p, rkv_status expected,
                                   const char *what) {
    uint64_t bytes = 0;
    prime_message();
    rkv_status status = rkv_cache_size(p, &bytes);
    if (status != expected)
        fail_msg("rkv_cache_size with %s returned %s, expected %s: %s", what,
                 rkv_status_name(status), rkv_status_name(expected), rkv_error_message());
    check_fresh_message(what);
    rkv_cache *cache = SENTINEL_CACHE;
    prime_message();
    status = rkv_cache_create(p, &cache);
    if (status != expected)
        fail_msg("rkv_cache_create with %s returned %s, expected %s: %s", what,
                 rkv_status_name(status), rkv_status_name(expected), rkv_error_message());
    check_fresh_message(what);
    if (cache != SENTINEL_CACHE) fail_msg("rkv_cache_create with %s failed but set *cache", what);
}

/* Valid params with one change, rejected by size and create. */
#define EXPECT_PARAMS(method, change, expected)                      \
    do {                                                             \
        rkv_cache_params p_ = shape_params(method);                  \
        change;                                                      \
        expect_params_rejected(&p_, expected, #method ": " #change); \
    } while (0)

/* The valid params of this file are accepted, as are the boundary cases next
 * to the rejections below: this proves each rejection is caused by its change. */
static void test_create_controls(void **state) {
    (void)state;
    uint64_t bytes = 0;
    for (int m = RKV_METHOD_RKV; m <= RKV_METHOD_FULL; ++m) {
        rkv_cache_params p = shape_params((rkv_method)m);
        ASSERT_OK(rkv_cache_size(&p, &bytes));
        assert_true(bytes > 0);
    }
    rkv_cache_params p = shape_params(RKV_METHOD_RKV);
    p.budget = WINDOW + 1; /* budget > window */
    ASSERT_OK(rkv_cache_size(&p, &bytes));
    p = shape_params(RKV_METHOD_RKV);
    p.guards = RKV_GUARD_SINK;
    p.sink = BUDGET - WINDOW; /* sink + window == budget */
    ASSERT_OK(rkv_cache_size(&p, &bytes));
    p = shape_params(RKV_METHOD_RKV);
    p.guards = RKV_GUARD_PROMPT;
    p.max_prompt_len = 1;
    ASSERT_OK(rkv_cache_size(&p, &bytes));
    p = shape_params(RKV_METHOD_RKV);
    p.seed = UINT64_MAX; /* any uint64 is a valid seed */
    ASSERT_OK(rkv_cache_size(&p, &bytes));
    rkv_cache *cache = NULL;
    ASSERT_OK(rkv_cache_create(&p, &cache));
    assert_non_null(cache);
    rkv_cache_destroy(cache);
}

/* NULL pointers and struct sizes of rkv_cache_size and rkv_cache_create. */
static void test_create_pointer_and_size_errors(void **state) {
    (void)state;
    rkv_cache_params p = shape_params(RKV_METHOD_RKV);
    uint64_t bytes = 0;
    rkv_cache *cache = SENTINEL_CACHE;
    EXPECT_FAIL(rkv_cache_size(NULL, &bytes), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(rkv_cache_size(&p, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_FAIL(rkv_cache_create(NULL, &cache), RKV_ERR_INVALID_ARGUMENT);
    assert_ptr_equal(cache, SENTINEL_CACHE);
    EXPECT_FAIL(rkv_cache_create(&p, NULL), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = PARAMS_BAD_SIZES;
    for (size_t i = 0; i < COUNT(sizes); ++i)
        EXPECT_PARAMS(RKV_METHOD_RKV, p_.struct_size = sizes[i], RKV_ERR_STRUCT_SIZE);
}

/* Shape fields left 0 (as rkv_params_default leaves them) are rejected;
 * negative ones are below their bounds. */
static void test_create_shape_errors(void **state) {
    (void)state;
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.max_seqs = 0, RKV_ERR_INVALID_ARGUMENT);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.num_layers = 0, RKV_ERR_INVALID_ARGUMENT);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.num_kv_heads = 0, RKV_ERR_INVALID_ARGUMENT);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.num_q_heads = 0, RKV_ERR_INVALID_ARGUMENT);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.head_dim = 0, RKV_ERR_INVALID_ARGUMENT);
    rkv_cache_params defaults;
    ASSERT_OK(rkv_params_default(&defaults, sizeof defaults));
    expect_params_rejected(&defaults, RKV_ERR_INVALID_ARGUMENT, "rkv_params_default alone");
    /* Below the bounds of rkv_params_bounds. */
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.max_seqs = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.num_layers = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.num_kv_heads = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.num_q_heads = -4, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.head_dim = -8, RKV_ERR_OUT_OF_RANGE);
    /* GQA: query heads come in whole groups per KV head. */
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.num_q_heads = KV * 2 + 1, RKV_ERR_INVALID_ARGUMENT);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.num_q_heads = 1, RKV_ERR_INVALID_ARGUMENT);
}

/* Unknown enum values are UNSUPPORTED, and so is a CUDA cache no build can
 * create: head_dim 300 is over the CUDA backend's limit of 256, and a build
 * without CUDA, or a machine without a GPU, cannot create any CUDA cache. */
static void test_create_enum_errors(void **state) {
    (void)state;
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.dtype = (rkv_dtype)4, RKV_ERR_UNSUPPORTED);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.dtype = (rkv_dtype)-1, RKV_ERR_UNSUPPORTED);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.device_type = (rkv_device_type)2, RKV_ERR_UNSUPPORTED);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.method = (rkv_method)(RKV_METHOD_FULL + 1),
                  RKV_ERR_UNSUPPORTED);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.method = (rkv_method)-1, RKV_ERR_UNSUPPORTED);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.mode = (rkv_mode)2, RKV_ERR_UNSUPPORTED);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.pooling = (rkv_pooling)2, RKV_ERR_UNSUPPORTED);
    EXPECT_PARAMS(RKV_METHOD_RKV, (p_.device_type = RKV_DEVICE_CUDA, p_.head_dim = 300),
                  RKV_ERR_UNSUPPORTED);
}

/* Rules between parameters, and single values outside their bounds. */
static void test_create_value_errors(void **state) {
    (void)state;
    /* The window is always kept: the budget must leave room for scored tokens. */
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.budget = WINDOW, RKV_ERR_INVALID_ARGUMENT);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.window = BUDGET + 1, RKV_ERR_INVALID_ARGUMENT);
    EXPECT_PARAMS(RKV_METHOD_H2O, p_.budget = WINDOW, RKV_ERR_INVALID_ARGUMENT);
    /* Even kernels: the header does not say which status; pinned to OUT_OF_RANGE
     * (the same as rkv_params_set, above). */
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.kernel = 4, RKV_ERR_OUT_OF_RANGE);
    /* The sink (of StreamingLLM or the sink guard) and the window share the budget. */
    EXPECT_PARAMS(RKV_METHOD_STREAMINGLLM, p_.sink = BUDGET - WINDOW + 1, RKV_ERR_INVALID_ARGUMENT);
    EXPECT_PARAMS(RKV_METHOD_RKV, (p_.guards = RKV_GUARD_SINK, p_.sink = BUDGET),
                  RKV_ERR_INVALID_ARGUMENT);
    /* The prompt guard reserves max_prompt_len slots: 0 reserves nothing. */
    EXPECT_PARAMS(RKV_METHOD_RKV, (p_.guards = RKV_GUARD_PROMPT, p_.max_prompt_len = 0),
                  RKV_ERR_INVALID_ARGUMENT);
    /* Unknown guard bits are unsupported, like unknown append flags. */
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.guards = 1u << 2, RKV_ERR_UNSUPPORTED);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.guards = 0x80000000u, RKV_ERR_UNSUPPORTED);
    /* Values outside rkv_params_bounds, as rkv_params_set would reject them. */
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.lambda = NAN, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.lambda = 1.5f, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.threshold = NAN, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.threshold = -2.0f, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.budget = (1 << 24) + 1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.buffer = 0, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.window = 0, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.kernel = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.sink = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.device_id = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.max_prompt_len = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_FULL, p_.max_len = 0, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.auto_compress = 2, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.auto_compress = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.max_rollback = -1, RKV_ERR_OUT_OF_RANGE);
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.max_rollback = 1025, RKV_ERR_OUT_OF_RANGE);
    /* Reserved fields stay 0, so a later version can give them a meaning. */
    EXPECT_PARAMS(RKV_METHOD_RKV, p_.reserved = 1, RKV_ERR_INVALID_ARGUMENT);
}

/* Every field within its own bounds, but the product of sequences, layers,
 * heads, capacity and head_dim does not fit in 64 bits: OVERFLOW, not a wrapped
 * size (and not an attempted allocation). */
static void test_create_size_overflow(void **state) {
    (void)state;
    rkv_cache_params p = shape_params(RKV_METHOD_RKV);
    const struct {
        rkv_param key;
        double value;
    } kHuge[] = {
        {RKV_PARAM_MAX_SEQS, 1 << 20}, {RKV_PARAM_NUM_LAYERS, 1024}, {RKV_PARAM_NUM_KV_HEADS, 1024},
        {RKV_PARAM_NUM_Q_HEADS, 1024}, {RKV_PARAM_HEAD_DIM, 1024},   {RKV_PARAM_BUDGET, 1 << 24},
        {RKV_PARAM_BUFFER, 1 << 24},
    };
    for (size_t i = 0; i < COUNT(kHuge); ++i)
        ASSERT_OK(rkv_params_set(&p, kHuge[i].key, kHuge[i].value));
    expect_params_rejected(&p, RKV_ERR_OVERFLOW,
                           "2^20 seqs x 1024 layers x 1024 heads x 2^25 slots x 1024");
}

/* ---------------------------------------------------------------------------
 * Parameters of a live cache
 * ------------------------------------------------------------------------- */

/* rkv_cache_get_params: NULL pointers and struct sizes. */
static void test_get_params_errors(void **state) {
    rkv_cache *cache = *state;
    rkv_cache_params p;
    memset(&p, 0, sizeof p);
    p.struct_size = sizeof p;
    EXPECT_REJECTED(cache, rkv_cache_get_params(NULL, &p), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_cache_get_params(cache, NULL), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = PARAMS_BAD_SIZES;
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        p.struct_size = sizes[i];
        EXPECT_REJECTED(cache, rkv_cache_get_params(cache, &p), RKV_ERR_STRUCT_SIZE);
    }
}

static int is_live_param(int key) {
    return key == RKV_PARAM_LAMBDA || key == RKV_PARAM_THRESHOLD || key == RKV_PARAM_KERNEL ||
           key == RKV_PARAM_POOLING || key == RKV_PARAM_SEED || key == RKV_PARAM_AUTO_COMPRESS;
}

/* rkv_cache_set: NULL cache, unknown key, bad values of the keys that may
 * change, and every key that sizes memory or defines stored state (BAD_STATE,
 * even when set to the value it already has). */
static void test_set_param_errors(void **state) {
    rkv_cache *cache = *state;
    EXPECT_REJECTED(cache, rkv_cache_set(NULL, RKV_PARAM_LAMBDA, 0.5),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, (rkv_param)(RKV_PARAM_MAX_ROLLBACK + 1), 0),
                    RKV_ERR_UNSUPPORTED);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, (rkv_param)-1, 0), RKV_ERR_UNSUPPORTED);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_LAMBDA, 1.5), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_LAMBDA, NAN), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_THRESHOLD, -1.5),
                    RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_KERNEL, 0), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_KERNEL, 4), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_KERNEL, 2.5), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_POOLING, 2), RKV_ERR_UNSUPPORTED);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_SEED, -1), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_SEED, 0.5), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_AUTO_COMPRESS, 2),
                    RKV_ERR_OUT_OF_RANGE);

    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    for (int key = 0; key <= RKV_PARAM_MAX_ROLLBACK; ++key) {
        if (is_live_param(key)) continue;
        double current;
        ASSERT_OK(rkv_params_get(&p, (rkv_param)key, &current));
        EXPECT_REJECTED(cache, rkv_cache_set(cache, (rkv_param)key, current),
                        RKV_ERR_BAD_STATE);
    }
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_BUDGET, 2 * BUDGET),
                    RKV_ERR_BAD_STATE);
    EXPECT_REJECTED(cache, rkv_cache_set(cache, RKV_PARAM_METHOD, RKV_METHOD_H2O),
                    RKV_ERR_BAD_STATE);
}

/* The keys that may change on a live cache do, visibly through
 * rkv_cache_get_params, and change nothing but the params. */
static void test_set_param_allowed(void **state) {
    rkv_cache *cache = *state;
    test_snapshot seqs_before[SEQS];
    for (int32_t s = 0; s < SEQS; ++s) seqs_before[s] = test_take_seq_snapshot(cache, s);
    ASSERT_OK(rkv_cache_set(cache, RKV_PARAM_LAMBDA, 0.75));
    ASSERT_OK(rkv_cache_set(cache, RKV_PARAM_THRESHOLD, -0.25));
    ASSERT_OK(rkv_cache_set(cache, RKV_PARAM_KERNEL, 3));
    ASSERT_OK(rkv_cache_set(cache, RKV_PARAM_POOLING, RKV_POOLING_MEAN));
    ASSERT_OK(rkv_cache_set(cache, RKV_PARAM_SEED, 12345));
    ASSERT_OK(rkv_cache_set(cache, RKV_PARAM_AUTO_COMPRESS, 0));
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    assert_true(p.lambda == 0.75f);
    assert_true(p.threshold == -0.25f);
    assert_int_equal(p.kernel, 3);
    assert_int_equal(p.pooling, RKV_POOLING_MEAN);
    assert_int_equal(p.seed, 12345);
    assert_int_equal(p.auto_compress, 0);
    assert_int_equal(p.budget, BUDGET);
    for (int32_t s = 0; s < SEQS; ++s) {
        test_snapshot after = test_take_seq_snapshot(cache, s);
        assert_true(test_snapshot_equal(&seqs_before[s], &after));
        test_snapshot_free(&after);
        test_snapshot_free(&seqs_before[s]);
    }
}

/* ---------------------------------------------------------------------------
 * rkv_seq_reset
 * ------------------------------------------------------------------------- */

/* NULL cache; sequences outside the cache (RKV_ALL is allowed). */
static void test_seq_reset_errors(void **state) {
    rkv_cache *cache = *state;
    EXPECT_REJECTED(cache, rkv_seq_reset(NULL, 0, NULL), RKV_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i)
        EXPECT_REJECTED(cache, rkv_seq_reset(cache, kBadSeqs[i], NULL), RKV_ERR_OUT_OF_RANGE);
}

/* ---------------------------------------------------------------------------
 * rkv_append
 * ------------------------------------------------------------------------- */

/* The base argument sets that the rejections below break are valid: one token,
 * several entries, token offsets, num_tokens NULL, no queries. And a cache that
 * rejected calls is still usable (no error path faults it). */
static void test_append_controls(void **state) {
    rkv_cache *cache = *state;
    append_call c;
    base_append(&c);
    EXPECT_FAIL(rkv_append(cache, NULL, NULL), RKV_ERR_INVALID_ARGUMENT);
    c.args.layer = LAYERS;
    EXPECT_FAIL(rkv_append(cache, &c.args, NULL), RKV_ERR_OUT_OF_RANGE);
    base_append(&c);
    ASSERT_OK(rkv_append(cache, &c.args, NULL));
    base_append(&c);
    c.args.num_seqs = 2;
    c.seq_ids[1] = 2;
    c.num_tokens[0] = 3;
    c.num_tokens[1] = 2;
    c.args.token_offsets = c.token_offsets;
    c.token_offsets[1] = 3;
    ASSERT_OK(rkv_append(cache, &c.args, NULL));
    base_append(&c);
    c.args.num_tokens = NULL;
    c.args.q.data = NULL;
    ASSERT_OK(rkv_append(cache, &c.args, NULL));
    assert_int_equal(held(cache, 1, 0), WINDOW + 5);
    assert_int_equal(held(cache, 2, 0), 2);
}

/* NULL pointers and struct sizes. */
static void test_append_pointer_errors(void **state) {
    rkv_cache *cache = *state;
    append_call c;
    base_append(&c);
    EXPECT_REJECTED(cache, rkv_append(NULL, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_append(cache, NULL, NULL), RKV_ERR_INVALID_ARGUMENT);
    c.args.seq_ids = NULL;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    base_append(&c);
    c.args.k.data = NULL;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    base_append(&c);
    c.args.v.data = NULL;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = BAD_SIZES(rkv_append_args);
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        base_append(&c);
        c.args.struct_size = sizes[i];
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_STRUCT_SIZE);
    }
}

/* Layers and sequences outside the cache (RKV_ALL is not allowed in append);
 * entry counts outside 1 .. max_seqs; the same sequence twice. */
static void test_append_index_errors(void **state) {
    rkv_cache *cache = *state;
    append_call c;
    base_append(&c);
    c.args.layer = RKV_ALL;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadLayers); ++i) {
        c.args.layer = kBadLayers[i];
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OUT_OF_RANGE);
    }
    base_append(&c);
    c.seq_ids[0] = RKV_ALL;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i) {
        c.seq_ids[0] = kBadSeqs[i];
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OUT_OF_RANGE);
    }
    /* A bad sequence after a good one: the good entry is not appended either. */
    base_append(&c);
    c.args.num_seqs = 2;
    c.seq_ids[0] = 2;
    c.seq_ids[1] = SEQS;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OUT_OF_RANGE);

    base_append(&c);
    c.args.num_seqs = 0;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    c.args.num_seqs = -1;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    c.args.num_seqs = SEQS + 1;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    base_append(&c);
    c.args.num_seqs = 2;
    c.seq_ids[0] = 2;
    c.seq_ids[1] = 2;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
}

/* Token counts below 1 and negative token offsets, in any entry. */
static void test_append_token_errors(void **state) {
    rkv_cache *cache = *state;
    append_call c;
    const int32_t bad_counts[] = {0, -1, INT32_MIN};
    for (size_t i = 0; i < COUNT(bad_counts); ++i) {
        base_append(&c);
        c.num_tokens[0] = bad_counts[i];
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
        base_append(&c);
        c.args.num_seqs = 2;
        c.seq_ids[1] = 2;
        c.num_tokens[1] = bad_counts[i];
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    }
    const int64_t bad_offsets[] = {-1, INT64_MIN};
    for (size_t i = 0; i < COUNT(bad_offsets); ++i) {
        base_append(&c);
        c.args.token_offsets = c.token_offsets;
        c.token_offsets[0] = bad_offsets[i];
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
        base_append(&c);
        c.args.num_seqs = 2;
        c.seq_ids[1] = 2;
        c.args.token_offsets = c.token_offsets;
        c.token_offsets[1] = bad_offsets[i];
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    }
}

/* One tensor of a valid append (0 = k, 1 = v, 2 = q). */
static rkv_tensor *append_tensor(append_call *c, int which) {
    return which == 0 ? &c->args.k : which == 1 ? &c->args.v : &c->args.q;
}

/* K, V and Q tensors that disagree with the cache: head counts and head_dim
 * (SHAPE_MISMATCH), unknown dtypes (UNSUPPORTED), negative strides (INVALID_ARGUMENT). */
static void test_append_tensor_errors(void **state) {
    rkv_cache *cache = *state;
    append_call c;
    for (int which = 0; which < 3; ++which) {
        const int32_t heads = which == 2 ? QH : KV;
        const int32_t bad_heads[] = {heads - 1, heads + 1, 0, -1, which == 2 ? KV : QH};
        for (size_t i = 0; i < COUNT(bad_heads); ++i) {
            base_append(&c);
            append_tensor(&c, which)->num_heads = bad_heads[i];
            EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_SHAPE_MISMATCH);
        }
        const int32_t bad_dims[] = {D - 1, D + 1, 0, -D};
        for (size_t i = 0; i < COUNT(bad_dims); ++i) {
            base_append(&c);
            append_tensor(&c, which)->head_dim = bad_dims[i];
            EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_SHAPE_MISMATCH);
        }
        const int bad_dtypes[] = {RKV_DTYPE_FP8_E4M3, 4, 100, -1};
        for (size_t i = 0; i < COUNT(bad_dtypes); ++i) {
            base_append(&c);
            append_tensor(&c, which)->dtype = (rkv_dtype)bad_dtypes[i];
            EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_UNSUPPORTED);
            /* FP8 is a storage dtype: the message says what to pass instead */
            if (bad_dtypes[i] == RKV_DTYPE_FP8_E4M3)
                assert_non_null(strstr(rkv_error_message(), "storage dtype only"));
        }
        base_append(&c);
        append_tensor(&c, which)->stride_token = -1;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
        base_append(&c);
        append_tensor(&c, which)->stride_head = -D;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
        base_append(&c); /* two entries, so that stride_seq is used */
        c.args.num_seqs = 2;
        c.seq_ids[1] = 2;
        append_tensor(&c, which)->stride_seq = -1;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    }
}

/* Strides and offsets whose element offsets do not fit in int64: OVERFLOW, for
 * each of K, V and Q, and before any memory is read. */
static void test_append_offset_overflow(void **state) {
    rkv_cache *cache = *state;
    append_call c;
    for (int which = 0; which < 3; ++which) {
        /* (tokens - 1) * stride_token */
        base_append(&c);
        c.num_tokens[0] = 3;
        append_tensor(&c, which)->stride_token = INT64_MAX / 2 + 1;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OVERFLOW);
        /* entry * stride_seq */
        base_append(&c);
        c.args.num_seqs = 2;
        c.seq_ids[1] = 2;
        append_tensor(&c, which)->stride_seq = INT64_MAX;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OVERFLOW);
        /* (heads - 1) * stride_head + head_dim - 1 */
        base_append(&c);
        append_tensor(&c, which)->stride_head = INT64_MAX;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OVERFLOW);
        /* The element index fits in int64 (2^61) but its f32 byte offset does not. */
        base_append(&c);
        c.num_tokens[0] = 2;
        append_tensor(&c, which)->stride_token = INT64_C(1) << 61;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OVERFLOW);
    }
    /* token_offsets: offset + tokens - 1 itself overflows, or times stride_token. */
    base_append(&c);
    c.args.token_offsets = c.token_offsets;
    c.token_offsets[0] = INT64_MAX;
    c.num_tokens[0] = 2;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OVERFLOW);
    base_append(&c);
    c.args.token_offsets = c.token_offsets;
    c.token_offsets[0] = INT64_MAX / 8;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_OVERFLOW);
}

/* Unknown flag bits (UNSUPPORTED), and prompt tokens after generated ones
 * (BAD_STATE), also when another entry of the call could take them. */
static void test_append_flag_errors(void **state) {
    rkv_cache *cache = *state;
    append_call c;
    const uint32_t bad_flags[] = {1u << 1, 1u << 31, RKV_APPEND_PROMPT | (1u << 5)};
    for (size_t i = 0; i < COUNT(bad_flags); ++i) {
        base_append(&c);
        c.args.flags = bad_flags[i];
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_UNSUPPORTED);
    }
    /* Sequence 1 holds generated tokens. */
    base_append(&c);
    c.args.flags = RKV_APPEND_PROMPT;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_BAD_STATE);
    /* Sequence 2 is empty and could take a prompt, but the call fails as a whole. */
    c.args.num_seqs = 2;
    c.seq_ids[0] = 2;
    c.seq_ids[1] = 1;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_BAD_STATE);
    /* Control: a prompt continues while nothing was generated. */
    c.args.num_seqs = 1;
    c.seq_ids[0] = 2;
    ASSERT_OK(rkv_append(cache, &c.args, NULL));
    ASSERT_OK(rkv_append(cache, &c.args, NULL));
    c.args.flags = 0;
    ASSERT_OK(rkv_append(cache, &c.args, NULL));
    c.args.flags = RKV_APPEND_PROMPT;
    EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_BAD_STATE);
}

/* Too many tokens: FULL beyond max_len, and auto_compress = 0 beyond the
 * capacity, fail with CAPACITY and append nothing (not even to other entries of
 * the call, nor the part that would fit). */
static void test_append_capacity(void **state) {
    (void)state;
    /* FULL, max_len 16 */
    rkv_cache *full = make_cache(RKV_METHOD_FULL);
    EXPECT_REJECTED(full, append_tokens(full, 0, 0, 17, 1, 0), RKV_ERR_CAPACITY);
    ASSERT_OK(append_tokens(full, 0, 0, 10, 1, 0));
    EXPECT_REJECTED(full, append_tokens(full, 0, 0, 7, 1, 0), RKV_ERR_CAPACITY);
    ASSERT_OK(append_tokens(full, 0, 0, 6, 1, 0));
    EXPECT_REJECTED(full, append_tokens(full, 0, 0, 1, 1, 0), RKV_ERR_CAPACITY);
    assert_int_equal(held(full, 0, 0), 16);
    release_owned(NULL);

    /* auto_compress = 0 */
    rkv_cache_params p = shape_params(RKV_METHOD_RKV);
    p.auto_compress = 0;
    rkv_cache *manual = own(test_create(&p));
    EXPECT_REJECTED(manual, append_tokens(manual, 0, 0, CAPACITY + 1, 1, 0), RKV_ERR_CAPACITY);
    ASSERT_OK(append_tokens(manual, 0, 0, CAPACITY, 1, 0));
    EXPECT_REJECTED(manual, append_tokens(manual, 0, 0, 1, 1, 0), RKV_ERR_CAPACITY);
    /* Two entries: sequence 1 has room, sequence 0 does not. */
    append_call c;
    base_append(&c);
    c.args.num_seqs = 2;
    c.seq_ids[0] = 1;
    c.seq_ids[1] = 0;
    EXPECT_REJECTED(manual, rkv_append(manual, &c.args, NULL), RKV_ERR_CAPACITY);
    /* Control: after an explicit compression the token fits. */
    ASSERT_OK(rkv_compress(manual, 0, 0, NULL));
    assert_int_equal(held(manual, 0, 0), BUDGET);
    ASSERT_OK(rkv_append(manual, &c.args, NULL));
    release_owned(NULL);
}

/* With RKV_GUARD_PROMPT a prompt longer than max_prompt_len (in one call or
 * over several) fails with CAPACITY. */
static void test_append_prompt_too_long(void **state) {
    (void)state;
    rkv_cache_params p = shape_params(RKV_METHOD_RKV);
    p.guards = RKV_GUARD_PROMPT;
    p.max_prompt_len = 6;
    rkv_cache *cache = own(test_create(&p));
    EXPECT_REJECTED(cache, append_tokens(cache, 0, 0, 7, 1, RKV_APPEND_PROMPT), RKV_ERR_CAPACITY);
    ASSERT_OK(append_tokens(cache, 0, 0, 4, 1, RKV_APPEND_PROMPT));
    EXPECT_REJECTED(cache, append_tokens(cache, 0, 0, 3, 1, RKV_APPEND_PROMPT), RKV_ERR_CAPACITY);
    ASSERT_OK(append_tokens(cache, 0, 0, 2, 1, RKV_APPEND_PROMPT));
    EXPECT_REJECTED(cache, append_tokens(cache, 0, 0, 1, 1, RKV_APPEND_PROMPT), RKV_ERR_CAPACITY);
    assert_int_equal(held(cache, 0, 0), 6);
    release_owned(NULL);
}

/* ---------------------------------------------------------------------------
 * Missing queries
 * ------------------------------------------------------------------------- */

/* H2O accumulates the attention of every query: an append without q fails. */
static void test_h2o_append_without_queries(void **state) {
    (void)state;
    rkv_cache *cache = make_cache(RKV_METHOD_H2O);
    EXPECT_REJECTED(cache, append_tokens(cache, 0, 0, 1, 0, 0), RKV_ERR_MISSING_QUERIES);
    ASSERT_OK(append_tokens(cache, 0, 0, 3, 1, 0));
    EXPECT_REJECTED(cache, append_tokens(cache, 0, 0, 2, 0, 0), RKV_ERR_MISSING_QUERIES);
    EXPECT_REJECTED(cache, append_tokens(cache, 1, 1, 1, 0, RKV_APPEND_PROMPT),
                    RKV_ERR_MISSING_QUERIES);
    release_owned(NULL);
}

/* R-KV and SnapKV compress with the queries of the last `window` tokens: when
 * they were appended without q, explicit compression (one sequence or every
 * due one) and automatic compression fail with MISSING_QUERIES and change
 * nothing, in no layer and no other entry. */
static void test_window_methods_without_queries(void **state) {
    (void)state;
    const rkv_method methods[] = {RKV_METHOD_RKV, RKV_METHOD_SNAPKV};
    for (size_t m = 0; m < COUNT(methods); ++m) {
        rkv_cache *cache = make_cache(methods[m]);
        /* Sequence 0: over the budget, never a query. Appending works until a compression is
         * needed. */
        append_all_layers(cache, 0, BUDGET + 2, 0);
        EXPECT_REJECTED(cache, rkv_compress(cache, 0, 0, NULL), RKV_ERR_MISSING_QUERIES);
        EXPECT_REJECTED(cache, rkv_compress(cache, 0, RKV_ALL, NULL), RKV_ERR_MISSING_QUERIES);
        /* Sequence 1: full, layer 0 with queries, layer 1 without: layer 0 is not
         * compressed either. */
        ASSERT_OK(append_tokens(cache, 0, 1, CAPACITY, 1, 0));
        ASSERT_OK(append_tokens(cache, 1, 1, CAPACITY, 0, 0));
        EXPECT_REJECTED(cache, rkv_compress(cache, 1, RKV_ALL, NULL), RKV_ERR_MISSING_QUERIES);
        EXPECT_REJECTED(cache, rkv_compress(cache, RKV_ALL, RKV_ALL, NULL),
                        RKV_ERR_MISSING_QUERIES);
        /* Automatic compression before the new token: the new token's query does not help. */
        EXPECT_REJECTED(cache, append_tokens(cache, 1, 1, 1, 1, 0), RKV_ERR_MISSING_QUERIES);
        /* Two entries: sequence 2 has room, sequence 1 (layer 1) needs a compression. */
        append_call c;
        base_append(&c);
        c.args.layer = 1;
        c.args.num_seqs = 2;
        c.seq_ids[0] = 2;
        c.seq_ids[1] = 1;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_MISSING_QUERIES);
        /* Control: with the window's queries appended, compression works. */
        ASSERT_OK(append_tokens(cache, 0, 0, WINDOW, 1, 0));
        ASSERT_OK(rkv_compress(cache, 0, 0, NULL));
        assert_int_equal(held(cache, 0, 0), BUDGET);
        release_owned(NULL);
    }
}

/* ---------------------------------------------------------------------------
 * rkv_compress and rkv_compress_due
 * ------------------------------------------------------------------------- */

/* NULL cache; sequences and layers outside the cache (RKV_ALL is allowed). */
static void test_compress_errors(void **state) {
    rkv_cache *cache = *state;
    EXPECT_REJECTED(cache, rkv_compress(NULL, 0, 0, NULL), RKV_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i) {
        EXPECT_REJECTED(cache, rkv_compress(cache, kBadSeqs[i], 0, NULL), RKV_ERR_OUT_OF_RANGE);
        EXPECT_REJECTED(cache, rkv_compress(cache, kBadSeqs[i], RKV_ALL, NULL),
                        RKV_ERR_OUT_OF_RANGE);
    }
    for (size_t i = 0; i < COUNT(kBadLayers); ++i) {
        EXPECT_REJECTED(cache, rkv_compress(cache, 0, kBadLayers[i], NULL), RKV_ERR_OUT_OF_RANGE);
        EXPECT_REJECTED(cache, rkv_compress(cache, RKV_ALL, kBadLayers[i], NULL),
                        RKV_ERR_OUT_OF_RANGE);
    }
}

/* NULL pointers; sequences and layers outside the cache (RKV_ALL is allowed). */
static void test_compress_due_errors(void **state) {
    rkv_cache *cache = *state;
    int32_t due = 0;
    EXPECT_REJECTED(cache, rkv_compress_due(NULL, 0, 0, &due), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_compress_due(cache, 0, 0, NULL), RKV_ERR_INVALID_ARGUMENT);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i)
        EXPECT_REJECTED(cache, rkv_compress_due(cache, kBadSeqs[i], RKV_ALL, &due),
                        RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadLayers); ++i)
        EXPECT_REJECTED(cache, rkv_compress_due(cache, RKV_ALL, kBadLayers[i], &due),
                        RKV_ERR_OUT_OF_RANGE);
}

/* ---------------------------------------------------------------------------
 * Views, lengths, positions, statistics
 * ------------------------------------------------------------------------- */

/* rkv_view: NULL pointers, struct sizes, indices (RKV_ALL is not allowed). */
static void test_view_errors(void **state) {
    rkv_cache *cache = *state;
    rkv_seq_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    EXPECT_REJECTED(cache, rkv_view(NULL, 0, 0, &view), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_view(cache, 0, 0, NULL), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = BAD_SIZES(rkv_seq_view);
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        view.struct_size = sizes[i];
        EXPECT_REJECTED(cache, rkv_view(cache, 0, 0, &view), RKV_ERR_STRUCT_SIZE);
    }
    view.struct_size = sizeof view;
    EXPECT_REJECTED(cache, rkv_view(cache, RKV_ALL, 0, &view), RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_view(cache, 0, RKV_ALL, &view), RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i)
        EXPECT_REJECTED(cache, rkv_view(cache, kBadSeqs[i], 0, &view), RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadLayers); ++i)
        EXPECT_REJECTED(cache, rkv_view(cache, 0, kBadLayers[i], &view), RKV_ERR_OUT_OF_RANGE);
}

/* rkv_view_layer: NULL pointers, struct sizes, layers (RKV_ALL is not allowed). */
static void test_view_layer_errors(void **state) {
    rkv_cache *cache = *state;
    rkv_layer_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    EXPECT_REJECTED(cache, rkv_view_layer(NULL, 0, &view), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_view_layer(cache, 0, NULL), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = BAD_SIZES(rkv_layer_view);
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        view.struct_size = sizes[i];
        EXPECT_REJECTED(cache, rkv_view_layer(cache, 0, &view), RKV_ERR_STRUCT_SIZE);
    }
    view.struct_size = sizeof view;
    EXPECT_REJECTED(cache, rkv_view_layer(cache, RKV_ALL, &view), RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadLayers); ++i)
        EXPECT_REJECTED(cache, rkv_view_layer(cache, kBadLayers[i], &view), RKV_ERR_OUT_OF_RANGE);
}

/* rkv_seq_length: NULL cache; both outputs NULL (either alone is fine: the
 * header allows either to be NULL, and a call asking for nothing is rejected);
 * indices (RKV_ALL is not allowed). */
static void test_seq_length_errors(void **state) {
    rkv_cache *cache = *state;
    int64_t logical = 0;
    int32_t physical = 0;
    EXPECT_REJECTED(cache, rkv_seq_length(NULL, 0, 0, &logical, &physical),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_seq_length(cache, 0, 0, NULL, NULL), RKV_ERR_INVALID_ARGUMENT);
    ASSERT_OK(rkv_seq_length(cache, 0, 0, &logical, NULL));
    ASSERT_OK(rkv_seq_length(cache, 0, 0, NULL, &physical));
    assert_int_equal(logical, CAPACITY + 2);
    assert_int_equal(physical, BUDGET + 2);
    EXPECT_REJECTED(cache, rkv_seq_length(cache, RKV_ALL, 0, &logical, &physical),
                    RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_length(cache, 0, RKV_ALL, &logical, &physical),
                    RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i)
        EXPECT_REJECTED(cache, rkv_seq_length(cache, kBadSeqs[i], 0, &logical, &physical),
                        RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadLayers); ++i)
        EXPECT_REJECTED(cache, rkv_seq_length(cache, 0, kBadLayers[i], &logical, &physical),
                        RKV_ERR_OUT_OF_RANGE);
}

/* rkv_seq_positions: NULL pointers, indices (head included), and a buffer
 * smaller than the physical length (CAPACITY, nothing written). */
static void test_kept_positions_errors(void **state) {
    rkv_cache *cache = *state;
    int32_t out[CAPACITY + 4];
    int32_t count = -1;
    EXPECT_REJECTED(cache, rkv_seq_positions(NULL, 0, 0, 0, out, CAPACITY, &count),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_seq_positions(cache, 0, 0, 0, out, CAPACITY, NULL),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_seq_positions(cache, RKV_ALL, 0, 0, out, CAPACITY, &count),
                    RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(cache, rkv_seq_positions(cache, 0, RKV_ALL, 0, out, CAPACITY, &count),
                    RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i)
        EXPECT_REJECTED(cache, rkv_seq_positions(cache, kBadSeqs[i], 0, 0, out, CAPACITY, &count),
                        RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadLayers); ++i)
        EXPECT_REJECTED(cache,
                        rkv_seq_positions(cache, 0, kBadLayers[i], 0, out, CAPACITY, &count),
                        RKV_ERR_OUT_OF_RANGE);
    const int32_t bad_heads[] = {KV, -1, RKV_ALL, QH, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < COUNT(bad_heads); ++i)
        EXPECT_REJECTED(cache, rkv_seq_positions(cache, 0, 0, bad_heads[i], out, CAPACITY, &count),
                        RKV_ERR_OUT_OF_RANGE);

    /* Sequence 0 holds BUDGET + 2 tokens per head. */
    const int32_t small[] = {BUDGET + 1, 1, 0, -1};
    for (size_t i = 0; i < COUNT(small); ++i) {
        for (size_t j = 0; j < COUNT(out); ++j) out[j] = -7;
        EXPECT_REJECTED(cache, rkv_seq_positions(cache, 0, 1, 1, out, small[i], &count),
                        RKV_ERR_CAPACITY);
        for (size_t j = 0; j < COUNT(out); ++j)
            if (out[j] != -7)
                fail_msg("out_len %d: out[%zu] was written although the call failed", small[i], j);
    }
    /* Controls: the count alone, an exact buffer, an empty sequence with no room. */
    ASSERT_OK(rkv_seq_positions(cache, 0, 1, 1, NULL, 0, &count));
    assert_int_equal(count, BUDGET + 2);
    ASSERT_OK(rkv_seq_positions(cache, 0, 1, 1, out, BUDGET + 2, &count));
    assert_int_equal(count, BUDGET + 2);
    ASSERT_OK(rkv_seq_positions(cache, 2, 1, 1, out, 0, &count));
    assert_int_equal(count, 0);
}

/* rkv_cache_stats: NULL pointers, struct sizes, sequences (RKV_ALL is allowed). */
static void test_stats_errors(void **state) {
    rkv_cache *cache = *state;
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    EXPECT_REJECTED(cache, rkv_cache_stats(NULL, 0, &stats), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_cache_stats(cache, 0, NULL), RKV_ERR_INVALID_ARGUMENT);
    const size_t sizes[] = BAD_SIZES(rkv_stats);
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        stats.struct_size = sizes[i];
        EXPECT_REJECTED(cache, rkv_cache_stats(cache, 0, &stats), RKV_ERR_STRUCT_SIZE);
    }
    stats.struct_size = sizeof stats;
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i)
        EXPECT_REJECTED(cache, rkv_cache_stats(cache, kBadSeqs[i], &stats), RKV_ERR_OUT_OF_RANGE);
}

/* ---------------------------------------------------------------------------
 * rkv_attend
 * ------------------------------------------------------------------------- */

/* The base attend call is valid (and changes nothing). */
static void test_attend_control(void **state) {
    rkv_cache *cache = *state;
    attend_call c;
    base_attend(&c);
    test_snapshot before = test_take_snapshot(cache);
    ASSERT_OK(ATTEND(cache, c));
    c.scale = 0.5f;
    c.seq_ids[0] = 1;
    c.seq_ids[1] = 0;
    ASSERT_OK(ATTEND(cache, c));
    test_snapshot after = test_take_snapshot(cache);
    assert_true(test_snapshot_equal(&before, &after));
    test_snapshot_free(&before);
    test_snapshot_free(&after);
}

/* q and out are [num_seqs, num_q_heads, head_dim] with "stride_token unused":
 * whatever the caller leaves there (here a negative value) must not fail the call. */
static void test_attend_ignores_stride_token(void **state) {
    rkv_cache *cache = *state;
    attend_call c;
    base_attend(&c);
    c.q.stride_token = -1;
    c.out.stride_token = INT64_MIN;
    ASSERT_OK(ATTEND(cache, c));
}

/* NULL pointers, indices, entry counts, a sequence holding nothing (BAD_STATE),
 * a NaN scale. */
static void test_attend_argument_errors(void **state) {
    rkv_cache *cache = *state;
    attend_call c;
    base_attend(&c);
    EXPECT_REJECTED(cache, test_attend(NULL, 0, 2, c.seq_ids, &c.q, &c.out, 0.0f, NULL),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, test_attend(cache, 0, 2, NULL, &c.q, &c.out, 0.0f, NULL),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, test_attend(cache, 0, 2, c.seq_ids, NULL, &c.out, 0.0f, NULL),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, test_attend(cache, 0, 2, c.seq_ids, &c.q, NULL, 0.0f, NULL),
                    RKV_ERR_INVALID_ARGUMENT);
    c.q.data = NULL;
    EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_INVALID_ARGUMENT);
    base_attend(&c);
    c.out.data = NULL;
    EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_INVALID_ARGUMENT);

    base_attend(&c);
    c.layer = RKV_ALL;
    EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadLayers); ++i) {
        c.layer = kBadLayers[i];
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_OUT_OF_RANGE);
    }
    base_attend(&c);
    c.seq_ids[1] = RKV_ALL;
    EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i) {
        c.seq_ids[1] = kBadSeqs[i];
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_OUT_OF_RANGE);
    }
    base_attend(&c);
    const int32_t bad_counts[] = {0, -1, SEQS + 1};
    for (size_t i = 0; i < COUNT(bad_counts); ++i) {
        c.num_seqs = bad_counts[i];
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_INVALID_ARGUMENT);
    }
    /* Sequence 2 holds nothing. */
    base_attend(&c);
    c.seq_ids[1] = 2;
    EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_BAD_STATE);
    base_attend(&c);
    c.scale = NAN;
    EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_INVALID_ARGUMENT);
}

/* q and out that disagree with the cache: head counts (num_q_heads, not
 * num_kv_heads) and head_dim (SHAPE_MISMATCH), dtypes (UNSUPPORTED), negative
 * strides (INVALID_ARGUMENT). */
static void test_attend_tensor_errors(void **state) {
    rkv_cache *cache = *state;
    attend_call c;
    for (int which = 0; which < 2; ++which) {
        const int32_t bad_heads[] = {KV, QH + 1, 0, -1};
        for (size_t i = 0; i < COUNT(bad_heads); ++i) {
            base_attend(&c);
            (which ? &c.out : &c.q)->num_heads = bad_heads[i];
            EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_SHAPE_MISMATCH);
        }
        const int32_t bad_dims[] = {D - 1, D + 1, 0};
        for (size_t i = 0; i < COUNT(bad_dims); ++i) {
            base_attend(&c);
            (which ? &c.out : &c.q)->head_dim = bad_dims[i];
            EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_SHAPE_MISMATCH);
        }
        base_attend(&c);
        (which ? &c.out : &c.q)->dtype = RKV_DTYPE_FP8_E4M3; /* storage only */
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_UNSUPPORTED);
        assert_non_null(strstr(rkv_error_message(), "storage dtype only"));
        base_attend(&c);
        (which ? &c.out : &c.q)->dtype = (rkv_dtype)4;
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_UNSUPPORTED);
        base_attend(&c);
        (which ? &c.out : &c.q)->stride_seq = -QH * D;
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_INVALID_ARGUMENT);
        base_attend(&c);
        (which ? &c.out : &c.q)->stride_head = -D;
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_INVALID_ARGUMENT);
    }
}

/* Strides of q or out whose element offsets do not fit in int64: OVERFLOW,
 * as for rkv_append. */
static void test_attend_stride_overflow(void **state) {
    rkv_cache *cache = *state;
    attend_call c;
    for (int which = 0; which < 2; ++which) {
        base_attend(&c);
        (which ? &c.out : &c.q)->stride_seq = INT64_MAX;
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_OVERFLOW);
        base_attend(&c);
        (which ? &c.out : &c.q)->stride_head = INT64_MAX / 2;
        EXPECT_REJECTED(cache, ATTEND(cache, c), RKV_ERR_OVERFLOW);
    }
}

/* ---------------------------------------------------------------------------
 * rkv_seq_scores (experimental)
 * ------------------------------------------------------------------------- */

/* NULL pointers, indices, unknown kinds, too few tokens (BAD_STATE), a buffer
 * smaller than the candidates (CAPACITY); the control inspects every kind of
 * R-KV and changes nothing. */
static void test_inspect_scores_errors(void **state) {
    rkv_cache *cache = *state;
    float out[CAPACITY];
    int32_t count = -1;
    const int32_t candidates = BUDGET + 2 - WINDOW; /* sequence 0 */
    for (int kind = RKV_SCORE_IMPORTANCE; kind <= RKV_SCORE_FINAL; ++kind) {
        test_snapshot before = test_take_snapshot(cache);
        ASSERT_OK(
            rkv_seq_scores(cache, 0, 1, 1, (rkv_score_kind)kind, out, candidates, &count));
        assert_int_equal(count, candidates);
        test_snapshot after = test_take_snapshot(cache);
        assert_true(test_snapshot_equal(&before, &after));
        test_snapshot_free(&before);
        test_snapshot_free(&after);
    }
    EXPECT_REJECTED(cache,
                    rkv_seq_scores(NULL, 0, 0, 0, RKV_SCORE_FINAL, out, CAPACITY, &count),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache,
                    rkv_seq_scores(cache, 0, 0, 0, RKV_SCORE_FINAL, NULL, CAPACITY, &count),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_seq_scores(cache, 0, 0, 0, RKV_SCORE_FINAL, out, CAPACITY, NULL),
                    RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(
        cache, rkv_seq_scores(cache, RKV_ALL, 0, 0, RKV_SCORE_FINAL, out, CAPACITY, &count),
        RKV_ERR_OUT_OF_RANGE);
    EXPECT_REJECTED(
        cache, rkv_seq_scores(cache, 0, RKV_ALL, 0, RKV_SCORE_FINAL, out, CAPACITY, &count),
        RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadSeqs); ++i)
        EXPECT_REJECTED(
            cache,
            rkv_seq_scores(cache, kBadSeqs[i], 0, 0, RKV_SCORE_FINAL, out, CAPACITY, &count),
            RKV_ERR_OUT_OF_RANGE);
    for (size_t i = 0; i < COUNT(kBadLayers); ++i)
        EXPECT_REJECTED(
            cache,
            rkv_seq_scores(cache, 0, kBadLayers[i], 0, RKV_SCORE_FINAL, out, CAPACITY, &count),
            RKV_ERR_OUT_OF_RANGE);
    const int32_t bad_heads[] = {KV, -1, QH};
    for (size_t i = 0; i < COUNT(bad_heads); ++i)
        EXPECT_REJECTED(
            cache,
            rkv_seq_scores(cache, 0, 0, bad_heads[i], RKV_SCORE_FINAL, out, CAPACITY, &count),
            RKV_ERR_OUT_OF_RANGE);
    const int bad_kinds[] = {RKV_SCORE_FINAL + 1, -1, 1000};
    for (size_t i = 0; i < COUNT(bad_kinds); ++i)
        EXPECT_REJECTED(
            cache,
            rkv_seq_scores(cache, 0, 0, 0, (rkv_score_kind)bad_kinds[i], out, CAPACITY, &count),
            RKV_ERR_UNSUPPORTED);
    /* Sequence 1 holds exactly `window` tokens, sequence 2 none. */
    EXPECT_REJECTED(cache,
                    rkv_seq_scores(cache, 1, 0, 0, RKV_SCORE_FINAL, out, CAPACITY, &count),
                    RKV_ERR_BAD_STATE);
    EXPECT_REJECTED(cache,
                    rkv_seq_scores(cache, 2, 0, 0, RKV_SCORE_FINAL, out, CAPACITY, &count),
                    RKV_ERR_BAD_STATE);
    EXPECT_REJECTED(
        cache, rkv_seq_scores(cache, 0, 0, 0, RKV_SCORE_FINAL, out, candidates - 1, &count),
        RKV_ERR_CAPACITY);
    EXPECT_REJECTED(cache, rkv_seq_scores(cache, 0, 0, 0, RKV_SCORE_IMPORTANCE, out, 0, &count),
                    RKV_ERR_CAPACITY);
}

/* Each method inspects the scores it computes and rejects the others with
 * UNSUPPORTED; R-KV without the window's queries: MISSING_QUERIES. */
static void test_inspect_scores_per_method(void **state) {
    (void)state;
    static const struct {
        rkv_method method;
        int has[3]; /* importance, redundancy, final */
    } kMethods[] = {
        {RKV_METHOD_RKV, {1, 1, 1}},     {RKV_METHOD_SNAPKV, {1, 0, 1}},
        {RKV_METHOD_H2O, {0, 0, 1}},     {RKV_METHOD_STREAMINGLLM, {0, 0, 0}},
        {RKV_METHOD_KEYDIFF, {0, 0, 1}}, {RKV_METHOD_RANDOM, {0, 0, 1}},
        {RKV_METHOD_FULL, {0, 0, 0}},
    };
    float out[CAPACITY];
    int32_t count = -1;
    for (size_t m = 0; m < COUNT(kMethods); ++m) {
        rkv_cache *cache = make_cache(kMethods[m].method);
        append_all_layers(cache, 0, BUDGET - 2, 1);
        for (int kind = RKV_SCORE_IMPORTANCE; kind <= RKV_SCORE_FINAL; ++kind) {
            if (kMethods[m].has[kind]) {
                ASSERT_OK(rkv_seq_scores(cache, 0, 0, 0, (rkv_score_kind)kind, out, CAPACITY,
                                             &count));
                assert_int_equal(count, BUDGET - 2 - WINDOW);
            } else {
                EXPECT_REJECTED(
                    cache,
                    rkv_seq_scores(cache, 0, 0, 0, (rkv_score_kind)kind, out, CAPACITY, &count),
                    RKV_ERR_UNSUPPORTED);
            }
        }
        release_owned(NULL);
    }
    const rkv_method window_methods[] = {RKV_METHOD_RKV, RKV_METHOD_SNAPKV};
    for (size_t m = 0; m < COUNT(window_methods); ++m) {
        rkv_cache *cache = make_cache(window_methods[m]);
        append_all_layers(cache, 0, BUDGET - 2, 0);
        EXPECT_REJECTED(
            cache, rkv_seq_scores(cache, 0, 0, 0, RKV_SCORE_IMPORTANCE, out, CAPACITY, &count),
            RKV_ERR_MISSING_QUERIES);
        EXPECT_REJECTED(cache,
                        rkv_seq_scores(cache, 0, 0, 0, RKV_SCORE_FINAL, out, CAPACITY, &count),
                        RKV_ERR_MISSING_QUERIES);
        release_owned(NULL);
    }
}

/* ---------------------------------------------------------------------------
 * Use after a fault
 * ------------------------------------------------------------------------- */

/* After a fault, every call whose header statuses include FAULTED returns it
 * with a message, also with otherwise valid arguments and again on retry; the
 * host-only queries whose statuses do not list FAULTED (get_params, seq_length,
 * stats) keep answering; destroy still frees everything. */
/* rkv_attend_args itself: NULL, struct sizes, flags. */
static void test_attend_args_errors(void **state) {
    rkv_cache *cache = *state;
    attend_call c;
    base_attend(&c);
    EXPECT_REJECTED(cache, rkv_attend(cache, NULL, NULL), RKV_ERR_INVALID_ARGUMENT);
    rkv_attend_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.num_seqs = c.num_seqs;
    a.seq_ids = c.seq_ids;
    a.q = c.q;
    a.out = c.out;
    ASSERT_OK(rkv_attend(cache, &a, NULL)); /* the control */
    const size_t sizes[] = BAD_SIZES(rkv_attend_args);
    for (size_t i = 0; i < COUNT(sizes); ++i) {
        rkv_attend_args bad = a;
        bad.struct_size = sizes[i];
        EXPECT_REJECTED(cache, rkv_attend(cache, &bad, NULL), RKV_ERR_STRUCT_SIZE);
    }
    a.flags = 1;
    EXPECT_REJECTED(cache, rkv_attend(cache, &a, NULL), RKV_ERR_UNSUPPORTED);
}

/* rkv_tensor.extent: every element the call touches must lie below it. The
 * boundary (the largest index + 1) is accepted, one less is CAPACITY; a
 * negative extent is INVALID_ARGUMENT; 0 checks nothing. */
static void test_tensor_extent_errors(void **state) {
    rkv_cache *cache = *state;
    append_call c;
    /* Two entries: 3 tokens of sequence 1 from offset 0, 2 of sequence 2 from
     * offset 3, packed [tokens, heads, D]: the last element is token 4's. */
    const int64_t kv_needed = 5 * KV * D, q_needed = 5 * QH * D;
    for (int which = 0; which < 3; ++which) {
        base_append(&c);
        c.args.num_seqs = 2;
        c.seq_ids[1] = 2;
        c.num_tokens[0] = 3;
        c.num_tokens[1] = 2;
        c.args.token_offsets = c.token_offsets;
        c.token_offsets[1] = 3;
        rkv_tensor *t = which == 0 ? &c.args.k : which == 1 ? &c.args.v : &c.args.q;
        t->extent = (which == 2 ? q_needed : kv_needed) - 1;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_CAPACITY);
        t->extent = -1;
        EXPECT_REJECTED(cache, rkv_append(cache, &c.args, NULL), RKV_ERR_INVALID_ARGUMENT);
    }
    base_append(&c);
    c.args.num_seqs = 2;
    c.seq_ids[1] = 2;
    c.num_tokens[0] = 3;
    c.num_tokens[1] = 2;
    c.args.token_offsets = c.token_offsets;
    c.token_offsets[1] = 3;
    c.args.k.extent = c.args.v.extent = kv_needed;
    c.args.q.extent = q_needed;
    ASSERT_OK(rkv_append(cache, &c.args, NULL)); /* the boundary */

    attend_call t;
    for (int which = 0; which < 2; ++which) {
        base_attend(&t);
        rkv_tensor *x = which ? &t.out : &t.q;
        x->extent = 2 * QH * D - 1;
        EXPECT_REJECTED(cache, ATTEND_ARGS(cache, t), RKV_ERR_CAPACITY);
        x->extent = 2 * QH * D;
        ASSERT_OK(ATTEND_ARGS(cache, t));
    }
}

/* rkv_cache_get: NULL pointers, unknown keys. */
static void test_cache_get_errors(void **state) {
    rkv_cache *cache = *state;
    double value = 0;
    EXPECT_REJECTED(cache, rkv_cache_get(NULL, RKV_PARAM_BUDGET, &value), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_cache_get(cache, RKV_PARAM_BUDGET, NULL), RKV_ERR_INVALID_ARGUMENT);
    EXPECT_REJECTED(cache, rkv_cache_get(cache, (rkv_param)(RKV_PARAM_MAX_ROLLBACK + 1), &value),
                    RKV_ERR_UNSUPPORTED);
    EXPECT_REJECTED(cache, rkv_cache_get(cache, (rkv_param)-1, &value), RKV_ERR_UNSUPPORTED);
    ASSERT_OK(rkv_cache_get(cache, RKV_PARAM_BUDGET, &value));
    assert_true(value == BUDGET);
}

static void test_use_after_fault(void **state) {
    rkv_cache *cache = *state;
    test_mark_faulted(cache, "simulated device fault");

    append_call a;
    base_append(&a);
    attend_call t;
    base_attend(&t);
    rkv_seq_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    rkv_layer_view layer_view;
    memset(&layer_view, 0, sizeof layer_view);
    layer_view.struct_size = sizeof layer_view;
    int32_t due = -1, count = -1, positions[CAPACITY];
    float scores[CAPACITY];
    for (int round = 0; round < 2; ++round) {
        EXPECT_FAIL(rkv_cache_set(cache, RKV_PARAM_LAMBDA, 0.5), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_reset(cache, 0, NULL), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_reset(cache, RKV_ALL, NULL), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_append(cache, &a.args, NULL), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_compress(cache, 0, 0, NULL), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_compress(cache, RKV_ALL, RKV_ALL, NULL), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_compress_due(cache, 0, 0, &due), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_view(cache, 0, 0, &view), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_view_layer(cache, 0, &layer_view), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_positions(cache, 0, 0, 0, positions, CAPACITY, &count),
                    RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_positions(cache, 0, 0, 0, NULL, 0, &count), RKV_ERR_FAULTED);
        EXPECT_FAIL(ATTEND(cache, t), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_scores(cache, 0, 0, 0, RKV_SCORE_FINAL, scores, CAPACITY, &count),
                    RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_truncate(cache, 0, 1, NULL), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_rollback_limit(cache, 0, &count), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_copy(cache, 0, 2, NULL), RKV_ERR_FAULTED);
        EXPECT_FAIL(rkv_seq_set_budget(cache, 2, BUDGET), RKV_ERR_FAULTED);
        rkv_batch *batch = NULL;
        EXPECT_FAIL(rkv_batch_create(cache, 2, &batch), RKV_ERR_FAULTED);
        assert_null(batch);
        EXPECT_FAIL(rkv_cache_sync_lengths(cache, NULL), RKV_ERR_FAULTED);
    }

    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    assert_int_equal(p.budget, BUDGET);
    int64_t logical = 0;
    ASSERT_OK(rkv_seq_length(cache, 0, 0, &logical, NULL));
    assert_int_equal(logical, CAPACITY + 2);
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(cache, RKV_ALL, &stats));
    assert_int_equal(stats.compressions, LAYERS);
    /* The teardown destroys the faulted cache (ASan checks that it frees everything). */
}

/* A fault is per cache: another cache keeps working. */
static void test_fault_is_per_cache(void **state) {
    rkv_cache *cache = *state;
    rkv_cache *other = make_cache(RKV_METHOD_RKV);
    test_mark_faulted(other, "simulated device fault");
    EXPECT_FAIL(append_tokens(other, 0, 0, 1, 1, 0), RKV_ERR_FAULTED);
    ASSERT_OK(append_tokens(cache, 0, 0, 1, 1, 0));
    ASSERT_OK(rkv_compress(cache, RKV_ALL, RKV_ALL, NULL));
    release_owned(NULL);
}

#define OWNING_TEST(test) cmocka_unit_test_teardown(test, release_owned)
#define FIXTURE_TEST(test) cmocka_unit_test_setup_teardown(test, setup_fixture, teardown_fixture)

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names),
        cmocka_unit_test(test_version_matches_header),
        cmocka_unit_test(test_destroy_null_is_noop),
        cmocka_unit_test(test_params_default_errors),
        cmocka_unit_test(test_param_bounds_errors),
        cmocka_unit_test(test_params_set_errors),
        cmocka_unit_test(test_params_get_errors),
        cmocka_unit_test(test_create_controls),
        cmocka_unit_test(test_create_pointer_and_size_errors),
        cmocka_unit_test(test_create_shape_errors),
        cmocka_unit_test(test_create_enum_errors),
        cmocka_unit_test(test_create_value_errors),
        cmocka_unit_test(test_create_size_overflow),
        FIXTURE_TEST(test_get_params_errors),
        FIXTURE_TEST(test_set_param_errors),
        FIXTURE_TEST(test_set_param_allowed),
        FIXTURE_TEST(test_seq_reset_errors),
        FIXTURE_TEST(test_append_controls),
        FIXTURE_TEST(test_append_pointer_errors),
        FIXTURE_TEST(test_append_index_errors),
        FIXTURE_TEST(test_append_token_errors),
        FIXTURE_TEST(test_append_tensor_errors),
        FIXTURE_TEST(test_append_offset_overflow),
        FIXTURE_TEST(test_append_flag_errors),
        OWNING_TEST(test_append_capacity),
        OWNING_TEST(test_append_prompt_too_long),
        OWNING_TEST(test_h2o_append_without_queries),
        OWNING_TEST(test_window_methods_without_queries),
        FIXTURE_TEST(test_compress_errors),
        FIXTURE_TEST(test_compress_due_errors),
        FIXTURE_TEST(test_view_errors),
        FIXTURE_TEST(test_view_layer_errors),
        FIXTURE_TEST(test_seq_length_errors),
        FIXTURE_TEST(test_kept_positions_errors),
        FIXTURE_TEST(test_stats_errors),
        FIXTURE_TEST(test_attend_control),
        FIXTURE_TEST(test_attend_ignores_stride_token),
        FIXTURE_TEST(test_attend_argument_errors),
        FIXTURE_TEST(test_attend_tensor_errors),
        FIXTURE_TEST(test_attend_stride_overflow),
        FIXTURE_TEST(test_inspect_scores_errors),
        OWNING_TEST(test_inspect_scores_per_method),
        FIXTURE_TEST(test_attend_args_errors),
        FIXTURE_TEST(test_tensor_extent_errors),
        FIXTURE_TEST(test_cache_get_errors),
        FIXTURE_TEST(test_use_after_fault),
        FIXTURE_TEST(test_fault_is_per_cache),
    };
    return cmocka_run_group_tests(tests, setup_data, NULL);
}
