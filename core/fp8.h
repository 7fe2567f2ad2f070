// FP8 E4M3 storage of K and V, defined once for the host and the device.
//
// E4M3: 1 sign bit, 4 exponent bits (bias 7), 3 mantissa bits; no infinity;
// 0x7f and 0xff are NaN; the largest finite value is 448 (0x7e), the smallest
// subnormal 2^-9. A stored row (one token of one KV head, head_dim values) is
// the FP8 bytes plus one float32 scale, and its values are
//     x = fp8 * scale.
// The scale is a power of two: the smallest 2^e with amax <= 448 * 2^e, amax
// the row's largest magnitude. Dividing by a power of two is exact, so
// quantising is exactly one rounding (x / scale -> FP8), dequantising is exact
// in float32, and the dequantised keys are exactly representable in bfloat16
// (3 mantissa bits fit in 7): the CUDA backend scores them with its bf16
// tensor-core kernels, bit for bit the values the CPU backend scores.
// (E4M3 is a floating-point format: the scale only places the row's range,
// and a power of two costs at most one binade at the small end; measured in
// kernels/README.md.)
//
// float_to_fp8_e4m3 is the conversion written from this definition (round to
// nearest, ties to even, saturating to +-448, NaN to 0x7f): the CPU backend
// uses it, and it is the oracle the GPU's cvt.rn.satfinite.e4m3x2.f32
// (__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)) is tested against on
// every float32 bit pattern.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/host_device.h"

namespace rkv {

constexpr float kFp8Max = 448.0f;  // largest finite E4M3 value

RKV_HOST_DEVICE inline uint32_t fp8_float_bits(float value) {
#if defined(__CUDA_ARCH__)
    return __float_as_uint(value);
#else
    uint32_t bits;
    std::memcpy(&bits, &value, 4);
    return bits;
#endif
}

RKV_HOST_DEVICE inline float fp8_bits_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
    return __uint_as_float(bits);
#else
    float value;
    std::memcpy(&value, &bits, 4);
    return value;
#endif
}

// Round to nearest even, saturate to +-448, NaN -> 0x7f (the sign of a NaN is
// dropped, as the GPU's conversion does); zeros and underflows keep their sign.
RKV_HOST_DEVICE inline uint8_t float_to_fp8_e4m3(float x) {
    const uint32_t bits = fp8_float_bits(x);
    const uint8_t sign = uint8_t((bits >> 24) & 0x80u);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return 0x7f;                 // NaN
    if (magnitude >= 0x43e00000u) return uint8_t(sign | 0x7e);  // >= 448 (and inf): saturate
    if (magnitude >= 0x3c800000u) {                           // >= 2^-6: normal
        // exponent field (E + 7) and 3 mantissa bits, then round on the 20 bits below
        uint32_t code = (((magnitude >> 23) - 120u) << 3) | ((magnitude >> 20) & 7u);
        const uint32_t rest = magnitude & 0xfffffu, half = 0x80000u;
        if (rest > half || (rest == half && (code & 1u))) ++code;  // a carry moves into the exponent
        return uint8_t(sign | code);                          // <= 0x7e: magnitude < 448
    }
    if (magnitude <= 0x3a800000u) return sign;                // <= 2^-10 (half the least subnormal): 0
    // Subnormal: k * 2^-9 with k = round(|x| * 2^9); k = 8 is 2^-6, code 0x08.
    const uint32_t significand = (magnitude & 0x7fffffu) | 0x800000u;
    const uint32_t shift = 141u - (magnitude >> 23);          // 14 - E, E in -10 .. -7: 21 .. 24
    uint32_t k = significand >> shift;
    const uint32_t rest = significand & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rest > half || (rest == half && (k & 1u))) ++k;
    return uint8_t(sign | k);
}

// The value of an E4M3 byte (exact in float32).
RKV_HOST_DEVICE inline float fp8_e4m3_to_float(uint8_t v) {
    const uint32_t sign = uint32_t(v & 0x80u) << 24;
    const uint32_t exponent = (v >> 3) & 15u, mantissa = v & 7u;
    if (exponent == 15u && mantissa == 7u) return fp8_bits_float(0x7fc00000u);  // NaN
    if (exponent == 0u) {                                     // mantissa * 2^-9
        const float value = float(mantissa) * (1.0f / 512.0f);
        return sign ? -value : value;
    }
    return fp8_bits_float(sign | ((exponent + 120u) << 23) | (mantissa << 20));
}

// Exponent e of the scale 2^e of a row whose largest magnitude is `amax`
// (>= 0, from fmaxf over |x|, so NaNs are ignored): the smallest e with
// amax <= 448 * 2^e, kept within [-126, 126] so that the scale and its inverse
// are normal floats (an infinite amax gets 126). A row of zeros gets e = 0
// (scale 1).
RKV_HOST_DEVICE inline int32_t fp8_scale_exponent(float amax) {
    const uint32_t bits = fp8_float_bits(amax) & 0x7fffffffu;
    if (bits == 0u) return 0;
    const int32_t biased = int32_t(bits >> 23);
    if (biased == 0) return -126;  // a subnormal amax: any scale >= 2^-126 holds it
    if (biased == 255) return 126;  // infinity: no scale holds it; the largest (it saturates)
    // amax = m * 2^E, m in [1, 2); 448 = 1.75 * 2^8: e = E - 8, plus one if m > 1.75.
    int32_t e = biased - 127 - 8 + ((bits & 0x7fffffu) > 0x600000u ? 1 : 0);
    if (e < -126) e = -126;
    if (e > 126) e = 126;
    return e;
}

// 2^e and 2^-e as floats (|e| <= 126: normal).
RKV_HOST_DEVICE inline float fp8_pow2(int32_t e) { return fp8_bits_float(uint32_t(e + 127) << 23); }

}  // namespace rkv
