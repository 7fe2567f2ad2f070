// An HTML page that shows a sequence's tokens, each coloured by how many
// (layer, KV head) pairs still hold it: R-KV's picture of what compression
// keeps. The counts come from rkv_seq_positions; the page draws itself from
// an embedded JSON array with a few lines of JavaScript.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rkv/rkv.h"

namespace engine {

struct KeptCounts {
    std::vector<int32_t> kept;      // [positions] (layer, KV head) pairs holding each position
    int32_t heads = 0;              // layers x KV heads: the most a position can have
    int32_t uncompressed_from = 0;  // positions from here on arrived after the last compression
                                    // (every head holds them until the next one decides)
};

// What (cache, seq) holds of positions 0 .. positions-1. protected_prompt is
// the number of prompt tokens RKV_GUARD_PROMPT keeps (0 without the guard).
// Throws with librkv's message on error.
KeptCounts kept_counts(const rkv_cache *cache, int32_t seq, int32_t positions, int32_t protected_prompt);

// One span of the page: consecutive tokens that together make whole UTF-8
// characters (a byte-level tokenizer may split one character over several
// tokens; the page never cuts a character in two).
struct KeptSpan {
    std::string text;     // valid UTF-8 (a byte sequence that is not becomes U+FFFD)
    int32_t first = 0;    // position of its first token
    int32_t tokens = 0;   // how many tokens it covers
};
std::vector<KeptSpan> kept_spans(const std::vector<std::string> &token_texts);

struct KeptPage {
    int32_t tokens = 0, spans = 0;
    int32_t held = 0;          // spans some head still holds (a coloured background)
    int32_t uncompressed = 0;  // of those, spans not compressed yet
};
// Write the page for token_texts[p] = the text of position p, with its counts.
// Throws on I/O errors.
KeptPage write_kept_html(const std::string &path, const std::string &title, const std::string &subtitle,
                         const std::vector<std::string> &token_texts, const KeptCounts &counts);

}  // namespace engine
