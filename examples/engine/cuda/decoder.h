// The decode loop's device side for a fixed slot table: which slots are
// active, the decode step captured in a CUDA graph and replayed, the
// compressions outside the graph, and bringing librkv's host bookkeeping up to
// date after replays.
//
// librkv's graph rules (rkv.h, experimental section) shape this class:
//   - a graph bakes in the sequence ids of its rkv_append/rkv_attend calls, so
//     the step is captured for the current set of active slots and captured
//     again only when that set changes (set_active). With device-side
//     sequence ids and -1 padding (issue 10) the graph would be captured once
//     over every slot and set_active would only upload the id array: that
//     change stays inside this class;
//   - a replay is invisible to the host: collect() calls rkv_cache_sync_lengths
//     after the replays, before anything else asks the cache;
//   - no sequence may be due for compression when the step is captured, and a
//     step may be replayed at most room() times before compress_due() runs
//     the compressions (eagerly, outside the graph).
// Eager mode (use_graph = false) runs the same calls without a graph: the
// tests check that both give the same tokens.
#pragma once

#include <cstdint>
#include <vector>

#include "device.h"
#include "gpu_model.h"

namespace engine::cuda {

class Decoder {
  public:
    Decoder(GpuModel &model, rkv_cache *cache, bool use_graph);
    ~Decoder();
    Decoder(const Decoder &) = delete;
    Decoder &operator=(const Decoder &) = delete;

    // The slots decoded from now on (distinct, each < model.slots()).
    void set_active(const std::vector<int32_t> &slots, cudaStream_t stream);
    const std::vector<int32_t> &active() const { return active_; }

    // Compress every active sequence that is due (rkv_compress_due), outside
    // any graph; returns how many were due.
    int32_t compress_due(cudaStream_t stream);
    // Decode steps every active sequence can take before one is due: min(capacity - held).
    int32_t room() const;
    // Enqueue `steps` decode steps (1 .. min(room(), history_rows)); their
    // tokens go to the model's history ring. No synchronisation.
    void enqueue_steps(int32_t steps, cudaStream_t stream);
    // Wait for the enqueued steps, copy their tokens (tokens[step * slots + slot])
    // and bring librkv's host bookkeeping up to date (rkv_cache_sync_lengths).
    // Returns the number of steps collected.
    int32_t collect(std::vector<int32_t> &tokens, cudaStream_t stream);

    bool uses_graph() const { return use_graph_; }
    int32_t captures() const { return captures_; }  // graphs captured so far
    int32_t capacity() const { return capacity_; }

    // Capture `phases` of one decode step for the active slots into a graph of
    // its own (the benchmark times the parts of a step this way). The caller
    // owns the returned graph (cudaGraphExecDestroy) and must call
    // rkv_cache_sync_lengths after replays that include kPhaseAppend.
    cudaGraphExec_t capture_phases(unsigned phases, cudaStream_t stream);

  private:
    void capture(cudaStream_t stream);

    GpuModel &model_;
    rkv_cache *cache_;
    bool use_graph_;
    int32_t capacity_ = 0;
    std::vector<int32_t> active_;
    DeviceBuffer device_active_;       // [slots] int32: entry -> slot
    PinnedBuffer host_history_;        // [history_rows, slots] int32
    cudaGraphExec_t graph_ = nullptr;  // the decode step of active_
    bool graph_stale_ = true;
    int32_t captures_ = 0;
    int32_t pending_ = 0;  // steps enqueued since the last collect()
};

}  // namespace engine::cuda
