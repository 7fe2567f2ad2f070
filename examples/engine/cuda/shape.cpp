#include "shape.h"

#include <cerrno>
#include <cstdlib>
#include <sstream>
#include <stdexcept>

namespace engine::cuda {

Config r1_llama_8b_shape() {
    Config c;
    c.n_layers = 32;
    c.n_heads = 32;
    c.n_kv_heads = 8;
    c.head_dim = 128;
    c.dim = 4096;
    c.hidden_dim = 14336;
    c.vocab_size = 128256;
    c.context_length = 131072;
    c.rope_theta = 500000.0f;
    c.norm_eps = 1e-5f;
    return c;
}

namespace {

int32_t parse_positive(const std::string &key, const std::string &value) {
    errno = 0;
    char *end = nullptr;
    const long long v = std::strtoll(value.c_str(), &end, 10);
    if (value.empty() || *end != '\0' || errno == ERANGE || v < 1 || v > (1ll << 30))
        throw std::invalid_argument("shape: " + key + "=" + value + " is not a whole number from 1 to 2^30");
    return int32_t(v);
}

}  // namespace

Config parse_shape(const std::string &spec) {
    Config c;
    bool have_base = false;
    std::stringstream items(spec);
    for (std::string item; std::getline(items, item, ',');) {
        if (item.empty()) continue;
        const size_t eq = item.find('=');
        if (eq == std::string::npos) {
            if (item != "r1-llama-8b")
                throw std::invalid_argument("shape: unknown preset '" + item + "' (known: r1-llama-8b)");
            c = r1_llama_8b_shape();
            have_base = true;
            continue;
        }
        const std::string key = item.substr(0, eq), value = item.substr(eq + 1);
        if (key == "layers") c.n_layers = parse_positive(key, value);
        else if (key == "dim") c.dim = parse_positive(key, value);
        else if (key == "heads") c.n_heads = parse_positive(key, value);
        else if (key == "kv_heads") c.n_kv_heads = parse_positive(key, value);
        else if (key == "head_dim") c.head_dim = parse_positive(key, value);
        else if (key == "mlp") c.hidden_dim = parse_positive(key, value);
        else if (key == "vocab") c.vocab_size = parse_positive(key, value);
        else if (key == "rope_theta") c.rope_theta = float(parse_positive(key, value));
        else
            throw std::invalid_argument("shape: unknown key '" + key +
                                        "' (keys: layers dim heads kv_heads head_dim mlp vocab rope_theta)");
    }
    if (!have_base && c.context_length == 0) c.context_length = 1 << 20;
    const int32_t *fields[] = {&c.n_layers, &c.dim, &c.n_heads, &c.n_kv_heads, &c.head_dim, &c.hidden_dim, &c.vocab_size};
    const char *names[] = {"layers", "dim", "heads", "kv_heads", "head_dim", "mlp", "vocab"};
    for (int i = 0; i < 7; ++i)
        if (*fields[i] < 1)
            throw std::invalid_argument(std::string("shape '") + spec + "': " + names[i] +
                                        " is not set (start from a preset such as r1-llama-8b, or give every key)");
    return c;
}

void check_gpu_shape(const Config &c) {
    auto fail = [&](const std::string &what) {
        throw std::invalid_argument("the CUDA engine cannot run this shape (" + describe(c) + "): " + what);
    };
    if (c.n_layers < 1 || c.dim < 1 || c.n_heads < 1 || c.n_kv_heads < 1 || c.hidden_dim < 1 || c.vocab_size < 2)
        fail("every size must be positive and the vocabulary at least 2");
    if (c.n_heads % c.n_kv_heads != 0)
        fail(std::to_string(c.n_heads) + " query heads are not a multiple of " + std::to_string(c.n_kv_heads) +
             " KV heads");
    if (c.n_heads / c.n_kv_heads > 64)
        fail("more than 64 query heads per KV head (the prompt attention kernel's limit)");
    if (c.head_dim != 64 && c.head_dim != 128)
        fail("head_dim " + std::to_string(c.head_dim) + ": its prompt attention kernel is built for 64 and 128");
    if (c.dim % 8 != 0 || c.hidden_dim % 8 != 0)
        fail("dim and the MLP width must be multiples of 8 (16-byte rows for the bf16 matrix products)");
    if (uint64_t(c.n_heads) * uint64_t(c.head_dim) > (1u << 20) || uint64_t(c.hidden_dim) * 2 > (1u << 30))
        fail("sizes too large");
}

uint64_t weight_bytes(const Config &c, bool tied_output) {
    const uint64_t d = uint64_t(c.dim), hd = uint64_t(c.head_dim);
    const uint64_t per_layer = (uint64_t(c.n_heads + 2 * c.n_kv_heads) * hd * d  // Q, K, V
                                + d * uint64_t(c.n_heads) * hd                    // output
                                + 3 * uint64_t(c.hidden_dim) * d)                  // gate, up, down
                               * 2 + 2 * d * 4;                                    // + f32 norms
    const uint64_t embedding = uint64_t(c.vocab_size) * d * 2;
    return uint64_t(c.n_layers) * per_layer + embedding * (tied_output ? 1 : 2) + d * 4;
}

uint64_t matmul_params(const Config &c) {
    const uint64_t d = uint64_t(c.dim), hd = uint64_t(c.head_dim);
    const uint64_t per_layer = uint64_t(c.n_heads + 2 * c.n_kv_heads) * hd * d + d * uint64_t(c.n_heads) * hd +
                               3 * uint64_t(c.hidden_dim) * d;
    return uint64_t(c.n_layers) * per_layer + uint64_t(c.vocab_size) * d;
}

std::string describe(const Config &c) {
    return std::to_string(c.n_layers) + " layers, " + std::to_string(c.n_heads) + " q / " +
           std::to_string(c.n_kv_heads) + " KV heads of " + std::to_string(c.head_dim) + ", dim " +
           std::to_string(c.dim) + ", MLP " + std::to_string(c.hidden_dim) + ", vocab " +
           std::to_string(c.vocab_size);
}

}  // namespace engine::cuda
