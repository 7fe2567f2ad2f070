// rkv_write_test_gguf PATH [ARCHITECTURE]: write the tests' small random
// Llama model (synthetic_gguf.h) to PATH; another architecture name makes a
// file the engine must refuse. Used by test_engine_cuda_cli.sh.
#include <cstdio>
#include <exception>

#include "synthetic_gguf.h"

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        std::fprintf(stderr, "usage: %s PATH [ARCHITECTURE]\n", argv[0]);
        return 2;
    }
    engine::cuda::test::SyntheticModel model;
    if (argc == 3) model.architecture = argv[2];
    try {
        engine::cuda::test::write_synthetic_gguf(argv[1], model);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    return 0;
}
