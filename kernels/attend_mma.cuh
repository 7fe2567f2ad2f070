// Decode attention on tensor cores (RKV_ATTEND_TENSOR): the split kernel of
// attend.cuh (grid (split, KV head, entry); a block takes an even share of one
// (entry, KV head)'s tokens, streams its K and V rows through shared memory
// (16-bit rows by the copy engine, TMA; E4M3 rows by cp.async), keeps a
// partial softmax; the pair's blocks merge: through distributed shared memory
// as one thread block cluster when there are 2 to 8 splits, else the last
// block of the pair merges partials in global memory)
// with both products on mma.sync m16n8k16, transposed so that the tokens are
// the MMA's 16 rows and up to 8 query heads its 8 columns:
//   S^T[16 tokens, 8 heads]   = K Q^T       (float32 accumulate)
//   O^T[head_dim, 8 heads]   += V^T P^T     (P^T from S^T's registers by
//                                            movmatrix: the transpose in registers)
// A 64-token stage goes to 4 warps, 16 tokens each; a warp keeps its own
// softmax state per head and all of O. Decode has one query per head and a
// KV head serves 4-8 query heads in the models we serve, so the tokens fill
// the MMA's large side: a token costs a warp a quarter of the MMAs and
// exponentials of the layout with heads as rows (which computed 16 rows for
// 4 heads, and S twice per token).
//
// It keeps rkv_attend's float32 promise (the float64 reference within the
// rounding of float32 arithmetic, as the split kernel): the stored values are
// exact in the MMA's input type M (bf16 rows: bf16; f16 and E4M3 rows: f16),
// and q and P are split into pieces of M (x = x1 + x2 + x3, each the rounding
// of what the previous pieces left) whose products the tensor cores add in
// float32. q in M is one piece; f16 or bf16 q into the other type two (after
// the row scale below); a float32 q three. P takes two (hi + lo): 16 or 22
// bits, below float32's sum error over the window. With at most 4 query heads
// (kMmaPackedHeads), columns 4-7 repeat heads 0-3: the lanes holding them
// compute the same logits and softmax state bit for bit and pass on the lo
// piece instead of the hi one, so one MMA adds both pieces (added up at the end).
//
// f16 products: each query row is scaled by a power of two that brings its
// largest element near 2^14 (inside f16's range; undone exactly on the
// logits). E4M3 rows become f16 in registers (one cvt per two values); the key
// scale multiplies the logit, the value scale the weight. So that P * v_scale
// stays inside f16's range, each warp keeps its weighted V sums relative to
// the largest value scale it has met (a power of two: rescaled like the
// running maximum) and multiplies it back at the end. The fragments built by
// hand from E4M3 bytes permute head_dim (dot products do not depend on the
// order; for V the output rows follow, output_dim()).
#pragma once

#include <cooperative_groups.h>

#include <type_traits>

#include "attend.cuh"
#include "pdl.cuh"
#include "tma.cuh"
#include "row_maps.h"

namespace rkv::kernels {

constexpr int kMmaThreads = 128;
constexpr int kMmaWarps = kMmaThreads / 32;                       // a token group each
constexpr int kMmaHeads = 8;                                      // query heads per pass: the MMA's columns
constexpr int kMmaPackedHeads = 4;                                // up to this many: P's pieces share an MMA
constexpr int kMmaGroupTokens = 16;                               // tokens per warp per stage: the MMA's rows
constexpr int kMmaStageTokens = kMmaWarps * kMmaGroupTokens;
constexpr int kMmaMaxPieces = 3;                                  // pieces of a float32 query
constexpr int kMmaClusterMaxSplits = 8;                           // the portable thread block cluster size

// Whether the splits of an (entry, KV head) merge through distributed shared
// memory: the pair's blocks are launched as one thread block cluster (grid x =
// splits) and read each other's results from shared memory after a cluster
// barrier, instead of partials in global memory, a fence, an atomic count and
// the last block's loads: three dependent trips to the L2 at the end of the
// call, its critical path when a call is a few microseconds (one sequence).
// 16-bit rows only: E4M3 calls as clusters were slower (H200, 8 sequences of
// 1,152 tokens: 30.3 us against 19.7 with the global merge).
template <typename T>
__host__ __device__ constexpr bool mma_cluster_merge(int32_t splits) {
    return !kIsFp8<T> && splits > 1 && splits <= kMmaClusterMaxSplits;
}

// Pieces of M a query of dtype q_dtype needs (the comment at the top of this file).
__host__ __device__ constexpr int mma_query_pieces(int32_t q_dtype, bool bf16_products) {
    if (q_dtype == RKV_DTYPE_F32) return 3;
    return (q_dtype == RKV_DTYPE_BF16) == bf16_products ? 1 : 2;
}

// Dynamic shared memory of a block (16-bit rows: from a 1024-byte aligned
// start): kStages stages of
//   [K rows: kMmaStageTokens rows, laid out as stage_offset() says][V rows: the same]
//   [E4M3 only: key scales [kMmaStageTokens] f32][value scales [kMmaStageTokens] f32]
// then the pass's query pieces [pieces][kMmaHeads][kQStride] of M. Once a pass
// has consumed its stages, the first bytes hold the warps' states for the
// block's result ([warps][8][D] f32, then [warps][8] maxima and sums).
template <typename T, int D>
struct MmaShape {
    static constexpr bool kBf16 = std::is_same_v<T, __nv_bfloat16>;
    using M = std::conditional_t<kBf16, __nv_bfloat16, __half>;  // the MMA's input type
    static constexpr int kRowBytes = D * int(sizeof(T));
    // 16-bit rows arrive by tensor copies (TMA) that swizzle 128-byte blocks
    // of a row; E4M3 rows (and their scales, not 16-byte aligned) by cp.async
    // into rows padded by 16 bytes. Either way the 8 rows of a fragment read 8
    // bank groups. Why not cp.async for 16-bit rows: its 16-byte copies reach
    // the L2 as requests shaped by the shared-memory side, and into padded rows
    // each 128-byte line became ~2.6 requests and 1.5x its sectors (ncu at
    // 32 x 16K: 44M requests for 67M sectors of K/V, DRAM at 76% of its peak
    // where cuDNN's kernel issued 17M and read at 93%).
    static constexpr bool kTma = !kIsFp8<T>;
    static constexpr int kRowPitch = kTma ? 128 : kRowBytes + 16;  // from one row to the next (in a 128-byte block)
    // K rows of a stage (and V rows)
    static constexpr int kRowsBytes = kMmaStageTokens * (kTma ? kRowBytes : kRowPitch);
    static constexpr int kAlignSlack = kTma ? 1024 : 0;  // aligning the start for the swizzle
    static constexpr int kScaleBytes = kIsFp8<T> ? kMmaStageTokens * 4 : 0;
    static constexpr int kStageBytes = 2 * kRowsBytes + 2 * kScaleBytes;
    static constexpr int kQStride = D + 8;  // elements of M per query row (padded as the K rows)
    static constexpr int kQPieceBytes = kMmaHeads * kQStride * 2;
    // As many stages (up to 6) as leave room for two blocks per SM, at least
    // 2: the bytes in flight per SM, (stages - 1) / stages of the ring, are
    // what keeps HBM busy.
    static constexpr int kBlockBudget = 110 * 1024 - kMmaMaxPieces * kQPieceBytes - kAlignSlack;
    static constexpr int kStages = 6 * kStageBytes <= kBlockBudget   ? 6
                                   : 5 * kStageBytes <= kBlockBudget ? 5
                                   : 4 * kStageBytes <= kBlockBudget ? 4
                                   : 3 * kStageBytes <= kBlockBudget ? 3
                                                                     : 2;
    static constexpr int kMinBlocks = D <= 128 ? 2 : 1;
    static constexpr int kKSteps = D / 16;  // k-steps of S^T = K Q^T
    static constexpr int kMTiles = D / 16;  // 16-row tiles of O^T
    static constexpr int kChains = kKSteps < 4 ? kKSteps : 4;  // independent accumulators of S^T
    static constexpr size_t shared_bytes(int pieces) {
        return kAlignSlack + size_t(kStages) * kStageBytes + size_t(pieces) * kQPieceBytes;
    }
    // The warps' states, then (cluster merge) the block's [8][D + 2] after them.
    static_assert(size_t(kMmaWarps + 1) * kMmaHeads * (D + 2) * 4 <= size_t(kStages) * kStageBytes, "merge buffer");
    static_assert(kKSteps % 2 == 0, "query fragments load two k-steps at once");
};

// Where byte `byte` of row `row` of a stage's K (or V) rows lies. 16-bit
// rows: in blocks of 128 bytes of every row ([byte / 128][row][128 bytes]),
// the 16-byte chunk c of a row at c ^ (row % 8): the TMA's 128-byte swizzle.
// E4M3 rows: padded rows. Callers pass rows relative to a multiple of 8 (a
// warp's first token), which keeps row % 8.
template <typename T, int D>
__device__ __forceinline__ int stage_offset(int row, int byte) {
    using S = MmaShape<T, D>;
    if constexpr (S::kTma)
        return (byte >> 7) * (kMmaStageTokens * 128) + row * 128 + ((((byte >> 4) ^ row) & 7) << 4) + (byte & 15);
    return row * S::kRowPitch + byte;
}

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

// The transpose of an 8 x 8 matrix of 16-bit values held as the warp's
// accumulator-layout pairs (thread 4g + q: row g, columns 2q, 2q+1): thread
// 4g + q receives row g of the transpose (original column g, rows 2q, 2q+1).
__device__ __forceinline__ uint32_t transpose_8x8(uint32_t x) {
    uint32_t y;
    asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
    return y;
}

// Two E4M3 bytes (low 16 bits of `pair`) as f16x2, exactly.
__device__ __forceinline__ uint32_t fp8x2_to_half2(uint32_t pair) {
    const __half2_raw h = __nv_cvt_fp8x2_to_halfraw2(__nv_fp8x2_storage_t(pair & 0xffffu), __NV_E4M3);
    return uint32_t(h.x) | (uint32_t(h.y) << 16);
}

// Where element d (0..15) of a 16-wide k-step sits in the query's shared rows:
// an E4M3 K fragment is built by hand, thread q taking d = 4q .. 4q+3 of a row
// as its (k = 2q, 2q+1) and (2q+8, 2q+9); the query follows the same order.
template <typename T>
__device__ __forceinline__ int query_fragment_column(int d) {
    if constexpr (!kIsFp8<T>) return d;  // ldmatrix fragments: the natural order
    const int c = d >> 2, i = d & 3;
    return i < 2 ? 2 * c + i : 8 + 2 * c + (i - 2);
}

// The head_dim index of row r (0..15) of O^T's m-tile j.
template <typename T, int D>
__device__ __forceinline__ int output_dim(int j, int r) {
    if constexpr (kIsFp8<T>) return r * (D / 16) + j;  // V fragments: thread g reads d = g*D/16 .. +D/16
    return 16 * j + r;
}

// A fragment of K (rows: the warp's 16 tokens from `rows`) for k-step ks:
// a[0] tokens 0-7, a[1] tokens 8-15 (k 0-7), a[2], a[3] the same for k 8-15.
template <typename T, int D>
__device__ __forceinline__ void key_fragment(const char *rows, int ks, int lane, uint32_t (&a)[4]) {
    using S = MmaShape<T, D>;
    if constexpr (kIsFp8<T>) {
        const int g = lane >> 2, q = lane & 3;
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int at = stage_offset<T, D>(8 * h + g, ks * 16 + 4 * q);
            const uint32_t word = *reinterpret_cast<const uint32_t *>(rows + at);
            a[h] = fp8x2_to_half2(word);
            a[2 + h] = fp8x2_to_half2(word >> 16);
        }
    } else {
        const int token = (lane & 7) + ((lane >> 3) & 1) * 8;
        ldmatrix_x4(a, shared_address(rows + stage_offset<T, D>(token, ks * 32 + (lane >> 4) * 16)));
    }
}

// B fragments of Q^T (the pass's 8 query rows of one piece) for k-steps ks
// (b[0], b[1]) and ks + 1 (b[2], b[3]).
template <typename T, int D>
__device__ __forceinline__ void query_fragments(const char *q_piece, int ks, int lane, uint32_t (&b)[4]) {
    using S = MmaShape<T, D>;
    ldmatrix_x4(b, shared_address(q_piece + ((lane & 7) * S::kQStride + ks * 16 + (lane >> 3) * 8) * 2));
}

// E4M3 V: this thread's bytes for every m-tile of O^T: of its four tokens
// (2q, 2q+1, 2q+8, 2q+9 of the warp's 16) the bytes d = r*D/16 .. +D/16 for
// its rows r = g and g + 8, as 32-bit words.
template <int D>
struct ValueBytes {
    uint32_t w[4][2][D / 64];  // [token][row g, g + 8][word]
};

template <int D>
__device__ __forceinline__ void load_value_bytes(const char *rows, int row_stride, int lane, ValueBytes<D> &v) {
    const int g = lane >> 2, q = lane & 3;
#pragma unroll
    for (int t = 0; t < 4; ++t)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const char *at = rows + (2 * q + (t & 1) + 8 * (t >> 1)) * row_stride + (g + 8 * h) * (D / 16);
#pragma unroll
            for (int i = 0; i < D / 64; ++i) v.w[t][h][i] = reinterpret_cast<const uint32_t *>(at)[i];
        }
}

// A fragment of V^T for O^T's m-tile j (rows: 16 of head_dim; k: the warp's
// 16 tokens from `rows`).
template <typename T, int D>
__device__ __forceinline__ void value_fragment(const char *rows, const ValueBytes<D> &bytes, int j, int lane,
                                               uint32_t (&a)[4]) {
    using S = MmaShape<T, D>;
    if constexpr (kIsFp8<T>) {
        const int word = j / 4, byte = j % 4;
        const uint32_t select = uint32_t(byte) | (uint32_t(4 + byte) << 4);
#pragma unroll
        for (int r = 0; r < 4; ++r) {  // a0: (row g, tokens 0-7), a1: (g+8, 0-7), a2: (g, 8-15), a3: (g+8, 8-15)
            const int h = r & 1, t = 2 * (r >> 1);
            a[r] = fp8x2_to_half2(__byte_perm(bytes.w[t][h][word], bytes.w[t + 1][h][word], select));
        }
    } else {
        (void)bytes;
        const int matrix = lane >> 3, token = (matrix >> 1) * 8 + (lane & 7);
        ldmatrix_x4_trans(a, shared_address(rows + stage_offset<T, D>(token, (16 * j + (matrix & 1) * 8) * 2)));
    }
}

// The pass's [8, D] query rows from `base` (element k * kMmaThreads +
// threadIdx.x into out[k]): row r is query head `r` of the pass, or with
// `packed` head r % 4; rows naming no head are zeros. One dtype switch, then
// independent loads (their latencies overlap).
template <typename Q, int D, int kPer>
__device__ __forceinline__ void load_query_rows_as(const Q *data, int64_t stride_head, int32_t count, bool packed,
                                                   float (&out)[kPer]) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) {
        const int i = k * kMmaThreads + threadIdx.x, e = i % D;
        const int r = packed ? (i / D) % kMmaPackedHeads : i / D;
        out[k] = r < count ? to_float(data[r * stride_head + e]) : 0.0f;
    }
}

template <int D, int kPer>
__device__ __forceinline__ void load_query_rows(const Tensor &q, int64_t base, int32_t count, bool packed,
                                                float (&out)[kPer]) {
    switch (q.dtype) {
        case RKV_DTYPE_F32:
            load_query_rows_as<float, D>(static_cast<const float *>(q.data) + base, q.stride_head, count, packed, out);
            break;
        case RKV_DTYPE_F16:
            load_query_rows_as<__half, D>(static_cast<const __half *>(q.data) + base, q.stride_head, count, packed,
                                          out);
            break;
        default:
            load_query_rows_as<__nv_bfloat16, D>(static_cast<const __nv_bfloat16 *>(q.data) + base, q.stride_head,
                                                 count, packed, out);
            break;
    }
}

// mma_cluster_merge: the pass's result (query heads g0 .. g0 + count) of a
// cluster of p.splits blocks, one per split. Each block first reduces its
// warps' states (block_state) into its own shared memory (block [count][D]
// weighted V sums, then block_max, block_sum [count]); after the cluster
// barrier, block `rank` merges its share of the (head, 4 elements) outputs
// over every block's result (merge_splits_and_store: the global merge's
// arithmetic); the second barrier keeps each block's shared memory alive (and
// unused by its next pass) until every other block has read it.
template <int D>
__device__ __forceinline__ void merge_cluster_pass(const AttendParams &p, int32_t entry, int32_t head, int32_t g0,
                                                   int32_t count, const float *merge_acc, const float *merge_max,
                                                   const float *merge_sum, float *block) {
    namespace cg = cooperative_groups;
    float *block_max = block + kMmaHeads * D, *block_sum = block_max + kMmaHeads;
    for (int32_t index = threadIdx.x; index < count * D; index += blockDim.x) {
        const int32_t g = index / D, e = index % D;
        const BlockState state = block_state<kMmaWarps, kMmaHeads, D>(merge_acc, merge_max, merge_sum, g, e);
        block[g * D + e] = state.acc;
        if (e == 0) {
            block_max[g] = state.max;
            block_sum[g] = state.sum;
        }
    }
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();  // every block's result is in its shared memory
    const int32_t outputs = count * (D / 4), share = (outputs + p.splits - 1) / p.splits;
    const int32_t first = int32_t(cluster.block_rank()) * share, last = min(outputs, first + share);
    for (int32_t index = first + threadIdx.x; index < last; index += blockDim.x) {
        const int32_t g = index / (D / 4), e = (index % (D / 4)) * 4;
        merge_splits_and_store(p, entry, head * p.groups + g0 + g, e, [&](int32_t s, float2 *state, float4 *acc) {
            const float *other = cluster.map_shared_rank(block, unsigned(s));  // split s = rank s
            *state = make_float2(other[kMmaHeads * D + g], other[kMmaHeads * D + kMmaHeads + g]);
            *acc = *reinterpret_cast<const float4 *>(other + g * D + e);
        });
    }
    cluster.sync();
}

// grid (split, KV head, entry), kMmaThreads threads,
// MmaShape::shared_bytes(kMaxPieces) of dynamic shared memory; `maps`: the
// layer's row maps (16-bit rows; unused for E4M3). kMaxPieces: 1
// where the query is one piece (the serving case: q in the MMA type), else
// kMmaMaxPieces (the loops over pieces are unrolled either way).
template <typename T, int D, int kMaxPieces>
__global__ void __launch_bounds__(kMmaThreads, (MmaShape<T, D>::kMinBlocks))
    attend_mma_kernel(AttendParams p, const __grid_constant__ AttendRowMaps maps) {
    using S = MmaShape<T, D>;
    using M = typename S::M;
    extern __shared__ __align__(16) char mma_dynamic[];
    // (the swizzle's pattern follows address bits 7-9: stages start 1024-aligned)
    const uintptr_t aligned = (reinterpret_cast<uintptr_t>(mma_dynamic) + 1023) & ~uintptr_t(1023);
    char *const mma_shared = S::kTma ? reinterpret_cast<char *>(aligned) : mma_dynamic;
    __shared__ float row_factor[kMmaHeads];  // scale * log2(e) / the row's power of two
    __shared__ int row_shift[kMmaHeads];     // the power of two of a query row (f16 products)
    __shared__ int row_amax_bits[kMmaHeads]; // largest |q| of a row, as the bits of a float >= 0
    __shared__ uint64_t stage_landed[S::kStages];  // TMA: a ring slot's K/V bytes have landed
    constexpr int kQueryPerThread = kMmaHeads * D / kMmaThreads;
    const CacheLayer &c = p.cache;
    const int32_t split = blockIdx.x, head = blockIdx.y, entry = blockIdx.z;
    if constexpr (S::kTma) {
        // (published before the speculative copies below by a block barrier;
        // as a cluster, by a cluster barrier: compute-sanitizer's racecheck
        // otherwise reports each block's first arrival as racing with its
        // cluster peers' start. Thread 0 initialising them all, each with its
        // fence, took 0.3 us longer at 1 x 1152.)
        if (threadIdx.x < S::kStages) mbarrier_init(&stage_landed[threadIdx.x], 1);
        if (mma_cluster_merge<T>(p.splits)) cooperative_groups::this_cluster().sync();
        else __syncthreads();
    }
    // A programmatic dependent launch (launch_attend_mma): the above overlapped
    // the previous kernel's end; from here on global memory is read and written.
    wait_for_prior_grids();
    allow_dependent_launch();
    const int32_t seq = attend_sequence(p, entry);
    if (seq < 0) return;
    const int32_t groups = p.groups;
    int32_t begin = 0, end = 0;  // this block's tokens (split_range, once `held` is read)
    const HeadRows<T> rows = head_rows<T>(c, seq, head);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int g = lane >> 2, quad = lane & 3;  // accumulators: tokens g, g+8 (S^T) or dims (O^T); heads 2q, 2q+1
    const int pieces = min(kMaxPieces, mma_query_pieces(p.q.dtype, S::kBf16));
    const bool scale_rows = !S::kBf16 && p.q.dtype != RKV_DTYPE_F16;
    char *q_shared = mma_shared + S::kStages * S::kStageBytes;  // [pieces][8][kQStride] M
    constexpr int kChunksPerRow = S::kRowBytes / 16;
    constexpr int kChunksPerThread = kMmaStageTokens * kChunksPerRow / kMmaThreads;  // 16-byte copies per stage
    static_assert(kChunksPerThread * kMmaThreads == kMmaStageTokens * kChunksPerRow, "whole copies per thread");

    // Stages the earlier passes loaded: stage s of this pass uses ring slot
    // (ring + s) % kStages, in that slot's phase (ring + s) / kStages.
    int32_t ring = 0;
    int32_t issued = 0;  // stages of the first pass loaded before `held` was read
    const int32_t layer_row0 = int32_t(slot_index(c, seq, head, 0));  // the row maps' row of token 0
    auto load_stage = [&](int32_t s) {
        const int slot = (ring + s) % S::kStages;
        char *k_stage = mma_shared + slot * S::kStageBytes;
        char *v_stage = k_stage + S::kRowsBytes;
        const int32_t first = begin + s * kMmaStageTokens;
        if constexpr (S::kTma) {
            // One thread: every 128-byte column block of the stage's 64 K and
            // V rows (rows past the split's end too: zeroed once landed).
            // The rows are read once: their lines go first when the L2 needs
            // room (H200, bench_attend.py, runs T2-T5 of session 19: 32 x
            // 1152 41.0-42.5 -> 39.6-40.8 us, also with 200 MB of other lines
            // read into the L2 first; 256 x 1152 279.4 -> 271.1; 1, 8 x 1152
            // and 32 x 16K unchanged).
            if (threadIdx.x == 0) {
                uint64_t *landed = &stage_landed[slot];
                const uint64_t read_once = l2_evict_first_policy();
                mbarrier_arrive_expect_bytes(landed, uint32_t(2 * S::kRowsBytes));
#pragma unroll
                for (int block = 0; block < S::kRowBytes / 128; ++block) {
                    const int at = block * kMmaStageTokens * 128, column = 64 * block, row = layer_row0 + first;
                    tensor_copy_to_shared(shared_address(k_stage + at), &maps.keys, column, row, landed, read_once);
                    tensor_copy_to_shared(shared_address(v_stage + at), &maps.values, column, row, landed, read_once);
                }
            }
        } else {  // E4M3 rows and their scales: cp.async, 16 (4) bytes per copy
#pragma unroll
            for (int k = 0; k < kChunksPerThread; ++k) {
                const int index = k * kMmaThreads + threadIdx.x;
                const int32_t t = first + index / kChunksPerRow;
                const bool valid = t < end;
                const int chunk16 = index % kChunksPerRow;
                const int64_t offset = valid ? int64_t(t) * S::kRowBytes + chunk16 * 16 : 0;
                const int at = stage_offset<T, D>(index / kChunksPerRow, chunk16 * 16);
                const char *keys = reinterpret_cast<const char *>(rows.keys);
                const char *values = reinterpret_cast<const char *>(rows.values);
                cp_async_16_stream(shared_address(k_stage + at), keys + offset, valid);
                cp_async_16_stream(shared_address(v_stage + at), values + offset, valid);
            }
            float *k_scales = reinterpret_cast<float *>(v_stage + S::kRowsBytes);
            stage_scales(rows, k_scales, k_scales + kMmaStageTokens, first, end, kMmaStageTokens);
            cp_async_commit();
        }
    };

    // Split 0 starts at token 0 whatever the sequence holds, so its first
    // stages go out before `held` is read: the first bytes arrive one trip to
    // memory sooner (the kernel before has finished: wait_for_prior_grids).
    // Rows past the end are masked as any stage's; stages past the end are
    // waited for and skipped at the end of the pass.
    if constexpr (S::kTma) {
        if (split == 0) {
            for (int32_t s = 0; s < S::kStages - 1; ++s) load_stage(s);
            issued = S::kStages - 1;
        }
    }
    const int32_t held = c.lengths[seq];
    const SplitRange range = split_range(held, p.splits, split);
    begin = range.begin;
    end = range.end;
    const int32_t stages = (end - begin + kMmaStageTokens - 1) / kMmaStageTokens;

    for (int32_t g0 = 0; g0 < groups; g0 += kMmaHeads) {
        const int32_t count = min(kMmaHeads, groups - g0);
        const bool packed = count <= kMmaPackedHeads;  // columns 4-7 repeat heads 0-3 and carry P's lo piece
        if constexpr (S::kTma) {
            // The previous pass's warp states overlaid the stage memory: each
            // thread orders its writes there before this pass's tensor copies
            // into it (the copy engine is another proxy; the barrier alone
            // orders threads, not proxies).
            if (g0 > 0) fence_proxy_async_shared();
        }
        __syncthreads();  // the previous pass is done with the shared memory
        for (int32_t s = issued; s < S::kStages - 1; ++s)
            if (s < stages) load_stage(s);

        // This pass's query rows as pieces of M, each row first scaled by its
        // power of two where the products are f16.
        float q_values[kQueryPerThread];  // element k * kMmaThreads + threadIdx.x of [8][D]
        load_query_rows<D>(p.q, entry * p.q.stride_seq + (int64_t(head) * groups + g0) * p.q.stride_head, count,
                           packed, q_values);
        if (threadIdx.x < kMmaHeads) row_amax_bits[threadIdx.x] = 0;
        __syncthreads();
        if (scale_rows) {
#pragma unroll
            for (int k = 0; k < kQueryPerThread; ++k) {  // a warp's 32 elements lie in one row
                const float amax = warp_max(fabsf(q_values[k]));
                if (lane == 0) atomicMax(&row_amax_bits[(k * kMmaThreads + threadIdx.x) / D], __float_as_int(amax));
            }
            __syncthreads();
        }
        if (threadIdx.x < kMmaHeads) {
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
                reinterpret_cast<M *>(q_shared)[(piece * kMmaHeads + r) * S::kQStride + column] = from_float<M>(head_part);
            }
        }
        const float factor[2] = {row_factor[2 * quad], row_factor[2 * quad + 1]};
        // Packed: lanes 2, 3 of a quad hold the repeated heads and pass on the lo piece of P.
        const bool lo_lane = packed && quad >= 2;

        float o[S::kMTiles][4];  // O^T: rows 16j + g (0, 1) and + 8 (2, 3), heads 2q (0, 2) and 2q+1 (1, 3)
#pragma unroll
        for (int j = 0; j < S::kMTiles; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.0f;
        float running_max[2] = {-INFINITY, -INFINITY}, running_sum[2] = {0.0f, 0.0f};  // heads 2q, 2q+1
        float value_reference = 0.0f;  // E4M3: o is relative to this value scale

        for (int32_t stage = 0; stage < stages; ++stage) {
            const int slot = (ring + stage) % S::kStages;
            if constexpr (S::kTma) {
                mbarrier_wait(&stage_landed[slot], uint32_t((ring + stage) / S::kStages) & 1u);
                const int32_t rows_here = min(kMmaStageTokens, end - (begin + stage * kMmaStageTokens));
                if (rows_here < kMmaStageTokens) {
                    // V rows past the split's end: zeros. Their weight is 0,
                    // but 0 * NaN is not, and unwritten slots hold any bits.
                    char *v_zero = mma_shared + slot * S::kStageBytes + S::kRowsBytes;
                    for (int i = threadIdx.x; i < (kMmaStageTokens - rows_here) * kChunksPerRow; i += kMmaThreads)
                        *reinterpret_cast<uint4 *>(v_zero + stage_offset<T, D>(rows_here + i / kChunksPerRow,
                                                                              (i % kChunksPerRow) * 16)) =
                            make_uint4(0, 0, 0, 0);
                    fence_proxy_async_shared();  // before a later tensor copy into the same bytes
                }
            } else {
                cp_async_wait_stage<S::kStages>(stage, stages);
            }
            __syncthreads();  // (the first time also: the query pieces are written)
            if (stage + S::kStages - 1 < stages) load_stage(stage + S::kStages - 1);
            const char *k_stage = mma_shared + slot * S::kStageBytes;
            const char *v_stage = k_stage + S::kRowsBytes;
            const float *k_scales = reinterpret_cast<const float *>(v_stage + S::kRowsBytes);
            const float *v_scales = k_scales + kMmaStageTokens;
            const int local0 = warp * kMmaGroupTokens;  // the warp's first token in the stage
            const char *k_rows = k_stage + local0 * S::kRowPitch;  // the warp's rows (stage_offset from there)
            const char *v_rows = v_stage + local0 * S::kRowPitch;
            const int32_t stage_first = begin + stage * kMmaStageTokens;
            if (stage_first + local0 >= end) continue;  // nothing of this warp's (no barrier below)

            // S^T = K Q^T: s[2h + i] is token g + 8h, head 2q + i (kChains
            // accumulators over the k-steps: that many MMA chains in flight)
            float parts[S::kChains][4];
#pragma unroll
            for (int chain = 0; chain < S::kChains; ++chain) parts[chain][0] = parts[chain][1] = parts[chain][2] = parts[chain][3] = 0.0f;
#pragma unroll
            for (int ks = 0; ks < S::kKSteps; ks += 2) {
                uint32_t b[kMaxPieces][4];
#pragma unroll
                for (int piece = 0; piece < kMaxPieces; ++piece)
                    if (piece < pieces) query_fragments<T, D>(q_shared + piece * S::kQPieceBytes, ks, lane, b[piece]);
#pragma unroll
                for (int step = 0; step < 2; ++step) {
                    uint32_t a[4];
                    key_fragment<T, D>(k_rows, ks + step, lane, a);
                    float (&acc)[4] = parts[(ks + step) % S::kChains];
#pragma unroll
                    for (int piece = 0; piece < kMaxPieces; ++piece) {
                        if (piece >= pieces) break;
                        mma_16816<M>(acc, a, b[piece][2 * step], b[piece][2 * step + 1]);
                    }
                }
            }
            float s[4];
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[e] = parts[0][e];
#pragma unroll
                for (int chain = 1; chain < S::kChains; ++chain) s[e] += parts[chain][e];
            }

            // logits (log2 units), masked past the split's end
            float value_scale[2] = {1.0f, 1.0f};  // tokens g, g+8
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int local = local0 + g + 8 * h;
                const bool valid = stage_first + local < end;
                float key_scale = 1.0f;
                if constexpr (kIsFp8<T>) {
                    key_scale = k_scales[local];
                    value_scale[h] = valid ? v_scales[local] : 0.0f;
                }
#pragma unroll
                for (int i = 0; i < 2; ++i) s[2 * h + i] = valid ? s[2 * h + i] * factor[i] * key_scale : -INFINITY;
            }

            // the running softmax state of heads 2q (i 0) and 2q+1 (i 1) over the warp's tokens
            float correction[2];
#pragma unroll
            for (int i = 0; i < 2; ++i) {
                float tile_max = fmaxf(s[i], s[2 + i]);
#pragma unroll
                for (int offset = 4; offset < 32; offset <<= 1)
                    tile_max = fmaxf(tile_max, __shfl_xor_sync(0xffffffffu, tile_max, offset));
                const float new_max = fmaxf(running_max[i], tile_max);
                correction[i] = rescale_factor(running_max[i], new_max);
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float &x = s[2 * h + i];
                    x = x == -INFINITY ? 0.0f : fast_exp2(x - new_max);
                }
                running_sum[i] = running_sum[i] * correction[i] + (s[i] + s[2 + i]);
                running_max[i] = new_max;
            }
            float value_factor = 1.0f;  // E4M3: the weights relative to the largest value scale
            if constexpr (kIsFp8<T>) {
                float tile_scale = fmaxf(value_scale[0], value_scale[1]);
#pragma unroll
                for (int offset = 4; offset < 32; offset <<= 1)
                    tile_scale = fmaxf(tile_scale, __shfl_xor_sync(0xffffffffu, tile_scale, offset));
                if (tile_scale > value_reference) {  // warp-uniform: every lane saw the warp's 16 tokens
                    value_factor = value_reference / tile_scale;
                    value_reference = tile_scale;
                }
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const float w = value_scale[h] / value_reference;  // powers of two: exact
                    s[2 * h] *= w;
                    s[2 * h + 1] *= w;
                }
            }
            const float factor0 = correction[0] * value_factor, factor1 = correction[1] * value_factor;
            if (!__all_sync(0xffffffffu, factor0 == 1.0f && factor1 == 1.0f)) {
#pragma unroll
                for (int j = 0; j < S::kMTiles; ++j) {
                    o[j][0] *= factor0;
                    o[j][1] *= factor1;
                    o[j][2] *= factor0;
                    o[j][3] *= factor1;
                }
            }

            // P^T as the B fragment of V^T P^T, in two pieces (hi + lo): each
            // piece packed in S^T's layout (tokens g, g+8; heads 2q, 2q+1),
            // then transposed to the B layout (tokens 2q, 2q+1 and +8; head g).
            uint32_t b_hi[2], b_lo[2];
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float rest0, rest1;
                const float hi0 = split_piece<M>(s[2 * h], &rest0), hi1 = split_piece<M>(s[2 * h + 1], &rest1);
                const uint32_t hi = pack2<M>(hi0, hi1), lo = pack2<M>(rest0, rest1);
                b_hi[h] = transpose_8x8(lo_lane ? lo : hi);
                b_lo[h] = packed ? 0u : transpose_8x8(lo);
            }
            ValueBytes<D> bytes;
            if constexpr (kIsFp8<T>) load_value_bytes<D>(v_rows, S::kRowPitch, lane, bytes);
#pragma unroll
            for (int j = 0; j < S::kMTiles; ++j) {
                uint32_t a[4];
                value_fragment<T, D>(v_rows, bytes, j, lane, a);
                mma_16816<M>(o[j], a, b_hi[0], b_hi[1]);
                if (!packed) mma_16816<M>(o[j], a, b_lo[0], b_lo[1]);
            }
        }

        if constexpr (S::kTma) {
            // speculative stages past the end: landed before the memory is reused
            for (int32_t s = stages; s < issued; ++s)
                mbarrier_wait(&stage_landed[(ring + s) % S::kStages], uint32_t((ring + s) / S::kStages) & 1u);
        }
        ring += max(stages, issued);
        issued = 0;

        // The warps' states into shared memory, then the block's result.
        __syncthreads();  // every stage is consumed: the stage memory is free
        float *merge_acc = reinterpret_cast<float *>(mma_shared);     // [warps][8][D]
        float *merge_max = merge_acc + kMmaWarps * kMmaHeads * D;      // [warps][8]
        float *merge_sum = merge_max + kMmaWarps * kMmaHeads;          // [warps][8]
        const float back = kIsFp8<T> ? value_reference : 1.0f;
        if (packed) {  // the lo piece's sums join the hi piece's lanes
#pragma unroll
            for (int j = 0; j < S::kMTiles; ++j)
#pragma unroll
                for (int e = 0; e < 4; ++e) o[j][e] += __shfl_xor_sync(0xffffffffu, o[j][e], 2);
        }
#pragma unroll
        for (int i = 0; i < 2; ++i) {
            float total = running_sum[i];  // this lane's tokens: the sum over the warp's
#pragma unroll
            for (int offset = 4; offset < 32; offset <<= 1) total += __shfl_xor_sync(0xffffffffu, total, offset);
            const int h = 2 * quad + i;
            if (lo_lane || h >= count) continue;
            if (g == 0) {
                merge_max[warp * kMmaHeads + h] = running_max[i];
                merge_sum[warp * kMmaHeads + h] = total;
            }
            float *acc = merge_acc + (warp * kMmaHeads + h) * D;
#pragma unroll
            for (int j = 0; j < S::kMTiles; ++j) {
                acc[output_dim<T, D>(j, g)] = o[j][i] * back;
                acc[output_dim<T, D>(j, g + 8)] = o[j][2 + i] * back;
            }
        }
        __syncthreads();
        if (mma_cluster_merge<T>(p.splits)) {
            float *block = merge_sum + kMmaWarps * kMmaHeads;  // [8][D + 2] (16-byte aligned)
            merge_cluster_pass<D>(p, entry, head, g0, count, merge_acc, merge_max, merge_sum, block);
        } else {
            write_block_result<kMmaWarps, kMmaHeads, D>(p, entry, head, split, g0, count, merge_acc, merge_max,
                                                        merge_sum);
        }
    }
    if (!mma_cluster_merge<T>(p.splits)) merge_splits_if_last<D>(p, entry, head);
}

}  // namespace rkv::kernels
