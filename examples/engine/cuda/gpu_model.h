// The Llama forward pass on the GPU, with a librkv CUDA cache (bf16) under it.
//
// Rows are slots. The decode activations have one row per slot of the cache
// (the fixed slot table): every decode step runs its matrix products over all
// rows (idle slots are padding), so the products have one shape, planned once,
// and a sequence's results never depend on which other slots are busy. Which
// slots decode in a step is device data, not an argument baked into the
// step: a librkv batch of one entry per slot (entry s holds sequence s, or -1
// for padding) that rkv_append and rkv_attend read when their kernels run,
// and the same as a 0/1 mask for the engine's kernels (StepSlots). A step
// captured in a CUDA graph therefore serves any set of slots.
//
// One decode step (decode_step), all of it enqueued on one stream with no
// synchronisation or allocation, so that it can be captured in a CUDA graph:
//   embedding of each slot's token -> for each layer:
//     RMSNorm -> QKV product -> RoPE (positions read from device memory) ->
//     rkv_append (K, V, Q of the batch's slots) -> rkv_attend (into their rows)
//     -> output product (+= residual) -> RMSNorm -> gate/up product -> SwiGLU
//     -> down product (+= residual)
//   -> RMSNorm -> logits (f32) -> greedy token of each decoding slot -> its
//   position + 1, and every slot's token into the history ring (read by the
//   host after several steps). A slot that sits a step out keeps its token,
//   position and cache, so it may resume later.
// Prefill (prefill) runs the prompt of one sequence in pieces of at most
// prefill_rows tokens: the same layers, librkv's rkv_append of the piece, and
// the engine's causal attention over rkv_view; a full sequence is compressed
// explicitly before a piece, as the CPU engine does.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "device.h"
#include "gemm.h"
#include "kernels.h"
#include "weights.h"

namespace engine::cuda {

struct ModelOptions {
    int32_t slots = 1;            // decode rows = the cache's max_seqs
    int32_t prefill_rows = 512;   // tokens per prompt piece (a power of two >= 16)
    int32_t history_rows = 64;    // decode steps whose tokens the ring keeps
};

// Which parts of a decode step to enqueue (the benchmark times each part alone).
enum Phase : unsigned {
    kPhaseMatmul = 1u,   // the cuBLASLt products
    kPhaseAppend = 2u,   // rkv_append
    kPhaseAttend = 4u,   // rkv_attend
    kPhaseOther = 8u,    // the engine's own kernels
    kPhaseAll = 15u,
};

// Which slots decode in a step, in device memory (the Decoder owns and sets both).
struct StepSlots {
    const rkv_batch *batch = nullptr;   // max_entries = slots: entry s holds s, or -1 (padding)
    const int32_t *decoding = nullptr;  // [slots] int32: 1 where entry s holds s, else 0
};

class GpuModel {
  public:
    GpuModel(const DeviceWeights &weights, const ModelOptions &options);
    GpuModel(const GpuModel &) = delete;
    GpuModel &operator=(const GpuModel &) = delete;

    // Device bytes the activations of these options take (before creating the model).
    static uint64_t activation_bytes(const Config &config, const ModelOptions &options);

    const Config &config() const { return weights_.config(); }
    const ModelOptions &options() const { return options_; }
    int32_t slots() const { return options_.slots; }

    // Shape fields of a cache for this model: options.slots slots, bf16, on
    // the GPU, no compression inside appends (the engine compresses itself).
    void set_cache_shape(rkv_cache_params &params) const;

    // One decode step (above) of the slots `step` holds when it runs; capturable.
    void decode_step(rkv_cache *cache, const StepSlots &step, cudaStream_t stream, unsigned phases = kPhaseAll);

    // Prefill tokens[0 .. n) of the sequence in `slot` (continuing what the
    // cache holds for it). Afterwards the slot's next token (greedy, from the
    // last token's logits, also in prefill_logits()) and position are set for
    // decode. prompt: mark the tokens RKV_APPEND_PROMPT.
    void prefill(rkv_cache *cache, int32_t slot, const int32_t *tokens, int32_t n, bool prompt, cudaStream_t stream);

    // Set a slot's next input token and position (e.g. to force a token, or after filling a cache directly).
    void set_slot(int32_t slot, int32_t token, int32_t position, cudaStream_t stream);

    int32_t *slot_tokens() const { return tokens_.as<int32_t>(); }         // [slots] next input token
    int32_t *slot_positions() const { return positions_.as<int32_t>(); }   // [slots] next position
    const float *decode_logits() const { return logits_.as<float>(); }   // [slots, vocab] of the last step
    const float *prefill_logits() const { return prefill_logits_.as<float>(); }  // [vocab]
    int32_t *history() const { return history_.as<int32_t>(); }           // [history_rows, slots]
    int32_t *step_counter() const { return counter_.as<int32_t>(); }      // steps since the counter was zeroed

  private:
    struct Plans {  // the products of one row count
        std::unique_ptr<GemmPlan> qkv, o, gate_up, down;
    };
    Plans make_plans(int64_t rows) const;
    void warm_up(cudaStream_t stream);
    const Plans &prefill_plans(int32_t rows, int32_t *padded) const;
    void prefill_piece(rkv_cache *cache, int32_t slot, const int32_t *tokens, int32_t n, int32_t first_position,
                       bool last, uint32_t flags, cudaStream_t stream);

    const DeviceWeights &weights_;
    ModelOptions options_;
    GemmContext gemm_;
    Plans decode_plans_;
    std::unique_ptr<GemmPlan> decode_logits_plan_, prefill_logits_plan_;
    std::vector<std::pair<int32_t, Plans>> prefill_buckets_;  // (rows, plans), ascending

    // decode activations, one row per slot
    DeviceBuffer x_;         // [slots, dim] f32 residual stream
    DeviceBuffer xb_;        // [slots, dim] bf16 normalised input of a block
    DeviceBuffer qkv_;       // [slots, (heads + 2 kv_heads) * head_dim] f32
    DeviceBuffer q_, k_, v_; // [slots, heads or kv_heads, head_dim] f32, post-RoPE (librkv's inputs)
    DeviceBuffer att_;       // [slots, heads * head_dim] bf16 (rkv_attend's output; padding rows keep theirs)
    DeviceBuffer gate_up_;   // [slots, 2 * mlp] bf16
    DeviceBuffer h_;         // [slots, mlp] bf16
    DeviceBuffer logits_;    // [slots, vocab] f32
    DeviceBuffer tokens_;    // [slots] int32
    DeviceBuffer positions_; // [slots] int32
    DeviceBuffer history_;   // [history_rows, slots] int32
    DeviceBuffer counter_;   // [1] int32
    // prefill activations, one row per token of a piece
    DeviceBuffer p_tokens_;  // [prefill_rows] int32
    DeviceBuffer p_x_, p_xb_, p_qkv_, p_q_, p_k_, p_v_, p_att_, p_gate_up_, p_h_;  // as above, [prefill_rows, ...]
    DeviceBuffer prefill_logits_;  // [vocab] f32
};

}  // namespace engine::cuda
