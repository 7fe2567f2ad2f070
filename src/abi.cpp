#include "abi.h"

#include <cstring>

#include "error.h"
#include "params.h"

namespace rkv {

namespace {

// --- 0.1.0 (git show 72f41ab:include/rkv/rkv.h) -------------------------------

struct TensorV0_1 {
    void *data;
    rkv_dtype dtype;
    int32_t num_heads;
    int32_t head_dim;
    int64_t stride_seq;
    int64_t stride_token;
    int64_t stride_head;
};

struct AppendArgsV0_1 {
    size_t struct_size;
    int32_t layer;
    int32_t num_seqs;
    const int32_t *seq_ids;
    const int32_t *num_tokens;
    const int64_t *token_offsets;
    TensorV0_1 k;
    TensorV0_1 v;
    TensorV0_1 q;
    uint32_t flags;
};

// 0.1's rkv_cache_params is the current one up to auto_compress; its sizeof
// rounds that up to the struct's alignment.
constexpr size_t kParamsFieldsV0_1 = offsetof(rkv_cache_params, max_rollback);
constexpr size_t kParamsSizeV0_1 = (kParamsFieldsV0_1 + alignof(rkv_cache_params) - 1) /
                                   alignof(rkv_cache_params) * alignof(rkv_cache_params);

static_assert(kParamsSizeV0_1 == 112, "0.1's rkv_cache_params was 112 bytes on LP64");
static_assert(sizeof(rkv_cache_params) == 120, "0.2's rkv_cache_params is 120 bytes on LP64");
static_assert(sizeof(rkv_cache_params) != kParamsSizeV0_1, "every version has its own sizeof");
static_assert(sizeof(TensorV0_1) == 48 && sizeof(AppendArgsV0_1) == 192, "0.1's layouts on LP64");
static_assert(sizeof(rkv_append_args) == 224, "0.2's rkv_append_args is 224 bytes on LP64");
static_assert(offsetof(rkv_tensor, extent) == sizeof(TensorV0_1), "extent follows 0.1's fields");

// Bytes of the fields of the version whose sizeof is struct_size; 0 if unknown.
size_t params_field_bytes(size_t struct_size) {
    if (struct_size == sizeof(rkv_cache_params)) return sizeof(rkv_cache_params);
    if (struct_size == kParamsSizeV0_1) return kParamsFieldsV0_1;
    return 0;
}

// The views of 0.1 end where 0.2 added the FP8 scales.
constexpr size_t kSeqViewSizeV0_1 = offsetof(rkv_seq_view, k_scale);
constexpr size_t kLayerViewSizeV0_1 = offsetof(rkv_layer_view, k_scale);
static_assert(kSeqViewSizeV0_1 == 88 && kLayerViewSizeV0_1 == 112, "0.1's views on LP64");

rkv_tensor tensor_from(const TensorV0_1 &t) {
    rkv_tensor out{};
    out.data = t.data;
    out.dtype = t.dtype;
    out.num_heads = t.num_heads;
    out.head_dim = t.head_dim;
    out.stride_seq = t.stride_seq;
    out.stride_token = t.stride_token;
    out.stride_head = t.stride_head;
    out.extent = 0;
    return out;
}

[[noreturn]] void fail_size(size_t struct_size, const char *function, const char *struct_name,
                            size_t current, size_t earlier) {
    if (struct_size == 0)
        fail(RKV_ERR_STRUCT_SIZE, "%s: %s.struct_size is 0; set it to sizeof(%s)", function,
             struct_name, struct_name);
    fail(RKV_ERR_STRUCT_SIZE,
         "%s: %s.struct_size is %zu but this librkv (%s) knows %zu (this version) and %zu "
         "(0.1.0): set it to sizeof(%s), and check that the header and the library come from "
         "the same release",
         function, struct_name, struct_size, rkv_version_string(), current, earlier, struct_name);
}

}  // namespace

void check_struct_size(size_t struct_size, size_t expected, const char *function,
                       const char *struct_name) {
    if (struct_size == expected) return;
    if (struct_size == 0)
        fail(RKV_ERR_STRUCT_SIZE, "%s: %s.struct_size is 0; set it to sizeof(%s)", function,
             struct_name, struct_name);
    fail(RKV_ERR_STRUCT_SIZE,
         "%s: %s.struct_size is %zu but this librkv (%s) knows %zu: set it to sizeof(%s), and "
         "check that the header and the library come from the same release",
         function, struct_name, struct_size, rkv_version_string(), expected, struct_name);
}

void check_view_size(size_t struct_size, bool layer_view, const char *function) {
    const size_t current = layer_view ? sizeof(rkv_layer_view) : sizeof(rkv_seq_view);
    const size_t earlier = layer_view ? kLayerViewSizeV0_1 : kSeqViewSizeV0_1;
    if (struct_size != current && struct_size != earlier)
        fail_size(struct_size, function, layer_view ? "rkv_layer_view" : "rkv_seq_view", current, earlier);
}

namespace {
template <typename View>
void write_view_fields(const View &full, View *out) {
    const size_t size = out->struct_size;  // checked by check_view_size
    constexpr size_t first = sizeof(full.struct_size);
    std::memcpy(reinterpret_cast<char *>(out) + first, reinterpret_cast<const char *>(&full) + first, size - first);
}
}  // namespace

void write_view(const rkv_seq_view &full, rkv_seq_view *out) { write_view_fields(full, out); }
void write_view(const rkv_layer_view &full, rkv_layer_view *out) { write_view_fields(full, out); }

void check_params_size(size_t struct_size, const char *function) {
    if (params_field_bytes(struct_size) == 0)
        fail_size(struct_size, function, "rkv_cache_params", sizeof(rkv_cache_params), kParamsSizeV0_1);
}

rkv_cache_params read_params(const rkv_cache_params *params, const char *function) {
    require_non_null(params, function, "params");
    check_params_size(params->struct_size, function);
    rkv_cache_params full;
    params_fill_default(&full);
    std::memcpy(static_cast<void *>(&full), params, params_field_bytes(params->struct_size));
    full.struct_size = sizeof(rkv_cache_params);
    return full;
}

void write_params(const rkv_cache_params &full, rkv_cache_params *out, size_t struct_size,
                  const char *function) {
    check_params_size(struct_size, function);
    // Every field after struct_size, up to the version's last one.
    constexpr size_t first = sizeof(full.struct_size);
    std::memcpy(reinterpret_cast<char *>(out) + first, reinterpret_cast<const char *>(&full) + first,
                params_field_bytes(struct_size) - first);
    out->struct_size = struct_size;
}

bool params_has_field(size_t struct_size, rkv_param param) {
    if (struct_size == sizeof(rkv_cache_params)) return true;
    return param != RKV_PARAM_MAX_ROLLBACK;  // 0.1 had every key but this one
}

rkv_append_args read_append_args(const rkv_append_args *args, const char *function) {
    require_non_null(args, function, "args");
    if (args->struct_size == sizeof(rkv_append_args)) return *args;
    if (args->struct_size != sizeof(AppendArgsV0_1))
        fail_size(args->struct_size, function, "rkv_append_args", sizeof(rkv_append_args),
                  sizeof(AppendArgsV0_1));
    AppendArgsV0_1 old;
    std::memcpy(&old, args, sizeof old);
    rkv_append_args out{};
    out.struct_size = sizeof(rkv_append_args);
    out.layer = old.layer;
    out.num_seqs = old.num_seqs;
    out.seq_ids = old.seq_ids;
    out.num_tokens = old.num_tokens;
    out.token_offsets = old.token_offsets;
    out.k = tensor_from(old.k);
    out.v = tensor_from(old.v);
    out.q = tensor_from(old.q);
    out.flags = old.flags;
    out.batch = nullptr;
    return out;
}

}  // namespace rkv
