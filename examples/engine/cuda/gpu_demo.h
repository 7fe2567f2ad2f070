// rkv_engine --device cuda: the same runs as on the CPU (one prompt, each
// method after the other, greedy), served by the CUDA engine: weights in bf16
// on the GPU, a CUDA librkv cache, decode steps replayed from a CUDA graph.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rkv/rkv.h"
#include "session.h"

namespace engine {
class GgufFile;
class Tokenizer;
}

namespace engine::cuda {

struct GpuRunOptions {
    std::vector<rkv_method> methods;
    CacheOptions cache;            // budget, buffer, window, lambda, guards (max_len is set per prompt)
    std::vector<int32_t> prompt;   // token ids
    int32_t max_tokens = 256;
    bool quiet = false;
};

// Runs every method on the GPU and prints the answers and the same summary
// table as the CPU path. Returns the process exit status; throws
// engine::cuda::Error (no GPU, out of memory, ...) with a message to print.
int run_on_gpu(const GgufFile &file, const Tokenizer &tokenizer, const GpuRunOptions &options);

}  // namespace engine::cuda
