// Hopper warpgroup matrix multiply-accumulate (wgmma, sm_90a only): the
// shared-memory layout it reads, its matrix descriptors, the
// instructions (m64n128k16 and m64n64k16 f16/bf16 in, float32 accumulate;
// m64n128k32 int8 in, int32 accumulate) and the fences around them.
//
// Layout "SW128" (what TMA's 128-byte swizzle writes and what the descriptor
// below describes; K-major, i.e. the head_dim axis contiguous): a tile of R rows
// x D 16-bit elements is D/64 regions of R rows x 128 bytes. The 16-byte chunk
// c (elements 8c .. 8c+7) of row r sits in region c / 8 at
//   r * 128 + ((c % 8) XOR (r % 8)) * 16,
// so the 8 rows of a core matrix spread over all banks. Regions start 1024-byte
// aligned. One wgmma step reads 16 elements (32 bytes) of every row: the
// descriptor of step k starts at region k / 4, byte (k % 4) * 32; the hardware
// applies the XOR to the addresses it forms.
//
// Everything here exists only in the sm_90a pass (RKV_HAS_WGMMA); kernels that
// use it compile to a trap elsewhere and the host never launches them there
// (wgmma_supported in gram_wgmma.cu).
#pragma once

#include "common.cuh"

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define RKV_HAS_WGMMA 1
#else
#define RKV_HAS_WGMMA 0
#endif

namespace rkv::kernels {

// Byte offset of 16-byte chunk `chunk` of row `row` in an SW128 tile of `rows` rows.
__host__ __device__ constexpr uint32_t sw128_offset(int row, int chunk, int rows) {
    return uint32_t((chunk >> 3) * rows * 128 + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// Descriptor of an SW128 K-major operand starting at shared address `address`:
// 8-row core-matrix groups 1024 bytes apart (stride byte offset), the leading
// byte offset unused by swizzled K-major layouts (1 by convention), swizzle mode 1.
__device__ __forceinline__ uint64_t sw128_descriptor(uint32_t address) {
    return uint64_t((address & 0x3FFFF) >> 4) | (uint64_t(1) << 16) | (uint64_t(1024 >> 4) << 32) |
           (uint64_t(1) << 62);
}

#if RKV_HAS_WGMMA

// Orders this thread's earlier register and shared-memory accesses before the
// warpgroup's next wgmma.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most kPending committed groups are in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}
// Makes this thread's generic-proxy writes to shared memory (st.shared,
// cp.async) visible to the async proxy that wgmma reads through.
__device__ __forceinline__ void fence_async_shared() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// The accumulator registers are written asynchronously: after wgmma_wait, this
// tells the compiler they changed, so no read of them moves above the wait.
template <int N>
__device__ __forceinline__ void fence_accumulators(float (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

#define RKV_WGMMA_M64N128K16(TYPE)                                                                                \
    asm volatile(                                                                                                 \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                                              \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " {"                                         \
        "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                  \
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                                        \
        "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                                        \
        "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"                                         \
        "}, %64, %65, p, 1, 1, 0, 0;\n}\n"                                                                        \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),         \
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),   \
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), \
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), \
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), \
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), \
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])  \
        : "l"(a), "l"(b), "r"(accumulate))

// D[64 x 128] (+)= A[64 x 16] * B[128 x 16]^T, both operands K-major in shared
// memory (descriptors a, b); accumulate 0 overwrites D. Accumulator layout of
// thread (warp w of the warpgroup, lane = 4 g + q): d[4 s + e] is row
// 16 w + g + 8 (e / 2), column 8 s + 2 q + (e % 2), for s = 0 .. 15.
template <typename T>
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t a, uint64_t b, int accumulate);

template <>
__device__ __forceinline__ void wgmma_m64n128k16<__nv_bfloat16>(float (&d)[64], uint64_t a, uint64_t b,
                                                                 int accumulate) {
    RKV_WGMMA_M64N128K16("bf16");
}

template <>
__device__ __forceinline__ void wgmma_m64n128k16<__half>(float (&d)[64], uint64_t a, uint64_t b, int accumulate) {
    RKV_WGMMA_M64N128K16("f16");
}

#undef RKV_WGMMA_M64N128K16

#define RKV_WGMMA_M64N64K16(TYPE)                                                                                 \
    asm volatile(                                                                                                 \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                                              \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " {"                                          \
        "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                  \
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31"                                         \
        "}, %32, %33, p, 1, 1, 0, 0;\n}\n"                                                                        \
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),         \
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),   \
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), \
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])  \
        : "l"(a), "l"(b), "r"(accumulate))

// D[64 x 64] (+)= A[64 x 16] * B[64 x 16]^T: as wgmma_m64n128k16 with 64
// columns (s = 0 .. 7 in the accumulator layout).
template <typename T>
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint64_t a, uint64_t b, int accumulate);

template <>
__device__ __forceinline__ void wgmma_m64n64k16<__nv_bfloat16>(float (&d)[32], uint64_t a, uint64_t b,
                                                               int accumulate) {
    RKV_WGMMA_M64N64K16("bf16");
}

template <>
__device__ __forceinline__ void wgmma_m64n64k16<__half>(float (&d)[32], uint64_t a, uint64_t b, int accumulate) {
    RKV_WGMMA_M64N64K16("f16");
}

#undef RKV_WGMMA_M64N64K16

template <int N>
__device__ __forceinline__ void fence_accumulators(int32_t (&d)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) asm volatile("" : "+r"(d[i])::"memory");
}

// D[64 x 128] (+)= A[64 x 32] * B[128 x 32]^T in int8 with int32 accumulation
// (exact: |sum| <= 32 * 127^2 per instruction), both operands K-major in SW128
// shared memory (a row of 128 int8 is one 128-byte region row; step k of 32
// elements starts at byte 32 k). Same accumulator layout as the f32 form.
__device__ __forceinline__ void wgmma_m64n128k32_s8(int32_t (&d)[64], uint64_t a, uint64_t b, int accumulate) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k32.s32.s8.s8 {"
        "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
        "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
        "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63"
        "}, %64, %65, p;\n}\n"
        : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3]), "+r"(d[4]), "+r"(d[5]), "+r"(d[6]), "+r"(d[7]),
          "+r"(d[8]), "+r"(d[9]), "+r"(d[10]), "+r"(d[11]), "+r"(d[12]), "+r"(d[13]), "+r"(d[14]), "+r"(d[15]),
          "+r"(d[16]), "+r"(d[17]), "+r"(d[18]), "+r"(d[19]), "+r"(d[20]), "+r"(d[21]), "+r"(d[22]), "+r"(d[23]),
          "+r"(d[24]), "+r"(d[25]), "+r"(d[26]), "+r"(d[27]), "+r"(d[28]), "+r"(d[29]), "+r"(d[30]), "+r"(d[31]),
          "+r"(d[32]), "+r"(d[33]), "+r"(d[34]), "+r"(d[35]), "+r"(d[36]), "+r"(d[37]), "+r"(d[38]), "+r"(d[39]),
          "+r"(d[40]), "+r"(d[41]), "+r"(d[42]), "+r"(d[43]), "+r"(d[44]), "+r"(d[45]), "+r"(d[46]), "+r"(d[47]),
          "+r"(d[48]), "+r"(d[49]), "+r"(d[50]), "+r"(d[51]), "+r"(d[52]), "+r"(d[53]), "+r"(d[54]), "+r"(d[55]),
          "+r"(d[56]), "+r"(d[57]), "+r"(d[58]), "+r"(d[59]), "+r"(d[60]), "+r"(d[61]), "+r"(d[62]), "+r"(d[63])
        : "l"(a), "l"(b), "r"(accumulate));
}

#endif  // RKV_HAS_WGMMA

}  // namespace rkv::kernels
