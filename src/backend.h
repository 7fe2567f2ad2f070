// The interface between the host-side cache (bookkeeping, validation, schedule)
// and the memory owners: the CPU backend and the CUDA backend. The cache decides
// *what* happens (which tokens go to which slots, which sequences compress and
// to how many tokens); a backend does it to memory it allocated at create.
//
// Memory layout shared by both backends (one allocation each, made at create):
//   K, V        [num_layers, max_seqs, num_kv_heads, capacity, head_dim]  storage dtype
//   K, V scales [num_layers, max_seqs, num_kv_heads, capacity]            f32, FP8 storage only
//                                                                         (value = fp8 * scale)
//   positions   [num_layers, max_seqs, num_kv_heads, capacity]            int32
//   state       [num_layers, max_seqs, num_kv_heads, capacity]            f32 (H2O's accumulated attention)
//   queries     [num_layers, max_seqs, num_q_heads, window, head_dim]     query_dtype (dtype.h), ring by
//                                                                         position % window
//   history     [num_layers, max_seqs, num_q_heads, H, head_dim]          query_dtype, ring by position % H,
//               H = query_history(params) (window + max_rollback, or 0: none): the queries a rollback
//               restores the window from, and H2O's pending queries
//   lengths     [num_layers, max_seqs]                                    int32, tokens held per head (the
//               first array of the backend bookkeeping below)
#pragma once

#include <cstdint>
#include <memory>

#include "params.h"
#include "rkv/rkv.h"
#include "rkv/rkv_experimental.h"
#include "schedule.h"

namespace rkv {

// The backend bookkeeping: each backend keeps these counts of every (layer,
// seq) in its own memory (device memory for CUDA) and its operations read and
// advance them there, in stream order, exactly as the host bookkeeping
// (src/schedule.h) plans them. Work the host does not plan runs on them alone:
// batch appends (ids read when the work runs) and replays of captured work.
// rkv_batch_advance and rkv_cache_sync_lengths bring the host up to date.
// Each array is [num_layers, max_seqs] int32, in this order.
enum CountArray : int32_t {
    kHeld,           // tokens held per head (the layer view's `lengths`)
    kLogical,        // tokens appended: the next token's position
    kQueriesValid,   // most recent tokens whose queries are held (window ring + history)
    kCompressions,   // compressions so far (seeds Random)
    kDropped,        // tokens an append found no room for (replays, batches)
    kRecent,         // tokens appended since the last compression
    kPending,        // H2O: latest tokens whose query's attention is not yet accumulated
    kNumCountArrays
};

struct DeviceCounts {
    const int32_t *arrays[kNumCountArrays];
    int32_t at(CountArray array, size_t index) const { return arrays[array][index]; }
};

// Sequence ids of an rkv_batch in backend memory ([max_entries] int32), freed
// by its own deleter: a batch may outlive its cache's backend.
using BatchIds = std::unique_ptr<int32_t, void (*)(int32_t *)>;

class Backend {
 public:
    virtual ~Backend() = default;

    // A backend keeps the params it was created with for the shape, method,
    // mode, window and max_rollback, which never change; the live ones come
    // with each call.

    // Copy K, V (and Q into the window ring and the history, and commit H2O's
    // queries) for each chunk, at the slot and position its own bookkeeping
    // gives (the host planned the same), then advance the bookkeeping.
    virtual void append(int32_t layer, const rkv_append_args &args, const AppendChunk *chunks,
                        int32_t num_chunks, const LiveParams &live, void *stream) = 0;
    // One token for each entry of a batch whose sequence is batch_ids[i] when
    // the work runs (-1: padding, skipped); tensors row i. A sequence without
    // room drops its token (counted in kDropped).
    virtual void append_batch(int32_t layer, const rkv_append_args &args, const int32_t *batch_ids,
                              int32_t entries, const LiveParams &live, void *stream) = 0;
    // Score, select and compact each job's (seq, layer) in place, if it holds
    // job.held tokens (H2O: after committing its pending queries). The jobs of
    // one call may span many layers (rkv_compress of RKV_ALL layers hands them
    // over at once, so that a device backend compresses them in the same launches).
    virtual void compress(const CompressJob *jobs, int32_t num_jobs, const LiveParams &live, void *stream) = 0;
    // Remove the last `tokens` tokens of every layer of `seq` (the host checked
    // rollback_limit): bookkeeping, and the window ring restored from the history.
    virtual void truncate(int32_t seq, int32_t tokens, void *stream) = 0;
    // Every layer of `src` (held rows, positions, state, queries, bookkeeping) onto `dst`.
    virtual void copy_sequence(int32_t src, int32_t dst, void *stream) = 0;
    // Zero the scorer state and the bookkeeping of every layer of `seq` (reset).
    virtual void clear_sequence(int32_t seq, void *stream) = 0;

    // Entry i attends for seq_ids[i] (host) or, with batch_ids, for the batch's
    // sequence i when the work runs (-1: output row untouched). max_held: the
    // most tokens an entry holds as the host knows it (the capacity with a
    // batch), for the CUDA backend's choice of splits.
    virtual void attend(int32_t layer, int32_t num_seqs, const int32_t *seq_ids, const int32_t *batch_ids,
                        int32_t max_held, const rkv_tensor &q, const rkv_tensor &out, float scale,
                        void *stream) = 0;
    // Positions of one head, slot order, into host memory (synchronous).
    virtual void copy_positions(int32_t layer, int32_t seq, int32_t head, int32_t held,
                                int32_t *out) = 0;
    // Scores a compression of `job` would rank, for one head, into host memory
    // (H2O: pending queries committed into a copy of the state).
    virtual void inspect_scores(int32_t layer, const CompressJob &job, int32_t head,
                                rkv_score_kind kind, const LiveParams &live, float *out) = 0;

    // Batches: an id array of `entries` entries, all -1; and its new contents
    // (`ids` [entries] host values, -1 included), stream-ordered.
    virtual BatchIds allocate_batch(int32_t entries) = 0;
    virtual void set_batch(int32_t *batch_ids, const int32_t *ids, int32_t entries, void *stream) = 0;

    // Base pointers of the buffers above (device pointers for CUDA).
    virtual void *keys() const = 0;
    virtual void *values() const = 0;
    virtual float *key_scales() const = 0;    // nullptr unless FP8 storage
    virtual float *value_scales() const = 0;  // nullptr unless FP8 storage
    virtual int32_t *positions() const = 0;
    virtual const int32_t *lengths() const = 0;

    // The bookkeeping of every (layer, seq), in host memory the backend owns,
    // once the work enqueued on `stream` is done (valid until the next call).
    virtual DeviceCounts read_counts(void *stream) = 0;

    // Optional parts; the defaults (backend.cpp) suit a backend without a device.
    // Throws RKV_ERR_INVALID_ARGUMENT if this backend's kernels cannot read `data`
    // (host memory passed to a CUDA cache, memory of another GPU).
    virtual void check_memory(const void *data, const char *name, const char *function) const;
    // Selects the matrix-product path (rkv_matmul_path values).
    virtual void set_matmul_path(int32_t path);
    // Decode attention's plan (rkv_cache_set_attend_plan): blocks per (sequence,
    // KV head), 0 = automatic, and the kernel variant (rkv_attend_variant).
    virtual void set_attend_plan(int32_t splits, int32_t variant);
};

// The backend factory: the one place that knows which backends exist.

// Throws unless this build and machine can create a backend for params
// (CUDA: a device with that ordinal, compute capability 9.0, the kernels'
// limits; a CPU-only build: RKV_ERR_UNSUPPORTED for a CUDA cache).
void backend_check_device(const rkv_cache_params &params, const char *function);

// Bytes the backend allocates at create beyond `layout` (scratch, its own
// objects, device bookkeeping). Pure: from the params alone.
uint64_t backend_scratch_bytes(const rkv_cache_params &params, const MemoryPlan &layout);

std::unique_ptr<Backend> make_backend(const rkv_cache_params &params, const MemoryPlan &plan);

}  // namespace rkv
