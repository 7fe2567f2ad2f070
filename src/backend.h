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

// Device-side bookkeeping: a CUDA backend's kernels keep these current in
// device memory so that captured work can be replayed (rkv_sync_lengths reads
// them back into the host bookkeeping). Each array is [num_layers, max_seqs].
struct DeviceCounts {
    const int32_t *held;
    const int32_t *logical;
    const int32_t *queries_valid;
    const int32_t *compressions;
    const int32_t *dropped;  // tokens a replayed append found no room for
};

class Backend {
 public:
    virtual ~Backend() = default;

    // A backend keeps the params it was created with for the shape, method,
    // mode and window, which never change; the live ones come with each call.

    // Copy K, V (and Q into the query ring, and H2O's accumulation) for each chunk.
    virtual void append(int32_t layer, const rkv_append_args &args, const AppendChunk *chunks,
                        int32_t num_chunks, const LiveParams &live, void *stream) = 0;
    // Score, select and compact each job's (seq, layer) in place.
    virtual void compress(int32_t layer, const CompressJob *jobs, int32_t num_jobs,
                          const LiveParams &live, void *stream) = 0;
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
                                rkv_score_kind kind, const LiveParams &live, float *out) = 0;

    // Base pointers of the buffers above (device pointers for CUDA).
    virtual void *keys() const = 0;
    virtual void *values() const = 0;
    virtual int32_t *positions() const = 0;
    virtual const int32_t *lengths() const = 0;

    // Optional parts; the defaults (backend.cpp) suit a backend without a device.
    // Throws RKV_ERR_INVALID_ARGUMENT if this backend's kernels cannot read `data`
    // (host memory passed to a CUDA cache, memory of another GPU).
    virtual void check_memory(const void *data, const char *name, const char *function) const;
    // The device-side counts of every (layer, seq), copied to host memory the
    // backend owns once the work enqueued on `stream` is done (valid until the
    // next call); false if the backend keeps none.
    virtual bool read_device_counts(DeviceCounts *out, void *stream);
    // Selects the matrix-product path (rkv_matmul_path values).
    virtual void set_matmul_path(int32_t path);
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
