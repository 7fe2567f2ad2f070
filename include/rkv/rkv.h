/*
 * librkv: a KV-cache compression layer for LLM inference engines.
 *
 * An rkv_cache owns the K/V memory of up to `max_seqs` sequences x `num_layers`
 * x `num_kv_heads`, appends tokens to it, evicts tokens with R-KV (or a
 * baseline) so that every head keeps a fixed budget, and hands out views for
 * the engine's attention kernel.
 *
 * This is the only public header. It is C99, includes no CUDA header, and
 * every symbol it declares starts with rkv_ / RKV_.
 *
 * Conventions that hold for every function below
 * -----------------------------------------------
 * - Every function returns an rkv_status (or a value that cannot fail). On any
 *   status other than RKV_OK the cache is unchanged, and rkv_last_error_message()
 *   says what was wrong in words a user can act on.
 * - Every argument is validated before any state changes.
 * - Threading: one rkv_cache must not be used from two threads at the same time
 *   (serialise calls on one cache yourself); distinct caches are independent and
 *   may be used from different threads concurrently. Functions that take no cache
 *   (version, names, parameters, size query) are thread-safe. The last error
 *   message is thread-local.
 * - Structs the caller fills or receives start with `struct_size`: set it to
 *   sizeof(the struct) before the call (rkv_cache_params_default sets it for
 *   you). Fields are only ever added at the end; the library rejects sizes it
 *   does not know with RKV_ERR_STRUCT_SIZE.
 * - Element strides, not byte strides, describe every tensor. The innermost
 *   (head_dim) axis is always contiguous.
 * - Stream ordering (CUDA caches): calls that enqueue device work take a
 *   `void *stream` (a cudaStream_t; NULL = the legacy default stream). They
 *   never synchronise the host and never allocate: lengths are tracked on the
 *   host and all memory is allocated by rkv_cache_create. CPU caches ignore the
 *   stream and complete before returning.
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
#define RKV_VERSION_MINOR 1
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
    RKV_ERR_OUT_OF_RANGE = 2,     /* sequence, layer or head index outside the cache */
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
RKV_API const char *rkv_last_error_message(void);

/* ---------------------------------------------------------------------------
 * Enumerations (values pinned)
 * ------------------------------------------------------------------------- */
typedef enum rkv_dtype RKV_ENUM_BASE {
    RKV_DTYPE_F32 = 0,
    RKV_DTYPE_F16 = 1,
    RKV_DTYPE_BF16 = 2
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
    rkv_dtype dtype;          /* default F32 */
    rkv_device_type device_type; /* default CPU */
    int32_t device_id;        /* CUDA ordinal; default 0 */

    /* method */
    rkv_method method;        /* default RKV */
    rkv_mode mode;            /* default POSITION */
    int32_t budget;           /* B: tokens kept per head after a compression; default 1024 */
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
} rkv_cache_params;

/* Fill *params with defaults (shape fields 0, which create rejects until set).
 * Pass sizeof(*params). Statuses: OK, INVALID_ARGUMENT (NULL), STRUCT_SIZE. */
RKV_API rkv_status rkv_cache_params_default(rkv_cache_params *params, size_t struct_size);

/* Keys of the enum-keyed parameter setter. Values pinned. */
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
    RKV_PARAM_AUTO_COMPRESS = 22
} rkv_param;

/* Inclusive bounds of a parameter on its own (cross-parameter rules such as
 * window < budget are checked by rkv_cache_create). Integer parameters have
 * integral bounds. Thread-safe. Statuses: OK, INVALID_ARGUMENT, UNSUPPORTED. */
RKV_API rkv_status rkv_param_bounds(rkv_param param, double *lower, double *upper);

/* Set one field of *params, checking it against rkv_param_bounds (integer
 * parameters must be integral). On error *params is unchanged.
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, UNSUPPORTED, OUT_OF_RANGE. */
RKV_API rkv_status rkv_params_set(rkv_cache_params *params, rkv_param param, double value);
/* Read one field of *params as a double. */
RKV_API rkv_status rkv_params_get(const rkv_cache_params *params, rkv_param param, double *value);

/* Bytes rkv_cache_create would allocate for these params (host plus device),
 * without allocating. Validates params exactly as create does. Thread-safe. */
RKV_API rkv_status rkv_cache_size(const rkv_cache_params *params, uint64_t *bytes);

/* ---------------------------------------------------------------------------
 * Cache lifetime
 * ------------------------------------------------------------------------- */
typedef struct rkv_cache rkv_cache; /* opaque */

/* Validate params and allocate every buffer the cache will ever use (K, V,
 * positions, query window, scorer state, scratch) on the chosen device; later
 * calls never allocate. *cache is set only on success.
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, UNSUPPORTED (e.g. CUDA in a
 * CPU-only build), OUT_OF_RANGE, OVERFLOW, OUT_OF_MEMORY, DEVICE. */
RKV_API rkv_status rkv_cache_create(const rkv_cache_params *params, rkv_cache **cache);

/* Free the cache and all its memory. NULL is a no-op. Every view of the cache
 * becomes invalid. On CUDA, waits for work already enqueued on the cache's
 * memory to finish (device-wide sync) before freeing. */
RKV_API void rkv_cache_destroy(rkv_cache *cache);

/* Copy the params the cache was created with (runtime changes included). */
RKV_API rkv_status rkv_cache_get_params(const rkv_cache *cache, rkv_cache_params *params);

/* Change a parameter of a live cache. Only LAMBDA, THRESHOLD, KERNEL, POOLING,
 * SEED and AUTO_COMPRESS may change after create (the others size memory or
 * define the stored state); others fail with BAD_STATE. Takes effect at the
 * next compression. Statuses: OK, INVALID_ARGUMENT, UNSUPPORTED, OUT_OF_RANGE,
 * BAD_STATE, FAULTED. */
RKV_API rkv_status rkv_cache_set_param(rkv_cache *cache, rkv_param param, double value);

/* Forget sequence `seq` (or RKV_ALL) so its slot can serve a new request:
 * lengths, prompt, query window and scorer state return to empty. Memory is
 * kept. Stream-ordered on CUDA. Invalidates views of that sequence.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, DEVICE, FAULTED. */
RKV_API rkv_status rkv_seq_reset(rkv_cache *cache, int32_t seq, void *stream);

/* ---------------------------------------------------------------------------
 * Appending tokens
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
 * Memory: host for a CPU cache, device memory of the cache's GPU for a CUDA cache. */
typedef struct rkv_tensor {
    void *data;               /* read-only for inputs; NULL = absent (queries only) */
    rkv_dtype dtype;          /* any of F32, F16, BF16; converted to or from the storage dtype */
    int32_t num_heads;        /* must equal the cache's head count for this tensor
                                 (num_kv_heads for K/V, num_q_heads for Q): a cheap check
                                 that caller and cache agree on the model's shape */
    int32_t head_dim;         /* must equal the cache's head_dim */
    int64_t stride_seq;
    int64_t stride_token;
    int64_t stride_head;
} rkv_tensor;

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
    int32_t num_seqs;              /* entries in this call, >= 1 */
    const int32_t *seq_ids;        /* [num_seqs] host, distinct sequence slots */
    const int32_t *num_tokens;     /* [num_seqs] host, tokens per entry (>= 1);
                                      NULL = 1 token each (a decode step) */
    const int64_t *token_offsets;  /* [num_seqs] host, first token of each entry
                                      along stride_token; NULL = 0 each */
    rkv_tensor k;                  /* [entry, token, num_kv_heads, head_dim], post-RoPE */
    rkv_tensor v;                  /* [entry, token, num_kv_heads, head_dim] */
    rkv_tensor q;                  /* [entry, token, num_q_heads, head_dim], post-RoPE;
                                      data NULL if the caller has no queries */
    uint32_t flags;                /* RKV_APPEND_* */
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
 * (held == capacity) is compressed to the budget before new tokens go in; a
 * prompt longer than the capacity is therefore compressed chunk by chunk as it
 * is appended. With auto_compress = 0, or the FULL method, tokens that do not
 * fit fail the whole call with RKV_ERR_CAPACITY and nothing is appended.
 *
 * Invalidates every view of the sequences appended to. Stream-ordered on CUDA.
 * Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, OUT_OF_RANGE, SHAPE_MISMATCH,
 * UNSUPPORTED, CAPACITY, MISSING_QUERIES, BAD_STATE (prompt tokens after
 * generated ones), OVERFLOW, DEVICE, FAULTED. */
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
 * steps where rkv_compress_due reports 1. Invalidates views of the sequences
 * compressed. Stream-ordered on CUDA.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, MISSING_QUERIES, DEVICE, FAULTED. */
RKV_API rkv_status rkv_compress(rkv_cache *cache, int32_t seq, int32_t layer, void *stream);

/* *due = 1 if appending one more token to (seq, layer) would compress first
 * (the sequence is full), else 0. seq and layer may be RKV_ALL ("any").
 * Host-only. Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, FAULTED. */
RKV_API rkv_status rkv_compress_due(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t *due);

/* ---------------------------------------------------------------------------
 * Views
 * ------------------------------------------------------------------------- */

/* The held K, V and positions of one (sequence, layer). Every KV head holds
 * `length` tokens (uniform count), but which tokens differs per head.
 * Lifetime: borrowed from the cache; valid until the next append, compress or
 * reset of that sequence, or destroy. Host-only: no work is enqueued. On CUDA,
 * the memory is current for work enqueued on the stream of the last append or
 * compress after that call. */
typedef struct rkv_kv_view {
    size_t struct_size;       /* sizeof(rkv_kv_view), set by the caller */
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
} rkv_kv_view;

/* Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, OUT_OF_RANGE, FAULTED. */
RKV_API rkv_status rkv_view(const rkv_cache *cache, int32_t seq, int32_t layer, rkv_kv_view *view);

/* The whole layer for every sequence slot at once, so an engine can run one
 * attention call for the batch. Same lifetime as rkv_view (any append, compress
 * or reset invalidates it). As rkv_kv_view, for all sequences. */
typedef struct rkv_layer_view {
    size_t struct_size;       /* sizeof(rkv_layer_view), set by the caller */
    void *k;                  /* [max_seqs, num_kv_heads, capacity, head_dim] at the strides */
    void *v;                  /* [max_seqs, num_kv_heads, capacity, head_dim] at the strides */
    int32_t *positions;       /* [max_seqs, num_kv_heads, capacity] */
    const int32_t *lengths;   /* [max_seqs] tokens held per head, in the cache's memory
                                 (device memory for CUDA), kept current by append,
                                 compress and reset in stream order */
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
} rkv_layer_view;

/* Statuses: OK, INVALID_ARGUMENT, STRUCT_SIZE, OUT_OF_RANGE, FAULTED. */
RKV_API rkv_status rkv_view_layer(const rkv_cache *cache, int32_t layer, rkv_layer_view *view);

/* ---------------------------------------------------------------------------
 * Lengths, positions, statistics
 * ------------------------------------------------------------------------- */

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
RKV_API rkv_status rkv_kept_positions(const rkv_cache *cache, int32_t seq, int32_t layer,
                                      int32_t head, int32_t *out, int32_t out_len,
                                      int32_t *count);

typedef struct rkv_stats {
    size_t struct_size;         /* sizeof(rkv_stats), set by the caller */
    uint64_t bytes_allocated;   /* all memory the cache holds (host + device) */
    uint64_t bytes_kv_capacity; /* K+V bytes reserved for the sequences asked about */
    uint64_t bytes_kv_held;     /* K+V bytes of the tokens held now */
    uint64_t bytes_kv_full;     /* K+V bytes a full cache would hold for the tokens seen */
    uint64_t tokens_appended;   /* tokens appended, summed over layers */
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

/* Decode attention: for each entry i, one query token of every query head of
 * sequence seq_ids[i] attends over the tokens that sequence holds at `layer`:
 *   out[i, h] = softmax(scale * q[i, h] . K[g(h)]^T) V[g(h)],  g(h) = h / (Hq/Hkv)
 * q and out are [num_seqs, num_q_heads, head_dim] (stride_token unused); any
 * dtype. scale <= 0 means 1/sqrt(head_dim). Call it after appending the
 * token's K/V. Stream-ordered on CUDA.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, SHAPE_MISMATCH, BAD_STATE
 * (a sequence holds no tokens), UNSUPPORTED, OVERFLOW (strides whose offsets
 * overflow), DEVICE, FAULTED. */
RKV_API rkv_status rkv_attend(rkv_cache *cache, int32_t layer, int32_t num_seqs,
                              const int32_t *seq_ids, const rkv_tensor *q,
                              const rkv_tensor *out, float scale, void *stream);

/* ---------------------------------------------------------------------------
 * Experimental API: may change between minor versions. Define
 * RKV_EXPERIMENTAL_API before including this header to see it.
 * ------------------------------------------------------------------------- */
#ifdef RKV_EXPERIMENTAL_API

typedef enum rkv_score_kind RKV_ENUM_BASE {
    RKV_SCORE_IMPORTANCE = 0, /* attention importance after max-pooling */
    RKV_SCORE_REDUNDANCY = 1, /* R-KV redundancy */
    RKV_SCORE_FINAL = 2       /* the score the method ranks candidates by */
} rkv_score_kind;

/* The scores the next compression of (seq, layer) would rank, for one KV head:
 * out[j] for the held candidates j = 0 .. length - window - 1 (slot order).
 * Nothing changes. Synchronous on CUDA. For inspection, tests and plots.
 * *count receives length - window; out_len must be at least that.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, UNSUPPORTED (score the method
 * does not compute), MISSING_QUERIES, BAD_STATE (fewer than window+1 tokens),
 * CAPACITY, DEVICE, FAULTED. */
RKV_API rkv_status rkv_inspect_scores(const rkv_cache *cache, int32_t seq, int32_t layer,
                                      int32_t head, rkv_score_kind kind, float *out,
                                      int32_t out_len, int32_t *count);

/* --- CUDA graphs -------------------------------------------------------------
 * A CUDA cache keeps each (sequence, layer)'s held length, logical length
 * (next position), count of queries in the window and count of compressions in
 * device memory too, and its kernels read and advance them there, in stream
 * order:
 *   - rkv_append writes each entry's tokens at the slot and position the device
 *     lengths give, then advances them;
 *   - rkv_attend attends over the length the device holds;
 *   - a compression of a (sequence, layer) runs only if the device holds
 *     exactly as many tokens as the host planned it for; it then sets the
 *     device length to the budget.
 * Eagerly this is the same as the host bookkeeping. It is what lets the calls
 * be captured in a CUDA graph (stream capture of the stream passed to them) and
 * replayed:
 *   - A captured decode step (rkv_append of one token per sequence, per layer,
 *     and rkv_attend) appends at the next slot and position on every replay.
 *   - A captured compression (rkv_compress) compresses, on every replay, the
 *     (sequence, layer)s that hold as many tokens as at capture (a full
 *     sequence, in steady state) and leaves the others alone.
 *   - What a graph bakes in are the calls' arguments: tensor pointers and
 *     strides, sequence ids, token counts, and which sequences a compression
 *     plans for. The data behind the pointers is read at replay.
 * Rules:
 *   1. Capturing runs nothing on the device, but the host bookkeeping records
 *      the call as if it had run; replays are invisible to the host. After
 *      capturing and after replaying, before any other call on the cache
 *      (views, lengths, rkv_compress_due, an eager append...), call
 *      rkv_sync_lengths (outside any capture): it copies the device
 *      bookkeeping into the host's.
 *   2. Capture a decode step while no sequence in it is due for compression
 *      (rkv_compress_due); replay it at most `capacity - held` times, then
 *      compress (eagerly or by replaying a captured compression). A replayed
 *      append never writes past a sequence's capacity: tokens that do not fit
 *      are dropped, and the next rkv_sync_lengths fails with RKV_ERR_CAPACITY
 *      and faults the cache (the sequence lost tokens).
 *   3. Work on one cache must be stream-ordered (one stream, or streams the
 *      caller orders with events), captured or not: the kernels share scratch.
 *   4. H2O's accumulation and Random's rounds follow the device state, so they
 *      replay exactly as eager calls would. CPU caches ignore all of this. */

/* Copy the device-side bookkeeping of a CUDA cache into the host bookkeeping,
 * after the work enqueued on `stream` (waits for it: a synchronising call, not
 * capturable). A CPU cache returns OK and changes nothing.
 * Statuses: OK, INVALID_ARGUMENT, CAPACITY (a replayed append dropped tokens;
 * the cache is then faulted), DEVICE, FAULTED. */
RKV_API rkv_status rkv_sync_lengths(rkv_cache *cache, void *stream);

/* How a CUDA cache computes the matrix products of R-KV and SnapKV. */
typedef enum rkv_matmul_path RKV_ENUM_BASE {
    RKV_MATMUL_AUTO = 0,     /* the fastest measured: FUSED where it applies, else CUBLASLT */
    RKV_MATMUL_CUBLASLT = 1, /* cuBLASLt strided-batched products into scratch, then reductions */
    RKV_MATMUL_FUSED = 2     /* librkv's tensor-core kernel with the redundancy reductions fused
                                into it (f16/bf16 storage, head_dim 64, 128 or 256) */
} rkv_matmul_path;

/* Choose the matrix-product path of a cache; takes effect at the next
 * compression. For benchmarks and tests: both paths select the same tokens up
 * to float rounding. Statuses: OK, INVALID_ARGUMENT, UNSUPPORTED (unknown path,
 * FUSED where it does not apply, anything but AUTO on a CPU cache), FAULTED. */
RKV_API rkv_status rkv_cache_set_matmul_path(rkv_cache *cache, rkv_matmul_path path);

#endif /* RKV_EXPERIMENTAL_API */

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RKV_RKV_H */
