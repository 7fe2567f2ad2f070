// The interface between the host-side cache (bookkeeping, validation, schedule)
// and the memory owners: the CPU backend and the CUDA backend. The cache decides
// *what* happens (which tokens go to which slots, which sequences compress and
// to how many tokens); a backend does it to memory it allocated at create.
//
// Memory layout shared by both backends (one allocation each, made at create):
//   K, V        [num_layers, max_seqs, num_kv_heads, capacity, head_dim]  storage dtype
//   positions   [num_layers, max_seqs, num_kv_heads, capacity]            int32
//   state       [num_layers, max_seqs, num_kv_heads, capacity]            f32 (H2O's accumulated attention)
//   queries     [num_layers, max_seqs, num_q_heads, window, head_dim]     storage dtype, ring by position % window
//   lengths     [num_layers, max_seqs]                                    int32, tokens held per head
#pragma once

#include <cstdint>
#include <memory>

#include "params.h"
#include "rkv/rkv.h"
#include "schedule.h"

namespace rkv {

// Device-side bookkeeping of one (layer, sequence): a CUDA backend's kernels
// keep these current in device memory so that captured work can be replayed
// (rkv_sync_lengths copies them back into the host bookkeeping).
struct DeviceCounts {
    int32_t held;
    int32_t logical;
    int32_t queries_valid;
    int32_t compressions;
    int32_t dropped;  // tokens a replayed append found no room for
};

class Backend {
 public:
    virtual ~Backend() = default;

    // Copy K, V (and Q into the query ring, and H2O's accumulation) for each chunk.
    virtual void append(int32_t layer, const rkv_append_args &args, const AppendChunk *chunks,
                        int32_t num_chunks, void *stream) = 0;
    // Score, select and compact each job's (seq, layer) in place.
    virtual void compress(int32_t layer, const CompressJob *jobs, int32_t num_jobs,
                          void *stream) = 0;
    // Set the published length of (layer, seq) (lengths buffer of the layer view).
    virtual void set_length(int32_t layer, int32_t seq, int32_t held, void *stream) = 0;
    // Zero the scorer state of every layer of `seq` (used when a sequence is reset).
    virtual void clear_sequence(int32_t seq, void *stream) = 0;

    virtual void attend(int32_t layer, int32_t num_seqs, const int32_t *seq_ids,
                        const int32_t *held, const rkv_tensor &q, const rkv_tensor &out,
                        float scale, void *stream) = 0;
    // Positions of one head, slot order, into host memory (synchronous).
    virtual void copy_positions(int32_t layer, int32_t seq, int32_t head, int32_t held,
                                int32_t *out) = 0;
    // Scores a compression of `job` would rank, for one head, into host memory.
    virtual void inspect_scores(int32_t layer, const CompressJob &job, int32_t head,
                                rkv_score_kind kind, float *out) = 0;

    // Base pointers of the buffers above (device pointers for CUDA).
    virtual void *keys() const = 0;
    virtual void *values() const = 0;
    virtual int32_t *positions() const = 0;
    virtual const int32_t *lengths() const = 0;

    // Optional parts; the defaults (backend.cpp) suit a backend without a device.
    // Throws RKV_ERR_INVALID_ARGUMENT if this backend's kernels cannot read `data`
    // (host memory passed to a CUDA cache, memory of another GPU).
    virtual void check_memory(const void *data, const char *name, const char *function) const;
    // Copies the device-side counts of every (layer, seq) into out [layers * max_seqs]
    // once the work enqueued on `stream` is done; false if the backend keeps none.
    virtual bool read_device_counts(DeviceCounts *out, void *stream);
    // Selects the matrix-product path (rkv_matmul_path values).
    virtual void set_matmul_path(int32_t path);
};

std::unique_ptr<Backend> make_backend(const rkv_cache_params &params, const MemoryPlan &plan);

// Scratch bytes the backend of params.device_type allocates at create.
uint64_t backend_scratch_bytes(const rkv_cache_params &params, const MemoryPlan &plan,
                               const char *function);

// Throws unless this build can create a CUDA cache with these params.
void backend_check_cuda_params(const rkv_cache_params &params, const char *function);

}  // namespace rkv
