// Model shapes the CUDA engine can build, and the dummy-weights shapes the
// serving benchmark uses (as serving engines benchmark with random weights,
// e.g. vLLM's --load-format dummy: speed does not depend on the values).
//
// A shape spec is a comma list: an optional preset name, then key=value
// overrides, e.g. "r1-llama-8b" or "r1-llama-8b,layers=4" or
// "layers=2,dim=256,heads=4,kv_heads=2,head_dim=64,mlp=512,vocab=512".
// Keys: layers dim heads kv_heads head_dim mlp vocab rope_theta.
#pragma once

#include <cstdint>
#include <string>

#include "model.h"

namespace engine::cuda {

// DeepSeek-R1-Distill-Llama-8B: 32 layers, 32 query and 8 KV heads of 128,
// hidden 4096, MLP 14336, vocab 128256, RoPE theta 500000, untied output.
Config r1_llama_8b_shape();

// Parse a shape spec (above). Throws std::invalid_argument naming the bad item.
Config parse_shape(const std::string &spec);

// Throws std::invalid_argument, saying what to change, when the CUDA engine
// cannot run this shape (head counts that do not divide, a head_dim its
// kernels lack, sizes that are not multiples of 8, ...).
void check_gpu_shape(const Config &c);

// bf16 bytes of the weights on the GPU (embedding, layers, output matrix unless tied).
uint64_t weight_bytes(const Config &c, bool tied_output);
// Parameters of one decode step's matrix products per token (for FLOP counts):
// every layer's Q/K/V, output, gate/up and down matrices plus the output matrix.
uint64_t matmul_params(const Config &c);

std::string describe(const Config &c);  // "32 layers, 32 q / 8 KV heads of 128, dim 4096, MLP 14336, vocab 128256"

}  // namespace engine::cuda
