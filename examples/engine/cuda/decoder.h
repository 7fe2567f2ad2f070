// The decode loop's device side for a fixed slot table: which slots decode,
// the decode step captured once in a CUDA graph and replayed for whichever
// slots run, and the compressions outside the graph. It follows librkv's
// decode loop for batches (rkv.h, "Batches"):
//   rkv_batch_set (when the running set changes) -> replay the step ->
//   rkv_batch_advance -> rkv_compress_due / rkv_compress outside the graph.
//
//   - One rkv_batch of the table's size: entry s holds slot s while it
//     decodes, -1 (padding) while it sits out. The step's matrix products run
//     over every slot anyway (rows are slots, gpu_model.h), so one batch size
//     is the only one the step has: padding costs librkv's kernels one block
//     per entry that returns at once, and smaller batches would need compacted
//     rows and products planned per size to save anything.
//   - The graph is captured once, when the Decoder is made (captures() stays
//     1); set_active changes the batch's device ids and the engine's mask with
//     small kernels on the stream, in stream order with the replays.
//   - After each replay rkv_batch_advance tells librkv's host bookkeeping what
//     it did, so room(), compress_due() and the prefill of a new request see
//     current lengths without reading anything back. Nothing in the loop
//     synchronises but collect(), the copy of the sampled tokens to the host
//     (the engine needs them for stop tokens).
//   - A batch append never compresses: compress_due() runs the compressions
//     that are due before the steps, and enqueue_steps() refuses more steps
//     than room() (an append past a sequence's capacity would drop its token).
// Eager mode (use_graph = false) runs the same calls without a graph: the
// tests check that both give the same tokens and logits, bit for bit.
#pragma once

#include <cstdint>
#include <vector>

#include "device.h"
#include "gpu_model.h"

namespace engine::cuda {

class Decoder {
  public:
    // Allocates the batch (rkv_batch_create waits for the device: setup, not
    // the loop), runs librkv's batch kernels once on `stream` (every entry
    // padding: nothing changes) so that they are loaded before the capture,
    // and captures the decode step (use_graph). Destroy the Decoder before or
    // after the cache, but use it only while the cache lives.
    Decoder(GpuModel &model, rkv_cache *cache, bool use_graph, cudaStream_t stream);
    ~Decoder();
    Decoder(const Decoder &) = delete;
    Decoder &operator=(const Decoder &) = delete;

    // The slots decoded from now on (distinct, each < model.slots()). A slot
    // left out keeps its token, position and cache and may come back later.
    // No synchronisation, no capture.
    void set_active(const std::vector<int32_t> &slots, cudaStream_t stream);
    const std::vector<int32_t> &active() const { return active_; }

    // Compress every active sequence that is due (rkv_compress_due), outside
    // any graph; returns how many were due. No synchronisation.
    int32_t compress_due(cudaStream_t stream);
    // Decode steps every active sequence can take before one is due: min(capacity - held). Host-only.
    int32_t room() const;
    // Enqueue `steps` decode steps (1 .. min(room(), history_rows)), each
    // followed by rkv_batch_advance; their tokens go to the model's history
    // ring. No synchronisation.
    void enqueue_steps(int32_t steps, cudaStream_t stream);
    // Wait for the enqueued steps (the loop's one synchronisation) and copy
    // their tokens (tokens[step * slots + slot]). Returns the number of steps.
    int32_t collect(std::vector<int32_t> &tokens, cudaStream_t stream);

    bool uses_graph() const { return use_graph_; }
    int32_t captures() const { return captures_; }          // decode-step graphs captured so far
    int32_t batch_changes() const { return batch_changes_; }  // set_active calls that changed the set
    int32_t capacity() const { return capacity_; }

    // Capture `phases` of one decode step into a graph of its own (the
    // benchmark times the parts of a step this way). The caller owns the
    // returned graph (cudaGraphExecDestroy) and, after replaying one that
    // includes kPhaseAppend, calls advance(replays) before anything else
    // touches the cache.
    cudaGraphExec_t capture_phases(unsigned phases, cudaStream_t stream);
    // rkv_batch_advance: the active sequences got `steps` tokens from replays.
    void advance(int32_t steps);

  private:
    StepSlots step_slots() const { return StepSlots{batch_, decoding_.as<int32_t>()}; }
    void capture(cudaStream_t stream);

    GpuModel &model_;
    rkv_cache *cache_;
    bool use_graph_;
    int32_t capacity_ = 0;
    rkv_batch *batch_ = nullptr;       // [slots] entries: slot s or -1 (librkv's, device memory)
    DeviceBuffer decoding_;            // [slots] int32: 1 where the slot decodes (the engine's kernels)
    std::vector<int32_t> active_;      // the slots that decode, as given to set_active
    std::vector<int32_t> entry_ids_;   // [slots] host staging of the batch's ids
    std::vector<int32_t> mask_;        // [slots] host staging of decoding_
    PinnedBuffer host_history_;        // [history_rows, slots] int32
    cudaGraphExec_t graph_ = nullptr;  // the decode step, captured once
    int32_t captures_ = 0;
    int32_t batch_changes_ = 0;
    int32_t pending_ = 0;  // steps enqueued since the last collect()
};

}  // namespace engine::cuda
