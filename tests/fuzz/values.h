// Element values of the fuzzer's tensors: dtype conversions (from the formats'
// definitions, tests/common/half.h, not from librkv; E4M3 from core/fp8.h,
// which test_fp8 holds to a reference written from the format on every
// float32) and the data patterns that K, V and Q are drawn from.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "core/fp8.h"
#include "half.h"
#include "rkv/rkv.h"

namespace fuzz {

inline size_t dtype_bytes(rkv_dtype dtype) {
    return dtype == RKV_DTYPE_F32 ? 4 : dtype == RKV_DTYPE_FP8_E4M3 ? 1 : 2;
}

// The dtype of the bits the model keeps for a storage dtype: FP8 rows are
// modelled by their values (fp8 * scale, exact in float32).
inline rkv_dtype model_dtype(rkv_dtype storage) {
    return storage == RKV_DTYPE_FP8_E4M3 ? RKV_DTYPE_F32 : storage;
}

// An FP8 row as rkv.h defines it: the scale is the smallest power of two with
// max|x| <= 448 * scale (NaN ignored), each element fp8(x / scale), held as
// the value fp8 * scale. value_bits gets those values' float32 bits; returns
// the scale.
inline float fp8_row(const float *x, int32_t count, uint32_t *value_bits) {
    float amax = 0.0f;
    for (int32_t i = 0; i < count; ++i) amax = std::fmax(amax, std::fabs(x[i]));
    const float scale = rkv::fp8_pow2(rkv::fp8_scale_exponent(amax));
    for (int32_t i = 0; i < count; ++i)
        value_bits[i] = rkv::fp8_float_bits(rkv::fp8_e4m3_to_float(rkv::float_to_fp8_e4m3(x[i] / scale)) * scale);
    return scale;
}

// The value an FP8 byte holds with its row's scale, as float32 bits.
inline uint32_t fp8_value_bits(uint8_t byte, float scale) {
    return rkv::fp8_float_bits(rkv::fp8_e4m3_to_float(byte) * scale);
}

// The bits of x converted to `dtype` (f32 bits, or 16-bit patterns in the low half).
inline uint32_t to_bits(float x, rkv_dtype dtype) {
    switch (dtype) {
        case RKV_DTYPE_F16: return f16_from_float(x);
        case RKV_DTYPE_BF16: return bf16_from_float(x);
        default: return half_float_bits(x);
    }
}

inline float from_bits(uint32_t bits, rkv_dtype dtype) {
    switch (dtype) {
        case RKV_DTYPE_F16: return f16_to_float(uint16_t(bits));
        case RKV_DTYPE_BF16: return bf16_to_float(uint16_t(bits));
        default: return half_bits_float(bits);
    }
}

// Raw bits of element `index` of a buffer of `dtype`.
inline uint32_t load_bits(const void *data, int64_t index, rkv_dtype dtype) {
    if (dtype == RKV_DTYPE_F32) {
        uint32_t bits;
        std::memcpy(&bits, static_cast<const char *>(data) + index * 4, 4);
        return bits;
    }
    uint16_t bits;
    std::memcpy(&bits, static_cast<const char *>(data) + index * 2, 2);
    return bits;
}

inline void store_bits(void *data, int64_t index, rkv_dtype dtype, uint32_t bits) {
    if (dtype == RKV_DTYPE_F32) {
        std::memcpy(static_cast<char *>(data) + index * 4, &bits, 4);
    } else {
        const uint16_t half = uint16_t(bits);
        std::memcpy(static_cast<char *>(data) + index * 2, &half, 2);
    }
}

inline float load(const void *data, int64_t index, rkv_dtype dtype) {
    return from_bits(load_bits(data, index, dtype), dtype);
}

// Equal bits, or both NaN (a conversion may choose any NaN payload).
inline bool same_bits(uint32_t a, uint32_t b, rkv_dtype dtype) {
    return a == b || (std::isnan(from_bits(a, dtype)) && std::isnan(from_bits(b, dtype)));
}

// The bits a storage of `storage` dtype must hold for an input element of
// `input` dtype with bits `input_bits`: inputs are widened to f32 (exact) and
// rounded to the storage dtype (round to nearest even).
inline uint32_t stored_bits(uint32_t input_bits, rkv_dtype input, rkv_dtype storage) {
    return to_bits(from_bits(input_bits, input), storage);
}

inline uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

inline uint64_t hash_of(std::initializer_list<uint64_t> parts) {
    uint64_t h = 0x5eed;
    for (uint64_t part : parts) h = mix64(h ^ part);
    return h;
}

// Uniform in [-1, 1).
inline float unit(uint64_t h) { return float(h >> 40) * (2.0f / 16777216.0f) - 1.0f; }

enum class Tensor : uint8_t { K, V, Q, AttendQ };

// How a program's values look; each one stresses a different part of the scoring.
enum class Pattern : uint8_t {
    Random,       // uniform in [-2, 2)
    TiedKeys,     // every key (and query) equal: scores tie everywhere
    FewLevels,    // keys from {-1, 0, 1}: many exact duplicates
    NonFinite,    // random with NaN and +-Inf sprinkled in K, V and Q
    Magnitudes,   // 2^-30 .. 2^30: f16 overflow to Inf, underflow to subnormals and zero
    Redundant,    // keys along two directions: near-duplicates above any threshold
    ZeroKeys,     // zero keys (norm 0) and random values
    SameHeads,    // every head sees the same data
    Count
};

// The values of one row (a head of the token at `position` of (seq, layer)):
// row(e) is element e. `stream` separates a sequence's lives (it changes at
// each reset) and caches.
class DataRow {
 public:
    DataRow(Pattern pattern, uint64_t salt, uint64_t stream, int32_t layer, Tensor tensor, int32_t head,
            int64_t position)
        : pattern_(pattern),
          salt_(salt),
          position_(position),
          tensor_(tensor),
          key_(hash_of({salt, stream, uint64_t(layer), uint64_t(tensor),
                        uint64_t(pattern == Pattern::SameHeads ? 0 : head), uint64_t(position)})) {}

    float operator()(int32_t e) const {
        const bool scored = tensor_ != Tensor::V;  // keys and queries decide the scores
        const uint64_t h = mix64(key_ ^ uint64_t(e));
        const float random = 2.0f * unit(h);
        switch (pattern_) {
            case Pattern::TiedKeys: return scored ? 0.5f + 0.01f * float(e % 3) : random;
            case Pattern::FewLevels: return scored ? float(int(h % 3) - 1) : random;
            case Pattern::NonFinite: {
                const uint32_t pick = uint32_t(h >> 8) % 64;
                if (pick == 0) return NAN;
                if (pick == 1) return INFINITY;
                if (pick == 2) return -INFINITY;
                return random;
            }
            case Pattern::Magnitudes: return std::ldexp(random, int((h >> 16) % 61) - 30);
            case Pattern::Redundant: {
                if (!scored) return random;
                const uint64_t direction = hash_of({salt_, uint64_t(position_) % 2, uint64_t(e)});
                return unit(direction) * (1.0f + 0.001f * unit(h));
            }
            case Pattern::ZeroKeys: return tensor_ == Tensor::K && (position_ % 3 != 2) ? 0.0f : random;
            default: return random;
        }
    }

 private:
    Pattern pattern_;
    uint64_t salt_;
    int64_t position_;
    Tensor tensor_;
    uint64_t key_;
};

}  // namespace fuzz
