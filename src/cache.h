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

    void view(int32_t seq, int32_t layer, rkv_kv_view *view) const;
    void view_layer(int32_t layer, rkv_layer_view *view) const;
    void seq_length(int32_t seq, int32_t layer, int64_t *logical, int32_t *physical) const;
    void kept_positions(int32_t seq, int32_t layer, int32_t head, int32_t *out, int32_t out_len,
                        int32_t *count) const;
    void stats(int32_t seq, rkv_stats *stats) const;
    void attend(int32_t layer, int32_t num_seqs, const int32_t *seq_ids, const rkv_tensor &q,
                const rkv_tensor &out, float scale, void *stream);
    void inspect_scores(int32_t seq, int32_t layer, int32_t head, int32_t kind, float *out,
                        int32_t out_len, int32_t *count) const;
    // rkv_sync_lengths: the host bookkeeping from the device's (CUDA graphs).
    void sync_lengths(void *stream);
    void set_matmul_path(int32_t path);

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
    void run_jobs(int32_t layer, void *stream);
    void check_tensor(const rkv_tensor &t, const char *name, int32_t heads, bool required,
                      const rkv_append_args *args, int64_t max_tokens, const char *function) const;
    // Checks every argument and plans every entry into plans_; throws before
    // anything changed.
    void validate_append(const rkv_append_args &args, const AppendCall &call);

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
    std::vector<CompressJob> jobs_;        // [max_seqs]
    std::vector<EntryPlan> plans_;         // [max_seqs] the schedule of each entry of an append
    std::vector<int32_t> held_;            // [max_seqs] held lengths of an attend call
    mutable std::vector<uint8_t> seen_;    // [max_seqs] duplicate detection
};

}  // namespace rkv
