// FP8 E4M3 storage on the device (core/fp8.h defines the format, the
// power-of-two row scale and the CPU's conversion): the storage-type dispatch
// that includes FP8, conversions through the hardware's cvt instructions
// (sm_89+), the row scale of append, and the compaction of scales; fp8.cu
// dequantises the keys the scoring kernels read.
#pragma once

#include <cuda_fp8.h>

#include "common.cuh"
#include "core/fp8.h"

namespace rkv::kernels {

using fp8_e4m3 = __nv_fp8_e4m3;

// Compile-time dispatch over every storage dtype, FP8 included: the body sees `T`.
#define RKV_DISPATCH_STORAGE(dtype, T, ...)                            \
    switch (dtype) {                                                   \
        case RKV_DTYPE_F32: {                                          \
            using T = float;                                           \
            __VA_ARGS__                                                \
        } break;                                                       \
        case RKV_DTYPE_F16: {                                          \
            using T = __half;                                          \
            __VA_ARGS__                                                \
        } break;                                                       \
        case RKV_DTYPE_FP8_E4M3: {                                     \
            using T = ::rkv::kernels::fp8_e4m3;                        \
            __VA_ARGS__                                                \
        } break;                                                       \
        default: {                                                     \
            using T = __nv_bfloat16;                                   \
            __VA_ARGS__                                                \
        } break;                                                       \
    }

template <typename T>
inline constexpr bool kIsFp8 = false;
template <>
inline constexpr bool kIsFp8<fp8_e4m3> = true;

// The byte's E4M3 value (before its row's scale).
__device__ __forceinline__ float fp8_byte_value(__nv_fp8_storage_t byte) {
    return __half2float(__half(__nv_cvt_fp8_to_halfraw(byte, __NV_E4M3)));
}
__device__ __forceinline__ float to_float(fp8_e4m3 x) { return fp8_byte_value(x.__x); }

// x -> E4M3 byte: round to nearest even, saturating (cvt.rn.satfinite.e4m3x2.f32).
__device__ __forceinline__ uint8_t float_to_fp8(float x) {
    return uint8_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
}

// 4 E4M3 bytes (one 32-bit word) as floats.
__device__ __forceinline__ void unpack_fp8x4(uint32_t word, float *out) {
    const __half2 lo = __half2(__nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(word & 0xffffu), __NV_E4M3));
    const __half2 hi = __half2(__nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(word >> 16), __NV_E4M3));
    const float2 a = __half22float2(lo), b = __half22float2(hi);
    out[0] = a.x;
    out[1] = a.y;
    out[2] = b.x;
    out[3] = b.y;
}

// 16 bytes of E4M3 as 16 floats, 8 bytes as 8 (the unpack16 of common.cuh for FP8).
__device__ __forceinline__ void unpack16(const uint4 &raw, float *out, fp8_e4m3) {
    unpack_fp8x4(raw.x, out);
    unpack_fp8x4(raw.y, out + 4);
    unpack_fp8x4(raw.z, out + 8);
    unpack_fp8x4(raw.w, out + 12);
}
__device__ __forceinline__ void unpack8(const uint2 &raw, float *out, fp8_e4m3) {
    unpack_fp8x4(raw.x, out);
    unpack_fp8x4(raw.y, out + 4);
}

// The scale of a row whose largest magnitude is amax, and its inverse
// (core/fp8.h: the same power of two as the CPU's).
struct Fp8Scale {
    float scale, inverse;
};
__device__ __forceinline__ Fp8Scale fp8_scale(float amax) {
    const int32_t e = fp8_scale_exponent(amax);
    return Fp8Scale{fp8_pow2(e), fp8_pow2(-e)};
}

// ---------------------------------------------------------------------------
// compression

// The scales of the kept rows follow them: src[i] -> i for i < keep, through
// two [keep] float arrays of shared memory (select_compact_kernel's, free once
// the positions are written). Every thread of the block calls it.
__device__ __forceinline__ void compact_scales(const CacheLayer &c, int64_t slots, const int32_t *src, int32_t keep,
                                               float *k_copy, float *v_copy) {
    __syncthreads();  // the shared copies of positions and state are written out
    for (int32_t i = threadIdx.x; i < keep; i += blockDim.x) {
        k_copy[i] = c.k_scale[slots + src[i]];
        v_copy[i] = c.v_scale[slots + src[i]];
    }
    __syncthreads();
    for (int32_t i = threadIdx.x; i < keep; i += blockDim.x) {
        c.k_scale[slots + i] = k_copy[i];
        c.v_scale[slots + i] = v_copy[i];
    }
}

}  // namespace rkv::kernels
