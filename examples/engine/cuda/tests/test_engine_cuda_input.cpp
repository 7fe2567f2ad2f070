// The CUDA engine's checks that need no GPU (so they run everywhere, CI
// included): the R1-Distill-Llama-8B dummy shape and shape specs that cannot
// be built, requests the server must refuse (prompt longer than a FULL cache
// or than the guarded prompt, tokens outside the vocabulary, slots outside the
// table), and GGUF files that are not a Llama model the engine can run.
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "model.h"
#include "serving.h"
#include "shape.h"
#include "synthetic_gguf.h"
#include "test_util.h"

using namespace engine;
using namespace engine::cuda;

namespace {

template <typename F> std::string error_of(F f) {
    try {
        f();
    } catch (const std::exception &e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string &text, const std::string &part) { return text.find(part) != std::string::npos; }

void shapes() {
    const Config c = parse_shape("r1-llama-8b");
    EXPECT(c.n_layers == 32 && c.n_heads == 32 && c.n_kv_heads == 8 && c.head_dim == 128 && c.dim == 4096 &&
               c.hidden_dim == 14336 && c.vocab_size == 128256,
           "the R1-Distill-Llama-8B shape: %s", describe(c).c_str());
    check_gpu_shape(c);
    // Q (4096 x 4096), K and V (1024 x 4096 each), O (4096 x 4096), gate, up, down (14336 x 4096) per layer, bf16;
    // norms f32; embedding and output (128256 x 4096) bf16; final norm.
    const uint64_t layer = (4096ull * 4096 + 2 * 1024ull * 4096 + 4096ull * 4096 + 3 * 14336ull * 4096) * 2 + 2 * 4096 * 4;
    const uint64_t expected = 32 * layer + 2 * 128256ull * 4096 * 2 + 4096 * 4;
    EXPECT(weight_bytes(c, false) == expected, "weight bytes %llu, expected %llu (about 16.06 GB)",
           (unsigned long long)weight_bytes(c, false), (unsigned long long)expected);
    EXPECT(parse_shape("r1-llama-8b,layers=4").n_layers == 4, "an override");
    EXPECT(contains(error_of([] { check_gpu_shape(parse_shape("r1-llama-8b,heads=30")); }), "not a multiple of 8"),
           "heads that do not divide");
    EXPECT(contains(error_of([] { check_gpu_shape(parse_shape("r1-llama-8b,head_dim=96")); }), "head_dim 96"),
           "a head_dim without a kernel");
    EXPECT(contains(error_of([] { check_gpu_shape(parse_shape("r1-llama-8b,dim=4100")); }), "multiples of 8"),
           "a width that is not a multiple of 8");
    EXPECT(contains(error_of([] { parse_shape("r1-llama-8b,layer=3"); }), "unknown key 'layer'"), "unknown key");
    EXPECT(contains(error_of([] { parse_shape("llama-70b"); }), "unknown preset"), "unknown preset");
    EXPECT(contains(error_of([] { parse_shape("layers=2,dim=256"); }), "heads is not set"), "missing sizes");
    EXPECT(contains(error_of([] { parse_shape("r1-llama-8b,layers=0"); }), "layers=0"), "zero layers");
    EXPECT(contains(error_of([] { parse_shape("r1-llama-8b,vocab=99999999999"); }), "vocab=99999999999"),
           "a size beyond int32");
}

void requests() {
    rkv_cache_params full;
    rkv_params_default(&full, sizeof full);
    full.method = RKV_METHOD_FULL;
    full.max_seqs = 4;
    full.max_len = 100;
    Request r;
    r.prompt.assign(60, 5);
    r.max_new = 41;
    EXPECT(request_problem(full, 1000, r).empty(), "60 + 41 - 1 = 100 tokens fit max_len 100");
    r.max_new = 42;
    EXPECT(contains(request_problem(full, 1000, r), "max_len = 100"), "one token more does not: '%s'",
           request_problem(full, 1000, r).c_str());
    r.max_new = 1;
    r.prompt.assign(101, 5);
    EXPECT(contains(request_problem(full, 1000, r), "FULL cache"), "a prompt longer than the cache");

    rkv_cache_params rkv;
    rkv_params_default(&rkv, sizeof rkv);
    rkv.max_seqs = 4;
    r.prompt.assign(5000, 5);
    r.max_new = 10000;
    EXPECT(request_problem(rkv, 1000, r).empty(), "R-KV compresses a long prompt and a long answer");
    rkv.guards = RKV_GUARD_PROMPT;
    rkv.max_prompt_len = 200;
    EXPECT(contains(request_problem(rkv, 1000, r), "max_prompt_len = 200"), "a prompt the guard cannot keep");

    rkv.guards = 0;
    r.prompt.assign(10, 5);
    r.slot = 4;
    EXPECT(contains(request_problem(rkv, 1000, r), "outside the table of 4 slots"), "a slot outside the table");
    r.slot = 3;
    EXPECT(request_problem(rkv, 1000, r).empty(), "the last slot");
    r.prompt[2] = 1000;
    EXPECT(contains(request_problem(rkv, 1000, r), "outside the vocabulary"), "a token outside the vocabulary");
    r.prompt[2] = -1;
    EXPECT(contains(request_problem(rkv, 1000, r), "outside the vocabulary"), "a negative token");
    r.prompt.clear();
    EXPECT(contains(request_problem(rkv, 1000, r), "empty"), "an empty prompt");
    r.prompt.assign(3, 1);
    r.max_new = 0;
    EXPECT(contains(request_problem(rkv, 1000, r), "max_new"), "nothing to generate");
}

void files() {
    const std::string base = "/tmp/rkv_engine_cuda_input_" + std::to_string(getpid());
    test::SyntheticModel gpt2;
    gpt2.architecture = "gpt2";
    test::write_synthetic_gguf(base + "_gpt2.gguf", gpt2);
    EXPECT(contains(error_of([&] { read_llama_config(GgufFile(base + "_gpt2.gguf")); }), "architecture 'gpt2'"),
           "a file that is not a Llama model");
    test::SyntheticModel odd;
    odd.heads = 6;
    odd.kv_heads = 4;
    odd.head_dim = 32;
    test::write_synthetic_gguf(base + "_odd.gguf", odd);
    EXPECT(contains(error_of([&] { read_llama_config(GgufFile(base + "_odd.gguf")); }), "not a multiple of 4"),
           "query heads that are not a multiple of the KV heads");
    test::SyntheticModel small;
    small.head_dim = 32;
    small.heads = 8;
    test::write_synthetic_gguf(base + "_hd32.gguf", small);
    const Config c = read_llama_config(GgufFile(base + "_hd32.gguf"));
    EXPECT(c.head_dim == 32 && c.vocab_size == 512, "the config of a runnable file");
    EXPECT(contains(error_of([&] { check_gpu_shape(c); }), "head_dim 32"),
           "a Llama the CPU engine runs but the CUDA engine's kernels do not");
    for (const char *name : {"_gpt2.gguf", "_odd.gguf", "_hd32.gguf"}) unlink((base + name).c_str());
}

}  // namespace

int main() {
    shapes();
    requests();
    files();
    return finish();
}
