// libFuzzer entry point: one input is one program (program.h). A broken
// promise aborts, so libFuzzer saves the input as a crash.
#include <cstdio>
#include <cstdlib>

#include "failure.h"
#include "program.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz::Program program(data, size, fuzz::RunOptions{});
    try {
        program.run();
    } catch (const fuzz::Failure &failure) {
        std::fprintf(stderr, "\nlibrkv fuzz: a promise of rkv.h broke at call %d (%s):\n  %s\n"
                             "replay it with: rkv_fuzz_replay --print <this input>\n",
                     program.calls(), program.current_call().c_str(), failure.what());
        std::abort();
    }
    return 0;
}
