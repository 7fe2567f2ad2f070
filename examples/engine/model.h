// A Llama-architecture decoder on the CPU whose KV cache is a librkv cache.
//
// Where a token goes (forward_rows in model.cpp):
//   embedding row -> for each layer:
//       RMSNorm -> Q, K, V projections (BLAS) -> RoPE on Q and K
//       -> rkv_append(K, V, Q of this layer)        librkv stores them, compressing when due
//       -> attention over what librkv holds         rkv_attend (decode) or rkv_view (prefill)
//       -> output projection, residual -> RMSNorm -> SwiGLU MLP, residual
//   -> final RMSNorm -> logits (the tied embedding matrix)
//
// Weights are dequantized to float32 once, at load, so every product is one
// sgemm (or sgemv) call. The model holds no KV memory of its own.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "rkv/rkv.h"

namespace engine {

class GgufFile;

struct Config {
    int32_t dim = 0;          // hidden size (576 for SmolLM2-135M)
    int32_t hidden_dim = 0;   // MLP width (1536)
    int32_t n_layers = 0;     // 30
    int32_t n_heads = 0;      // query heads (9)
    int32_t n_kv_heads = 0;   // KV heads (3)
    int32_t head_dim = 0;     // dim / n_heads (64)
    int32_t vocab_size = 0;   // 49152
    int32_t context_length = 0;
    float rope_theta = 10000.0f;
    float norm_eps = 1e-5f;
};

// A weight matrix [rows, cols] in float32, row-major: y = W x has rows outputs.
struct Matrix {
    int64_t rows = 0, cols = 0;
    std::vector<float> data;  // [rows, cols]
};

struct Layer {
    std::vector<float> attn_norm;  // [dim]
    Matrix wq;                     // [n_heads * head_dim, dim]
    Matrix wk;                     // [n_kv_heads * head_dim, dim]
    Matrix wv;                     // [n_kv_heads * head_dim, dim]
    Matrix wo;                     // [dim, n_heads * head_dim]
    std::vector<float> ffn_norm;   // [dim]
    Matrix w_gate;                 // [hidden_dim, dim]
    Matrix w_up;                   // [hidden_dim, dim]
    Matrix w_down;                 // [dim, hidden_dim]
};

struct Weights {
    Matrix embedding;              // [vocab, dim] token embeddings
    std::vector<Layer> layers;     // [n_layers]
    std::vector<float> out_norm;   // [dim]
    Matrix output;                 // [vocab, dim]; empty when tied to the embedding
    const Matrix &lm_head() const { return output.rows ? output : embedding; }
};

// Activations for up to max_rows tokens at once (a row is one token: of one
// sequence in prefill, of one sequence each in a decode batch). Sized at load
// for 128 rows and reused; grown only for a larger decode batch, and scores
// for a cache with more slots than any before.
struct RunState {
    int32_t max_rows = 0;
    std::vector<float> x;        // [max_rows, dim]          residual stream
    std::vector<float> xb;       // [max_rows, dim]          normalised input of a block
    std::vector<float> q;        // [max_rows, n_heads, head_dim]
    std::vector<float> k;        // [max_rows, n_kv_heads, head_dim]
    std::vector<float> v;        // [max_rows, n_kv_heads, head_dim]
    std::vector<float> att;      // [max_rows, n_heads, head_dim]  attention output
    std::vector<float> hb;       // [max_rows, hidden_dim]   gate, then SwiGLU
    std::vector<float> hb2;      // [max_rows, hidden_dim]   up
    std::vector<float> scores;   // [max_rows, max held tokens]  prefill attention of one head
    std::vector<float> held_k;   // [max held tokens, head_dim]  one KV head's keys as float (the
    std::vector<float> held_v;   // [max held tokens, head_dim]  cache stores bf16/f16/FP8)
    std::vector<int32_t> pos;    // [max_rows] position of each row's token
};

class Model {
  public:
    // Load hyper-parameters and weights of a "llama" GGUF file. Throws on error.
    explicit Model(const GgufFile &file);

    const Config &config() const { return config_; }

    // Fill rkv params with this model's shape and float32 storage (the method,
    // budget and another storage dtype are the caller's).
    void set_cache_shape(rkv_cache_params &params, int32_t max_seqs) const;

    // Run n consecutive tokens of sequence `seq` (continuing what the cache
    // holds for it) and write logits [n, vocab] (every row) or, with
    // last_only, [1, vocab] for the last token. prompt marks them as prompt
    // tokens for librkv (RKV_APPEND_PROMPT). Splits the tokens into pieces
    // that fit the cache and compresses explicitly between pieces.
    void prefill(rkv_cache *cache, int32_t seq, const int32_t *tokens, int32_t n, float *logits,
                 bool last_only, bool prompt);

    // One decode step of a batch: token tokens[i] of sequence seq_ids[i];
    // logits [n, vocab]. librkv compresses a full sequence inside rkv_append.
    void decode(rkv_cache *cache, const int32_t *seq_ids, const int32_t *tokens, int32_t n,
                float *logits);

  private:
    enum class Mode { Prefill, Decode };
    void ensure_rows(int32_t rows, int32_t held);
    void forward_rows(rkv_cache *cache, Mode mode, const int32_t *seq_ids, const int32_t *tokens,
                      int32_t n, float *logits, bool last_only, uint32_t append_flags);
    void attend_prefill(rkv_cache *cache, int32_t seq, int32_t layer, int32_t n);

    Config config_;
    Weights w_;
    RunState s_;
    std::vector<float> rope_freq_;  // [head_dim / 2] theta^(-2i/head_dim)
};

// Dequantize a 2-D GGUF tensor to a float32 matrix [ne1, ne0].
Matrix load_matrix(const GgufFile &file, const std::string &name);

// The hyper-parameters of a "llama" GGUF file (vocab_size from its embedding
// tensor), without loading weights. Throws on another architecture or a shape
// the engine cannot run. Shared by the CPU model and the CUDA engine.
Config read_llama_config(const GgufFile &file);

}  // namespace engine
