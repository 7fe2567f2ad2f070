// The key-Gram redundancy statistics on Hopper's warpgroup MMA (sm_90a).
//
// The same statistics as gram_fused_kernel (kernels/gram_fused.cuh), which
// stays as the mma.sync path: for every row r, the latest column above tau and
// S there, per column tile t before r's own (partial slot t) and over r's own
// and later tiles (slot of r's tile; the slots after it hold -1); the
// row sums k^_r . W - k^_r . k^_r (slot 0); S[r, 0] for the reference quirk.
// S[r, c] = (acc * inv_r) * inv_c with acc the float32 sum of the exact 16-bit
// products, as there. Symmetric: block i owns row tile i and walks the column
// tiles j >= i; tile (i, j) serves the rows of tile i (kept over the walk,
// slot i) and, read transposed, the rows of tile j (slot i). Every (row, slot)
// is written once.
//
// What differs is how: one warpgroup (4 warps) per block computes each 128 x 128
// tile as four 64 x 64 quarters with wgmma from SW128 shared memory (kernels/
// wgmma.cuh), two accumulator sets in turn, so the tensor cores compute the
// next quarter while the warpgroup runs the epilogue of the current one, and no
// mma or ldmatrix instruction takes issue slots from the epilogue. Two blocks
// share an SM (about 108 KiB of shared memory each for head_dim 128). The
// per-column winners are reduced through shared memory (latest row as int16,
// then the value of the one thread that holds it) instead of shuffles. Rows and
// columns past n carry NaN inverse norms, so they never pass the threshold,
// whatever its sign.
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
    static constexpr uint32_t kB = kTile;                           // [2] column tiles (double-buffered)
    static constexpr uint32_t kInvA = 3 * kTile;                    // [128] f32 1/(|k|+1e-8) of tile i; NaN past n
    static constexpr uint32_t kInvC = kInvA + kGramTile * 4;        // [2][128] f32 the same for tile j
    static constexpr uint32_t kW = kInvC + 2 * kGramTile * 4;       // [D] f32 sum of the normalised keys
    static constexpr uint32_t kStage = kW + D * 4;                  // [32][128] int16 latest row per (thread row, column)
    static constexpr uint32_t kWinner = kStage + 32 * kGramTile * 2;  // [128] int32 latest row per column
    static constexpr uint32_t kValue = kWinner + kGramTile * 4;     // [128] f32 S at that row
    static constexpr uint32_t kEnd = kValue + kGramTile * 4;
    static constexpr size_t kBytes = size_t(kEnd) + 1024;
};

__host__ __device__ constexpr size_t gram_wgmma_shared_bytes(int head_dim) {
    return head_dim == 64    ? GramWgmmaShared<64>::kBytes
           : head_dim == 128 ? GramWgmmaShared<128>::kBytes
                             : GramWgmmaShared<256>::kBytes;
}

#if RKV_HAS_WGMMA

// Keys first_row .. first_row + 127 of a [*, D] matrix into an SW128 tile
// (rows >= n are zeros): copy_key_tile (common.cuh) with the SW128 layout.
template <typename T, int D>
__device__ __forceinline__ void load_sw128_tile(uint32_t tile, const T *source, int32_t first_row, int32_t n) {
    copy_key_tile<T, D, kGramWgmmaThreads>(tile, source, first_row, n,
                                           [](int row, int chunk) { return sw128_offset(row, chunk, kGramTile); });
}

// Issues acc = rows 64 * half .. + 63 of the A tile times rows 64 * side ..
// + 63 of the B tile (shared addresses of SW128 tiles of 128 keys), K = D, as
// one committed wgmma group; the caller waits (wgmma_wait), then fences acc.
template <typename T, int D>
__device__ __forceinline__ void issue_quarter(float (&acc)[32], uint32_t a_tile, uint32_t b_tile, int half, int side) {
    constexpr uint32_t kRegion = GramWgmmaShared<D>::kRegion;
    wgmma_fence();
#pragma unroll
    for (int k = 0; k < D / 16; ++k) {
        const uint32_t step = (k >> 2) * kRegion + (k & 3) * 32;
        const uint64_t a = sw128_descriptor(a_tile + step + uint32_t(half) * 64 * 128);
        const uint64_t b = sw128_descriptor(b_tile + step + uint32_t(side) * 64 * 128);
        wgmma_m64n64k16<T>(acc, a, b, k > 0);
    }
    wgmma_commit();
}

// Where one thread's accumulators sit in the 128 x 128 tile and what the
// epilogue keeps across the two halves.
struct WgmmaTileState {
    int32_t col_latest[32];  // per column 8 (k/2) + 2q + k%2: latest local row above tau, -1 none
    float col_value[32];     // S there
};

// What one thread's rows (local rows 64 half + 16 warp + g and + 8) have met
// so far in the columns of a half: the latest column above tau and S there.
struct WgmmaRowState {
    int32_t latest[2];
    float value[2];
};

// The epilogue of one 64 x 64 quarter (rows of `half`, columns of `side`):
// per row the latest column above tau (kept in `rows` over the two sides);
// per column (off the diagonal) the latest row, kept in `state`. Rows ascend
// along (half, e / 2) and columns along (side, s, e % 2), so a later hit
// replaces an earlier one. kDiagonal: S[r, r] = 0, rows only.
template <bool kDiagonal>
__device__ __forceinline__ void wgmma_quarter_epilogue(const float (&acc)[32], int half, int side, const float *inv_a,
                                                       const float *inv_c, float tau, WgmmaRowState &rows,
                                                       WgmmaTileState &state) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int row0 = half * 64 + warp * 16 + g;  // + 8 for e >= 2
    const float inv_r[2] = {inv_a[row0], inv_a[row0 + 8]};
#pragma unroll
    for (int s = 0; s < 8; ++s) {
        const int column_pair = 8 * (8 * side + s) + 2 * q;
        const float2 inv_pair = *reinterpret_cast<const float2 *>(inv_c + column_pair);
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int hr = e >> 1, ec = e & 1;
            const int row_local = row0 + 8 * hr, col_local = column_pair + ec;
            float value = acc[4 * s + e] * inv_r[hr] * (ec ? inv_pair.y : inv_pair.x);
            if (kDiagonal && row_local == col_local) value = 0.0f;
            if (value > tau) {
                rows.latest[hr] = col_local;
                rows.value[hr] = value;
                if (!kDiagonal) {
                    state.col_latest[2 * (8 * side + s) + ec] = row_local;
                    state.col_value[2 * (8 * side + s) + ec] = value;
                }
            }
        }
    }
}

// After both sides of a half of tile j: the half's row hits (local columns)
// folded into the running hits of the walk (`walk`, global columns: tiles come
// in column order, so a hit in tile j is later than any before), and slot j of
// the rows gets -1 when j > i (their hits go to slot i after the walk).
__device__ __forceinline__ void wgmma_fold_rows(const WgmmaRowState &rows, WgmmaRowState &walk, int half, int32_t i,
                                                int32_t j, int32_t n, int64_t cap, int32_t *partial_latest) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int row0 = half * 64 + warp * 16 + g;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        if (rows.latest[hr] >= 0) {
            walk.latest[hr] = j * kGramTile + rows.latest[hr];
            walk.value[hr] = rows.value[hr];
        }
        const int32_t r = i * kGramTile + row0 + 8 * hr;
        if (j > i && q == 0 && r < n) partial_latest[j * cap + r] = -1;
    }
}

// After the walk: the 4 lanes of a quad share a row, the largest column wins;
// written to partial slot i of the row.
__device__ __forceinline__ void wgmma_write_rows(WgmmaRowState &walk, int half, int32_t i, int32_t n, int64_t cap,
                                                 int32_t *partial_latest, float *partial_value) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int row0 = half * 64 + warp * 16 + g;
#pragma unroll
    for (int hr = 0; hr < 2; ++hr) {
        keep_latest_over_lanes<1, 2>(walk.latest[hr], walk.value[hr]);
        const int32_t r = i * kGramTile + row0 + 8 * hr;
        if (q == 0 && r < n) {
            partial_latest[i * cap + r] = walk.latest[hr];
            partial_value[i * cap + r] = walk.value[hr];
        }
    }
}

// The column winners of an off-diagonal tile (i, j): the latest row of tile i
// above tau for each column of tile j, written to partial slot i of that
// column's row. Three block barriers: stage the latest rows, reduce them per
// column, let the one thread holding the winner publish its value.
__device__ __forceinline__ void wgmma_column_winners(const WgmmaTileState &state, int16_t *stage, int32_t *winner,
                                                     float *winner_value, int32_t i, int32_t j, int32_t n,
                                                     int64_t cap, int32_t *partial_latest, float *partial_value) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    const int thread_row = warp * 8 + g;  // the 8 lanes of a column share q
#pragma unroll
    for (int s = 0; s < 16; ++s) {
        const uint32_t pair = uint32_t(uint16_t(int16_t(state.col_latest[2 * s]))) |
                              (uint32_t(uint16_t(int16_t(state.col_latest[2 * s + 1]))) << 16);
        *reinterpret_cast<uint32_t *>(stage + thread_row * kGramTile + 8 * s + 2 * q) = pair;
    }
    __syncthreads();
    {
        const int column = threadIdx.x;
        int32_t best = -1;
#pragma unroll 8
        for (int r = 0; r < 32; ++r) best = max(best, int32_t(stage[r * kGramTile + column]));
        winner[column] = best;
    }
    __syncthreads();
    // The thread whose row won a column publishes S there. The winners are
    // loaded 8 at a time before any compare, so the stores can be predicated
    // (with the load inside the condition, ptxas made the 32 updates divergent
    // branches, each waiting on its load: ~10% of the kernel's stall samples).
#pragma unroll
    for (int k0 = 0; k0 < 32; k0 += 8) {
        int32_t best[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) best[k] = winner[8 * ((k0 + k) >> 1) + 2 * q + ((k0 + k) & 1)];
#pragma unroll
        for (int k = 0; k < 8; ++k)
            if (best[k] >= 0 && state.col_latest[k0 + k] == best[k])
                winner_value[8 * ((k0 + k) >> 1) + 2 * q + ((k0 + k) & 1)] = state.col_value[k0 + k];
    }
    __syncthreads();
    {
        const int column = threadIdx.x;
        const int32_t c = j * kGramTile + column;
        if (c < n) {
            const int32_t best = winner[column];
            partial_latest[i * cap + c] = best >= 0 ? i * kGramTile + best : -1;
            partial_value[i * cap + c] = best >= 0 ? winner_value[column] : 0.0f;
        }
    }
}

#endif  // RKV_HAS_WGMMA

// grid (tile row i * kv_heads * jobs, heavy rows first), kGramWgmmaThreads
// threads, gram_wgmma_shared_bytes(D) of dynamic shared memory. Needs the
// fused importance kernel's inverse norms and W partials.
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
    int16_t *stage = reinterpret_cast<int16_t *>(shared + L::kStage);
    int32_t *winner = reinterpret_cast<int32_t *>(shared + L::kWinner);
    float *winner_value = reinterpret_cast<float *>(shared + L::kValue);

    const int32_t heads_jobs = p.cache.kv_heads * p.num_jobs;
    const int32_t i = blockIdx.x / heads_jobs;
    const int32_t jj = (blockIdx.x % heads_jobs) / p.cache.kv_heads;
    const int32_t h = blockIdx.x % p.cache.kv_heads;
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

    const float inv_row = i * kGramTile + t < n ? inv_norm[i * kGramTile + t] : not_a_number;  // loaded first
    load_sw128_tile<T, D>(base + L::kA, keys, i * kGramTile, n);
    cp_async_commit();
    // W = the sum of every normalised key, from the per-tile partials.
    for (int e = t; e < D; e += blockDim.x)
        w[e] = sum_w_partials<D>(p.scratch.partial_w + (row / cap) * p.scratch.tiles * D + e, tiles);
    inv_a[t] = inv_row;

    // The latest column above tau of this thread's rows (half 0, half 1) over
    // the walk, and S there (wgmma_fold_rows).
    WgmmaRowState walk[2] = {{{-1, -1}, {0.0f, 0.0f}}, {{-1, -1}, {0.0f, 0.0f}}};
    float next_inv = inv_row;  // the column tile j = i is the row tile
    for (int32_t j = i; j < tiles; ++j) {
        const int32_t step = j - i;
        const uint32_t b_tile = step == 0 ? base + L::kA : base + L::kB + uint32_t((step - 1) & 1) * L::kTile;
        float *inv_c = inv_cols + (step & 1) * kGramTile;
        // The inverse norms of tile j, loaded a tile ahead (the store waited on
        // its own load here: 6.6% of the stall samples), and those of j + 1.
        inv_c[t] = next_inv;
        if (j + 1 < tiles) {
            const int32_t col = (j + 1) * kGramTile + t;
            next_inv = col < n ? inv_norm[col] : not_a_number;
        }
        // Prefetch tile j + 1 into the buffer tile j - 1 used (every warp is
        // past it: the barriers of its column winners).
        if (j + 1 < tiles) {
            load_sw128_tile<T, D>(base + L::kB + uint32_t(step & 1) * L::kTile, keys, (j + 1) * kGramTile, n);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        fence_async_shared();
        __syncthreads();

        WgmmaTileState state;
#pragma unroll
        for (int k = 0; k < 32; ++k) {
            state.col_latest[k] = -1;
            state.col_value[k] = 0.0f;
        }
        // The tile as four 64 x 64 quarters (half, side) = (0, 0), (0, 1),
        // (1, 0), (1, 1) in two accumulator sets: the tensor cores compute the
        // next quarter while the warpgroup runs the epilogue of this one (one
        // 128 x 128 accumulator, product then epilogue, took 16.6 ms at batch
        // 64 where the products alone took 10.1).
        auto epilogue = [&](const float (&acc)[32], int half, int side, WgmmaRowState &rows) {
            if (step == 0) wgmma_quarter_epilogue<true>(acc, half, side, inv_a, inv_c, p.threshold, rows, state);
            else wgmma_quarter_epilogue<false>(acc, half, side, inv_a, inv_c, p.threshold, rows, state);
            if (p.slot0_quirk && i == 0 && half == 0 && t < 4) {
                // S[0, c] for the side's columns: row 0 is accumulator e = 0, 1 of lanes 0 .. 3 of warp 0.
#pragma unroll
                for (int s8 = 0; s8 < 8; ++s8)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int column = 64 * side + 8 * s8 + 2 * t + e;
                        const int32_t col = j * kGramTile + column;
                        if (col < n)
                            p.scratch.first_column[row + col] =
                                col == 0 ? 0.0f : acc[4 * s8 + e] * inv_a[0] * inv_c[column];
                    }
            }
        };
        float even[32], odd[32];
        WgmmaRowState rows = {{-1, -1}, {0.0f, 0.0f}};
        issue_quarter<T, D>(even, base + L::kA, b_tile, 0, 0);
        issue_quarter<T, D>(odd, base + L::kA, b_tile, 0, 1);
        if (step == 0) {
            // Row sums of the tile's rows: k^_r . W - k^_r . k^_r (a thread per row;
            // while the first quarters are computed).
            const float inv_r = inv_a[t];
            float dot_w = 0.0f, dot_self = 0.0f;
            for (int chunk = 0; chunk < D / 8; ++chunk) {
                float values[8];
                unpack16(*reinterpret_cast<const uint4 *>(shared + L::kA + sw128_offset(t, chunk, kGramTile)), values,
                         T());
#pragma unroll
                for (int e = 0; e < 8; ++e) {
                    const float k_hat = values[e] * inv_r;
                    dot_w += k_hat * w[chunk * 8 + e];
                    dot_self += k_hat * k_hat;
                }
            }
            if (i * kGramTile + t < n) partial_sum[i * kGramTile + t] = dot_w - dot_self;
        }

        wgmma_wait<1>();
        fence_accumulators(even);
        epilogue(even, 0, 0, rows);
        issue_quarter<T, D>(even, base + L::kA, b_tile, 1, 0);
        wgmma_wait<1>();
        fence_accumulators(odd);
        epilogue(odd, 0, 1, rows);
        wgmma_fold_rows(rows, walk[0], 0, i, j, n, cap, partial_latest);
        rows = {{-1, -1}, {0.0f, 0.0f}};
        issue_quarter<T, D>(odd, base + L::kA, b_tile, 1, 1);
        wgmma_wait<1>();
        fence_accumulators(even);
        epilogue(even, 1, 0, rows);
        wgmma_wait<0>();
        fence_accumulators(odd);
        epilogue(odd, 1, 1, rows);
        wgmma_fold_rows(rows, walk[1], 1, i, j, n, cap, partial_latest);
        if (step > 0)
            wgmma_column_winners(state, stage, winner, winner_value, i, j, n, cap, partial_latest, partial_value);
    }
    wgmma_write_rows(walk[0], 0, i, n, cap, partial_latest, partial_value);
    wgmma_write_rows(walk[1], 1, i, n, cap, partial_latest, partial_value);
#else
    __trap();  // never launched: the host selects this kernel only on sm_90 devices
#endif
}

}  // namespace rkv::kernels
