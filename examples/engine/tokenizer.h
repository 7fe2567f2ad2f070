// Byte-level BPE (GPT-2 style) read from a GGUF file's metadata:
// tokenizer.ggml.tokens (the vocabulary, in GPT-2's byte-to-unicode alphabet),
// tokenizer.ggml.merges ("a b", by rank) and tokenizer.ggml.token_type
// (3 = control tokens such as <|im_start|>, matched literally in the text).
//
// encode(text):
//   1. split out control tokens written literally in the text;
//   2. pre-tokenize the rest: every digit alone (SmolLM's "smollm" pre-tokenizer),
//      then GPT-2's pattern  's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|
//      ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+  written out by hand;
//   3. map each piece's bytes to the byte-level alphabet and apply merges,
//      lowest rank first, until none applies; look the symbols up.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace engine {

class GgufFile;

class Tokenizer {
  public:
    explicit Tokenizer(const GgufFile &file);

    std::vector<int32_t> encode(const std::string &text) const;
    // The bytes a token stands for (control tokens: their literal text).
    const std::string &decode(int32_t token) const { return bytes_[size_t(token)]; }
    std::string decode(const std::vector<int32_t> &tokens) const;
    // Each token's bytes on its own (a character may be split between two).
    std::vector<std::string> decode_each(const std::vector<int32_t> &tokens) const;
    bool is_control(int32_t token) const { return control_[size_t(token)]; }
    int32_t vocab_size() const { return int32_t(bytes_.size()); }
    int32_t token_id(const std::string &piece) const;  // -1 if absent

    int32_t bos_id = -1, eos_id = -1;
    bool add_bos = false;

  private:
    void encode_piece(const std::string &piece, std::vector<int32_t> &out) const;

    std::vector<std::string> bytes_;   // [vocab] raw bytes of each token
    std::vector<bool> control_;        // [vocab] control (special) token
    std::unordered_map<std::string, int32_t> ids_;   // byte-level symbol string -> id
    std::unordered_map<std::string, int32_t> ranks_; // "left right" -> merge rank
    std::vector<std::pair<std::string, int32_t>> specials_;  // literal text -> id, longest first
    std::string byte_symbol_[256];     // byte -> its symbol (UTF-8) in the byte-level alphabet
};

// Split text into pre-tokens (step 2 above). Exposed for tests.
std::vector<std::string> pretokenize(const std::string &text);

}  // namespace engine
