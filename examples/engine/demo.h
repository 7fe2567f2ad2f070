// The README's demo (`./rkv demo`, `rkv_engine --demo`): one question asked
// with a compressed cache and with a Full cache, and what a newcomer needs to
// judge the trade: both answers and where they part, whether each is right,
// the memory each holds, and how often the compressed cache predicts the same
// next token as Full over a real reasoning trace.
#pragma once

#include <cstdint>
#include <string>

#include "session.h"

namespace engine {

class Model;
class Tokenizer;

struct DemoOptions {
    CacheOptions cache;            // the compressed cache (method, budget, buffer, ...)
    int32_t max_tokens = 300;      // new tokens per answer at most
    std::string question;          // empty: the built-in question, whose answer is known
    bool raw = false;              // no chat template
    std::string model_path;        // shown in the header
    std::string kept_html;         // write the compressed run's kept-tokens page here ("" = none)
};

// The built-in question (its answer is known; Full answers it right).
const char *demo_question();

// Runs the demo and prints it; returns the exit status (0, or 1 when the
// built-in question's Full answer is wrong, which would make the demo's
// premise false). Throws on model or librkv errors.
int run_demo(Model &model, const Tokenizer &tokenizer, const DemoOptions &options);

}  // namespace engine
