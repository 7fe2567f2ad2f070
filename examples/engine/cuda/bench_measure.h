// What rkv_serve_bench measures, one piece at a time: the ceilings of the GPU,
// the capacity of a cache configuration, and decode steps of the CUDA engine
// at a given batch and cache state.
//
// The cache state is reached by appending random K/V/Q straight into librkv
// (rkv_append of many tokens per call) instead of generating them: a decode
// step's cost depends on the batch, the tokens held and the compressions, not
// on the values, so a steady state that would take thousands of steps to
// reach is set up in a second. The decode steps themselves are the engine's
// own (GpuModel + Decoder: CUDA graph, compressions when due).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "decoder.h"
#include "gpu_model.h"
#include "weights.h"

namespace engine::cuda {

struct Ceilings {
    double copy_gbs = 0;       // device-to-device copy, bytes read + written per second / 1e9
    double matmul_tflops = 0;  // bf16 8192^3 through cuBLASLt
};
Ceilings measure_ceilings(cudaStream_t stream);

// A cache configuration of the benchmark.
struct CacheSpec {
    rkv_method method = RKV_METHOD_RKV;
    int32_t budget = 1024, buffer = 128;  // compressing methods
    int32_t max_len = 0;                  // FULL: slots per sequence
    rkv_dtype dtype = RKV_DTYPE_BF16;     // K/V storage: bf16 or RKV_DTYPE_FP8_E4M3 (the engine hands librkv bf16)
    std::string label() const;            // "R-KV 1024+128", "Full 16640"
};

// One decode step taken apart (kernels.h phases, each captured in a graph of
// its own and replayed), at the cache state it was measured in.
struct StepBreakdown {
    int32_t batch = 0;
    double mean_held = 0;        // tokens held per sequence (and layer, head)
    double step_ms = 0;          // the whole step from its graph, without compression
    double matmul_ms = 0, attend_ms = 0, append_ms = 0, other_ms = 0;
    double compress_ms = 0;      // per step, amortised over a compression interval (0 for FULL)
    double weight_bytes = 0, kv_bytes = 0, matmul_flops = 0, append_bytes = 0;
};

// A model, a cache and a decoder for one batch, with the state filler.
class Rig {
  public:
    // Throws on failure; an out-of-memory cache is retried at 97% of the batch (3 times).
    Rig(const DeviceWeights &weights, const CacheSpec &spec, int32_t batch, cudaStream_t stream);
    ~Rig();
    Rig(const Rig &) = delete;
    Rig &operator=(const Rig &) = delete;

    int32_t batch() const { return batch_; }
    int32_t capacity() const { return decoder_->capacity(); }
    // Append random tokens until slot s holds held[s] (never past the capacity,
    // no compression), then set each slot's next position.
    void fill_to(const std::vector<int32_t> &held);
    void fill_all_to(int32_t held) { fill_to(std::vector<int32_t>(size_t(batch_), held)); }
    double mean_held() const;
    // Decode `steps` steps of every slot (compressions when due, timed apart);
    // returns ms per step, compressions included.
    double time_steps(int32_t steps, double *compress_ms = nullptr, int64_t *compressions = nullptr);
    // Fill every slot and compress them all to the budget (aligns a staggered state).
    void compress_all();
    StepBreakdown breakdown(int32_t replays);

  private:
    double replay_ms(cudaGraphExec_t graph, int32_t replays);

    const DeviceWeights &weights_;
    CacheSpec spec_;
    cudaStream_t stream_;
    int32_t batch_ = 0;
    std::unique_ptr<GpuModel> model_;
    rkv_cache *cache_ = nullptr;
    std::unique_ptr<Decoder> decoder_;
    DeviceBuffer source_;  // random tokens: K, V [kSourceTokens, kv_heads, head_dim], Q [.., heads, ..] bf16
    std::vector<int32_t> tokens_;
    bool warm_ = false;  // the decode step's graph has been replayed
};

// Device bytes of `batch` sequences of spec (activations of the model included).
uint64_t batch_bytes(const Config &shape, const CacheSpec &spec, int32_t batch);
// The largest batch whose bytes fit in `available` (0 if none).
int32_t capacity(const Config &shape, const CacheSpec &spec, uint64_t available);
// The model's options at a batch (the benchmark decodes only: a minimal prefill buffer).
ModelOptions bench_model_options(int32_t batch);

}  // namespace engine::cuda
