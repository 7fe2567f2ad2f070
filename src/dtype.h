// Dtypes: sizes, names and scalar conversions to and from float.
// Conversions round to nearest even and keep NaN a NaN, as hardware does.
// FP8 E4M3 is a storage dtype only: its rows carry a scale (core/fp8.h), and
// quantize_row_fp8 / dequantize_row_fp8 convert whole rows.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/fp8.h"
#include "rkv/rkv.h"

namespace rkv {

// Dtypes of the tensors a caller passes (rkv_tensor): not FP8.
inline bool tensor_dtype_is_valid(int dtype) {
    return dtype == RKV_DTYPE_F32 || dtype == RKV_DTYPE_F16 || dtype == RKV_DTYPE_BF16;
}

inline size_t dtype_size(rkv_dtype dtype) {
    switch (dtype) {
        case RKV_DTYPE_F32: return 4;
        case RKV_DTYPE_F16:
        case RKV_DTYPE_BF16: return 2;
        case RKV_DTYPE_FP8_E4M3: return 1;
    }
    return 4;
}

inline const char *dtype_name(rkv_dtype dtype) {
    switch (dtype) {
        case RKV_DTYPE_F32: return "f32";
        case RKV_DTYPE_F16: return "f16";
        case RKV_DTYPE_BF16: return "bf16";
        case RKV_DTYPE_FP8_E4M3: return "fp8_e4m3";
    }
    return "unknown";
}

inline bool is_fp8(rkv_dtype dtype) { return dtype == RKV_DTYPE_FP8_E4M3; }

// The dtype the query window is kept in: the storage dtype, but BF16 for FP8
// storage (queries are few, and scoring reads them at bf16 precision).
inline rkv_dtype query_dtype(rkv_dtype storage) { return is_fp8(storage) ? RKV_DTYPE_BF16 : storage; }

inline uint32_t float_bits(float value) {
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    return bits;
}

inline float bits_float(uint32_t bits) {
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
}

inline float bf16_to_float(uint16_t h) { return bits_float(uint32_t(h) << 16); }

inline uint16_t float_to_bf16(float value) {
    uint32_t bits = float_bits(value);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40u);  // quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return uint16_t(bits >> 16);
}

inline float f16_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    if (mantissa == 0) return bits_float(sign);
    // subnormal half: renormalise
    int shift = 0;
    while ((mantissa & 0x400u) == 0) {
        mantissa <<= 1;
        ++shift;
    }
    mantissa &= 0x3ffu;
    return bits_float(sign | (uint32_t(113 - shift) << 23) | (mantissa << 13));
}

inline uint16_t float_to_f16(float value) {
    const uint32_t bits = float_bits(value);
    const uint16_t sign = uint16_t((bits >> 16) & 0x8000u);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return uint16_t(sign | 0x7e00u);          // NaN
    if (magnitude >= 0x477ff000u) return uint16_t(sign | 0x7c00u);         // rounds to inf
    if (magnitude < 0x38800000u) {                                         // subnormal or zero
        if (magnitude < 0x33000000u) return sign;                          // below half the least subnormal
        const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
        const int shift = 126 - int(magnitude >> 23);                      // 14 .. 24
        const uint32_t halfway = 1u << (shift - 1);
        const uint32_t remainder = mantissa & ((1u << shift) - 1u);
        uint32_t result = mantissa >> shift;
        if (remainder > halfway || (remainder == halfway && (result & 1u))) ++result;
        return uint16_t(sign | result);
    }
    uint32_t result = ((magnitude >> 13) - (112u << 10));
    const uint32_t remainder = magnitude & 0x1fffu;
    if (remainder > 0x1000u || (remainder == 0x1000u && (result & 1u))) ++result;
    return uint16_t(sign | result);
}

// Element `index` of a buffer of `dtype`, as float (FP8: the byte's value,
// before its row's scale).
inline float load_as_float(const void *data, rkv_dtype dtype, int64_t index) {
    switch (dtype) {
        case RKV_DTYPE_F32: return static_cast<const float *>(data)[index];
        case RKV_DTYPE_F16: return f16_to_float(static_cast<const uint16_t *>(data)[index]);
        case RKV_DTYPE_BF16: return bf16_to_float(static_cast<const uint16_t *>(data)[index]);
        case RKV_DTYPE_FP8_E4M3: return fp8_e4m3_to_float(static_cast<const uint8_t *>(data)[index]);
    }
    return 0.0f;
}

inline void store_from_float(void *data, rkv_dtype dtype, int64_t index, float value) {
    switch (dtype) {
        case RKV_DTYPE_F32: static_cast<float *>(data)[index] = value; return;
        case RKV_DTYPE_F16: static_cast<uint16_t *>(data)[index] = float_to_f16(value); return;
        case RKV_DTYPE_BF16: static_cast<uint16_t *>(data)[index] = float_to_bf16(value); return;
        case RKV_DTYPE_FP8_E4M3: static_cast<uint8_t *>(data)[index] = float_to_fp8_e4m3(value); return;
    }
}

// One row of `count` floats as FP8 E4M3 bytes; returns its scale (core/fp8.h):
// out[i] = fp8(x[i] / scale), scale = 2^e the smallest with max|x| <= 448 * 2^e.
inline float quantize_row_fp8(const float *x, int64_t count, uint8_t *out) {
    float amax = 0.0f;
    for (int64_t i = 0; i < count; ++i) amax = std::fmax(amax, std::fabs(x[i]));  // fmax: NaN ignored
    const int32_t e = fp8_scale_exponent(amax);
    const float inverse = fp8_pow2(-e);
    for (int64_t i = 0; i < count; ++i) out[i] = float_to_fp8_e4m3(x[i] * inverse);
    return fp8_pow2(e);
}

// The value of every E4M3 byte.
inline const float *fp8_values() {
    static const struct Table {
        float value[256];
        Table() {
            for (int i = 0; i < 256; ++i) value[i] = fp8_e4m3_to_float(uint8_t(i));
        }
    } table;
    return table.value;
}

// x[i] = fp8[i] * scale (exact in float32).
inline void dequantize_row_fp8(const uint8_t *fp8, float scale, int64_t count, float *x) {
    const float *values = fp8_values();
    for (int64_t i = 0; i < count; ++i) x[i] = values[fp8[i]] * scale;
}

// Convert `count` contiguous elements between dtypes (same dtype: a copy).
inline void convert_row(const void *src, rkv_dtype src_dtype, void *dst, rkv_dtype dst_dtype,
                        int64_t count) {
    if (src_dtype == dst_dtype) {
        std::memcpy(dst, src, size_t(count) * dtype_size(src_dtype));
        return;
    }
    for (int64_t i = 0; i < count; ++i)
        store_from_float(dst, dst_dtype, i, load_as_float(src, src_dtype, i));
}

}  // namespace rkv
