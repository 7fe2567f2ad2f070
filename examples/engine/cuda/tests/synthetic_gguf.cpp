#include "synthetic_gguf.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <stdexcept>
#include <vector>

namespace engine::cuda::test {

namespace {

enum : uint32_t { kU32 = 4, kI32 = 5, kF32 = 6, kString = 8, kArray = 9 };
enum : uint32_t { kTypeF32 = 0, kTypeBF16 = 30 };

struct Writer {
    std::string bytes;
    template <typename T> void put(T x) { bytes.append(reinterpret_cast<const char *>(&x), sizeof x); }
    void str(const std::string &s) {
        put<uint64_t>(s.size());
        bytes += s;
    }
    void key_u32(const std::string &key, uint32_t v) {
        str(key);
        put<uint32_t>(kU32);
        put<uint32_t>(v);
    }
    void key_f32(const std::string &key, float v) {
        str(key);
        put<uint32_t>(kF32);
        put<float>(v);
    }
    void key_string(const std::string &key, const std::string &v) {
        str(key);
        put<uint32_t>(kString);
        str(v);
    }
    void key_strings(const std::string &key, const std::vector<std::string> &v) {
        str(key);
        put<uint32_t>(kArray);
        put<uint32_t>(kString);
        put<uint64_t>(v.size());
        for (const std::string &s : v) str(s);
    }
    void key_ints(const std::string &key, const std::vector<int32_t> &v) {
        str(key);
        put<uint32_t>(kArray);
        put<uint32_t>(kI32);
        put<uint64_t>(v.size());
        for (int32_t x : v) put<int32_t>(x);
    }
};

struct Tensor {
    std::string name;
    int64_t rows, cols;  // ne = {cols, rows}
    uint32_t type;
    std::string data;
};

uint64_t next(uint64_t &state) {  // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float normal(uint64_t &state) {  // sum of 4 uniforms, unit variance
    float sum = 0;
    for (int i = 0; i < 4; ++i) sum += float(next(state) >> 40) / 16777216.0f;
    return (sum - 2.0f) * 1.7320508f;
}

uint16_t bf16_bits(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

Tensor matrix(const std::string &name, int64_t rows, int64_t cols, float std, uint64_t &state) {
    Tensor t{name, rows, cols, kTypeBF16, {}};
    Writer w;
    for (int64_t i = 0; i < rows * cols; ++i) w.put<uint16_t>(bf16_bits(std * normal(state)));
    t.data = w.bytes;
    return t;
}

Tensor norm(const std::string &name, int64_t n, uint64_t &state) {
    Tensor t{name, 1, n, kTypeF32, {}};
    Writer w;
    for (int64_t i = 0; i < n; ++i) w.put<float>(1.0f + 0.1f * normal(state));
    t.data = w.bytes;
    return t;
}

std::string utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) s += char(cp);
    else if (cp < 0x800) s += char(0xc0 | (cp >> 6)), s += char(0x80 | (cp & 0x3f));
    else s += char(0xe0 | (cp >> 12)), s += char(0x80 | ((cp >> 6) & 0x3f)), s += char(0x80 | (cp & 0x3f));
    return s;
}

// GPT-2's byte-to-unicode alphabet: printable bytes stand for themselves, the others for 256 + n.
std::vector<std::string> byte_symbols() {
    std::vector<std::string> symbols(256);
    uint32_t extra = 0;
    for (uint32_t b = 0; b < 256; ++b) {
        const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
        symbols[b] = utf8(printable ? b : 256 + extra++);
    }
    return symbols;
}

}  // namespace

void write_synthetic_gguf(const std::string &path, const SyntheticModel &m) {
    uint64_t state = m.seed * 0x2545f4914f6cdd1dull + 1;
    const int64_t q_rows = int64_t(m.heads) * m.head_dim, kv_rows = int64_t(m.kv_heads) * m.head_dim;
    std::vector<Tensor> tensors;
    tensors.push_back(matrix("token_embd.weight", m.vocab, m.dim, 1.0f, state));
    for (int32_t l = 0; l < m.layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        const float in_std = 1.0f / std::sqrt(float(m.dim));
        tensors.push_back(norm(p + "attn_norm.weight", m.dim, state));
        tensors.push_back(matrix(p + "attn_q.weight", q_rows, m.dim, in_std, state));
        tensors.push_back(matrix(p + "attn_k.weight", kv_rows, m.dim, in_std, state));
        tensors.push_back(matrix(p + "attn_v.weight", kv_rows, m.dim, in_std, state));
        tensors.push_back(matrix(p + "attn_output.weight", m.dim, q_rows, 1.0f / std::sqrt(float(q_rows)), state));
        tensors.push_back(norm(p + "ffn_norm.weight", m.dim, state));
        tensors.push_back(matrix(p + "ffn_gate.weight", m.mlp, m.dim, in_std, state));
        tensors.push_back(matrix(p + "ffn_up.weight", m.mlp, m.dim, in_std, state));
        tensors.push_back(matrix(p + "ffn_down.weight", m.dim, m.mlp, 1.0f / std::sqrt(float(m.mlp)), state));
    }
    tensors.push_back(norm("output_norm.weight", m.dim, state));
    if (!m.tied_output)
        tensors.push_back(matrix("output.weight", m.vocab, m.dim, m.logit_scale / std::sqrt(float(m.dim)), state));

    // Tokenizer: control tokens, then the 256 bytes, then fillers up to the vocabulary.
    std::vector<std::string> pieces = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
    std::vector<int32_t> types = {3, 3, 3};
    for (const std::string &symbol : byte_symbols()) pieces.push_back(symbol), types.push_back(1);
    pieces.push_back("ab"), types.push_back(1);  // the one merge's result
    while (int32_t(pieces.size()) < m.vocab) pieces.push_back("<filler" + std::to_string(pieces.size()) + ">"), types.push_back(1);
    pieces.resize(size_t(m.vocab));
    types.resize(size_t(m.vocab));

    Writer w;
    w.bytes = "GGUF";
    w.put<uint32_t>(3);
    w.put<uint64_t>(tensors.size());
    w.put<uint64_t>(16);  // metadata entries below
    const std::string a = m.architecture;
    w.key_string("general.architecture", a);
    w.key_u32(a + ".embedding_length", uint32_t(m.dim));
    w.key_u32(a + ".feed_forward_length", uint32_t(m.mlp));
    w.key_u32(a + ".block_count", uint32_t(m.layers));
    w.key_u32(a + ".attention.head_count", uint32_t(m.heads));
    w.key_u32(a + ".attention.head_count_kv", uint32_t(m.kv_heads));
    w.key_u32(a + ".attention.key_length", uint32_t(m.head_dim));
    w.key_u32(a + ".context_length", 8192);
    w.key_f32(a + ".rope.freq_base", m.rope_theta);
    w.key_f32(a + ".attention.layer_norm_rms_epsilon", 1e-5f);
    w.key_string("tokenizer.ggml.model", "gpt2");
    w.key_strings("tokenizer.ggml.tokens", pieces);
    w.key_strings("tokenizer.ggml.merges", {"a b"});
    w.key_ints("tokenizer.ggml.token_type", types);
    w.key_u32("tokenizer.ggml.bos_token_id", 0);
    w.key_u32("tokenizer.ggml.eos_token_id", 0);

    std::string data;
    for (const Tensor &t : tensors) {
        w.str(t.name);
        w.put<uint32_t>(2);
        w.put<uint64_t>(uint64_t(t.cols));
        w.put<uint64_t>(uint64_t(t.rows));
        w.put<uint32_t>(t.type);
        while (data.size() % 32) data += '\0';
        w.put<uint64_t>(data.size());
        data += t.data;
    }
    while (w.bytes.size() % 32) w.bytes += '\0';
    std::ofstream out(path, std::ios::binary);
    out << w.bytes << data;
    if (!out) throw std::runtime_error("cannot write " + path);
}

}  // namespace engine::cuda::test
