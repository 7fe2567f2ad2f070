// The key-Gram redundancy statistics on Hopper's warpgroup MMA (sm_90a), by
// rows: block i owns row tile i (128 keys) of a (job, head) and walks every
// column tile, from the last to the first, so a row's first hit is its latest
// column above tau; each half of the tile (64 rows) stops once every one of
// its rows has a hit (with keys that have near-duplicates, the common case
// R-KV exists for, part of the walk; with none, the whole square). It writes
// each row's answer once, into partial slot 0 (latest column, S there, the row
// sum k^_r . W - k^_r . k^_r), and S[r, 0] for the reference quirk where the
// walk reaches column tile 0 (every row without a hit makes it): the
// redundancy kernel's one-slot layout.
//
// gram_fused_kernel (kernels/gram_fused.cuh, mma.sync) computes the same
// statistics from the symmetric half instead, every tile of it; on Gaussian
// keys (no early stop) it is the faster one. Here S[r, c] = (acc * inv_r) *
// inv_c with acc the float32 sum of the exact 16-bit products, as there.
//
// How: one warpgroup (4 warps) per block; a tile's two halves of 64 rows x 128
// columns (wgmma.m64n128k16 from SW128 shared memory, kernels/wgmma.cuh) go to
// the tensor cores in turn into two accumulator sets, each computed while the
// warpgroup runs the epilogue of the other (five instructions per element:
// two multiplies, the compare, two predicated moves). Two blocks share an SM
// (about 100 KiB of shared memory each at head_dim 128). Rows and columns past
// n carry NaN inverse norms, so they never pass the threshold, whatever its
// sign. The symmetric wgmma kernel before this one (four 64 x 64 quarters, the
// column winners merged through shared memory: m64n64 from shared memory needs
// the whole shared-memory bandwidth for its operands) took 13.0 ms at batch 64
// where this one takes 14.2 on Gaussian keys and 11.2 on keys that share a
// direction (kernels/README.md, Session 12).
#pragma once

#include "wgmma.cuh"

namespace rkv::kernels {

constexpr int kGramWgmmaThreads = 128;  // one warpgroup

// Dynamic shared memory of gram_wgmma_kernel<T, D>, by byte offset from a
// 1024-aligned base (the allocation adds 1 KiB to align it).
template <int D>
struct GramWgmmaShared {
    static constexpr uint32_t kTile = uint32_t(kGramTile) * D * 2;  // one SW128 tile of 128 keys
    static constexpr uint32_t kRegion = uint32_t(kGramTile) * 128;  // 64 elements of 128 rows
    static constexpr uint32_t kA = 0;                               // row tile i
    static constexpr uint32_t kB = kTile;                           // [2] column tiles (by parity of j)
    static constexpr uint32_t kInvA = 3 * kTile;                    // [128] f32 1/(|k|+1e-8) of tile i; NaN past n
    static constexpr uint32_t kInvC = kInvA + kGramTile * 4;        // [3][128] f32 the same for tile j (j % 3)
    static constexpr uint32_t kW = kInvC + 3 * kGramTile * 4;       // [D] f32 sum of the normalised keys
    static constexpr uint32_t kEnd = kW + D * 4;
    static constexpr size_t kBytes = size_t(kEnd) + 1024;
};

__host__ __device__ constexpr size_t gram_wgmma_shared_bytes(int head_dim) {
    return head_dim == 64    ? GramWgmmaShared<64>::kBytes
           : head_dim == 128 ? GramWgmmaShared<128>::kBytes
                             : GramWgmmaShared<256>::kBytes;
}

// The (row tile i, job jj, KV head h) a block works on, for a grid of row
// tiles x kv_heads x jobs blocks. The (job, head) pairs go in chunks of
// kGramChunkPairs, and a chunk's blocks by row tile, so the blocks resident at
// once walk the keys of one or two chunks (at head_dim 128 and 1152 keys,
// 9.4 MB a chunk), which stay in the L2 while every row tile of their pairs
// walks them. (In row-tile-major order the walks of every pair of a launch came
// between two reads of a column tile, 151 MB at batch 64, three times the L2:
// each block read its nine tiles from DRAM, and the kernel took 14.9 ms, not
// 14.3.)
struct GramBlock {
    int32_t i, jj, h;
};
constexpr int32_t kGramChunkPairs = 32;
__device__ __forceinline__ GramBlock gram_block(int32_t kv_heads, int32_t jobs) {
    const int32_t pairs = kv_heads * jobs, tiles = int32_t(gridDim.x) / pairs, block = int32_t(blockIdx.x);
    const int32_t first = block / (kGramChunkPairs * tiles) * kGramChunkPairs;  // the chunk's first pair
    const int32_t count = min(kGramChunkPairs, pairs - first), local = block - first * tiles;
    const int32_t pair = first + local % count;
    return {local / count, pair / kv_heads, pair % kv_heads};
}

#if RKV_HAS_WGMMA

// Keys first_row .. first_row + 127 of a [*, D] matrix into an SW128 tile
// (rows >= n are zeros): copy_key_tile (common.cuh) with the SW128 layout.
template <typename T, int D>
__device__ __forceinline__ void load_sw128_tile(uint32_t tile, const T *source, int32_t first_row, int32_t n) {
    copy_key_tile<T, D, kGramWgmmaThreads>(tile, source, first_row, n,
                                           [](int row, int chunk) { return sw128_offset(row, chunk, kGramTile); });
}

// Issues acc = rows 64 * half .. + 63 of the A tile times the 128 rows of the
// B tile (shared addresses of SW128 tiles of 128 keys), K = D, as one
// committed wgmma group; the caller waits (wgmma_wait), then fences acc.
template <typename T, int D>
__device__ __forceinline__ void issue_half(float (&acc)[64], uint32_t a_tile, uint32_t b_tile, int half) {
    constexpr uint32_t kRegion = GramWgmmaShared<D>::kRegion;
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < D / 16; ++k) {
        const uint32_t step = (k >> 2) * kRegion + (k & 3) * 32;
        wgmma_m64n128k16<T>(acc, sw128_descriptor(a_tile + step + uint32_t(half) * 64 * 128),
                            sw128_descriptor(b_tile + step), k > 0);
    }
    wgmma_commit();
}

// The exact epilogue of one half (64 rows x kGroups * 8 columns of a tile in
// the wgmma accumulator layout): per row of this thread (rows first_row and
// first_row + 8, in the numbering first_column's columns are in) the latest of
// its columns with S = acc * inv_r * inv_c above tau, as first_column plus the
// local column (-1: none), and S there. Columns ascend along (s, e % 2): a
// later hit replaces an earlier one. kDiagonal: S[r, r] = 0. (Also the int8
// Gram's, kernels/gram_int8.cuh.)
template <int kGroups, bool kDiagonal>
__device__ __forceinline__ void exact_epilogue(const float (&acc)[4 * kGroups], int32_t first_row,
                                               int32_t first_column, const float (&inv_r)[2], const float *inv_c,
                                               float tau, int32_t (&latest)[2], float (&value)[2]) {
    const int q = threadIdx.x & 3;
#pragma unroll
    for (int s = 0; s < kGroups; ++s) {
        const int column_pair = 8 * s + 2 * q;
        const float2 inv_pair = *reinterpret_cast<const float2 *>(inv_c + column_pair);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int hr = e >> 1, ec = e & 1;
            float v = acc[4 * s + e] * inv_r[hr] * (ec ? inv_pair.y : inv_pair.x);
            if (kDiagonal && first_row + 8 * hr == first_column + column_pair + ec) v = 0.0f;
            if (v > tau) {
                latest[hr] = first_column + column_pair + ec;
                value[hr] = v;
            }
        }
    }
}

// The epilogue of one half (64 rows x the 128 columns of tile j), local
// columns: exact_epilogue for this thread's rows of the tile (64 half + 16
// warp + g, + 8).
template <bool kDiagonal>
__device__ __forceinline__ void wgmma_half_epilogue(const float (&acc)[64], int half, const float *inv_a,
                                                    const float *inv_c, float tau, int32_t (&latest)[2],
                                                    float (&value)[2]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2;
    const int row0 = half * 64 + warp * 16 + g;  // + 8 for e >= 2
    const float inv_r[2] = {inv_a[row0], inv_a[row0 + 8]};
    exact_epilogue<16, kDiagonal>(acc, row0, 0, inv_r, inv_c, tau, latest, value);
}

// S[r, 0] of this thread's two rows of a half (rows first_row, first_row + 8;
// 0 for row 0) from an exact product whose first column is key 0: column 0 is
// accumulator e = 0 (row g) and 2 (row g + 8) of lanes q == 0.
template <int N>
__device__ __forceinline__ void store_first_column(float *first_column, const float (&acc)[N], int32_t first_row,
                                                   int32_t n, const float (&inv_r)[2], float inv_c0) {
    if ((threadIdx.x & 3) != 0) return;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        const int32_t r = first_row + 8 * hr;
        if (r < n) first_column[r] = r == 0 ? 0.0f : acc[2 * hr] * inv_r[hr] * inv_c0;
    }
}

// The walk's answers into partial slot 0: each row's latest column above tau
// over its quad's four lanes (the largest wins) and S there, for this
// thread's rows first_row + 64 half + 8 hr.
__device__ __forceinline__ void store_walk_answers(int32_t (&walk_latest)[2][2], float (&walk_value)[2][2],
                                                   int32_t first_row, int32_t n, int32_t *partial_latest,
                                                   float *partial_value) {
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            keep_latest_over_lanes<1, 2>(walk_latest[half][hr], walk_value[half][hr]);
            const int32_t r = first_row + 64 * half + 8 * hr;
            if ((threadIdx.x & 3) == 0 && r < n) {
                partial_latest[r] = walk_latest[half][hr];
                partial_value[r] = walk_value[half][hr];
            }
        }
}

#endif  // RKV_HAS_WGMMA

// grid (row tiles * kv_heads * jobs, in gram_block's order), kGramWgmmaThreads threads,
// gram_wgmma_shared_bytes(D) of dynamic shared memory. Needs the fused
// importance kernel's inverse norms and W partials. Writes partial slot 0 of
// each row (its latest column above tau over all columns, S there, the row
// sum) and S[r, 0] for the reference quirk: the redundancy kernel's one-slot
// layout (gram_fused = 0).
template <typename T, int D>
__global__ void __launch_bounds__(kGramWgmmaThreads, (D <= 128 ? 2 : 1)) gram_wgmma_kernel(CompressParams p) {
#if RKV_HAS_WGMMA
    using L = GramWgmmaShared<D>;
    extern __shared__ char gram_wgmma_raw[];
    const uint32_t raw = shared_address(gram_wgmma_raw);
    const uint32_t base = (raw + 1023u) & ~1023u;
    char *shared = gram_wgmma_raw + (base - raw);
    float *inv_a = reinterpret_cast<float *>(shared + L::kInvA);
    float *inv_cols = reinterpret_cast<float *>(shared + L::kInvC);
    float *w = reinterpret_cast<float *>(shared + L::kW);

    const GramBlock block = gram_block(p.cache.kv_heads, p.num_jobs);
    const int32_t i = block.i, jj = block.jj, h = block.h;
    const Job job = p.jobs[jj];
    if (!job_active(p, job)) return;
    const int32_t n = job.held, tiles = (n + kGramTile - 1) / kGramTile;
    if (i >= tiles) return;

    const CacheLayer c = job_cache(p, job);
    const T *keys = scoring_keys<T>(p, c, jj, job, h);
    const int64_t row = scratch_row(p, jj, h);
    const int64_t cap = c.capacity;
    const float *inv_norm = p.scratch.inv_norm + row;
    float *partial_sum = p.scratch.partial_sum + row * p.scratch.tiles;
    int32_t *partial_latest = p.scratch.partial_latest + row * p.scratch.tiles;
    float *partial_value = p.scratch.partial_value + row * p.scratch.tiles;
    const float not_a_number = __int_as_float(0x7fffffff);
    const int t = threadIdx.x;
    const int warp = t >> 5, lane = t & 31, g = lane >> 2;
    auto b_tile = [&](int32_t j) { return j == i ? base + L::kA : base + L::kB + uint32_t(j & 1) * L::kTile; };

    // The walk goes from the last column tile to the first, so a row's first
    // hit is its latest; a half stops once its rows have one each. The halves
    // of the tiles go to the tensor cores in turn in two accumulator sets, each
    // computed while the warpgroup runs the epilogue of the other: step j
    // starts with tile j's first half computed (`even`), issues its second
    // (`odd`), runs the epilogue of the first, then issues tile j - 1's first
    // half and runs the epilogue of the second. No product is in flight across
    // the loop's back edge (ptxas would serialise them all).
    const float inv_row = i * kGramTile + t < n ? inv_norm[i * kGramTile + t] : not_a_number;  // loaded first
    const int32_t last_column = (tiles - 1) * kGramTile + t;
    inv_cols[((tiles - 1) % 3) * kGramTile + t] = last_column < n ? inv_norm[last_column] : not_a_number;
    load_sw128_tile<T, D>(base + L::kA, keys, i * kGramTile, n);
    if (tiles - 1 != i) load_sw128_tile<T, D>(b_tile(tiles - 1), keys, (tiles - 1) * kGramTile, n);
    cp_async_commit();
    // The walk's second column tile goes out now too, into the other buffer
    // (its own copy group: the first products wait for the first group only),
    // so that it has the first tile's products and epilogue to land in.
    if (tiles >= 2 && tiles - 2 != i) load_sw128_tile<T, D>(b_tile(tiles - 2), keys, (tiles - 2) * kGramTile, n);
    cp_async_commit();
    for (int e = t; e < D; e += blockDim.x)
        w[e] = sum_w_partials<D>(p.scratch.partial_w + (row / cap) * p.scratch.tiles * D + e, tiles);
    inv_a[t] = inv_row;
    // The inverse norms of tile j - 1 (a register a step ahead, stored in step j).
    float next_inv = not_a_number;
    if (tiles >= 2) {
        const int32_t col = (tiles - 2) * kGramTile + t;
        next_inv = col < n ? inv_norm[col] : not_a_number;
    }
    cp_async_wait<1>();  // the row tile and the last column tile
    fence_async_shared();
    __syncthreads();
    float even[64], odd[64];  // rows 0-63 and 64-127 of a tile times its 128 columns
    issue_half<T, D>(even, base + L::kA, b_tile(tiles - 1), 0);
    {
        // Row sums of the tile's rows: k^_r . W - k^_r . k^_r (a thread per
        // row; while the first products are computed).
        const float sum = row_sum_from_w<T, D>(shared + L::kA, t, inv_a[t], w, [](int row, int chunk) {
            return sw128_offset(row, chunk, kGramTile);
        });
        if (i * kGramTile + t < n) partial_sum[i * kGramTile + t] = sum;
    }
    wgmma_wait<0>();
    fence_accumulators(even);

    // walk_latest[half][hr]: this thread's latest column (global) above tau of
    // its row (64 half + 16 warp + g + 8 hr) over the tiles walked; -1 none.
    int32_t walk_latest[2][2] = {{-1, -1}, {-1, -1}};
    float walk_value[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
    // done[half]: every row of this thread's warp in that half has a hit (rows
    // past n count as done); walking[half]: the half still walks (the same in
    // every thread: decided at the block's barriers). The halves stop on their
    // own: 64 rows find their hits sooner than 128 (shared-direction keys:
    // 5.9 of 9 tiles walked instead of 7.2).
    bool done[2] = {false, false}, walking[2] = {true, true};
    // Whether each of the warp's 16 rows of a half has a hit in one of its
    // quad's lanes (rows past n count as having one): lane 4g + q holds a bit
    // of row g (and g + 8), so a row has one where its quad's nibble of the
    // ballot is not zero. (Two ballots side by side: the shuffles of the
    // quads' bits, one after the other, sat before the step's barrier.)
    auto half_done = [&](int half) {
        uint32_t all = 0x11111111u;
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) {
            const int32_t r = i * kGramTile + half * 64 + warp * 16 + g + 8 * hr;
            uint32_t bits = __ballot_sync(0xffffffffu, walk_latest[half][hr] >= 0 || r >= n);
            bits |= bits >> 1;
            bits |= bits >> 2;
            all &= bits;
        }
        return (all & 0x11111111u) == 0x11111111u;
    };
    auto epilogue = [&](const float (&acc)[64], int half, int32_t j, const float *inv_c) {
        int32_t latest[2] = {-1, -1};
        float value[2] = {0.0f, 0.0f};
        if (j == i) wgmma_half_epilogue<true>(acc, half, inv_a, inv_c, p.threshold, latest, value);
        else wgmma_half_epilogue<false>(acc, half, inv_a, inv_c, p.threshold, latest, value);
#pragma unroll
        for (int hr = 0; hr < 2; ++hr)
            if (latest[hr] >= 0 && walk_latest[half][hr] < 0) {
                walk_latest[half][hr] = j * kGramTile + latest[hr];
                walk_value[half][hr] = value[hr];
            }
        if (j == 0 && p.slot0_quirk) {
            const int local = half * 64 + warp * 16 + g;
            const float inv_r[2] = {inv_a[local], inv_a[local + 8]};
            store_first_column(p.scratch.first_column + row, acc, i * kGramTile + local, n, inv_r, inv_c[0]);
        }
    };
    for (int32_t j = tiles - 1; j >= 0; --j) {
        // tile j's first half is in `even` (if half 0 walks); tile j - 1's copy is in flight.
        const float *inv_c = inv_cols + (j % 3) * kGramTile;
        if (walking[1]) issue_half<T, D>(odd, base + L::kA, b_tile(j), 1);
        if (walking[0]) {
            // Half 0's answer as of tile j is known before the barrier, so
            // the barrier can stop it before it computes tile j - 1.
            epilogue(even, 0, j, inv_c);
            done[0] = half_done(0);
        }
        if (j > 0) {
            // (buffer (j - 1) % 3 last served tile j + 2: every warp finished its epilogues before the
            // barrier of step j + 1)
            inv_cols[((j - 1) % 3) * kGramTile + t] = next_inv;
            if (j > 1) {
                const int32_t col = (j - 2) * kGramTile + t;
                next_inv = col < n ? inv_norm[col] : not_a_number;
            }
        }
        wgmma_wait<0>();
        fence_accumulators(odd);
        cp_async_wait<0>();  // tile j - 1
        fence_async_shared();
        // Every warp is done with tile j's products (its buffer may take tile
        // j - 2), tile j - 1 and its inverse norms are in shared memory. A half
        // stops once each of its rows has a hit: half 0 as of this tile, half 1
        // as of tile j + 1 (its epilogue of tile j comes after the barrier, so
        // that the tensor cores compute tile j - 1's half 0 meanwhile).
        const bool stop0 = __syncthreads_and(done[0]), stop1 = __syncthreads_and(done[1]);
        const bool next0 = walking[0] && !stop0, next1 = walking[1] && !stop1;
        if (j > 0 && next0) issue_half<T, D>(even, base + L::kA, b_tile(j - 1), 0);
        if (j >= 2 && j - 2 != i && (next0 || next1)) {
            load_sw128_tile<T, D>(b_tile(j - 2), keys, (j - 2) * kGramTile, n);
            cp_async_commit();
        }
        if (next1) {
            epilogue(odd, 1, j, inv_c);
            done[1] = half_done(1);
        }
        wgmma_wait<0>();
        fence_accumulators(even);
        walking[0] = next0;
        walking[1] = next1;
        if (!next0 && !next1) break;
    }
    cp_async_wait<0>();  // a prefetch the early stop left in flight
    store_walk_answers(walk_latest, walk_value, i * kGramTile + warp * 16 + g, n, partial_latest, partial_value);
#else
    __trap();  // never launched: the host selects this kernel only on sm_90 devices
#endif
}

}  // namespace rkv::kernels
