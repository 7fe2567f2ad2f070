#include "gpu_demo.h"

#include <chrono>
#include <cstdio>
#include <cstring>

#include "device.h"
#include "gguf.h"
#include "gpu_model.h"
#include "serving.h"
#include "shape.h"
#include "tokenizer.h"
#include "weights.h"

namespace engine::cuda {

namespace {

struct GpuRun {
    rkv_method method;
    Result result;
    Server::Stats stats;
    rkv_stats cache;
};

}  // namespace

int run_on_gpu(const GgufFile &file, const Tokenizer &tokenizer, const GpuRunOptions &o) {
    const Config config = read_llama_config(file);
    check_gpu_shape(config);
    std::printf("model %s: %d layers, %d query / %d KV heads of %d, vocab %d; prompt %zu tokens; librkv %s\n",
                file.path().c_str(), config.n_layers, config.n_heads, config.n_kv_heads, config.head_dim,
                config.vocab_size, o.prompt.size(), rkv_version_string());
    const std::string device = require_device();
    Stream stream;
    const auto load_start = std::chrono::steady_clock::now();
    DeviceWeights weights = DeviceWeights::load(file, stream.get());
    ModelOptions model_options;
    model_options.slots = 1;
    model_options.prefill_rows = 256;
    model_options.history_rows = 16;
    GpuModel model(weights, model_options);
    std::printf("GPU: %s; weights %s in bf16, loaded in %.1f s\n", device.c_str(), gib(weights.bytes()).c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count());

    Request request;
    request.prompt = o.prompt;
    request.max_new = o.max_tokens;
    for (int32_t t = 0; t < tokenizer.vocab_size(); ++t)
        if (tokenizer.is_control(t)) request.stop.push_back(t);  // <|im_end|>, <|endoftext|>, ...

    std::vector<GpuRun> runs;
    for (rkv_method method : o.methods) {
        rkv_cache_params p;
        check_rkv(rkv_params_default(&p, sizeof p), "rkv_params_default");
        model.set_cache_shape(p);
        p.method = method;
        if (method != RKV_METHOD_FULL) {
            p.budget = o.cache.budget;
            p.buffer = o.cache.buffer;
        }
        p.window = o.cache.window;
        p.lambda = o.cache.lambda;
        p.guards = o.cache.guards;
        p.max_prompt_len = (o.cache.guards & RKV_GUARD_PROMPT) ? int32_t(o.prompt.size()) : 0;
        p.max_len = int32_t(o.prompt.size()) + o.max_tokens;
        rkv_cache *cache = nullptr;
        check_rkv(rkv_cache_create(&p, &cache), "rkv_cache_create");
        if (method == RKV_METHOD_FULL)
            std::printf("\n== full cache (%d tokens reserved), on the GPU ==\n", p.max_len);
        else
            std::printf("\n== %s, budget %d + buffer %d, window %d, on the GPU ==\n", kMethodNames[method], p.budget,
                        p.buffer, p.window);
        std::fflush(stdout);
        GpuRun run{method, {}, {}, {}};
        try {
            ServerOptions server_options;
            server_options.max_requests = 1;
            server_options.steps_per_sync = 8;
            Server server(model, cache, server_options, stream.get());
            server.submit(request);
            server.run([&](int32_t, int32_t token) {
                if (o.quiet) return;
                std::fputs(tokenizer.decode(token).c_str(), stdout);
                std::fflush(stdout);
            });
            run.result = server.result(0);
            run.stats = server.stats();
            run.cache = run.result.cache;  // as the request finished (the server resets its slot then)
        } catch (...) {
            rkv_cache_destroy(cache);
            throw;
        }
        if (o.quiet) std::fputs(tokenizer.decode(run.result.tokens).c_str(), stdout);
        std::printf("\n");
        rkv_cache_destroy(cache);
        runs.push_back(run);
    }

    std::printf("\n%-13s %9s %10s %12s %12s %12s %12s %9s %9s\n", "method", "generated", "KV tokens", "KV held",
                "full cache", "allocated", "compressions", "prefill/s", "decode/s");
    for (const GpuRun &r : runs) {
        const double decode_steps = double(r.stats.decode_steps);
        std::printf("%-13s %9zu %10llu %12s %12s %12s %12llu %9.1f %9.1f\n", kMethodNames[r.method],
                    r.result.tokens.size(), (unsigned long long)(r.cache.tokens_held / uint64_t(config.n_layers)),
                    format_bytes(r.cache.bytes_kv_held).c_str(), format_bytes(r.cache.bytes_kv_full).c_str(),
                    format_bytes(r.cache.bytes_allocated).c_str(), (unsigned long long)r.cache.compressions,
                    r.stats.prefill_s > 0 ? double(r.stats.prompt_tokens) / r.stats.prefill_s : 0.0,
                    r.stats.decode_s > 0 ? decode_steps / r.stats.decode_s : 0.0);
    }
    std::printf("(on the GPU: bf16 weights and K/V; decode steps replayed from a CUDA graph, %d tokens per copy "
                "to the host; KV columns as on the CPU)\n", 8);
    if (runs.size() == 2) {
        const std::vector<int32_t> &a = runs[0].result.tokens, &b = runs[1].result.tokens;
        size_t same = 0;
        while (same < a.size() && same < b.size() && a[same] == b[same]) ++same;
        std::printf("%s and %s agree on the first %zu generated tokens%s\n", kMethodNames[runs[0].method],
                    kMethodNames[runs[1].method], same,
                    same == a.size() && same == b.size() ? " (identical answers)" : "");
    }
    return 0;
}

}  // namespace engine::cuda
