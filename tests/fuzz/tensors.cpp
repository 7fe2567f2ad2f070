#include "tensors.h"

#include <algorithm>
#include <cstdio>

#include "model.h"

namespace fuzz {

namespace {

// The six orders of (entry, token, head) from innermost to outermost.
constexpr int kOrders[6][3] = {{2, 1, 0}, {1, 2, 0}, {2, 0, 1}, {0, 2, 1}, {1, 0, 2}, {0, 1, 2}};
enum Axis { kEntry = 0, kToken = 1, kHead = 2 };

}  // namespace

LayoutChoice decode_layout(ByteReader &in) {
    LayoutChoice layout;
    const uint8_t b = in.byte();
    layout.order = uint8_t(b % 6);
    layout.packed = (b >> 3) % 5 == 0;
    const uint8_t gaps = in.byte();
    for (int axis = 0; axis < 3; ++axis) layout.gaps[axis] = (gaps >> (2 * axis)) & 3 ? 0 : (gaps >> 6) + 1;
    static const int64_t unused[] = {0, 0, 1, 7, 1000, 0x7fffffffll};
    layout.unused_token_stride = in.pick(unused);
    layout.unchecked_extent = in.chance(15);
    return layout;
}

void apply_layout(const LayoutChoice &layout, rkv_tensor *t, int32_t entries, int64_t token_extent,
                  bool tokens_used) {
    int64_t extent[3];
    extent[kEntry] = layout.packed ? 1 : entries;
    extent[kToken] = tokens_used ? std::max<int64_t>(token_extent, 1) : 1;
    extent[kHead] = t->num_heads;
    int64_t stride[3];
    int64_t step = t->head_dim > 0 ? t->head_dim : 1;  // head_dim is innermost and contiguous
    for (int i = 0; i < 3; ++i) {
        const int axis = kOrders[layout.order][i];
        step += layout.gaps[i];
        stride[axis] = step;
        step *= std::max<int64_t>(extent[axis], 1);
    }
    t->stride_seq = layout.packed ? 0 : stride[kEntry];
    t->stride_token = tokens_used ? stride[kToken] : layout.unused_token_stride;
    t->stride_head = stride[kHead];
}

uint32_t poison_bits(rkv_dtype dtype) {
    return dtype == RKV_DTYPE_F32 ? 0xc640e6b7u /* -12345.68 */ : 0xd5a5u;
}

TensorBuffer allocate_for(const rkv_tensor &t, int32_t entries, const int32_t *num_tokens,
                          const int64_t *token_offsets, bool uses_tokens) {
    TensorBuffer buffer;
    buffer.dtype = dtype_bytes(t.dtype) == 4 || int(t.dtype) < 0 || int(t.dtype) > 2 ? RKV_DTYPE_F32 : t.dtype;
    const __int128 last = tensor_last_index(t, entries, num_tokens, token_offsets, uses_tokens);
    buffer.elements = last < 0 || last >= (__int128(1) << 24) ? 1 : int64_t(last) + 1;
    buffer.bytes.reset(new uint8_t[buffer.size_bytes()]);
    for (int64_t i = 0; i < buffer.elements; ++i)
        store_bits(buffer.bytes.get(), i, buffer.dtype, poison_bits(buffer.dtype));
    return buffer;
}

std::string describe_tensor(const rkv_tensor &t) {
    char text[160];
    static const char *dtypes[] = {"f32", "f16", "bf16"};
    const char *dtype = int(t.dtype) >= 0 && int(t.dtype) < 3 ? dtypes[t.dtype] : "bad-dtype";
    std::snprintf(text, sizeof text, "%s%s h%d d%d strides(seq %lld, token %lld, head %lld)",
                  t.data ? "" : "NULL ", dtype, t.num_heads, t.head_dim, (long long)t.stride_seq,
                  (long long)t.stride_token, (long long)t.stride_head);
    return text;
}

}  // namespace fuzz
