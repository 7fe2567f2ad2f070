// Decode attention on tensor cores (RKV_ATTEND_TENSOR): the split kernel of
// attend.cuh (grid (split, KV head, entry); a block takes an even share of one
// (entry, KV head)'s tokens, streams its K and V rows through shared memory
// with cp.async, keeps a partial softmax; the last block of the pair merges)
// with both products on mma.sync m16n8k16. A pass takes up to 16 query heads
// of the group as the 16 rows of the MMA (rows past the group are zero); a
// 64-token stage goes to 4 token groups of 16, each to two warps:
//   S[16 heads, 16 tokens]  = Q K^T       (float32 accumulate; both warps)
//   O[16 heads, head_dim/2] += P V        (P straight from S's registers; each
//                                          warp its half of head_dim)
// so a token costs a warp a few MMAs instead of the split kernel's dot
// products, lane sums and per-element conversions. Two warps per token group
// (S computed twice, a few MMAs) double the warps an SM holds in the same
// shared memory: with one, the profile showed schedulers without an eligible
// warp most of the time (tools/bench_attend.py; kernels/README.md).
//
// It keeps rkv_attend's float32 promise (the float64 reference within the
// rounding of float32 arithmetic, as the split kernel): the stored values are
// exact in the MMA's input type M (bf16 rows: bf16; f16 and E4M3 rows: f16),
// and q and P are split into pieces of M (x = x1 + x2 + x3, each the rounding
// of what the previous pieces left) whose products the tensor cores add in
// float32. q in M is one piece; f16 or bf16 q into the other type two (after
// the row scale below); a float32 q three. P takes two (hi + lo): 16 or 22
// bits, below float32's sum error over the window.
//
// f16 products: each query row is scaled by a power of two that brings its
// largest element near 2^14 (inside f16's range; undone exactly on the
// logits). E4M3 rows become f16 in registers (one cvt per two values); the key
// scale multiplies the logit, the value scale the weight. So that P * v_scale
// stays inside f16's range, each warp keeps its weighted V sums relative to
// the largest value scale it has met (a power of two: rescaled like the
// running maximum) and multiplies it back at the end. The fragments built by
// hand permute head_dim (dot products do not depend on the order; for V the
// output columns follow, output_column()).
#pragma once

#include <type_traits>

#include "attend.cuh"

namespace rkv::kernels {

constexpr int kMmaThreads = 256;
constexpr int kMmaTokenGroups = 4;                                // warps 0-3: first half of head_dim, 4-7: second
constexpr int kMmaRows = 16;                                      // query heads per pass: the MMA's rows
constexpr int kMmaGroupTokens = 16;                               // tokens per token group per stage
constexpr int kMmaStageTokens = kMmaTokenGroups * kMmaGroupTokens;
constexpr int kMmaMaxPieces = 3;                                  // pieces of a float32 query

// Pieces of M a query of dtype q_dtype needs (the comment at the top of this file).
__host__ __device__ constexpr int mma_query_pieces(int32_t q_dtype, bool bf16_products) {
    if (q_dtype == RKV_DTYPE_F32) return 3;
    return (q_dtype == RKV_DTYPE_BF16) == bf16_products ? 1 : 2;
}

// Dynamic shared memory of a block: kStages stages of
//   [K rows: kMmaStageTokens x kRowStride bytes][V rows: the same]
//   [E4M3 only: key scales [kMmaStageTokens] f32][value scales [kMmaStageTokens] f32]
// then the pass's query pieces [pieces][kMmaRows][kQStride] of M. Once a pass
// has consumed its stages, the first bytes hold the token groups' states for
// the block's result ([groups][16][D] f32, then [groups][16] maxima and sums).
template <typename T, int D>
struct MmaShape {
    static constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
    using M = std::conditional_t<kBf16, __nv_bfloat16, __half>;  // the MMA's input type
    static constexpr int kRowBytes = D * int(sizeof(T));
    static constexpr int kRowStride = kRowBytes + 16;  // padding: 8 rows of a fragment hit 8 bank groups
    static constexpr int kRowsBytes = kMmaStageTokens * kRowStride;  // K rows of a stage (and V rows)
    static constexpr int kScaleBytes = kIsFp8<T> ? kMmaStageTokens * 4 : 0;
    static constexpr int kStageBytes = 2 * kRowsBytes + 2 * kScaleBytes;
    static constexpr int kStages = 3 * kStageBytes <= 110 * 1024 ? 3 : 2;  // two blocks per SM where they fit
    static constexpr int kMinBlocks = D <= 128 ? 2 : 1;  // per SM: registers capped at 128 for two
    static constexpr int kQStride = D + 8;  // elements of M per query row (padded as the K rows)
    static constexpr int kQPieceBytes = kMmaRows * kQStride * 2;
    static constexpr int kKSteps = D / 16;  // k-steps of S = Q K^T
    static constexpr int kNTiles = D / 8;   // 8-column tiles of O
    static constexpr int kHalfTiles = kNTiles / 2;  // a warp's n-tiles
    static constexpr size_t shared_bytes(int pieces) {
        return size_t(kStages) * kStageBytes + size_t(pieces) * kQPieceBytes;
    }
    static_assert(size_t(kMmaTokenGroups) * kMmaRows * (D + 2) * 4 <= size_t(kStages) * kStageBytes, "merge buffer");
};

// Two floats as the b16x2 register of M: `low` at the lower k (or column).
template <typename M>
__device__ __forceinline__ uint32_t pack2(float low, float high) {
    if constexpr (std::is_same_v<M, __nv_bfloat16>) {
        const __nv_bfloat162 v = __floats2bfloat162_rn(low, high);
        return *reinterpret_cast<const uint32_t *>(&v);
    } else {
        const __half2 v = __floats2half2_rn(low, high);
        return *reinterpret_cast<const uint32_t *>(&v);
    }
}

// x's rounding to M, and what it leaves (exact in float32).
template <typename M>
__device__ __forceinline__ float split_piece(float x, float *rest) {
    const float head = to_float(from_float<M>(x));
    *rest = x - head;
    return head;
}

// 2^x on the special-function unit (2 ulp; results below 2^-126 flush to 0,
// far below the float32 sums they join). exp2f's range handling would double
// the softmax's instructions.
__device__ __forceinline__ float fast_exp2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// Two E4M3 bytes (low 16 bits of `pair`) as f16x2, exactly.
__device__ __forceinline__ uint32_t fp8x2_to_half2(uint32_t pair) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(pair & 0xffffu), __NV_E4M3);
    return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

// Where element d (0..15) of a 16-wide k-step sits in a hand-built K fragment:
// thread c loads d = 4c .. 4c+3 as its (k = 2c, 2c+1) and (2c+8, 2c+9).
template <typename T>
__device__ __forceinline__ int query_fragment_column(int d) {
    if constexpr (!kIsFp8<T>) return d;  // ldmatrix fragments: the natural order
    const int c = d >> 2, i = d & 3;
    return i < 2 ? 2 * c + i : 8 + 2 * c + (i - 2);
}

// The head_dim index of column n (0..7) of O's n-tile j (of all kNTiles).
template <typename T, int D>
__device__ __forceinline__ int output_column(int j, int n) {
    if constexpr (kIsFp8<T>) return n * (D / 8) + j;  // thread g loads d = g*D/8 .. +D/8 of a V row
    return 8 * j + n;
}

// B fragments of K^T for k-step ks over the token group's 16 tokens starting at
// `rows` (shared memory): b[0], b[1] for tokens 0-7, b[2], b[3] for 8-15.
template <typename T, int D>
__device__ __forceinline__ void key_fragments(const char *rows, int ks, int lane, uint32_t (&b)[4]) {
    using S = MmaShape<T, D>;
    if constexpr (kIsFp8<T>) {
        const int g = lane >> 2, c = lane & 3;
#pragma unroll
        for (int j = 0; j < 2; ++j) {
            const uint32_t word = *reinterpret_cast<const uint32_t *>(rows + (8 * j + g) * S::kRowStride + ks * 16 + 4 * c);
            b[2 * j] = fp8x2_to_half2(word);
            b[2 * j + 1] = fp8x2_to_half2(word >> 16);
        }
    } else {
        const int token = (lane >> 4) * 8 + (lane & 7);
        ldmatrix_x4(b, shared_address(rows + token * S::kRowStride + ks * 32 + ((lane >> 3) & 1) * 16));
    }
}

// A fragment of this pass's query piece for k-step ks.
template <typename T, int D>
__device__ __forceinline__ void query_fragment(const char *q_piece, int ks, int lane, uint32_t (&a)[4]) {
    using S = MmaShape<T, D>;
    ldmatrix_x4(a, shared_address(q_piece + ((lane & 15) * S::kQStride + ks * 16 + (lane >> 4) * 8) * 2));
}

// E4M3 V: this thread's bytes of its four tokens (2c, 2c+1, 2c+8, 2c+9 of
// the group's 16) for the warp's half of head_dim: d = g*D/8 + half*D/16 ..
// +D/16 (n-tiles half*kHalfTiles ..), as 32-bit words.
template <int D>
struct ValueBytes {
    uint32_t w[4][D / 64];
};

template <int D>
__device__ __forceinline__ void load_value_bytes(const char *rows, int row_stride, int lane, int half,
                                                 ValueBytes<D> &v) {
    const int g = lane >> 2, c = lane & 3;
#pragma unroll
    for (int t = 0; t < 4; ++t) {
        const char *at = rows + (2 * c + (t & 1) + 8 * (t >> 1)) * row_stride + g * (D / 8) + half * (D / 16);
#pragma unroll
        for (int i = 0; i < D / 64; ++i) v.w[t][i] = reinterpret_cast<const uint32_t *>(at)[i];
    }
}

// B fragments of V for the warp's n-tiles 2jj and 2jj+1 of its half (b[0..1]
// and b[2..3]).
template <typename T, int D>
__device__ __forceinline__ void value_fragments(const char *rows, const ValueBytes<D> &bytes, int half, int jj,
                                                int lane, uint32_t (&b)[4]) {
    using S = MmaShape<T, D>;
    if constexpr (kIsFp8<T>) {
        (void)half;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int j = 2 * jj + h, word = j / 4, byte = j % 4;  // j: n-tile of the half
            const uint32_t select = uint32_t(byte) | (uint32_t(4 + byte) << 4);
            b[2 * h] = fp8x2_to_half2(__byte_perm(bytes.w[0][word], bytes.w[1][word], select));
            b[2 * h + 1] = fp8x2_to_half2(__byte_perm(bytes.w[2][word], bytes.w[3][word], select));
        }
    } else {
        (void)bytes;
        const int column = (half * S::kHalfTiles / 2 + jj) * 16 + (lane >> 4) * 8;
        ldmatrix_x4_trans(b, shared_address(rows + (lane & 15) * S::kRowStride + column * 2));
    }
}

// The [16, D] query rows of a pass from `base` (rows past `count`: zeros):
// element k * kMmaThreads + threadIdx.x into out[k]. One dtype switch, then
// independent loads (their latencies overlap).
template <typename Q, int D, int kPer>
__device__ __forceinline__ void load_query_rows_as(const Q *data, int64_t stride_head, int32_t count,
                                                   float (&out)[kPer]) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
        const int i = k * kMmaThreads + threadIdx.x, r = i / D, e = i % D;
        out[k] = r < count ? to_float(data[r * stride_head + e]) : 0.0f;
    }
}

template <int D, int kPer>
__device__ __forceinline__ void load_query_rows(const Tensor &q, int64_t base, int32_t count, float (&out)[kPer]) {
    switch (q.dtype) {
        case RKV_DTYPE_F32:
            load_query_rows_as<float, D>(static_cast<const float *>(q.data) + base, q.stride_head, count, out);
            break;
        case RKV_DTYPE_F16:
            load_query_rows_as<__half, D>(static_cast<const __half *>(q.data) + base, q.stride_head, count, out);
            break;
        default:
            load_query_rows_as<__nv_bfloat16, D>(static_cast<const __nv_bfloat16 *>(q.data) + base, q.stride_head,
                                                 count, out);
            break;
    }
}

// grid (split, KV head, entry), kMmaThreads threads,
// MmaShape::shared_bytes(kMaxPieces) of dynamic shared memory. kMaxPieces: 1
// where the query is one piece (the serving case: q in the MMA type), else
// kMmaMaxPieces (the loops over pieces are unrolled either way).
template <typename T, int D, int kMaxPieces>
__global__ void __launch_bounds__(kMmaThreads, (MmaShape<T, D>::kMinBlocks)) attend_mma_kernel(AttendParams p) {
    using S = MmaShape<T, D>;
    using M = typename S::M;
    extern __shared__ __align__(16) char mma_shared[];
    __shared__ float row_factor[kMmaRows];  // scale * log2(e) / the row's power of two
    __shared__ int row_shift[kMmaRows];     // the power of two of a query row (f16 products)
    __shared__ int row_amax_bits[kMmaRows]; // largest |q| of a row, as the bits of a float >= 0
    constexpr int kQueryPerThread = kMmaRows * D / kMmaThreads;
    const CacheLayer &c = p.cache;
    const int32_t split = blockIdx.x, head = blockIdx.y, entry = blockIdx.z;
    const int32_t seq = attend_sequence(p, entry);
    if (seq < 0) return;
    const int32_t groups = p.groups;
    const int32_t held = c.lengths[seq];
    const int32_t chunk = (held + p.splits - 1) / p.splits;
    const int32_t begin = min(held, split * chunk), end = min(held, begin + chunk);
    const int32_t stages = (end - begin + kMmaStageTokens - 1) / kMmaStageTokens;
    const HeadRows<T> rows = head_rows<T>(c, seq, head);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int token_group = warp % kMmaTokenGroups, half = warp / kMmaTokenGroups;
    const int g = lane >> 2, quad = lane & 3;  // fragment row (query head) and column pair
    const int pieces = min(kMaxPieces, mma_query_pieces(p.q.dtype, S::kBf16));
    const bool scale_rows = !S::kBf16 && p.q.dtype != RKV_DTYPE_F16;
    char *q_shared = mma_shared + S::kStages * S::kStageBytes;  // [pieces][16][kQStride] M
    constexpr int kChunksPerRow = S::kRowBytes / 16;
    constexpr int kChunksPerThread = kMmaStageTokens * kChunksPerRow / kMmaThreads;  // 16-byte copies per stage
    static_assert(kChunksPerThread * kMmaThreads == kMmaStageTokens * kChunksPerRow, "whole copies per thread");
    static_assert(kMmaStageTokens <= kMmaThreads, "a thread per token for the scales");

    auto load_stage = [&](int32_t s) {
        char *k_stage = mma_shared + (s % S::kStages) * S::kStageBytes;
        char *v_stage = k_stage + S::kRowsBytes;
        const int32_t first = begin + s * kMmaStageTokens;
#pragma unroll
        for (int k = 0; k < kChunksPerThread; ++k) {
            const int index = k * kMmaThreads + threadIdx.x;
            const int32_t t = first + index / kChunksPerRow;
            const bool valid = t < end;
            const int chunk16 = index % kChunksPerRow;
            const int64_t offset = valid ? int64_t(t) * S::kRowBytes + chunk16 * 16 : 0;
            const int at = (index / kChunksPerRow) * S::kRowStride + chunk16 * 16;
            cp_async_16(shared_address(k_stage + at), reinterpret_cast<const char *>(rows.keys) + offset, valid);
            cp_async_16(shared_address(v_stage + at), reinterpret_cast<const char *>(rows.values) + offset, valid);
        }
        if constexpr (kIsFp8<T>) {
            float *k_scales = reinterpret_cast<float *>(v_stage + S::kRowsBytes);
            float *v_scales = k_scales + kMmaStageTokens;
            if (threadIdx.x < kMmaStageTokens) {
                const int i = threadIdx.x;
                const int32_t t = first + i;
                const bool valid = t < end;
                cp_async_4(shared_address(k_scales + i), rows.k_scale + (valid ? t : 0), valid);
                cp_async_4(shared_address(v_scales + i), rows.v_scale + (valid ? t : 0), valid);
            }
        }
        cp_async_commit();
    };

    for (int32_t g0 = 0; g0 < groups; g0 += kMmaRows) {
        const int32_t count = min(kMmaRows, groups - g0);
        __syncthreads();  // the previous pass is done with the shared memory
        for (int32_t s = 0; s < S::kStages - 1; ++s)
            if (s < stages) load_stage(s);

        // This pass's query rows as pieces of M (rows past the group: zeros),
        // each row first scaled by its power of two where the products are f16.
        float q_values[kQueryPerThread];  // element k * kMmaThreads + threadIdx.x of [16][D]
        load_query_rows<D>(p.q, entry * p.q.stride_seq + (int64_t(head) * groups + g0) * p.q.stride_head, count,
                           q_values);
        if (threadIdx.x < kMmaRows) row_amax_bits[threadIdx.x] = 0;
        __syncthreads();
        if (scale_rows) {
#pragma unroll
            for (int k = 0; k < kQueryPerThread; ++k) {  // a warp's 32 elements lie in one row
                const float amax = warp_max(fabsf(q_values[k]));
                if (lane == 0) atomicMax(&row_amax_bits[(k * kMmaThreads + threadIdx.x) / D], __float_as_int(amax));
            }
            __syncthreads();
        }
        if (threadIdx.x < kMmaRows) {
            const float amax = __int_as_float(row_amax_bits[threadIdx.x]);
            int exponent = 0;
            frexpf(amax, &exponent);  // amax < 2^exponent
            const int shift = amax > 0.0f && amax <= 3.0e38f ? 14 - exponent : 0;
            row_shift[threadIdx.x] = shift;
            row_factor[threadIdx.x] = ldexpf(p.scale * kLog2E, -shift);
        }
        __syncthreads();
#pragma unroll
        for (int k = 0; k < kQueryPerThread; ++k) {
            const int i = k * kMmaThreads + threadIdx.x, r = i / D, e = i % D;
            float x = ldexpf(q_values[k], row_shift[r]);
            const int column = (e & ~15) + query_fragment_column<T>(e & 15);
#pragma unroll
            for (int piece = 0; piece < kMaxPieces; ++piece) {
                if (piece >= pieces) break;
                const float head_part = split_piece<M>(x, &x);
                reinterpret_cast<M *>(q_shared)[(piece * kMmaRows + r) * S::kQStride + column] = from_float<M>(head_part);
            }
        }
        const float factor_low = row_factor[g], factor_high = row_factor[g + 8];

        float o[S::kHalfTiles][4];  // O: n-tile j of the half, rows g (0, 1) and g+8 (2, 3), columns 2*quad, +1
#pragma unroll
        for (int j = 0; j < S::kHalfTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
        float running_max[2] = {-INFINITY, -INFINITY}, running_sum[2] = {0.0f, 0.0f};
        float value_reference = 0.0f;  // E4M3: o is relative to this value scale

        for (int32_t stage = 0; stage < stages; ++stage) {
            if (stage + 1 < stages) cp_async_wait<S::kStages - 2>();
            else cp_async_wait<0>();
            __syncthreads();  // (the first time also: the query pieces are written)
            if (stage + S::kStages - 1 < stages) load_stage(stage + S::kStages - 1);
            const char *k_stage = mma_shared + (stage % S::kStages) * S::kStageBytes;
            const char *v_stage = k_stage + S::kRowsBytes;
            const float *k_scales = reinterpret_cast<const float *>(v_stage + S::kRowsBytes);
            const float *v_scales = k_scales + kMmaStageTokens;
            const char *k_rows = k_stage + token_group * kMmaGroupTokens * S::kRowStride;
            const char *v_rows = v_stage + token_group * kMmaGroupTokens * S::kRowStride;
            const int local0 = token_group * kMmaGroupTokens;  // the group's first token in the stage
            const int32_t stage_first = begin + stage * kMmaStageTokens;
            if (stage_first + local0 >= end) continue;  // nothing of this warp's (no barrier below)

            // S = Q K^T: s[j] holds tokens 8j + 2*quad (+1) of rows g and g+8
            // (even and odd k-steps accumulate apart: four MMA chains in flight, not two)
            float s[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
            float s_odd[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
#pragma unroll
            for (int ks = 0; ks < S::kKSteps; ++ks) {
                uint32_t b[4];
                key_fragments<T, D>(k_rows, ks, lane, b);
                float (&acc)[2][4] = ks % 2 ? s_odd : s;
#pragma unroll
                for (int piece = 0; piece < kMaxPieces; ++piece) {
                    if (piece >= pieces) break;
                    uint32_t a[4];
                    query_fragment<T, D>(q_shared + piece * S::kQPieceBytes, ks, lane, a);
                    mma_16816<M>(acc[0], a, b[0], b[1]);
                    mma_16816<M>(acc[1], a, b[2], b[3]);
                }
            }
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int r = 0; r < 4; ++r) s[j][r] += s_odd[j][r];

            // logits (log2 units), masked past the split's end
            float value_scale[2][2] = {{1.0f, 1.0f}, {1.0f, 1.0f}};
#pragma unroll
            for (int j = 0; j < 2; ++j)
#pragma unroll
                for (int i = 0; i < 2; ++i) {
                    const int local = local0 + 8 * j + 2 * quad + i;
                    const bool valid = stage_first + local < end;
                    float key_scale = 1.0f;
                    if constexpr (kIsFp8<T>) {
                        key_scale = k_scales[local];
                        value_scale[j][i] = valid ? v_scales[local] : 0.0f;
                    }
                    s[j][i] = valid ? s[j][i] * factor_low * key_scale : -INFINITY;
                    s[j][2 + i] = valid ? s[j][2 + i] * factor_high * key_scale : -INFINITY;
                }

            // the running softmax state of rows g (h 0) and g+8 (h 1)
            float correction[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float tile_max = fmaxf(fmaxf(s[0][2 * h], s[0][2 * h + 1]), fmaxf(s[1][2 * h], s[1][2 * h + 1]));
                tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 1));
                tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, 2));
                const float new_max = fmaxf(running_max[h], tile_max);
                correction[h] = rescale_factor(running_max[h], new_max);
                float sum = running_sum[h] * correction[h];
#pragma unroll
                for (int j = 0; j < 2; ++j)
#pragma unroll
                    for (int i = 0; i < 2; ++i) {
                        float &x = s[j][2 * h + i];
                        x = x == -INFINITY ? 0.0f : fast_exp2(x - new_max);
                        sum += x;
                    }
                running_sum[h] = sum;
                running_max[h] = new_max;
            }
            float value_factor = 1.0f;  // E4M3: the weights relative to the largest value scale
            if constexpr (kIsFp8<T>) {
                float tile_scale = fmaxf(fmaxf(value_scale[0][0], value_scale[0][1]),
                                         fmaxf(value_scale[1][0], value_scale[1][1]));
                tile_scale = fmaxf(tile_scale, __shfl_xor_sync(0xffffffffu, tile_scale, 1));
                tile_scale = fmaxf(tile_scale, __shfl_xor_sync(0xffffffffu, tile_scale, 2));
                if (tile_scale > value_reference) {  // warp-uniform: every quad saw the group's 16 tokens
                    value_factor = value_reference / tile_scale;
                    value_reference = tile_scale;
                }
#pragma unroll
                for (int j = 0; j < 2; ++j)
#pragma unroll
                    for (int i = 0; i < 2; ++i) {
                        const float w = value_scale[j][i] / value_reference;  // powers of two: exact
                        s[j][i] *= w;
                        s[j][2 + i] *= w;
                    }
            }
            const float low_factor = correction[0] * value_factor, high_factor = correction[1] * value_factor;
            if (!__all_sync(0xffffffffu, low_factor == 1.0f && high_factor == 1.0f)) {
#pragma unroll
                for (int j = 0; j < S::kHalfTiles; ++j) {
                    o[j][0] *= low_factor;
                    o[j][1] *= low_factor;
                    o[j][2] *= high_factor;
                    o[j][3] *= high_factor;
                }
            }

            // P as the A fragment of P V, in two pieces (hi, lo)
            uint32_t a_hi[4], a_lo[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) {  // a0: (g, tokens 0-7), a1: (g+8, 0-7), a2: (g, 8-15), a3: (g+8, 8-15)
                const int j = r >> 1, h = r & 1;
                float rest0, rest1;
                const float hi0 = split_piece<M>(s[j][2 * h], &rest0), hi1 = split_piece<M>(s[j][2 * h + 1], &rest1);
                a_hi[r] = pack2<M>(hi0, hi1);
                a_lo[r] = pack2<M>(rest0, rest1);
            }
            ValueBytes<D> bytes;
            if constexpr (kIsFp8<T>) load_value_bytes<D>(v_rows, S::kRowStride, lane, half, bytes);
#pragma unroll
            for (int jj = 0; jj < S::kHalfTiles / 2; ++jj) {
                uint32_t b[4];
                value_fragments<T, D>(v_rows, bytes, half, jj, lane, b);
                mma_16816<M>(o[2 * jj], a_hi, b[0], b[1]);
                mma_16816<M>(o[2 * jj], a_lo, b[0], b[1]);
                mma_16816<M>(o[2 * jj + 1], a_hi, b[2], b[3]);
                mma_16816<M>(o[2 * jj + 1], a_lo, b[2], b[3]);
            }
        }

        // The warps' states into shared memory, then the block's result.
        __syncthreads();  // every stage is consumed: the stage memory is free
        float *merge_acc = reinterpret_cast<float *>(mma_shared);     // [token groups][16][D]
        float *merge_max = merge_acc + kMmaTokenGroups * kMmaRows * D;  // [token groups][16]
        float *merge_sum = merge_max + kMmaTokenGroups * kMmaRows;      // [token groups][16]
        const float back = kIsFp8<T> ? value_reference : 1.0f;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float total = running_sum[h];
            total += __shfl_xor_sync(0xffffffffu, total, 1);
            total += __shfl_xor_sync(0xffffffffu, total, 2);
            const int row = g + 8 * h;
            if (quad == 0 && half == 0) {  // the two warps of a group hold the same state
                merge_max[token_group * kMmaRows + row] = running_max[h];
                merge_sum[token_group * kMmaRows + row] = total;
            }
#pragma unroll
            for (int j = 0; j < S::kHalfTiles; ++j)
#pragma unroll
                for (int i = 0; i < 2; ++i)
                    merge_acc[(token_group * kMmaRows + row) * D +
                              output_column<T, D>(half * S::kHalfTiles + j, 2 * quad + i)] = o[j][2 * h + i] * back;
        }
        __syncthreads();
        write_block_result<kMmaTokenGroups, kMmaRows, D>(p, entry, head, split, g0, count, merge_acc, merge_max,
                                                         merge_sum);
    }
    merge_splits_if_last<D>(p, entry, head);
}

}  // namespace rkv::kernels
