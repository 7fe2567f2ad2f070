#include "weights.h"

#include <cmath>
#include <cstring>
#include <string>

#include "gguf.h"
#include "shape.h"

namespace engine::cuda {

uint16_t to_bf16_bits(float x) {
    uint32_t bits;
    std::memcpy(&bits, &x, 4);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40u);  // quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

namespace {

// Carves one allocation into 256-byte aligned pieces.
struct Carver {
    uint64_t offset = 0;
    uint64_t take(uint64_t bytes) {
        const uint64_t at = offset;
        offset += (bytes + 255) / 256 * 256;
        return at;
    }
};

struct Layout {
    struct Layer { uint64_t qkv, o, gate_up, down, attn_norm, ffn_norm; };
    std::vector<Layer> layers;
    uint64_t embedding = 0, output = 0, out_norm = 0, rope_freq = 0, total = 0;
};

Layout plan(const Config &c, bool tied) {
    Carver carver;
    Layout layout;
    const uint64_t d = uint64_t(c.dim), hd = uint64_t(c.head_dim), f = uint64_t(c.hidden_dim);
    layout.embedding = carver.take(uint64_t(c.vocab_size) * d * 2);
    for (int32_t l = 0; l < c.n_layers; ++l) {
        Layout::Layer L;
        L.qkv = carver.take(uint64_t(c.n_heads + 2 * c.n_kv_heads) * hd * d * 2);
        L.o = carver.take(d * uint64_t(c.n_heads) * hd * 2);
        L.gate_up = carver.take(2 * f * d * 2);
        L.down = carver.take(d * f * 2);
        L.attn_norm = carver.take(d * 4);
        L.ffn_norm = carver.take(d * 4);
        layout.layers.push_back(L);
    }
    layout.output = tied ? layout.embedding : carver.take(uint64_t(c.vocab_size) * d * 2);
    layout.out_norm = carver.take(d * 4);
    layout.rope_freq = carver.take(hd / 2 * 4);
    layout.total = carver.offset;
    return layout;
}

std::vector<float> rope_frequencies(const Config &c) {
    std::vector<float> freq(size_t(c.head_dim / 2));
    for (int32_t i = 0; i < c.head_dim / 2; ++i)
        freq[size_t(i)] = std::pow(c.rope_theta, -2.0f * float(i) / float(c.head_dim));  // as Model does
    return freq;
}

// Dequantise tensor `name` (expected [rows, cols]) to bf16 and copy it to device + offset.
void upload_tensor(const GgufFile &file, const std::string &name, int64_t rows, int64_t cols, char *device,
                   std::vector<float> &row, std::vector<uint16_t> &staging) {
    const GgufTensor &t = file.tensor(name);
    if (t.rows() != rows || t.row_length() != cols)
        throw Error(file.path() + ": tensor " + name + " is [" + std::to_string(t.rows()) + ", " +
                    std::to_string(t.row_length()) + "], expected [" + std::to_string(rows) + ", " +
                    std::to_string(cols) + "]");
    staging.resize(size_t(rows * cols));
    row.resize(size_t(cols));
    const size_t row_bytes = ggml_row_bytes(t.type, cols);
    for (int64_t r = 0; r < rows; ++r) {
        dequantize_row(t.type, t.data + size_t(r) * row_bytes, row.data(), cols);
        for (int64_t c = 0; c < cols; ++c) staging[size_t(r * cols + c)] = to_bf16_bits(row[size_t(c)]);
    }
    check_cuda(cudaMemcpy(device, staging.data(), staging.size() * 2, cudaMemcpyHostToDevice),
               ("upload of " + name).c_str());
}

void upload_vector(const GgufFile &file, const std::string &name, int64_t n, char *device, std::vector<float> &v) {
    const GgufTensor &t = file.tensor(name);
    if (t.rows() * t.row_length() != n) throw Error(file.path() + ": tensor " + name + " has an unexpected size");
    v.resize(size_t(n));
    dequantize_row(t.type, t.data, v.data(), n);
    check_cuda(cudaMemcpy(device, v.data(), size_t(n) * 4, cudaMemcpyHostToDevice), ("upload of " + name).c_str());
}

}  // namespace

DeviceWeights::DeviceWeights(const Config &config, bool tied) : config_(config), tied_(tied) {
    check_gpu_shape(config);
    const Layout layout = plan(config, tied);
    storage_ = DeviceBuffer(layout.total, "the model weights (bf16)");
    char *base = storage_.as<char>();
    embedding = reinterpret_cast<const bf16 *>(base + layout.embedding);
    output = reinterpret_cast<const bf16 *>(base + layout.output);
    out_norm = reinterpret_cast<const float *>(base + layout.out_norm);
    rope_freq = reinterpret_cast<const float *>(base + layout.rope_freq);
    for (const Layout::Layer &L : layout.layers)
        layers.push_back({reinterpret_cast<const bf16 *>(base + L.qkv), reinterpret_cast<const bf16 *>(base + L.o),
                          reinterpret_cast<const bf16 *>(base + L.gate_up),
                          reinterpret_cast<const bf16 *>(base + L.down),
                          reinterpret_cast<const float *>(base + L.attn_norm),
                          reinterpret_cast<const float *>(base + L.ffn_norm)});
    const std::vector<float> freq = rope_frequencies(config);
    check_cuda(cudaMemcpy(const_cast<float *>(rope_freq), freq.data(), freq.size() * 4, cudaMemcpyHostToDevice),
               "upload of the RoPE frequencies");
    // A copy from pageable memory may still be in flight when cudaMemcpy returns, and the
    // engine works on its own non-blocking streams: wait for the uploads here.
    check_cuda(cudaDeviceSynchronize(), "upload of the weights");
}

DeviceWeights DeviceWeights::load(const GgufFile &file, cudaStream_t) {
    const Config c = read_llama_config(file);
    const bool tied = file.find_tensor("output.weight") == nullptr;
    DeviceWeights w(c, tied);
    std::vector<float> row;
    std::vector<uint16_t> staging;
    auto at = [](const void *p) { return reinterpret_cast<char *>(const_cast<void *>(p)); };
    const int64_t d = c.dim, hd = c.head_dim, q_rows = int64_t(c.n_heads) * hd, kv_rows = int64_t(c.n_kv_heads) * hd;
    upload_tensor(file, "token_embd.weight", c.vocab_size, d, at(w.embedding), row, staging);
    for (int32_t l = 0; l < c.n_layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        const LayerWeights &L = w.layers[size_t(l)];
        upload_vector(file, p + "attn_norm.weight", d, at(L.attn_norm), row);
        upload_tensor(file, p + "attn_q.weight", q_rows, d, at(L.qkv), row, staging);
        upload_tensor(file, p + "attn_k.weight", kv_rows, d, at(L.qkv) + q_rows * d * 2, row, staging);
        upload_tensor(file, p + "attn_v.weight", kv_rows, d, at(L.qkv) + (q_rows + kv_rows) * d * 2, row, staging);
        upload_tensor(file, p + "attn_output.weight", d, q_rows, at(L.o), row, staging);
        upload_vector(file, p + "ffn_norm.weight", d, at(L.ffn_norm), row);
        upload_tensor(file, p + "ffn_gate.weight", c.hidden_dim, d, at(L.gate_up), row, staging);
        upload_tensor(file, p + "ffn_up.weight", c.hidden_dim, d, at(L.gate_up) + int64_t(c.hidden_dim) * d * 2, row,
                      staging);
        upload_tensor(file, p + "ffn_down.weight", d, c.hidden_dim, at(L.down), row, staging);
    }
    upload_vector(file, "output_norm.weight", d, at(w.out_norm), row);
    if (!tied) upload_tensor(file, "output.weight", c.vocab_size, d, at(w.output), row, staging);
    check_cuda(cudaDeviceSynchronize(), "upload of the weights");
    return w;
}

DeviceWeights DeviceWeights::dummy(const Config &c, uint64_t seed, cudaStream_t stream) {
    DeviceWeights w(c, false);
    auto bf = [](const bf16 *p) { return const_cast<bf16 *>(p); };
    auto fl = [](const float *p) { return const_cast<float *>(p); };
    const uint64_t d = uint64_t(c.dim), hd = uint64_t(c.head_dim), f = uint64_t(c.hidden_dim);
    auto scale_for = [](uint64_t fan_in) { return float(std::sqrt(3.0 / double(fan_in))); };
    uint64_t tensor = 0;
    fill_random(bf(w.embedding), uint64_t(c.vocab_size) * d, 1.0f, seed + tensor++, stream);
    for (const LayerWeights &L : w.layers) {
        fill_random(bf(L.qkv), uint64_t(c.n_heads + 2 * c.n_kv_heads) * hd * d, scale_for(d), seed + tensor++, stream);
        fill_random(bf(L.o), d * uint64_t(c.n_heads) * hd, scale_for(uint64_t(c.n_heads) * hd), seed + tensor++,
                    stream);
        fill_random(bf(L.gate_up), 2 * f * d, scale_for(d), seed + tensor++, stream);
        fill_random(bf(L.down), d * f, scale_for(f), seed + tensor++, stream);
        fill_value(fl(L.attn_norm), d, 1.0f, stream);
        fill_value(fl(L.ffn_norm), d, 1.0f, stream);
    }
    fill_random(bf(w.output), uint64_t(c.vocab_size) * d, scale_for(d), seed + tensor++, stream);
    fill_value(fl(w.out_norm), d, 1.0f, stream);
    check_launch("random weights");
    check_cuda(cudaStreamSynchronize(stream), "random weights");
    return w;
}

}  // namespace engine::cuda
