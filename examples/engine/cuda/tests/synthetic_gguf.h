// A small Llama-architecture GGUF file with random weights, written by the
// tests themselves: BF16 matrices (so the CPU engine, which dequantises them
// to f32, and the CUDA engine, which keeps them in bf16, hold exactly the same
// weights), F32 norms, and a byte-level tokenizer (one token per byte, plus
// SmolLM2's control tokens) so that rkv_engine can run on it.
#pragma once

#include <cstdint>
#include <string>

namespace engine::cuda::test {

struct SyntheticModel {
    std::string architecture = "llama";  // anything else makes a file the engine must refuse
    int32_t layers = 2, dim = 256, heads = 4, kv_heads = 2, head_dim = 64, mlp = 512, vocab = 512;
    float rope_theta = 10000.0f;
    bool tied_output = false;  // true: no output.weight (the embedding is the output matrix)
    float logit_scale = 3.0f;  // std of the output matrix times sqrt(dim): how peaked the logits are
    uint64_t seed = 1;
};

// Writes the file; throws std::runtime_error on I/O errors.
void write_synthetic_gguf(const std::string &path, const SyntheticModel &model);

}  // namespace engine::cuda::test
