#include "model.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "gguf.h"

namespace engine {

namespace {

// Tokens run through the layers at once in prefill (rows of every sgemm).
constexpr int32_t kMaxRows = 128;

void check(rkv_status status, const char *what) {
    if (status != RKV_OK)
        throw std::runtime_error(std::string(what) + ": " + rkv_status_name(status) + ": " +
                                 rkv_error_message());
}

// y[n, W.rows] = x[n, W.cols] W^T
void matmul(float *y, const float *x, const Matrix &w, int32_t n) {
    const int rows = int(w.rows), cols = int(w.cols);
    if (n == 1)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, rows, cols, 1.0f, w.data.data(), cols, x, 1, 0.0f, y, 1);
    else
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, rows, cols, 1.0f, x, cols, w.data.data(),
                    cols, 0.0f, y, rows);
}

// out[n, dim] = x / rms(x) * weight, row by row
void rmsnorm(float *out, const float *x, const std::vector<float> &weight, int32_t n, float eps) {
    const size_t dim = weight.size();
    for (int32_t r = 0; r < n; ++r) {
        const float *xr = x + r * dim;
        float sum = 0.0f;
        for (size_t i = 0; i < dim; ++i) sum += xr[i] * xr[i];
        const float scale = 1.0f / std::sqrt(sum / float(dim) + eps);
        for (size_t i = 0; i < dim; ++i) out[r * dim + i] = xr[i] * scale * weight[i];
    }
}

// Rotate pairs (2i, 2i+1) of every head by pos * freq[i]. GGUF stores Llama's
// Q and K weights permuted so that this adjacent-pair form equals the
// half-split rotation of the original checkpoint.
void rope(float *x, int32_t heads, int32_t head_dim, int32_t pos, const std::vector<float> &freq) {
    for (int32_t i = 0; i < head_dim / 2; ++i) {
        const float angle = float(pos) * freq[size_t(i)];
        const float c = std::cos(angle), s = std::sin(angle);
        for (int32_t h = 0; h < heads; ++h) {
            float *p = x + h * head_dim + 2 * i;
            const float a = p[0], b = p[1];
            p[0] = a * c - b * s;
            p[1] = a * s + b * c;
        }
    }
}

std::vector<float> load_vector(const GgufFile &file, const std::string &name, int64_t n) {
    const GgufTensor &t = file.tensor(name);
    if (t.row_length() * t.rows() != n)
        throw std::runtime_error(file.path() + ": tensor " + name + " has an unexpected size");
    std::vector<float> v(static_cast<size_t>(n));
    dequantize_row(t.type, t.data, v.data(), n);
    return v;
}

}  // namespace

Matrix load_matrix(const GgufFile &file, const std::string &name) {
    const GgufTensor &t = file.tensor(name);
    Matrix m;
    m.cols = t.row_length();
    m.rows = t.rows();
    m.data.resize(size_t(m.rows * m.cols));
    const size_t row_bytes = ggml_row_bytes(t.type, m.cols);
    for (int64_t r = 0; r < m.rows; ++r)
        dequantize_row(t.type, t.data + size_t(r) * row_bytes, m.data.data() + r * m.cols, m.cols);
    return m;
}

Config read_llama_config(const GgufFile &file) {
    const std::string arch = file.get_string("general.architecture");
    if (arch != "llama")
        throw std::runtime_error(file.path() + ": architecture '" + arch + "' (this engine runs 'llama')");
    Config c;
    c.dim = int32_t(file.get_int("llama.embedding_length"));
    c.hidden_dim = int32_t(file.get_int("llama.feed_forward_length"));
    c.n_layers = int32_t(file.get_int("llama.block_count"));
    c.n_heads = int32_t(file.get_int("llama.attention.head_count"));
    c.n_kv_heads = int32_t(file.get_int("llama.attention.head_count_kv", c.n_heads));
    if (c.n_heads < 1 || c.n_kv_heads < 1 || c.n_heads % c.n_kv_heads != 0)
        throw std::runtime_error(file.path() + ": " + std::to_string(c.n_heads) + " query heads are not a multiple of " +
                                 std::to_string(c.n_kv_heads) + " KV heads");
    c.head_dim = int32_t(file.get_int("llama.attention.key_length", c.dim / c.n_heads));
    c.context_length = int32_t(file.get_int("llama.context_length", 2048));
    c.rope_theta = file.get_float("llama.rope.freq_base", 10000.0f);
    c.norm_eps = file.get_float("llama.attention.layer_norm_rms_epsilon", 1e-5f);
    if (file.get_int("llama.rope.dimension_count", c.head_dim) != c.head_dim)
        throw std::runtime_error(file.path() + ": partial RoPE is not supported");
    const GgufTensor &embedding = file.tensor("token_embd.weight");
    c.vocab_size = int32_t(embedding.rows());
    if (embedding.row_length() != c.dim) throw std::runtime_error(file.path() + ": embedding width != dim");
    return c;
}

Model::Model(const GgufFile &file) : config_(read_llama_config(file)) {
    Config &c = config_;
    w_.embedding = load_matrix(file, "token_embd.weight");
    w_.layers.resize(size_t(c.n_layers));
    for (int32_t l = 0; l < c.n_layers; ++l) {
        const std::string p = "blk." + std::to_string(l) + ".";
        Layer &L = w_.layers[size_t(l)];
        L.attn_norm = load_vector(file, p + "attn_norm.weight", c.dim);
        L.wq = load_matrix(file, p + "attn_q.weight");
        L.wk = load_matrix(file, p + "attn_k.weight");
        L.wv = load_matrix(file, p + "attn_v.weight");
        L.wo = load_matrix(file, p + "attn_output.weight");
        L.ffn_norm = load_vector(file, p + "ffn_norm.weight", c.dim);
        L.w_gate = load_matrix(file, p + "ffn_gate.weight");
        L.w_up = load_matrix(file, p + "ffn_up.weight");
        L.w_down = load_matrix(file, p + "ffn_down.weight");
        if (L.wq.rows != int64_t(c.n_heads) * c.head_dim || L.wk.rows != int64_t(c.n_kv_heads) * c.head_dim ||
            L.w_gate.rows != c.hidden_dim || L.w_down.cols != c.hidden_dim)
            throw std::runtime_error(file.path() + ": layer " + std::to_string(l) + " has unexpected shapes");
    }
    w_.out_norm = load_vector(file, "output_norm.weight", c.dim);
    if (file.find_tensor("output.weight")) w_.output = load_matrix(file, "output.weight");

    rope_freq_.resize(size_t(c.head_dim / 2));
    for (int32_t i = 0; i < c.head_dim / 2; ++i)
        rope_freq_[size_t(i)] = std::pow(c.rope_theta, -2.0f * float(i) / float(c.head_dim));
    ensure_rows(kMaxRows, 0);
}

void Model::set_cache_shape(rkv_cache_params &params, int32_t max_seqs) const {
    params.max_seqs = max_seqs;
    params.num_layers = config_.n_layers;
    params.num_kv_heads = config_.n_kv_heads;
    params.num_q_heads = config_.n_heads;
    params.head_dim = config_.head_dim;
    params.dtype = RKV_DTYPE_F32;
}

void Model::ensure_rows(int32_t rows, int32_t held) {
    const Config &c = config_;
    RunState &s = s_;
    if (rows > s.max_rows) {
        s.max_rows = rows;
        s.x.resize(size_t(rows) * c.dim);
        s.xb.resize(size_t(rows) * c.dim);
        s.q.resize(size_t(rows) * c.n_heads * c.head_dim);
        s.k.resize(size_t(rows) * c.n_kv_heads * c.head_dim);
        s.v.resize(size_t(rows) * c.n_kv_heads * c.head_dim);
        s.att.resize(size_t(rows) * c.n_heads * c.head_dim);
        s.hb.resize(size_t(rows) * c.hidden_dim);
        s.hb2.resize(size_t(rows) * c.hidden_dim);
        s.pos.resize(size_t(rows));
    }
    if (size_t(s.max_rows) * size_t(held) > s.scores.size()) s.scores.resize(size_t(s.max_rows) * size_t(held));
    if (size_t(held) * c.head_dim > s.held_k.size()) {
        s.held_k.resize(size_t(held) * c.head_dim);
        s.held_v.resize(size_t(held) * c.head_dim);
    }
}

void Model::prefill(rkv_cache *cache, int32_t seq, const int32_t *tokens, int32_t n, float *logits,
                    bool last_only, bool prompt) {
    rkv_layer_view layer_view;
    std::memset(&layer_view, 0, sizeof layer_view);
    layer_view.struct_size = sizeof layer_view;
    check(rkv_view_layer(cache, 0, &layer_view), "rkv_view_layer");
    const int32_t capacity = layer_view.capacity;  // slots per (sequence, layer, head)
    ensure_rows(kMaxRows, capacity);

    for (int32_t done = 0; done < n;) {
        // A full sequence is compressed here, explicitly and for every layer at
        // once, so that each piece below fits without a compression inside it:
        // the prefill attention then sees exactly what a token-by-token decode
        // would (the compression happens before the same token).
        int32_t due = 0;
        check(rkv_compress_due(cache, seq, RKV_ALL, &due), "rkv_compress_due");
        if (due) check(rkv_compress(cache, seq, RKV_ALL, nullptr), "rkv_compress");
        int32_t held = 0;
        check(rkv_seq_length(cache, seq, 0, nullptr, &held), "rkv_seq_length");
        const int32_t room = capacity - held;
        if (room <= 0)
            throw std::runtime_error("the KV cache of sequence " + std::to_string(seq) +
                                     " is full (" + std::to_string(capacity) +
                                     " tokens, the FULL method's max_len): reserve more or use a compressing method");
        const int32_t piece = std::min({n - done, room, kMaxRows});
        const bool last_piece = done + piece == n;
        float *out = logits == nullptr ? nullptr
                     : last_only      ? (last_piece ? logits : nullptr)
                                      : logits + size_t(done) * size_t(config_.vocab_size);
        forward_rows(cache, Mode::Prefill, &seq, tokens + done, piece, out, last_only,
                     prompt ? uint32_t(RKV_APPEND_PROMPT) : 0u);
        done += piece;
    }
}

void Model::decode(rkv_cache *cache, const int32_t *seq_ids, const int32_t *tokens, int32_t n,
                   float *logits) {
    ensure_rows(n, 0);
    forward_rows(cache, Mode::Decode, seq_ids, tokens, n, logits, false, 0u);
}

// The forward pass of n rows. Prefill: n consecutive tokens of seq_ids[0].
// Decode: one token of each of seq_ids[0..n-1].
void Model::forward_rows(rkv_cache *cache, Mode mode, const int32_t *seq_ids, const int32_t *tokens,
                         int32_t n, float *logits, bool last_only, uint32_t append_flags) {
    const Config &c = config_;
    RunState &s = s_;
    const int32_t dim = c.dim, hd = c.head_dim, q_width = c.n_heads * hd, kv_width = c.n_kv_heads * hd;

    // Position of each row: the sequence's logical length continues.
    for (int32_t r = 0; r < n; ++r) {
        int64_t logical = 0;
        const int32_t seq = mode == Mode::Prefill ? seq_ids[0] : seq_ids[r];
        check(rkv_seq_length(cache, seq, 0, &logical, nullptr), "rkv_seq_length");
        s.pos[size_t(r)] = int32_t(logical) + (mode == Mode::Prefill ? r : 0);
    }
    for (int32_t r = 0; r < n; ++r) {
        if (tokens[r] < 0 || tokens[r] >= c.vocab_size) throw std::runtime_error("token id out of range");
        std::memcpy(&s.x[size_t(r) * dim], &w_.embedding.data[size_t(tokens[r]) * dim], size_t(dim) * 4);
    }

    // librkv's view of our buffers: [row, heads, head_dim]. In prefill the rows
    // are the tokens of one entry (stride_token); in decode, one entry each (stride_seq).
    const bool prefill = mode == Mode::Prefill;
    auto tensor = [&](float *data, int32_t heads) {
        const int64_t row = int64_t(heads) * hd;
        return rkv_tensor{data, RKV_DTYPE_F32, heads, hd, prefill ? 0 : row, prefill ? row : 0, hd, 0};
    };
    rkv_append_args args;
    std::memset(&args, 0, sizeof args);
    args.struct_size = sizeof args;
    args.num_seqs = prefill ? 1 : n;
    args.seq_ids = seq_ids;
    args.num_tokens = prefill ? &n : nullptr;
    args.k = tensor(s.k.data(), c.n_kv_heads);
    args.v = tensor(s.v.data(), c.n_kv_heads);
    args.q = tensor(s.q.data(), c.n_heads);
    args.flags = append_flags;
    const rkv_tensor q_decode = tensor(s.q.data(), c.n_heads);
    const rkv_tensor out_decode = tensor(s.att.data(), c.n_heads);

    for (int32_t l = 0; l < c.n_layers; ++l) {
        const Layer &L = w_.layers[size_t(l)];
        // attention block
        rmsnorm(s.xb.data(), s.x.data(), L.attn_norm, n, c.norm_eps);
        matmul(s.q.data(), s.xb.data(), L.wq, n);
        matmul(s.k.data(), s.xb.data(), L.wk, n);
        matmul(s.v.data(), s.xb.data(), L.wv, n);
        for (int32_t r = 0; r < n; ++r) {
            rope(&s.q[size_t(r) * q_width], c.n_heads, hd, s.pos[size_t(r)], rope_freq_);
            rope(&s.k[size_t(r) * kv_width], c.n_kv_heads, hd, s.pos[size_t(r)], rope_freq_);
        }
        args.layer = l;
        check(rkv_append(cache, &args, nullptr), "rkv_append");  // post-RoPE K, V and Q
        if (prefill)
            attend_prefill(cache, seq_ids[0], l, n);
        else {
            rkv_attend_args attend{};
            attend.struct_size = sizeof attend;
            attend.layer = l;
            attend.num_seqs = n;
            attend.seq_ids = seq_ids;
            attend.q = q_decode;
            attend.out = out_decode;
            check(rkv_attend(cache, &attend, nullptr), "rkv_attend");
        }
        matmul(s.xb.data(), s.att.data(), L.wo, n);
        for (size_t i = 0; i < size_t(n) * dim; ++i) s.x[i] += s.xb[i];

        // MLP block: down(silu(gate(x)) * up(x))
        rmsnorm(s.xb.data(), s.x.data(), L.ffn_norm, n, c.norm_eps);
        matmul(s.hb.data(), s.xb.data(), L.w_gate, n);
        matmul(s.hb2.data(), s.xb.data(), L.w_up, n);
        for (size_t i = 0; i < size_t(n) * c.hidden_dim; ++i) {
            const float g = s.hb[i];
            s.hb[i] = g / (1.0f + std::exp(-g)) * s.hb2[i];
        }
        matmul(s.xb.data(), s.hb.data(), L.w_down, n);
        for (size_t i = 0; i < size_t(n) * dim; ++i) s.x[i] += s.xb[i];
    }

    if (logits == nullptr) return;
    const int32_t first = last_only ? n - 1 : 0, rows = n - first;
    rmsnorm(s.xb.data(), s.x.data() + size_t(first) * dim, w_.out_norm, rows, c.norm_eps);
    matmul(logits, s.xb.data(), w_.lm_head(), rows);
}

namespace {

// One element of a view's storage as float: bf16 and f16 by their bits, FP8
// E4M3 (before its row's scale) by the format's definition.
float stored_value(const void *data, rkv_dtype dtype, int64_t index) {
    switch (dtype) {
        case RKV_DTYPE_F32: return static_cast<const float *>(data)[index];
        case RKV_DTYPE_BF16: {
            const uint32_t bits = uint32_t(static_cast<const uint16_t *>(data)[index]) << 16;
            float x;
            std::memcpy(&x, &bits, 4);
            return x;
        }
        case RKV_DTYPE_F16: {
            const uint16_t h = static_cast<const uint16_t *>(data)[index];
            const int exponent = (h >> 10) & 31, mantissa = h & 1023;
            const float magnitude = exponent == 0 ? std::ldexp(float(mantissa), -24)
                                    : exponent == 31 ? (mantissa ? NAN : INFINITY)
                                                     : std::ldexp(float(1024 + mantissa), exponent - 25);
            return h & 0x8000 ? -magnitude : magnitude;
        }
        case RKV_DTYPE_FP8_E4M3: {
            const uint8_t b = static_cast<const uint8_t *>(data)[index];
            const int exponent = (b >> 3) & 15, mantissa = b & 7;
            if (exponent == 15 && mantissa == 7) return NAN;
            const float magnitude = exponent == 0 ? std::ldexp(float(mantissa), -9)
                                                  : std::ldexp(float(8 + mantissa), exponent - 10);
            return b & 0x80 ? -magnitude : magnitude;
        }
    }
    return NAN;
}

// Rows [0, held) of one KV head of a view as float32 [held, head_dim] (FP8:
// times the row's scale). A float32 view is read in place.
const float *held_rows(const rkv_seq_view &view, const void *base, const float *scales, int32_t head, int32_t held,
                       float *out) {
    const int64_t d = view.head_dim;
    if (view.dtype == RKV_DTYPE_F32) return static_cast<const float *>(base) + head * view.stride_head;
    for (int32_t t = 0; t < held; ++t) {
        const float scale = scales ? scales[head * view.scale_stride_head + t] : 1.0f;
        for (int64_t e = 0; e < d; ++e)
            out[t * d + e] = stored_value(base, view.dtype, head * view.stride_head + t * view.stride_token + e) * scale;
    }
    return out;
}

}  // namespace

// Causal attention of the n tokens just appended to (seq, layer) over
// everything the sequence holds there, read through rkv_view. Held tokens can
// sit in any slot (compression reorders them), so causality is decided by the
// original positions librkv keeps beside each token: row r sees slot j iff
// positions[j] <= pos[r].
void Model::attend_prefill(rkv_cache *cache, int32_t seq, int32_t layer, int32_t n) {
    const Config &c = config_;
    RunState &s = s_;
    rkv_seq_view view;
    std::memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    check(rkv_view(cache, seq, layer, &view), "rkv_view");
    const int32_t held = view.length, hd = c.head_dim, group = c.n_heads / c.n_kv_heads;
    const int32_t q_width = c.n_heads * hd;
    const float scale = 1.0f / std::sqrt(float(hd));
    float *scores = s.scores.data();  // [n, held] for one query head

    const int ld = view.dtype == RKV_DTYPE_F32 ? int(view.stride_token) : hd;  // row stride of k and v below
    const float *k = nullptr, *v = nullptr;
    for (int32_t h = 0; h < c.n_heads; ++h) {
        const int32_t g = h / group;  // the KV head this query head reads
        if (h % group == 0) {         // [held, hd] each, as float
            k = held_rows(view, view.k, view.k_scale, g, held, s.held_k.data());
            v = held_rows(view, view.v, view.v_scale, g, held, s.held_v.data());
        }
        const int32_t *positions = view.positions + g * view.positions_stride_head;         // [held]
        // scores = scale * Q_h K^T
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, held, hd, scale, &s.q[size_t(h) * hd], q_width,
                    k, ld, 0.0f, scores, held);
        for (int32_t r = 0; r < n; ++r) {
            float *row = scores + size_t(r) * held;
            float max = -std::numeric_limits<float>::infinity();
            for (int32_t j = 0; j < held; ++j) {
                if (positions[j] > s.pos[size_t(r)]) row[j] = -std::numeric_limits<float>::infinity();
                max = std::max(max, row[j]);
            }
            float sum = 0.0f;
            for (int32_t j = 0; j < held; ++j) sum += (row[j] = std::exp(row[j] - max));
            for (int32_t j = 0; j < held; ++j) row[j] /= sum;
        }
        // att_h = softmax(scores) V
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, hd, held, 1.0f, scores, held, v, ld, 0.0f,
                    &s.att[size_t(h) * hd], q_width);
    }
}

}  // namespace engine
