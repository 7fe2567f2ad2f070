// The GPU's FP8 conversions against the CPU's (core/fp8.h), the oracle the
// CPU backend quantises with:
//   - cvt.rn.satfinite.e4m3x2.f32 (__nv_cvt_float_to_fp8(x, __NV_SATFINITE,
//     __NV_E4M3), what the append kernel stores) against float_to_fp8_e4m3 on
//     every one of the 2^32 float32 bit patterns (the CPU test tests/test_fp8.cpp
//     checks float_to_fp8_e4m3 itself against a reference on the same patterns;
//     here the same source is compiled for the device, so both run on the GPU);
//   - the decoding of every byte (cvt.f16x2.e4m3x2, what attention and the
//     scoring read) against fp8_e4m3_to_float;
//   - the scale rule is the same source on both sides (fp8_scale_exponent).
// Mismatches are counted per kind of input, with the first examples printed,
// so a failure says what differs. RKV_GPU_TEST_SMALL: every 4099th pattern.
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "core/fp8.h"

extern "C" {
#include "gpu_util.h"
}

namespace {

enum Kind { kNan, kSaturating, kNormal, kSubnormal, kUnderflow, kKinds };
const char *const kKindNames[kKinds] = {"NaN", "|x| >= 448", "normal", "subnormal", "rounds to zero"};
constexpr int kExamples = 8;

struct Mismatches {
    unsigned long long count[kKinds];
    unsigned examples;
    uint32_t bits[kExamples];
    uint8_t hardware[kExamples], software[kExamples];
};

__device__ int kind_of(uint32_t bits) {
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude > 0x7f800000u) return kNan;
    if (magnitude >= 0x43e00000u) return kSaturating;
    if (magnitude >= 0x3c800000u) return kNormal;
    if (magnitude > 0x3a800000u) return kSubnormal;
    return kUnderflow;
}

// Patterns first, first + stride, ... (count of them).
__global__ void compare_encodings(uint64_t first, uint64_t stride, uint64_t count, Mismatches *out) {
    for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < count; i += uint64_t(gridDim.x) * blockDim.x) {
        const uint32_t bits = uint32_t(first + i * stride);
        const float x = __uint_as_float(bits);
        const uint8_t hardware = uint8_t(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3));
        const uint8_t software = rkv::float_to_fp8_e4m3(x);
        if (hardware == software) continue;
        atomicAdd(&out->count[kind_of(bits)], 1ull);
        const unsigned slot = atomicAdd(&out->examples, 1u);
        if (slot < kExamples) {
            out->bits[slot] = bits;
            out->hardware[slot] = hardware;
            out->software[slot] = software;
        }
    }
}

// Every byte through the hardware's decoding (as attention reads it) and the CPU's.
__global__ void decode_bytes(float *hardware, float *software) {
    const int code = threadIdx.x;
    hardware[code] = __half2float(__half(__nv_cvt_fp8_to_halfraw(__nv_fp8_storage_t(code), __NV_E4M3)));
    software[code] = rkv::fp8_e4m3_to_float(uint8_t(code));
}

double as_float(uint32_t bits) {
    float x;
    std::memcpy(&x, &bits, 4);
    return double(x);
}

void test_encode_every_float32(void **) {
    Mismatches *device = nullptr;
    assert_int_equal(cudaMalloc(&device, sizeof(Mismatches)), cudaSuccess);
    assert_int_equal(cudaMemset(device, 0, sizeof(Mismatches)), cudaSuccess);
    const uint64_t stride = gpu_small() ? 4099 : 1;
    const uint64_t count = ((1ull << 32) + stride - 1) / stride;
    compare_encodings<<<4096, 256>>>(0, stride, count, device);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    Mismatches host;
    gpu_download(&host, device, sizeof host);
    cudaFree(device);
    unsigned long long total = 0;
    for (int k = 0; k < kKinds; ++k) {
        total += host.count[k];
        if (host.count[k]) print_error("%llu mismatches where the input is %s\n", host.count[k], kKindNames[k]);
    }
    for (unsigned i = 0; i < host.examples && i < unsigned(kExamples); ++i)
        print_error("  float bits 0x%08x (%.9g): GPU 0x%02x, CPU 0x%02x\n", host.bits[i], as_float(host.bits[i]),
                    host.hardware[i], host.software[i]);
    print_message("cvt.rn.satfinite.e4m3x2.f32 against float_to_fp8_e4m3: %llu float32 patterns, %llu differ\n",
                  (unsigned long long)count, total);
    assert_int_equal(total, 0);
}

void test_decode_every_byte(void **) {
    float *hardware = static_cast<float *>(gpu_alloc(256 * 4)), *software = static_cast<float *>(gpu_alloc(256 * 4));
    decode_bytes<<<1, 256>>>(hardware, software);
    assert_int_equal(cudaDeviceSynchronize(), cudaSuccess);
    float a[256], b[256];
    gpu_download(a, hardware, sizeof a);
    gpu_download(b, software, sizeof b);
    gpu_free(hardware);
    gpu_free(software);
    int differ = 0;
    for (int code = 0; code < 256; ++code) {
        const bool same = (std::isnan(a[code]) && std::isnan(b[code])) || (a[code] == b[code] &&
                                                                            std::signbit(a[code]) == std::signbit(b[code]));
        if (!same) {
            print_error("byte 0x%02x: GPU %.9g, CPU %.9g\n", code, double(a[code]), double(b[code]));
            ++differ;
        }
    }
    assert_int_equal(differ, 0);
}

}  // namespace

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_every_byte),
        cmocka_unit_test(test_encode_every_float32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
