/* IEEE half (f16) and bfloat16 from and to float, in portable C: round to
 * nearest even, overflow to infinity, subnormals kept, NaN stays a quiet NaN.
 * Written from the formats' definitions, not from librkv's own conversions
 * (src/dtype.h), so that tests check the library rather than repeat it; and
 * without _Float16, which clang 14 lacks on x86. */
#ifndef RKV_TEST_HALF_H
#define RKV_TEST_HALF_H

#include <stdint.h>
#include <string.h>

static inline uint32_t half_float_bits(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    return u;
}

static inline float half_bits_float(uint32_t u) {
    float x;
    memcpy(&x, &u, 4);
    return x;
}

/* Shift `mantissa` right by `shift` bits, rounding to nearest even. */
static inline uint32_t half_round_shift(uint32_t mantissa, uint32_t shift) {
    if (shift > 31) return 0;
    const uint32_t kept = mantissa >> shift;
    const uint32_t rest = mantissa & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1u);
    return kept + (rest > halfway || (rest == halfway && (kept & 1u)));
}

static inline uint16_t f16_from_float(float x) {
    const uint32_t u = half_float_bits(x);
    const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    const uint32_t magnitude = u & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((magnitude >> 13) & 0x1ffu));
    if (magnitude >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520: rounds past 65504 */
    if (magnitude >= 0x38800000u) /* normal half: rebias the exponent (127 -> 15), round 13 bits away */
        return (uint16_t)(sign | half_round_shift(magnitude - 0x38000000u, 13));
    /* subnormal half (or zero): units of 2^-24 */
    const uint32_t exponent = magnitude >> 23;
    if (exponent == 0) return sign; /* float subnormals are far below 2^-25 */
    const uint32_t mantissa = (magnitude & 0x7fffffu) | 0x800000u;
    return (uint16_t)(sign | half_round_shift(mantissa, 126u - exponent));
}

static inline float f16_to_float(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exponent = (h >> 10) & 0x1fu;
    const uint32_t mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return half_bits_float(sign | 0x7f800000u | (mantissa << 13));
    if (exponent != 0) return half_bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
    /* zero or subnormal: mantissa * 2^-24, exact in float */
    const float value = (float)mantissa * (1.0f / 16777216.0f);
    return sign ? -value : value;
}

static inline uint16_t bf16_from_float(float x) {
    const uint32_t u = half_float_bits(x);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u);
    return (uint16_t)half_round_shift(u, 16); /* a carry into the exponent is the correct rounding */
}

static inline float bf16_to_float(uint16_t h) { return half_bits_float((uint32_t)h << 16); }

#endif /* RKV_TEST_HALF_H */
