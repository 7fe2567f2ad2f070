// The cache: host-side bookkeeping of every (sequence, layer), argument
// validation that needs that state, and the compression schedule. Memory and
// arithmetic belong to the backend (backend.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "params.h"
#include "rkv/rkv.h"
#include "schedule.h"

namespace rkv {

class Batch;

// A tensor argument and the elements a call touches in it: `entries` entries
// along stride_seq, each with num_tokens[i] tokens (1 when NULL) from
// token_offsets[i] (0 when NULL) along stride_token when `tokens` is true.
struct TensorUse {
    int32_t entries;
    const int32_t *num_tokens;
    const int64_t *token_offsets;
    bool tokens;
};

class Cache {
 public:
    // Everything a cache with these params allocates, for the size query and
    // create alike: validates the params, asks the backend factory whether this
    // machine can hold it and what its backend adds, and counts the cache's own
    // host bookkeeping. Throws what rkv_cache_size and rkv_cache_create return.
    static MemoryPlan plan(const rkv_cache_params &params, const char *function);
    // The host bookkeeping below (bytes of the object and of its vectors).
    static uint64_t host_bytes(const rkv_cache_params &params, const char *function);

    Cache(const rkv_cache_params &params, const MemoryPlan &plan, uint64_t bytes);
    virtual ~Cache();

    const rkv_cache_params &params() const { return params_; }

    void append(const rkv_append_args &args, void *stream);
    void compress(int32_t seq, int32_t layer, void *stream);
    int32_t compress_due(int32_t seq, int32_t layer) const;
    void reset(int32_t seq, void *stream);
    void set_param(rkv_param param, double value);

    // Sequences (rkv.h, "Sequences").
    void truncate(int32_t seq, int32_t tokens, void *stream);
    int32_t rollback_limit(int32_t seq) const;
    void copy(int32_t src, int32_t dst, void *stream);
    void set_budget(int32_t seq, int32_t budget);
    int32_t budget(int32_t seq) const;

    // Batches: their id memory, stream-ordered contents, and the host record
    // of the steps their appends took (every listed sequence, every layer).
    BatchIds allocate_batch(int32_t entries);
    void set_batch(int32_t *batch_ids, const int32_t *ids, int32_t entries, void *stream);
    void advance(const int32_t *ids, int32_t entries, int32_t steps);

    void view(int32_t seq, int32_t layer, rkv_seq_view *view) const;
    void view_layer(int32_t layer, rkv_layer_view *view) const;
    void seq_length(int32_t seq, int32_t layer, int64_t *logical, int32_t *physical) const;
    void kept_positions(int32_t seq, int32_t layer, int32_t head, int32_t *out, int32_t out_len,
                        int32_t *count) const;
    void stats(int32_t seq, rkv_stats *stats) const;
    void attend(const rkv_attend_args &args, void *stream);
    void inspect_scores(int32_t seq, int32_t layer, int32_t head, int32_t kind, float *out,
                        int32_t out_len, int32_t *count) const;
    // rkv_cache_sync_lengths: the host bookkeeping from the backend's (CUDA graphs).
    void sync_lengths(void *stream);
    void set_matmul_path(int32_t path);
    void set_attend_plan(int32_t splits, int32_t variant);

    // Every call checks this first: a device fault leaves the memory undefined.
    void check_usable(const char *function) const;
    // Called by the C layer when a backend call failed midway (device error).
    void mark_faulted(const char *message);

    // Argument checks that need the cache's shape (used by the C layer too).
    void check_seq(int32_t seq, bool allow_all, const char *function) const;
    void check_layer(int32_t layer, bool allow_all, const char *function) const;

 private:
    SeqLayerState &state(int32_t layer, int32_t seq) { return states_[size_t(layer) * params_.max_seqs + seq]; }
    const SeqLayerState &state(int32_t layer, int32_t seq) const {
        return states_[size_t(layer) * params_.max_seqs + seq];
    }
    bool is_empty(int32_t seq) const;
    // Compresses jobs_ (any layers) and records the outcome in the host bookkeeping.
    void run_jobs(void *stream);
    void check_tensor(const rkv_tensor &t, const char *name, int32_t heads, bool required, const TensorUse &use,
                      const char *function) const;
    // Checks every argument and plans every entry into plans_; throws before
    // anything changed.
    void validate_append(const rkv_append_args &args, const AppendCall &call);
    void append_batch(const rkv_append_args &args, void *stream);

    rkv_cache_params params_;
    ScheduleRules rules_;  // from params_ (set_param renews it)
    LiveParams live_;      // from params_, for the backend (set_param renews it)
    MemoryPlan plan_;
    uint64_t bytes_allocated_;
    std::vector<SeqLayerState> states_;  // [num_layers, max_seqs]
    std::unique_ptr<Backend> backend_;
    bool faulted_ = false;
    std::string fault_message_;
    double compress_seconds_ = 0.0;
    // Reused per call; sized at create so no call allocates (host_bytes counts them).
    std::vector<AppendChunk> chunks_;      // [max_seqs]
    std::vector<CompressJob> jobs_;        // [num_layers * max_seqs]
    std::vector<EntryPlan> plans_;         // [max_seqs] the schedule of each entry of an append
    mutable std::vector<uint8_t> seen_;    // [max_seqs] duplicate detection
};

// The batch behind an rkv_batch: its ids in the backend's memory, and the host
// copy rkv_batch_advance reads. It refers to its cache, which must outlive
// every call on it (only destroying it does not need the cache).
class Batch {
 public:
    Batch(Cache &cache, int32_t entries);

    Cache &cache() const { return *cache_; }
    int32_t entries() const { return entries_; }
    const int32_t *ids() const { return ids_.get(); }  // backend memory

    // rkv_batch_set: validates every id, then enqueues the new contents.
    void set(const int32_t *seq_ids, int32_t num_ids, void *stream);
    // rkv_batch_advance.
    void advance(int32_t steps);

 private:
    Cache *cache_;
    int32_t entries_;
    BatchIds ids_;
    std::vector<int32_t> host_ids_;  // [entries] as last set
    std::vector<int32_t> staged_;    // [entries] the next contents, while validating
    std::vector<uint8_t> seen_;      // [max_seqs] duplicate detection
};

}  // namespace rkv

// The C handle of a batch (rkv.h declares it opaque).
struct rkv_batch final : rkv::Batch {
    using rkv::Batch::Batch;
};
