// Caller structs of every header version the library accepts (rkv.h, "ABI:
// how structs grow"). The entry points turn what a caller passed into the
// current layout here, once, so nothing past this file knows about versions:
//   - a struct of an earlier version is read up to its last field; the fields
//     it lacks take their defaults;
//   - a struct the library fills is written up to the caller's last field;
//   - rkv_append_args of 0.1 holds 0.1's rkv_tensor (no extent): its tensors
//     are decoded with extent 0 (unchecked).
// The 0.1 layouts below are copies of `git show 72f41ab:include/rkv/rkv.h`,
// pinned by static_asserts in abi.cpp.
#pragma once

#include <cstddef>
#include <cstdint>

#include "rkv/rkv.h"

namespace rkv {

// rkv_cache_params of any known size as the current layout (defaults for the
// fields its version lacks; struct_size becomes the current one). Throws
// RKV_ERR_STRUCT_SIZE for unknown sizes and RKV_ERR_INVALID_ARGUMENT for NULL.
rkv_cache_params read_params(const rkv_cache_params *params, const char *function);
// Writes `full` into the caller's struct up to the last field of the version
// its struct_size names (struct_size itself is left as the caller set it).
void write_params(const rkv_cache_params &full, rkv_cache_params *out, size_t struct_size,
                  const char *function);
// True if the version of struct_size has the field of `param`.
bool params_has_field(size_t struct_size, rkv_param param);
// Throws RKV_ERR_STRUCT_SIZE unless struct_size is a known rkv_cache_params size.
void check_params_size(size_t struct_size, const char *function);

// rkv_append_args of any known size as the current layout.
rkv_append_args read_append_args(const rkv_append_args *args, const char *function);

// rkv_seq_view and rkv_layer_view, which the library fills: 0.1's end before
// the FP8 scale fields. check_view_size throws RKV_ERR_STRUCT_SIZE for other
// sizes; write_view copies `full` up to the last field of the caller's version
// (struct_size itself stays as the caller set it).
void check_view_size(size_t struct_size, bool layer_view, const char *function);
void write_view(const rkv_seq_view &full, rkv_seq_view *out);
void write_view(const rkv_layer_view &full, rkv_layer_view *out);

// Struct sizes this library knows, for the structs that have one version so
// far (0.1's and 0.2's are equal): throws RKV_ERR_STRUCT_SIZE otherwise.
void check_struct_size(size_t struct_size, size_t expected, const char *function,
                       const char *struct_name);

}  // namespace rkv
