/*
 * librkv: a KV-cache compression layer for LLM inference engines.
 *
 * An rkv_cache owns the K/V memory of up to `max_seqs` sequences x `num_layers`
 * x `num_kv_heads`, appends tokens to it, evicts tokens with R-KV (or a
 * baseline) so that every head keeps a fixed budget, and hands out views for
 * the engine's attention kernel. Sequences can be rolled back (speculative
 * decoding), forked (beam search, n > 1 sampling) and given their own budget;
 * batches of sequence ids live in memory the kernels read, so a decode step
 * captured in a CUDA graph serves whichever sequences are running.
 *
 * This is the stable public header. It is C99, includes no CUDA header, and
 * every symbol it declares starts with rkv_ / RKV_. The experimental API lives
 * in rkv/rkv_experimental.h (see "Experimental API" at the end).
 *
 * Conventions that hold for every function below
 * -----------------------------------------------
 * - Every function returns an rkv_status (or a value that cannot fail). On any
 *   status other than RKV_OK the cache is unchanged, and rkv_error_message()
 *   says what was wrong in words a user can act on. (One exception is named
 *   where it applies: rkv_batch_advance faults the cache when it learns that
 *   replayed work already lost tokens.)
 * - Every argument is validated before any state changes.
 * - Threading: one rkv_cache (and its batches) must not be used from two
 *   threads at the same time (serialise calls on one cache yourself); distinct
 *   caches are independent and may be used from different threads
 *   concurrently. Functions that take no cache (version, names, parameters,
 *   size query) are thread-safe. The error message is thread-local.
 * - Element strides, not byte strides, describe every tensor. The innermost
 *   (head_dim) axis is always contiguous.
 * - Stream ordering (CUDA caches): calls that enqueue device work take a
 *   `void *stream` (a cudaStream_t; NULL = the legacy default stream). They
 *   never synchronise the host and never allocate: lengths are tracked on the
 *   host and all memory is allocated by rkv_cache_create (and rkv_batch_create).
 *   CPU caches ignore the stream and complete before returning.
 *
 * Naming (one rule for the whole API, fixed before 1.0)
 * -----------------------------------------------------
 * - Functions are rkv_<object>_<verb>. The object is what the call acts on, and
 *   its first argument when it takes one:
 *     version, status, error    the library, a status value, this thread's last error
 *     params                    an rkv_cache_params being filled (no cache yet)
 *     cache                     a whole rkv_cache
 *     seq                       one sequence slot of a cache (cache, seq, ...)
 *     batch                     an rkv_batch of sequence ids
 *   Keyed access to a parameter is <object>_get / <object>_set with an
 *   rkv_param key, for params and for a live cache alike (rkv_params_set,
 *   rkv_cache_set); rkv_params_bounds gives a key's range.
 * - The operations of a cache on its tokens are verbs alone, as the design
 *   names them: rkv_append, rkv_compress (and rkv_compress_due), rkv_attend,
 *   rkv_view (one sequence) and rkv_view_layer (every sequence of a layer).
 *   rkv_cache_create keeps its name under the rule above.
 * - Types are nouns: rkv_<object> for opaque handles (rkv_cache, rkv_batch),
 *   rkv_<thing>_params / _args for what the caller fills in (rkv_cache_params,
 *   rkv_append_args, rkv_attend_args), rkv_<scope>_view for what a view call
 *   fills (rkv_seq_view from rkv_view, rkv_layer_view from rkv_view_layer),
 *   rkv_stats for statistics. Enumerations are rkv_<name> with constants
 *   RKV_<NAME>_<VALUE>; flags are RKV_<WHAT>_<FLAG>.
 * Renames from 0.1: rkv_last_error_message -> rkv_error_message,
 * rkv_cache_params_default -> rkv_params_default, rkv_param_bounds ->
 * rkv_params_bounds, rkv_cache_set_param -> rkv_cache_set, rkv_kept_positions
 * -> rkv_seq_positions, rkv_kv_view -> rkv_seq_view; rkv_attend takes an
 * rkv_attend_args. 0.1's experimental functions are in rkv_experimental.h
 * under their new names.
 *
 * ABI: how structs grow
 * ---------------------
 * - Structs the caller fills or receives start with `struct_size`: set it to
 *   sizeof(the struct) before the call (rkv_params_default sets it for you).
 * - Fields are only ever added at the end, and each version's additions are
 *   padded to a multiple of 8 bytes (with `reserved` fields the caller leaves
 *   0), so every header version has its own sizeof.
 * - The library accepts the struct_size of this header and of every earlier
 *   header version (0.1.0): fields a shorter struct lacks take their defaults,
 *   and the library never reads or writes past the struct_size it is given.
 *   Other sizes fail with RKV_ERR_STRUCT_SIZE.
 * - rkv_tensor has no struct_size: it travels inside rkv_append_args and
 *   rkv_attend_args, whose struct_size tells which rkv_tensor layout they
 *   hold (0.1's had no `extent`).
 * - Status and enumeration values are pinned; exported symbols are exactly the
 *   functions declared here and in rkv_experimental.h; the SONAME carries the
 *   major version.
 */
#ifndef RKV_RKV_H
#define RKV_RKV_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * Export and version
 * ------------------------------------------------------------------------- */
#if defined(_WIN32) && defined(RKV_BUILDING_SHARED)
#  define RKV_API __declspec(dllexport)
#elif defined(_WIN32)
#  define RKV_API __declspec(dllimport)
#elif defined(__GNUC__) && (__GNUC__ >= 4)
#  define RKV_API __attribute__((visibility("default")))
#else
#  define RKV_API
#endif

#define RKV_VERSION_MAJOR 0
#define RKV_VERSION_MINOR 2
#define RKV_VERSION_PATCH 0
#define RKV_VERSION_NUMBER \
    (RKV_VERSION_MAJOR * 10000 + RKV_VERSION_MINOR * 100 + RKV_VERSION_PATCH)

/* The version of the library actually loaded; compare with RKV_VERSION_NUMBER
 * to detect a header/library skew. Thread-safe. */
RKV_API unsigned rkv_version_number(void);
/* "MAJOR.MINOR.PATCH", static storage. Thread-safe. */
RKV_API const char *rkv_version_string(void);

/* Enumerations are int-sized. In C++ they get int as their fixed underlying
 * type, so any int a foreign caller passes is a valid value that the library
 * can reject with a status (an out-of-range enum would otherwise be undefined
 * behaviour in C++). */
#ifdef __cplusplus
#  define RKV_ENUM_BASE : int
#else
#  define RKV_ENUM_BASE
#endif

/* ---------------------------------------------------------------------------
 * Statuses (values are pinned: they never change between versions)
 * ------------------------------------------------------------------------- */
typedef enum rkv_status RKV_ENUM_BASE {
    RKV_OK = 0,
    /* caller errors: the call was rejected, nothing changed */
    RKV_ERR_INVALID_ARGUMENT = 1, /* NULL pointer, bad value, bad stride */
    RKV_ERR_OUT_OF_RANGE = 2,     /* sequence, layer or head index outside the cache, or
                                     a value outside its bounds */
    RKV_ERR_UNSUPPORTED = 3,      /* unknown enum value, or a feature this build lacks */
    RKV_ERR_SHAPE_MISMATCH = 4,   /* heads, head_dim or dtype disagree with the cache */
    RKV_ERR_STRUCT_SIZE = 5,      /* struct_size unset, or from an unknown header version */
    RKV_ERR_CAPACITY = 6,         /* too many tokens for the cache, or a buffer too small */
    RKV_ERR_MISSING_QUERIES = 7,  /* the method needs queries that were never appended */
    RKV_ERR_BAD_STATE = 8,        /* the call is not valid in the sequence's current state */
    RKV_ERR_OVERFLOW = 9,         /* a size computation overflows */
    /* resource errors */
    RKV_ERR_OUT_OF_MEMORY = 20,   /* host or device allocation failed at create */
    /* device errors */
    RKV_ERR_DEVICE = 30,          /* a CUDA call failed; the message names it */
    RKV_ERR_FAULTED = 31,         /* an earlier fault left this cache unusable: destroy it */
    RKV_ERR_INTERNAL = 99         /* a bug in librkv: please report the message */
} rkv_status;

/* Static name of a status ("RKV_ERR_CAPACITY"); "RKV_UNKNOWN_STATUS" for values
 * not listed. Thread-safe, never NULL. */
RKV_API const char *rkv_status_name(rkv_status status);

/* Message of the last failed call on this thread ("" if none). Valid until the
 * next librkv call on the same thread. Thread-local, never NULL. */
RKV_API const char *rkv_error_message(void);

/* ---------------------------------------------------------------------------
 * Enumerations (values pinned)
 * ------------------------------------------------------------------------- */
typedef enum rkv_dtype RKV_ENUM_BASE {
    RKV_DTYPE_F32 = 0,
    RKV_DTYPE_F16 = 1,
    RKV_DTYPE_BF16 = 2,
    /* Storage only (rkv_cache_params.dtype): K and V as FP8 E4M3 bytes, one
     * float32 scale per (token, KV head), value = fp8 * scale (the views expose
     * both). Append quantises (the scale is the smallest power of two 2^e with
     * max|x| <= 448 * 2^e, then round to nearest even, saturating), attention
     * and scoring read the dequantised values in float32. The query window is
     * kept in BF16. Tensors passed to rkv_append and rkv_attend stay F32, F16
     * or BF16. CUDA: compute capability 8.9 or newer. */
    RKV_DTYPE_FP8_E4M3 = 3
} rkv_dtype;

typedef enum rkv_device_type RKV_ENUM_BASE {
    RKV_DEVICE_CPU = 0,
    RKV_DEVICE_CUDA = 1
} rkv_device_type;

typedef enum rkv_method RKV_ENUM_BASE {
    RKV_METHOD_RKV = 0,          /* importance and redundancy (default) */
    RKV_METHOD_SNAPKV = 1,       /* importance only (R-KV with lambda = 1) */
    RKV_METHOD_H2O = 2,          /* attention accumulated over every query */
    RKV_METHOD_STREAMINGLLM = 3, /* first `sink` tokens plus the most recent */
    RKV_METHOD_KEYDIFF = 4,      /* keys least similar to the mean key */
    RKV_METHOD_RANDOM = 5,       /* uniform random eviction, seeded */
    RKV_METHOD_FULL = 6          /* never evicts: capacity is `max_len` */
} rkv_method;

/* How kept tokens are ordered after a compression, and which quirks apply. */
typedef enum rkv_mode RKV_ENUM_BASE {
    /* Kept tokens stay sorted by original position: max-pooling sees true
     * neighbours, "most recent" means latest position. Guard rails available. */
    RKV_MODE_POSITION = 0,
    /* Reproduces the official R-KV code: kept candidates in descending score
     * order, then the window; a redundancy row with no similar key zeroes its
     * slot-0 entry. Use it to compare against the reference. */
    RKV_MODE_REFERENCE = 1
} rkv_mode;

/* How the query heads of one KV group are pooled before the softmax. */
typedef enum rkv_pooling RKV_ENUM_BASE {
    RKV_POOLING_MAX = 0, /* maximum of the raw logits over the group (reference) */
    RKV_POOLING_MEAN = 1 /* mean of the raw logits over the group */
} rkv_pooling;

/* Guard rails (bit flags for rkv_cache_params.guards). */
enum {
    RKV_GUARD_SINK = 1u << 0,  /* tokens at positions < sink are never evicted */
    RKV_GUARD_PROMPT = 1u << 1 /* prompt tokens are never evicted; the budget
                                  applies to generated tokens only. Moot for
                                  METHOD_FULL, which evicts nothing: its
                                  capacity is max_len, prompt or not */
};

/* "Every sequence" / "every layer" for the functions that accept it. */
#define RKV_ALL (-1)

/* ---------------------------------------------------------------------------
 * Parameters
 * ------------------------------------------------------------------------- */
typedef struct rkv_cache_params {
    size_t struct_size;       /* sizeof(rkv_cache_params) */

    /* shape: no defaults, must be set */
    int32_t max_seqs;         /* sequence slots 0 .. max_seqs-1 */
    int32_t num_layers;
    int32_t num_kv_heads;
    int32_t num_q_heads;      /* a multiple of num_kv_heads (GQA groups) */
    int32_t head_dim;

    /* storage */
    rkv_dtype dtype;          /* storage dtype of K and V; default F32 */
    rkv_device_type device_type; /* default CPU */
    int32_t device_id;        /* CUDA ordinal; default 0 */

    /* method */
    rkv_method method;        /* default RKV */
    rkv_mode mode;            /* default POSITION */
    int32_t budget;           /* B: tokens kept per head after a compression; default 1024.
                                 A sequence may use less (rkv_seq_set_budget) */
    int32_t buffer;           /* tokens appended between compressions; default 128 */
    int32_t window;           /* alpha: most recent tokens always kept, their queries
                                 form the observation window; default 8 */
    int32_t kernel;           /* max-pool width over slots, odd; default 7 */
    float lambda;             /* R-KV mix: lambda*importance - (1-lambda)*redundancy; default 0.1 */
    float threshold;          /* tau: cosine above which keys count as near-duplicates; default 0.5 */
    rkv_pooling pooling;      /* default MAX */
    int32_t sink;             /* StreamingLLM's sink tokens, and the sink guard; default 4 */
    uint32_t guards;          /* RKV_GUARD_* flags; default 0 */
    int32_t max_prompt_len;   /* with RKV_GUARD_PROMPT: longest prompt, reserved on top of
                                 budget + buffer (ignored by METHOD_FULL); default 0 */
    int32_t max_len;          /* METHOD_FULL: capacity per sequence; default 4096 */
    uint64_t seed;            /* METHOD_RANDOM; default 0 */
    int32_t auto_compress;    /* 1: append compresses a full sequence before adding tokens
                                 (default); 0: append fails with RKV_ERR_CAPACITY instead */

    /* --- added in 0.2.0 --- */
    int32_t max_rollback;     /* tokens rkv_seq_truncate can remove exactly when the method
                                 keeps queries (R-KV, SnapKV, H2O): the cache keeps the
                                 queries of the last window + max_rollback tokens (in a
                                 history beside the window) and H2O commits a query's
                                 attention only when it is max_rollback tokens old.
                                 0..1024; default 0 (no extra memory). Methods that keep
                                 no queries ignore it */
    uint32_t reserved;        /* 0 (pads 0.2.0's additions to 8 bytes) */
} rkv_cache_params;

/* Fill *params with defaults (shape fields 0, which create rejects until set),
 * for a struct of struct_size bytes: pass sizeof(*params) (or the sizeof of an
 * earlier header's rkv_cache_params). Statuses: OK, INVALID_ARGUMENT (NULL),
 * STRUCT_SIZE. */
RKV_API rkv_status rkv_params_default(rkv_cache_params *params, size_t struct_size);

/* Keys of the parameter getters and setters. Values pinned. */
typedef enum rkv_param RKV_ENUM_BASE {
    RKV_PARAM_MAX_SEQS = 0,
    RKV_PARAM_NUM_LAYERS = 1,
    RKV_PARAM_NUM_KV_HEADS = 2,
    RKV_PARAM_NUM_Q_HEADS = 3,
    RKV_PARAM_HEAD_DIM = 4,
    RKV_PARAM_DTYPE = 5,
    RKV_PARAM_DEVICE_TYPE = 6,
    RKV_PARAM_DEVICE_ID = 7,
    RKV_PARAM_METHOD = 8,
    RKV_PARAM_MODE = 9,
    RKV_PARAM_BUDGET = 10,
    RKV_PARAM_BUFFER = 11,
    RKV_PARAM_WINDOW = 12,
    RKV_PARAM_KERNEL = 13,
    RKV_PARAM_LAMBDA = 14,
    RKV_PARAM_THRESHOLD = 15,
    RKV_PARAM_POOLING = 16,
    RKV_PARAM_SINK = 17,
    RKV_PARAM_GUARDS = 18,
    RKV_PARAM_MAX_PROMPT_LEN = 19,
    RKV_PARAM_MAX_LEN = 20,
    RKV_PARAM_SEED = 21,
    RKV_PARAM_AUTO_COMPRESS = 22,
    RKV_PARAM_MAX_ROLLBACK = 23   /* 0.2.0 */
} rkv_param;

/* Inclusive bounds of a parameter on its own (cross-parameter rules such as
 * window < budget are checked by rkv_cache_create). Integer parameters have
 * integral bounds. Thread-safe. Statuses: OK, INVALID_ARGUMENT, UNSUPPORTED. */
RKV_API rkv_status rkv_params_bounds(rkv_param param, double *lower, double *upper);

/* Set one field of *params, checking it against rkv_params_bounds (integer
 * parameters must be integral). On error *params is unchanged. A key whose
 * field lies beyond params->struct_size (an earlier header's struct) is
 * UNSUPPORTED.
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, UNSUPPORTED, OUT_OF_RANGE. */
RKV_API rkv_status rkv_params_set(rkv_cache_params *params, rkv_param param, double value);
/* Read one field of *params as a double (a field beyond struct_size reads as
 * its default). Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, UNSUPPORTED. */
RKV_API rkv_status rkv_params_get(const rkv_cache_params *params, rkv_param param, double *value);

/* Bytes rkv_cache_create would allocate for these params (host plus device),
 * without allocating. Validates params exactly as create does. Thread-safe. */
RKV_API rkv_status rkv_cache_size(const rkv_cache_params *params, uint64_t *bytes);

/* ---------------------------------------------------------------------------
 * Cache lifetime
 * ------------------------------------------------------------------------- */
typedef struct rkv_cache rkv_cache; /* opaque */

/* Validate params and allocate every buffer the cache will ever use (K, V,
 * positions, query window and history, scorer state, scratch) on the chosen
 * device; later calls never allocate. *cache is set only on success.
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, UNSUPPORTED (e.g. CUDA in a
 * CPU-only build), OUT_OF_RANGE, OVERFLOW, OUT_OF_MEMORY, DEVICE. */
RKV_API rkv_status rkv_cache_create(const rkv_cache_params *params, rkv_cache **cache);

/* Free the cache and all its memory. NULL is a no-op. Every view of the cache
 * becomes invalid (destroy its batches first, or after: a batch only must not
 * be used once its cache is gone). On CUDA, waits for work already enqueued
 * on the cache's memory to finish (device-wide sync) before freeing. */
RKV_API void rkv_cache_destroy(rkv_cache *cache);

/* Copy the params the cache was created with (runtime changes included) into
 * the first params->struct_size bytes of *params.
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE. */
RKV_API rkv_status rkv_cache_get_params(const rkv_cache *cache, rkv_cache_params *params);

/* Change a parameter of a live cache. Only LAMBDA, THRESHOLD, KERNEL, POOLING,
 * SEED and AUTO_COMPRESS may change after create (the others size memory or
 * define the stored state); others fail with BAD_STATE. Takes effect at the
 * next compression. Statuses: OK, INVALID_ARGUMENT, UNSUPPORTED, OUT_OF_RANGE,
 * BAD_STATE, FAULTED. */
RKV_API rkv_status rkv_cache_set(rkv_cache *cache, rkv_param param, double value);
/* Read one parameter of a live cache as a double.
 * Statuses: OK, INVALID_ARGUMENT, UNSUPPORTED. */
RKV_API rkv_status rkv_cache_get(const rkv_cache *cache, rkv_param param, double *value);

/* ---------------------------------------------------------------------------
 * Sequences
 *
 * A sequence slot is "empty" when no token was appended to it since create or
 * its last reset (or all were rolled back): every layer has logical length 0.
 * ------------------------------------------------------------------------- */

/* Forget sequence `seq` (or RKV_ALL) so its slot can serve a new request:
 * lengths, prompt, query window and history, scorer state and the budget
 * (back to the cache's) return to their initial state. Memory is kept.
 * Stream-ordered on CUDA. Invalidates views of that sequence.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, DEVICE, FAULTED. */
RKV_API rkv_status rkv_seq_reset(rkv_cache *cache, int32_t seq, void *stream);

/* Rollback (speculative decoding): remove the last `tokens` appended tokens of
 * every layer of `seq`. A truncation followed by appending the same tokens
 * leaves the cache exactly as if the removed tokens had never come: K, V,
 * positions, lengths, prompt length, the query window and H2O's accumulated
 * attention, bit for bit. tokens = 0 does nothing.
 *
 * Allowed while those tokens have not been through a compression in any
 * layer, and (methods that keep queries) while the queries that replace them
 * in the window are still held; rkv_seq_rollback_limit answers how many that
 * is. More fails with BAD_STATE and a message naming the limit. Prompt tokens
 * roll back under the same rule (the prompt length shrinks with them).
 * One exception to "exactly": rolling back over a token appended without
 * queries (args->q NULL) leaves the window counted empty, as right after such
 * a token; the next compression of R-KV or SnapKV then needs `window` tokens
 * appended with queries first (else MISSING_QUERIES: truncate `window` tokens
 * and append them again with queries). The library keeps no record of the
 * queries before such a token, and the removed tokens may have overwritten them.
 *
 * On CUDA the device bookkeeping is adjusted in stream order by a small kernel
 * (nothing syncs). Invalidates views of the sequence.
 * Statuses: OK, INVALID_ARGUMENT (tokens < 0), OUT_OF_RANGE, BAD_STATE, DEVICE,
 * FAULTED. */
RKV_API rkv_status rkv_seq_truncate(rkv_cache *cache, int32_t seq, int32_t tokens, void *stream);

/* *tokens = how many tokens rkv_seq_truncate(cache, seq, n) accepts now: the
 * least over the layers of
 *   - the tokens appended since that layer's last compression (or reset), and
 *   - R-KV and SnapKV: the queries held beyond the observation window (up to
 *     max_rollback; fewer right after a rollback, until as many tokens came
 *     again), once the window is full;
 *   - H2O: the queries whose attention is not yet accumulated (up to
 *     max_rollback, the same way).
 * FULL and the methods that keep no queries are bounded by the first rule
 * only. With max_rollback = 0 the methods that keep queries can roll back
 * nothing once their window is full. Host-only.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, FAULTED. */
RKV_API rkv_status rkv_seq_rollback_limit(const rkv_cache *cache, int32_t seq, int32_t *tokens);

/* Fork (beam search, parallel sampling): copy the whole state of sequence
 * `src` into sequence `dst`: every layer's held K, V, positions and scorer
 * state, the query window and history, lengths, prompt length, schedule,
 * compression count and budget. `dst` must be empty and differ from `src`
 * (else BAD_STATE or INVALID_ARGUMENT, nothing changed); `src` is unchanged.
 * Afterwards the two sequences are independent and, given the same tokens,
 * evolve identically (METHOD_RANDOM excepted: its draws depend on the slot, so
 * forks diverge at their next compression). On CUDA a stream-ordered kernel copies the held rows (no
 * sync, no allocation). Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE,
 * BAD_STATE, DEVICE, FAULTED. */
RKV_API rkv_status rkv_seq_copy(rkv_cache *cache, int32_t src, int32_t dst, void *stream);

/* Per-request budget: sequence `seq` compresses at budget + buffer tokens
 * (plus its protected prompt) down to `budget`, its own schedule, in the
 * memory create allocated for the cache's budget. Set it while the sequence is
 * empty (else BAD_STATE). Bounds: the smallest budget the method allows
 * (> window, and >= sink + window where sinks are kept) up to the cache's
 * budget (else OUT_OF_RANGE, with both bounds in the message). A reset
 * restores the cache's budget; rkv_seq_copy copies it. FULL, which never
 * evicts, has no budget (UNSUPPORTED). Host-only.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, UNSUPPORTED, BAD_STATE, FAULTED. */
RKV_API rkv_status rkv_seq_set_budget(rkv_cache *cache, int32_t seq, int32_t budget);
/* The budget sequence `seq` compresses to (the cache's unless set; FULL: its
 * max_len). Host-only. Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE. */
RKV_API rkv_status rkv_seq_get_budget(const rkv_cache *cache, int32_t seq, int32_t *budget);

/* Logical length (tokens appended to (seq, layer) so far) and physical length
 * (tokens held per head now). Either output may be NULL, not both. Host-only.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE. */
RKV_API rkv_status rkv_seq_length(const rkv_cache *cache, int32_t seq, int32_t layer,
                                  int64_t *logical, int32_t *physical);

/* Copy the original positions held by one head, in slot order, into
 * out[0 .. *count-1]. out may be NULL to query *count alone; otherwise
 * out_len must be >= the physical length (else CAPACITY, nothing written).
 * On CUDA this copies from the device and waits for the cache's pending work:
 * meant for inspection and visualisation, not for the decode loop.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, CAPACITY, DEVICE, FAULTED. */
RKV_API rkv_status rkv_seq_positions(const rkv_cache *cache, int32_t seq, int32_t layer,
                                     int32_t head, int32_t *out, int32_t out_len,
                                     int32_t *count);

/* ---------------------------------------------------------------------------
 * Tensors
 * ------------------------------------------------------------------------- */

/* A strided input or output tensor. Element (entry i, token t, head h, dim e)
 * lives at data + i*stride_seq + (offset_i + t)*stride_token + h*stride_head + e
 * (in elements of `dtype`), where offset_i comes from token_offsets when the
 * call has them and is 0 otherwise. Examples:
 *   decode step, tensor [batch, heads, dim]:      stride_seq = heads*dim, stride_head = dim
 *   transformers, tensor [batch, heads, T, dim]:  stride_seq = heads*T*dim,
 *                                                 stride_token = dim, stride_head = T*dim
 *   packed varlen [total_tokens, heads, dim]:     stride_seq = 0, stride_token = heads*dim,
 *                                                 stride_head = dim, token_offsets = starts
 * Memory: host for a CPU cache, device memory of the cache's GPU for a CUDA cache.
 *
 * `extent` is the number of elements from `data` the call may read or write.
 * The library checks that every element it will touch (every entry, token,
 * head and dim the call names, padding entries of a batch included) lies in
 * [0, extent) and rejects the call with RKV_ERR_CAPACITY otherwise, naming the
 * tensor, its extent and the largest index. 0 means "unknown": nothing is
 * checked (C callers that do not set it; the bindings always set it). */
typedef struct rkv_tensor {
    void *data;               /* read-only for inputs; NULL = absent (queries only) */
    rkv_dtype dtype;          /* F32, F16 or BF16 (not FP8_E4M3); converted to or from the
                                 storage dtype */
    int32_t num_heads;        /* must equal the cache's head count for this tensor
                                 (num_kv_heads for K/V, num_q_heads for Q): a cheap check
                                 that caller and cache agree on the model's shape */
    int32_t head_dim;         /* must equal the cache's head_dim */
    int64_t stride_seq;
    int64_t stride_token;
    int64_t stride_head;
    int64_t extent;           /* 0.2.0: elements from data the call may touch; 0 = unchecked */
} rkv_tensor;

/* ---------------------------------------------------------------------------
 * Batches: sequence ids in memory the kernels read
 *
 * An rkv_batch holds `max_entries` sequence ids in the cache's memory (device
 * memory for a CUDA cache, host memory for a CPU cache). rkv_append and
 * rkv_attend can take a batch instead of host ids: their kernels read entry
 * i's sequence from the batch when they run, and skip entries that hold -1
 * (padding). An engine therefore captures one decode step per batch (every
 * layer's rkv_append and rkv_attend with that batch) in a CUDA graph once, and
 * replays it for whichever sequences it rkv_batch_set the batch to.
 *
 * Calls with a batch enqueue device work only: they do not change the host
 * bookkeeping (lengths, schedule). rkv_batch_advance records on the host what
 * the enqueued (or replayed) steps did, without a synchronisation, so
 * rkv_compress_due and rkv_compress stay correct without reading lengths
 * back. The decode loop of an engine is then:
 *   rkv_batch_set(batch, ids, n, stream);      (when the running set changes)
 *   replay the step's graph                    (or call append/attend eagerly)
 *   rkv_batch_advance(batch, 1);
 *   rkv_compress_due(cache, RKV_ALL, RKV_ALL, &due);
 *   if (due) rkv_compress(cache, RKV_ALL, RKV_ALL, stream);   (outside the graph)
 * Rules:
 *   - Between a batch append and its rkv_batch_advance, call nothing else on
 *     those sequences (their host lengths are behind the device's).
 *   - A batch append adds one token to every non-padding entry and does not
 *     compress: compress due sequences before the step. A sequence appended to
 *     past its capacity drops the token (nothing is written out of bounds), and
 *     the rkv_batch_advance that accounts for it faults the cache with
 *     RKV_ERR_CAPACITY naming the sequence.
 *   - Methods that keep queries (R-KV, SnapKV, H2O) need q on batch appends.
 *   - Every entry of the batch is processed on every call (padding entries are
 *     skipped when they run): input and output tensors have max_entries rows.
 * CPU caches support batches with the same semantics (host arrays, eager). */
typedef struct rkv_batch rkv_batch; /* opaque */

/* A batch of max_entries entries (1 .. 65535), all padding, for `cache`. Allocates
 * its id array once (device memory on the cache's GPU for a CUDA cache). The
 * batch must not be used after its cache is destroyed.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, OUT_OF_MEMORY, DEVICE, FAULTED. */
RKV_API rkv_status rkv_batch_create(rkv_cache *cache, int32_t max_entries, rkv_batch **batch);

/* Free the batch (NULL is a no-op). On CUDA, waits for the device (cudaFree). */
RKV_API void rkv_batch_destroy(rkv_batch *batch);

/* Set entries 0 .. num_ids-1 to seq_ids (host memory) and the rest to -1.
 * Every id is -1 (padding) or a sequence of the cache, and the sequences are
 * distinct: bad ids fail here, before anything changes. On CUDA the ids reach
 * the batch's device array through a kernel enqueued on `stream` (no sync, no
 * host memory kept), so work enqueued earlier on the stream still sees the
 * previous ids. seq_ids may be NULL when num_ids is 0.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, DEVICE, FAULTED. */
RKV_API rkv_status rkv_batch_set(rkv_batch *batch, const int32_t *seq_ids, int32_t num_ids,
                                 void *stream);

/* Record on the host that every non-padding sequence of the batch (as last
 * set) got `steps` more tokens in every layer (steps >= 0), with queries when
 * the method keeps them. Host-only: no device call, no sync. If that passes a
 * sequence's capacity, the replayed appends dropped tokens: the cache is
 * faulted and the call returns CAPACITY naming the sequence.
 * Statuses: OK, INVALID_ARGUMENT, CAPACITY, FAULTED. */
RKV_API rkv_status rkv_batch_advance(rkv_batch *batch, int32_t steps);

/* ---------------------------------------------------------------------------
 * Appending tokens
 * ------------------------------------------------------------------------- */

/* rkv_append_args.flags */
enum {
    /* The tokens of this call are prompt tokens (before any generated token of
     * the sequence). Records the prompt length; with RKV_GUARD_PROMPT they are
     * never evicted. */
    RKV_APPEND_PROMPT = 1u << 0
};

typedef struct rkv_append_args {
    size_t struct_size;            /* sizeof(rkv_append_args) */
    int32_t layer;                 /* 0 .. num_layers-1 */
    int32_t num_seqs;              /* entries in this call, >= 1 (with a batch: its
                                      max_entries) */
    const int32_t *seq_ids;        /* [num_seqs] host, distinct sequence slots; NULL
                                      with a batch */
    const int32_t *num_tokens;     /* [num_seqs] host, tokens per entry (>= 1);
                                      NULL = 1 token each (a decode step; always with
                                      a batch) */
    const int64_t *token_offsets;  /* [num_seqs] host, first token of each entry
                                      along stride_token; NULL = 0 each (always with
                                      a batch) */
    rkv_tensor k;                  /* [entry, token, num_kv_heads, head_dim], post-RoPE */
    rkv_tensor v;                  /* [entry, token, num_kv_heads, head_dim] */
    rkv_tensor q;                  /* [entry, token, num_q_heads, head_dim], post-RoPE;
                                      data NULL if the caller has no queries */
    uint32_t flags;                /* RKV_APPEND_* (not RKV_APPEND_PROMPT with a batch) */
    /* --- added in 0.2.0 --- */
    const rkv_batch *batch;        /* NULL: the entries are seq_ids. Else the sequences
                                      of this batch of the cache, one token each
                                      (see Batches) */
} rkv_append_args;

/* Append tokens to one layer of one or many sequences: the decode step of a
 * batch is one call per layer. Tokens get consecutive original positions,
 * continuing the (sequence, layer)'s logical length.
 *
 * Queries: attention-based methods (RKV, SNAPKV, H2O) need the queries of the
 * last `window` tokens when they compress, and H2O needs every query (it
 * accumulates attention as tokens arrive); pass q whenever you have it.
 *
 * Automatic compression (params.auto_compress = 1): a sequence that is full
 * (held == capacity) is compressed to its budget before new tokens go in; a
 * prompt longer than the capacity is therefore compressed chunk by chunk as it
 * is appended. With auto_compress = 0, or the FULL method, tokens that do not
 * fit fail the whole call with RKV_ERR_CAPACITY and nothing is appended. A
 * batch append never compresses (see Batches).
 *
 * Invalidates every view of the sequences appended to. Stream-ordered on CUDA.
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, OUT_OF_RANGE, SHAPE_MISMATCH,
 * UNSUPPORTED, CAPACITY (also: a tensor extent too small), MISSING_QUERIES,
 * BAD_STATE (prompt tokens after generated ones), OVERFLOW, DEVICE, FAULTED. */
RKV_API rkv_status rkv_append(rkv_cache *cache, const rkv_append_args *args, void *stream);

/* ---------------------------------------------------------------------------
 * Compression
 * ------------------------------------------------------------------------- */

/* Compress now.
 *   seq >= 0: compress that sequence now if it holds more than its budget
 *             (reference mode also reorders a cache of exactly the budget, as
 *             the official code does); otherwise nothing happens.
 *   seq == RKV_ALL: compress every sequence that is due (see rkv_compress_due).
 *   layer >= 0 or RKV_ALL: one layer or every layer.
 * Engines that capture decode in CUDA graphs call this outside the graph on the
 * steps where rkv_compress_due reports 1. On CUDA the (sequence, layer)s of one
 * call compress together (up to 64 per kernel launch): one call for RKV_ALL
 * layers fills the GPU where one call per layer would not. Calls of more than
 * half a group (32 (sequence, layer)s, or half of max_seqs x num_layers where
 * that is less) run in groups of half that size, every other one on a stream
 * the cache owns, ordered after the caller's stream on entry and joined back
 * into it before returning (work the caller enqueues after the call sees the
 * whole compression). Invalidates views of the sequences compressed.
 * Stream-ordered on CUDA.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, MISSING_QUERIES, DEVICE, FAULTED. */
RKV_API rkv_status rkv_compress(rkv_cache *cache, int32_t seq, int32_t layer, void *stream);

/* *due = 1 if appending one more token to (seq, layer) would compress first
 * (the sequence is full), else 0. seq and layer may be RKV_ALL ("any").
 * Host-only. Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, FAULTED. */
RKV_API rkv_status rkv_compress_due(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t *due);

/* ---------------------------------------------------------------------------
 * Views
 *
 * Storage is HND: for each layer, K and V are each
 *   [max_seqs, num_kv_heads, capacity, head_dim]
 * contiguous (stride_seq = num_kv_heads*capacity*head_dim, stride_head =
 * capacity*head_dim, stride_token = head_dim), and sequence s holds its tokens
 * in slots 0 .. lengths[s]-1 of every head. Attention libraries read it where
 * it lies (see README.md, "Zero-copy attention", for runnable snippets):
 *
 *   FlashInfer, paged decode (BatchDecodeWithPagedKVCacheWrapper, kv_layout
 *   "HND"): one page of page_size = capacity tokens per sequence; the layer
 *   view's k and v are the page pools [max_seqs, num_kv_heads, capacity,
 *   head_dim], passed as the tuple (k, v); for request i of sequence s_i:
 *   kv_indptr[i] = i, kv_indices[i] = s_i (the page index is the slot),
 *   kv_last_page_len[i] = lengths[s_i] (FlashInfer needs >= 1 token).
 *
 *   flash-attn, flash_attn_with_kvcache (no block_table): k_cache and v_cache
 *   are the layer's K and V seen as [max_seqs, capacity, num_kv_heads,
 *   head_dim] with strides (stride_seq, stride_token, stride_head, 1), i.e.
 *   HND permuted: flash-attn reads any strides as long as head_dim is
 *   contiguous. cache_batch_idx[i] = s_i and cache_seqlens[i] = lengths[s_i]
 *   (int32, on the device). flash-attn takes fp16/bf16 storage only.
 *
 * No NHD layout is offered: both libraries read HND as it is.
 * ------------------------------------------------------------------------- */

/* The held K, V and positions of one (sequence, layer). Every KV head holds
 * `length` tokens (uniform count), but which tokens differs per head.
 * Lifetime: borrowed from the cache; valid until the next append, compress,
 * truncate, copy onto it or reset of that sequence, or destroy. Host-only: no
 * work is enqueued. On CUDA, the memory is current for work enqueued on the
 * stream of the last call that changed the sequence, after that call. */
typedef struct rkv_seq_view {
    size_t struct_size;       /* sizeof(rkv_seq_view), set by the caller */
    void *k;                  /* [num_kv_heads, length, head_dim] at the strides below */
    void *v;                  /* [num_kv_heads, length, head_dim] at the strides below */
    int32_t *positions;       /* [num_kv_heads, length] original token positions */
    rkv_dtype dtype;
    rkv_device_type device_type;
    int32_t device_id;
    int32_t num_kv_heads;
    int32_t head_dim;
    int32_t length;           /* tokens held per head (physical length) */
    int64_t logical_length;   /* tokens appended so far (next position) */
    int64_t stride_head;      /* elements between heads, K and V */
    int64_t stride_token;     /* elements between tokens, K and V (= head_dim) */
    int64_t positions_stride_head;
    /* FP8_E4M3 storage (NULL otherwise): element e of token t of head h is
     *   k[h*stride_head + t*stride_token + e] * k_scale[h*scale_stride_head + t]
     * and the same for v with v_scale. Scales are powers of two. */
    float *k_scale;           /* [num_kv_heads, length] */
    float *v_scale;           /* [num_kv_heads, length] */
    int64_t scale_stride_head;
} rkv_seq_view;

/* Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, OUT_OF_RANGE, FAULTED. */
RKV_API rkv_status rkv_view(const rkv_cache *cache, int32_t seq, int32_t layer, rkv_seq_view *view);

/* The whole layer for every sequence slot at once, so an engine can run one
 * attention call for the batch. Same lifetime as rkv_view (any change to any
 * sequence invalidates the lengths it saw, not the pointers). As rkv_seq_view,
 * for all sequences. */
typedef struct rkv_layer_view {
    size_t struct_size;       /* sizeof(rkv_layer_view), set by the caller */
    void *k;                  /* [max_seqs, num_kv_heads, capacity, head_dim] at the strides */
    void *v;                  /* [max_seqs, num_kv_heads, capacity, head_dim] at the strides */
    int32_t *positions;       /* [max_seqs, num_kv_heads, capacity] */
    const int32_t *lengths;   /* [max_seqs] tokens held per head, in the cache's memory
                                 (device memory for CUDA), kept current by every call
                                 that changes a sequence, in stream order (batch
                                 appends and graph replays included) */
    rkv_dtype dtype;
    rkv_device_type device_type;
    int32_t device_id;
    int32_t max_seqs;
    int32_t num_kv_heads;
    int32_t head_dim;
    int32_t capacity;         /* slots per (sequence, head) */
    int64_t stride_seq;       /* elements between sequences, K and V */
    int64_t stride_head;
    int64_t stride_token;
    int64_t positions_stride_seq;
    int64_t positions_stride_head;
    /* FP8_E4M3 storage (NULL otherwise): the scales, value = fp8 * scale
     * (rkv_seq_view), [max_seqs, num_kv_heads, capacity] at these strides. */
    float *k_scale;
    float *v_scale;
    int64_t scale_stride_seq;
    int64_t scale_stride_head;
} rkv_layer_view;

/* Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, OUT_OF_RANGE, FAULTED. */
RKV_API rkv_status rkv_view_layer(const rkv_cache *cache, int32_t layer, rkv_layer_view *view);

/* ---------------------------------------------------------------------------
 * Statistics
 * ------------------------------------------------------------------------- */

typedef struct rkv_stats {
    size_t struct_size;         /* sizeof(rkv_stats), set by the caller */
    uint64_t bytes_allocated;   /* all memory the cache holds (host + device) */
    uint64_t bytes_kv_capacity; /* K+V bytes reserved for the sequences asked about (FP8:
                                   with the scales, here and below) */
    uint64_t bytes_kv_held;     /* K+V bytes of the tokens held now */
    uint64_t bytes_kv_full;     /* K+V bytes a full cache would hold for the tokens seen */
    uint64_t tokens_appended;   /* tokens appended (and not rolled back), summed over layers */
    uint64_t tokens_held;       /* tokens held per head, summed over layers */
    uint64_t tokens_evicted;    /* tokens evicted per head, summed over layers */
    uint64_t compressions;      /* (sequence, layer) compressions */
    double compress_seconds;    /* host wall time spent in compression calls (on CUDA:
                                   time to enqueue, not device time) */
} rkv_stats;

/* Statistics of one sequence, or of the whole cache with seq = RKV_ALL.
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, OUT_OF_RANGE. */
RKV_API rkv_status rkv_cache_stats(const rkv_cache *cache, int32_t seq, rkv_stats *stats);

/* ---------------------------------------------------------------------------
 * Attention over the held tokens
 * ------------------------------------------------------------------------- */

typedef struct rkv_attend_args {
    size_t struct_size;       /* sizeof(rkv_attend_args) */
    int32_t layer;            /* 0 .. num_layers-1 */
    int32_t num_seqs;         /* entries, >= 1 (with a batch: its max_entries) */
    const int32_t *seq_ids;   /* [num_seqs] host, sequences that hold tokens; NULL with a batch */
    const rkv_batch *batch;   /* NULL, or a batch of the cache: entry i attends for the
                                 batch's sequence i when the kernel runs; padding
                                 entries leave their output rows untouched */
    rkv_tensor q;             /* [num_seqs, num_q_heads, head_dim] (stride_token unused) */
    rkv_tensor out;           /* [num_seqs, num_q_heads, head_dim] (written) */
    float scale;              /* <= 0: 1/sqrt(head_dim) */
    uint32_t flags;           /* none defined yet: 0 */
} rkv_attend_args;

/* Decode attention: for each entry i, one query token of every query head of
 * its sequence attends over the tokens that sequence holds at `layer`:
 *   out[i, h] = softmax(scale * q[i, h] . K[g(h)]^T) V[g(h)],  g(h) = h / (Hq/Hkv)
 * q and out may have any dtype. Call it after appending the token's K/V. With
 * a batch, a sequence that holds no tokens when the kernel runs gets zeros.
 * Stream-ordered on CUDA. Its kernel is a programmatic dependent launch: it may
 * start while the kernel before it on the stream finishes (it waits for that
 * kernel's results before touching memory), and it lets the kernel after it
 * start early too; a kernel the engine launches after it with
 * cudaLaunchAttributeProgrammaticStreamSerialization must call
 * cudaGridDependencySynchronize() before reading `out` (kernels launched
 * without that attribute see ordinary stream order).
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, OUT_OF_RANGE, SHAPE_MISMATCH,
 * BAD_STATE (a sequence of seq_ids holds no tokens), UNSUPPORTED, CAPACITY (a
 * tensor extent too small), OVERFLOW (strides whose offsets overflow), DEVICE,
 * FAULTED. */
RKV_API rkv_status rkv_attend(rkv_cache *cache, const rkv_attend_args *args, void *stream);

#ifdef __cplusplus
} /* extern "C" */
#endif

/* ---------------------------------------------------------------------------
 * Experimental API
 *
 * Functions that may change between minor versions (inspection of scores, the
 * CUDA-graph bookkeeping of host-id calls, the matrix-product path) are
 * declared in rkv/rkv_experimental.h. Include that header to use them; for
 * 0.1 code, defining RKV_EXPERIMENTAL_API before including this header
 * includes it too. Their symbols are exported like the rest (librkv.so has one
 * export list), may change or go in any minor version before 1.0, and the
 * export check lists them separately.
 * ------------------------------------------------------------------------- */
#ifdef RKV_EXPERIMENTAL_API
#include "rkv_experimental.h"
#endif

#endif /* RKV_RKV_H */
