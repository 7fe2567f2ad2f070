// How fine FP8 scales need to be, measured on the K and V a real model
// computes: rkv_eval --fp8-scales (see kernels/README.md, "FP8 storage").
#pragma once

#include <cstdint>
#include <ostream>
#include <vector>

namespace engine {

class Model;

// Replays each token sequence through a Full float32 cache, then quantises
// every layer's K and V to E4M3 with scales per (token, head) and per (head,
// block of tokens), amax/448 or a power of two, and writes the errors as a
// markdown table.
void fp8_scale_study(Model &model, const std::vector<std::vector<int32_t>> &traces, std::ostream &md);

}  // namespace engine
