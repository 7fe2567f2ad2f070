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

class Tokenizer;

// kept[p] = number of (layer, KV head) pairs of (cache, seq) holding position p,
// for p < positions. Throws with librkv's message on error.
std::vector<int32_t> kept_counts(const rkv_cache *cache, int32_t seq, int32_t positions);

// Write the page for `tokens` (position p = tokens[p]) with their counts out
// of `heads` = layers x KV heads. Returns the number of tokens held by at least
// one head (what a browser should show coloured). Throws on I/O errors.
int32_t write_kept_html(const std::string &path, const std::string &title, const std::string &subtitle,
                        const Tokenizer &tokenizer, const std::vector<int32_t> &tokens,
                        const std::vector<int32_t> &kept, int32_t heads);

}  // namespace engine
