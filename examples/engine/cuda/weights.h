// The model's weights on the GPU in bf16, in one allocation: dequantised from
// a GGUF file at load (any type the CPU engine reads), or random for a shape
// (the benchmark's dummy weights). The projections that read the same input
// are stored as one matrix, so each is one product: Q/K/V, and gate/up.
#pragma once

#include <cstdint>
#include <vector>

#include "device.h"
#include "kernels.h"
#include "model.h"

namespace engine {
class GgufFile;
}

namespace engine::cuda {

struct LayerWeights {
    const bf16 *qkv;      // [(heads + 2 * kv_heads) * head_dim, dim]: Q rows, K rows, V rows
    const bf16 *o;        // [dim, heads * head_dim]
    const bf16 *gate_up;  // [2 * mlp, dim]: gate rows, then up rows
    const bf16 *down;     // [dim, mlp]
    const float *attn_norm, *ffn_norm;  // [dim]
};

class DeviceWeights {
  public:
    // Dequantise every tensor of a "llama" GGUF file and upload it as bf16.
    static DeviceWeights load(const GgufFile &file, cudaStream_t stream);
    // Uniform random weights of variance 1/fan_in (norms 1) for `config`: the
    // activations stay of order 1 through any number of layers.
    static DeviceWeights dummy(const Config &config, uint64_t seed, cudaStream_t stream);

    const Config &config() const { return config_; }
    uint64_t bytes() const { return storage_.bytes(); }
    bool tied_output() const { return tied_; }

    std::vector<LayerWeights> layers;
    const bf16 *embedding = nullptr;  // [vocab, dim]
    const bf16 *output = nullptr;     // [vocab, dim]; the embedding when tied
    const float *out_norm = nullptr;  // [dim]
    const float *rope_freq = nullptr; // [head_dim / 2] theta^(-2i / head_dim), as the CPU model computes it

  private:
    DeviceWeights(const Config &config, bool tied);
    Config config_;
    bool tied_ = false;
    DeviceBuffer storage_;
};

// float -> bf16, round to nearest even (NaN stays NaN). Host side.
uint16_t to_bf16_bits(float x);

}  // namespace engine::cuda
