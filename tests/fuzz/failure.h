// A broken promise: thrown by a check, caught by the driver, which reports the
// program and the call (fuzzer: abort, so libFuzzer keeps the input; replay:
// a failed file).
#pragma once

#include <cstdarg>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace fuzz {

struct Failure : std::runtime_error {
    using std::runtime_error::runtime_error;
};

[[noreturn]] inline void fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
inline void fail(const char *format, ...) {
    char message[1024];
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, sizeof message, format, args);
    va_end(args);
    throw Failure(message);
}

#define FUZZ_EXPECT(condition, ...)          \
    do {                                     \
        if (!(condition)) ::fuzz::fail(__VA_ARGS__); \
    } while (0)

}  // namespace fuzz
