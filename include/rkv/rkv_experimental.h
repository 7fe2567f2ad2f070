/*
 * librkv experimental API: functions that may change or go in any minor
 * version before 1.0.
 *
 * Policy. Including this header is the opt-in (0.1 code that defines
 * RKV_EXPERIMENTAL_API before including rkv/rkv.h gets it too). The functions
 * follow the naming rule and the conventions of rkv/rkv.h (statuses, messages,
 * validation before change, threading, streams). Their symbols are exported
 * from librkv.so like the stable ones and are listed separately by the export
 * check (tests/check_exports.cmake), so a change to them is visible in review;
 * bindings expose them only under an explicit experimental name.
 */
#ifndef RKV_RKV_EXPERIMENTAL_H
#define RKV_RKV_EXPERIMENTAL_H

#include "rkv.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------------------
 * Scores
 * ------------------------------------------------------------------------- */

typedef enum rkv_score_kind RKV_ENUM_BASE {
    RKV_SCORE_IMPORTANCE = 0, /* attention importance after max-pooling */
    RKV_SCORE_REDUNDANCY = 1, /* R-KV redundancy */
    RKV_SCORE_FINAL = 2       /* the score the method ranks candidates by */
} rkv_score_kind;

/* The scores the next compression of (seq, layer) would rank, for one KV head:
 * out[j] for the held candidates j = 0 .. length - window - 1 (slot order).
 * For H2O they include the queries whose accumulation is still deferred
 * (max_rollback), as the compression would. Nothing changes. Synchronous on
 * CUDA. For inspection, tests and plots. *count receives length - window;
 * out_len must be at least that.
 * Statuses: OK, INVALID_ARGUMENT, OUT_OF_RANGE, UNSUPPORTED (score the method
 * does not compute), MISSING_QUERIES, BAD_STATE (fewer than window+1 tokens),
 * CAPACITY, DEVICE, FAULTED. */
RKV_API rkv_status rkv_seq_scores(const rkv_cache *cache, int32_t seq, int32_t layer,
                                  int32_t head, rkv_score_kind kind, float *out,
                                  int32_t out_len, int32_t *count);

/* ---------------------------------------------------------------------------
 * CUDA graphs of calls with host sequence ids
 *
 * Batches (rkv.h) are the stable way to replay decode steps. Calls that take
 * host ids can be captured too: a CUDA cache keeps each (sequence, layer)'s
 * held length, logical length (next position), count of queries held, tokens
 * since the last compression, H2O's deferred queries and count of
 * compressions in device memory, and its kernels read and advance them there,
 * in stream order:
 *   - rkv_append writes each entry's tokens at the slot and position the device
 *     lengths give, then advances them;
 *   - rkv_attend attends over the length the device holds;
 *   - a compression of a (sequence, layer) runs only if the device holds
 *     exactly as many tokens as the host planned it for; it then sets the
 *     device length to the budget;
 *   - rkv_seq_truncate subtracts from the device lengths.
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
 *      rkv_cache_sync_lengths (outside any capture): it copies the device
 *      bookkeeping into the host's. (With a batch, rkv_batch_advance does
 *      this job without a sync.)
 *   2. Capture a decode step while no sequence in it is due for compression
 *      (rkv_compress_due); replay it at most `capacity - held` times, then
 *      compress (eagerly or by replaying a captured compression). A replayed
 *      append never writes past a sequence's capacity: tokens that do not fit
 *      are dropped, and the next rkv_cache_sync_lengths fails with
 *      RKV_ERR_CAPACITY and faults the cache (the sequence lost tokens).
 *   3. Work on one cache must be stream-ordered (one stream, or streams the
 *      caller orders with events), captured or not: the kernels share scratch.
 *   4. H2O's accumulation and Random's rounds follow the device state, so they
 *      replay exactly as eager calls would. */

/* Copy the backend bookkeeping of a cache into the host bookkeeping, after the
 * work enqueued on `stream` (on CUDA: waits for it, a synchronising call, not
 * capturable). On a CPU cache, whose calls complete eagerly, the two agree
 * except after batch appends not yet advanced.
 * Statuses: OK, INVALID_ARGUMENT, CAPACITY (a replayed append dropped tokens;
 * the cache is then faulted), DEVICE, FAULTED. */
RKV_API rkv_status rkv_cache_sync_lengths(rkv_cache *cache, void *stream);

/* ---------------------------------------------------------------------------
 * Matrix products
 * ------------------------------------------------------------------------- */

/* How a CUDA cache computes the matrix products of R-KV and SnapKV. */
typedef enum rkv_matmul_path RKV_ENUM_BASE {
    RKV_MATMUL_AUTO = 0,     /* the fastest measured: WGMMA where it applies, else FUSED, else
                                CUBLASLT; where WGMMA_INT8 applies too (R-KV), whichever of the
                                two the cache's own compressions ran faster, timed with events
                                outside graph capture (they keep the same tokens, bit for bit) */
    RKV_MATMUL_CUBLASLT = 1, /* cuBLASLt strided-batched products into scratch, then reductions */
    RKV_MATMUL_FUSED = 2,    /* librkv's tensor-core kernel with the redundancy reductions fused
                                into it (f16/bf16 storage, head_dim 64, 128 or 256) */
    RKV_MATMUL_WGMMA = 3,    /* FUSED with the key Gram on Hopper's warpgroup MMA, by rows: each
                                half row tile stops once all its keys have a near-duplicate
                                (much faster than FUSED on keys like a model's, which have near-
                                duplicates among the latest keys; as fast on keys that have none;
                                where FUSED applies, on compute capability 9.0) */
    RKV_MATMUL_WGMMA_INT8 = 4 /* WGMMA's answers with an int8 filter: products of the keys
                                rounded to int8 (half the square: similarity is symmetric) bound
                                every similarity, and only tiles where a pair may pass the
                                threshold are computed exactly (the same answers; faster where
                                few keys have near-duplicates, far slower where many do; where
                                WGMMA applies, at head_dim 128 and a capacity of at least 33) */
} rkv_matmul_path;

/* Choose the matrix-product path of a cache; takes effect at the next
 * compression. For benchmarks and tests: every path selects the same tokens up
 * to float rounding. Statuses: OK, INVALID_ARGUMENT, UNSUPPORTED (unknown path,
 * FUSED, WGMMA or WGMMA_INT8 where it does not apply, anything but AUTO on a CPU cache),
 * FAULTED. */
RKV_API rkv_status rkv_cache_set_matmul_path(rkv_cache *cache, rkv_matmul_path path);

/* ---------------------------------------------------------------------------
 * Decode attention
 * ------------------------------------------------------------------------- */

/* How rkv_attend runs on a CUDA cache (head_dim 64, 128 or 256). Each
 * (sequence, KV head) is split into `splits` blocks of consecutive tokens
 * (flash-decoding: a partial softmax per block, merged by the last block to
 * finish); three kernels (kernels/README.md): WIDE and NARROW compute on the
 * CUDA cores (WIDE holds 16 values of a row per lane, two blocks per SM;
 * NARROW holds 8, four blocks per SM, at most 4 query heads per KV head);
 * TENSOR computes both products on tensor cores, with the float32 accuracy of
 * the others (f16, bf16 and FP8 storage). */
typedef enum rkv_attend_variant RKV_ENUM_BASE {
    RKV_ATTEND_AUTO = 0,   /* the measured rule (the default) */
    RKV_ATTEND_WIDE = 1,
    RKV_ATTEND_NARROW = 2,
    RKV_ATTEND_TENSOR = 3
} rkv_attend_variant;

/* Force the attention plan: splits 1 .. 1024 (capped where the partial-result
 * scratch ends), or 0 to choose per call from the number of entries, the
 * longest held length and the GPU's SM count (the default; with an rkv_batch
 * the default is one split, so that a sequence's result does not depend on
 * the batch's size); and the variant. For benchmarks and tests:
 * every plan gives the same result up to float rounding. Takes effect at the
 * next rkv_attend. Statuses: OK, INVALID_ARGUMENT (out of range), UNSUPPORTED
 * (a CPU cache: only 0 and AUTO; NARROW, TENSOR or splits > 1 where the
 * kernel does not serve the cache's shape or dtype), FAULTED. */
RKV_API rkv_status rkv_cache_set_attend_plan(rkv_cache *cache, int32_t splits, rkv_attend_variant variant);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* RKV_RKV_EXPERIMENTAL_H */
