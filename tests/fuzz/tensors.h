// Tensor arguments of the fuzzer's calls: any order of the entry, token and
// head axes, gaps between them, packed (shared token axis), and buffers of
// exactly the extent the header's address formula reaches.
#pragma once

#include <cstdint>
#include <string>

#include "byte_reader.h"
#include "program.h"
#include "rkv/rkv.h"

namespace fuzz {

struct LayoutChoice {
    uint8_t order = 0;          // permutation of (entry, token, head), innermost first
    int64_t gaps[3] = {0, 0, 0};  // extra elements after each axis
    bool packed = false;        // stride_seq = 0: entries share the token axis (varlen)
    int64_t unused_token_stride = 0;  // stride_token where no entry steps along tokens
    bool unchecked_extent = false;    // extent 0 ("unknown") instead of the buffer's
};

LayoutChoice decode_layout(ByteReader &in);

// Sets t's strides for `entries` entries of `token_extent` tokens (the axis
// length the offsets and counts reach) and t.num_heads heads of t.head_dim.
void apply_layout(const LayoutChoice &layout, rkv_tensor *t, int32_t entries, int64_t token_extent,
                  bool tokens_used);

// A buffer of exactly the elements t reaches (at least one), filled with a
// poison value that no data pattern produces.
TensorBuffer allocate_for(const rkv_tensor &t, int32_t entries, const int32_t *num_tokens,
                          const int64_t *token_offsets, bool uses_tokens);

// The extent to pass for a buffer: its elements, or 0 (unchecked) if the
// layout says so.
inline int64_t extent_for(const LayoutChoice &layout, const TensorBuffer &buffer) {
    return layout.unchecked_extent ? 0 : buffer.elements;
}

// Bits of the poison value in `dtype`.
uint32_t poison_bits(rkv_dtype dtype);

std::string describe_tensor(const rkv_tensor &t);

}  // namespace fuzz
