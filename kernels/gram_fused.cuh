// The fused tensor-core kernels (mma.sync m16n8k16, f16/bf16 in, float32
// accumulate) of R-KV and SnapKV, for head_dim 64, 128 and 256:
//
// importance_fused_kernel, a block per (key tile of 128, head, job):
//   - the window queries of the KV head's group times the tile's keys, scaled
//     by 1/sqrt(d), pooled over the group (max or mean of the raw logits),
//     written as pooled logits [window, cap] (importance_pool_kernel then does
//     the softmax over the candidates, the window mean and the max-pool);
//   - R-KV: the inverse norms 1 / (|k| + 1e-8) of the tile's keys and the sum of
//     its normalised keys (a partial of W = sum over all keys of k / (|k| + 1e-8));
//     on the int8 Gram path also those keys rounded to int8, round(127 k^)
//     (scratch.keys_int8, kernels/gram_int8.cuh).
//
// gram_fused_kernel: the redundancy statistics without the N x N similarity
// matrix. Row sums need no Gram at all: sum_c S[r, c] = k^_r . W - k^_r . k^_r
// (the diagonal is 0). The Gram is only needed for the latest column above tau
// of each row (and S there): the epilogue of each 128 x 128 tile of
//   S[r, c] = (k_r . k_c) * inv_r * inv_c
// keeps, per row, the last column above tau. Symmetry halves the work: a
// block owns row tile i and walks the column tiles j >= i in order; tile (i, j)
// serves the rows of tile i (their latest hit over the walk: partial slot i,
// written after it; slots j > i hold -1) and, read transposed, the rows of tile
// j (partial slot i). Every (row, slot) is written exactly once: reproducible.
// Also S[0, c] for the reference's slot-0 quirk.
//
// The products of 16-bit keys are exact in float32, so S and the logits are
// float32-accurate for bf16/f16 storage, the precision the CPU computes in.
#pragma once

#include <type_traits>

#include "common.cuh"

namespace rkv::kernels {

constexpr int kGramThreads = 128;        // gram_fused_kernel: 4 warps as 2 x 2, each 64 x 64 of the tile
constexpr int kImportanceThreads = 256;  // importance_fused_kernel: 8 warps
constexpr int kFusedMaxRows = 64;        // G * window rows the fused importance holds (4 m16 tiles)

// Dynamic shared memory of gram_fused_kernel: the row tile and two column
// tiles (double-buffered with cp.async), inverse norms, W, reduction buffers.
__host__ __device__ constexpr size_t gram_fused_shared_bytes(int head_dim) {
    return size_t(3) * kGramTile * head_dim * 2            // A tile, two B tiles
           + size_t(kGramTile) * 3 * sizeof(float)         // inv_a, inv_b[2]
           + size_t(head_dim) * sizeof(float)              // W
           + size_t(kGramTile) * 2 * 2 * sizeof(float)     // row stats [2 warp columns] (latest, value)
           + size_t(kGramTile) * 2 * 2 * 2 * sizeof(float);  // column stats [2 tiles][2 warp rows]
}

// Query rows of the fused importance, padded to whole m16 tiles.
__host__ __device__ constexpr int fused_rows(int rows) { return (rows + 15) / 16 * 16; }

// The row groups' W sums of importance_tile: [kRowGroups][D] floats, always
// kImportanceThreads * 8 (a 16-byte chunk per thread).
constexpr size_t kImportanceWBytes = size_t(kImportanceThreads) * 8 * sizeof(float);

// Dynamic shared memory of importance_fused_kernel: the key tile and the query
// rows, which the logits [rows, 128] overlay once the products are done (so a
// block needs less: 48.5 KB instead of 56.5 at head_dim 128 and 32 rows, four
// blocks per SM instead of three), the W sums and the inverse norms.
__host__ __device__ constexpr size_t importance_fused_shared_bytes(int head_dim, int rows) {
    const size_t operands = size_t(kGramTile) * head_dim * 2 + size_t(fused_rows(rows)) * head_dim * 2;
    const size_t logits = size_t(fused_rows(rows)) * kGramTile * sizeof(float);
    return (operands > logits ? operands : logits) + kImportanceWBytes + size_t(kGramTile) * sizeof(float);
}

// Byte offset of the 16-byte chunk `chunk` of row `row` in a swizzled tile:
// the chunk index is XORed with row % 8, so the 8 rows an ldmatrix reads at
// one logical chunk sit in 8 different bank groups.
template <int D>
__device__ __forceinline__ uint32_t swizzle(int row, int chunk) {
    return uint32_t(row * (D * 2) + ((chunk ^ (row & 7)) << 4));
}

// inv[r] = 1 / (|k_r| + 1e-8) for the tile's rows: two threads per row, squares
// summed in double as on the CPU.
template <typename T, int D>
__device__ __forceinline__ void tile_inverse_norms(const char *tile, float *inv) {
    const int row = threadIdx.x >> 1, half = threadIdx.x & 1;
    double squares = 0.0;
#pragma unroll 4
    for (int chunk = half * (D / 16); chunk < (half + 1) * (D / 16); ++chunk) {
        float values[8];
        unpack16(*reinterpret_cast<const uint4 *>(tile + swizzle<D>(row, chunk)), values, T());
#pragma unroll
        for (int e = 0; e < 8; ++e) squares += double(values[e]) * values[e];
    }
    squares += __shfl_xor_sync(0xffffffffu, squares, 1);
    if (half == 0) inv[row] = 1.0f / (float(sqrt(squares)) + 1e-8f);
}

// Rows first_row .. first_row + rows - 1 of a [*, D] matrix into a swizzled
// tile; rows >= n are zeros.
template <typename T, int D>
__device__ __forceinline__ void load_rows(uint32_t tile, const T *source, int32_t first_row, int32_t rows,
                                          int32_t n) {
    constexpr int kChunks = D / 8;
    for (int index = threadIdx.x; index < rows * kChunks; index += blockDim.x) {
        const int row = index / kChunks, chunk = index % kChunks;
        const bool valid = first_row + row < n;
        const T *from = valid ? source + int64_t(first_row + row) * D + chunk * 8 : source;
        cp_async_16(tile + swizzle<D>(row, chunk), from, valid);
    }
}

// Rows first_row .. first_row + 127 of a [*, D] matrix into a swizzled tile
// (rows >= n are zeros) by a block of kThreads threads: copy_key_tile
// (common.cuh) with this file's swizzle.
template <typename T, int D, int kThreads>
__device__ __forceinline__ void load_key_tile(uint32_t tile, const T *source, int32_t first_row, int32_t n) {
    copy_key_tile<T, D, kThreads>(tile, source, first_row, n,
                                  [](int row, int chunk) { return swizzle<D>(row, chunk); });
}

// ---------------------------------------------------------------------------
// importance (and the norms and W of R-KV)

// Four elements of a normalised key times 127 (|x| <= 127 up to rounding) as
// the int8 Gram path's filter reads them, in byte order: round(x), saturated,
// NaN (a key of NaN or infinite norm) 0 (the conversion's own rules).
__device__ __forceinline__ uint32_t key_int8(float x) {
    uint32_t q;
    asm("cvt.rni.sat.s8.f32 %0, %1;" : "=r"(q) : "f"(x));
    return q;
}
__device__ __forceinline__ uint32_t pack_key_int8(float x0, float x1, float x2, float x3) {
    return __byte_perm(__byte_perm(key_int8(x0), key_int8(x1), 0x0040), __byte_perm(key_int8(x2), key_int8(x3), 0x0040),
                       0x5410);
}

// The importance work of key tile t of (job, head), every thread of a block of
// kImportanceThreads taking part, once the tile (k_tile, swizzled [128][D]) and
// the window queries (q_tile, swizzled [padded][D]) are in shared memory:
// with_norms: the inverse norms and this tile's W partial; then the window
// logits of the tile, pooled over the group, into scratch.logits.
// logits [padded][128] (it may overlay the key tile and the query rows: it is
// written only after the products), w_sums [kImportanceWBytes] and inv [128]
// are shared scratch.
template <typename T, int D>
__device__ __forceinline__ void importance_tile(const CompressParams &p, const CacheLayer &c, const Job &job,
                                                int32_t jj, int32_t h, int32_t t, const char *k_tile,
                                                uint32_t q_address, float *logits, float *w_sums, float *inv,
                                                int32_t with_norms) {
    const int32_t n = job.held, candidates = n - c.window;
    const int32_t groups = c.q_heads / c.kv_heads, rows = groups * c.window;  // <= kFusedMaxRows
    const int32_t padded = fused_rows(rows);
    const uint32_t k_address = shared_address(k_tile);
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int g = lane >> 2, q = lane & 3;
    const int64_t head_row = scratch_row(p, jj, h);
    if (with_norms) {
        tile_inverse_norms<T, D>(k_tile, inv);
        __syncthreads();
        if (threadIdx.x < kGramTile && t * kGramTile + int(threadIdx.x) < n)
            p.scratch.inv_norm[head_row + t * kGramTile + threadIdx.x] = inv[threadIdx.x];
        // W partial: this tile's normalised keys summed. A thread takes one
        // 16-byte chunk (8 elements) of the rows of its row group (rows
        // group, group + kRowGroups, ...: one vector load per row), the groups'
        // sums meet in w_sums and are added in group order. (Per element over
        // every row, one scalar load each, this loop was a quarter of the
        // kernel's instructions.)
        constexpr int kChunks = D / 8, kRowGroups = kImportanceThreads / kChunks;
        static_assert(size_t(kRowGroups) * D * sizeof(float) == kImportanceWBytes, "w_sums holds the row groups");
        const int valid = min(kGramTile, n - t * kGramTile);
        const int chunk = threadIdx.x % kChunks, group = threadIdx.x / kChunks;
        // The int8 Gram path's keys too: round(127 k^), 8 bytes per row and
        // chunk (bf16 chunk `chunk` is half of the int8 row's 16-byte chunk
        // chunk / 2, which sits at (chunk / 2) XOR r % 8), zeros past n.
        int8_t *keys8 = p.scratch.keys_int8 ? keys_int8_rows(p, jj, h) + int64_t(t) * kGramTile * 128 : nullptr;
        const auto int8_offset = [&](int r) { return r * 128 + ((((chunk >> 1) ^ (r & 7)) << 4) | ((chunk & 1) << 3)); };
        float sums[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        // (two instances of the loop: the quantisation costs the other paths nothing)
        const auto sum_rows = [&](auto with_int8) {
            for (int r = group; r < valid; r += kRowGroups) {
                float values[8];
                unpack16(*reinterpret_cast<const uint4 *>(k_tile + swizzle<D>(r, chunk)), values, T());
                const float inv_r = inv[r];
#pragma unroll
                for (int e = 0; e < 8; ++e) sums[e] += values[e] * inv_r;
                if constexpr (decltype(with_int8)::value) {
                    const float scale = inv_r * 127.0f;
                    *reinterpret_cast<uint2 *>(keys8 + int8_offset(r)) =
                        make_uint2(pack_key_int8(values[0] * scale, values[1] * scale, values[2] * scale, values[3] * scale),
                                   pack_key_int8(values[4] * scale, values[5] * scale, values[6] * scale, values[7] * scale));
                }
            }
        };
        if (keys8 && D == 128) {
            sum_rows(std::true_type{});
            for (int r = valid + group; r < kGramTile; r += kRowGroups)
                *reinterpret_cast<uint2 *>(keys8 + int8_offset(r)) = make_uint2(0u, 0u);
        } else {
            sum_rows(std::false_type{});
        }
#pragma unroll
        for (int e = 0; e < 8; ++e) w_sums[group * D + chunk * 8 + e] = sums[e];
        __syncthreads();
        for (int e = threadIdx.x; e < D; e += blockDim.x) {
            float sum = 0.0f;
            for (int g = 0; g < kRowGroups; ++g) sum += w_sums[g * D + e];
            p.scratch.partial_w[(head_row / c.capacity * p.scratch.tiles + t) * D + e] = sum;
        }
    }

    // logits [rows, 128]: warp w takes columns 16w .. 16w+15 of every query row.
    const int m_tiles = padded / 16;
    float acc[4][2][4];
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < D; kk += 16) {
        uint32_t b[4];
        ldmatrix_x4(b, k_address + swizzle<D>(warp * 16 + (lane & 7) + ((lane >> 4) << 3), (kk >> 3) + ((lane >> 3) & 1)));
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) {
            if (mt >= m_tiles) break;
            uint32_t a[4];
            ldmatrix_x4(a, q_address + swizzle<D>(mt * 16 + (lane & 15), (kk >> 3) + (lane >> 4)));
            mma_16816<T>(acc[mt][0], a, b[0], b[1]);
            mma_16816<T>(acc[mt][1], a, b[2], b[3]);
        }
    }
    const float scale = 1.0f / sqrtf(float(D));
    __syncthreads();  // every warp's products are done: the logits may overlay their operands
#pragma unroll
    for (int mt = 0; mt < 4; ++mt) {
        if (mt >= m_tiles) break;
#pragma unroll
        for (int nt = 0; nt < 2; ++nt)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int m = mt * 16 + g + (e >> 1) * 8, col = warp * 16 + nt * 8 + 2 * q + (e & 1);
                logits[m * kGramTile + col] = acc[mt][nt][e] * scale;
            }
    }
    __syncthreads();
    // Pool over the group, as the CPU's pool_groups: max, or sum then times 1/G.
    float *pooled = p.scratch.logits + head_row * p.scratch.rows;  // [window, cap]
    for (int index = threadIdx.x; index < c.window * kGramTile; index += blockDim.x) {
        const int a = index / kGramTile, col = index % kGramTile;
        const int32_t j = t * kGramTile + col;
        if (j >= candidates) continue;
        pooled[int64_t(a) * c.capacity + j] = pool_group(
            p.pooling, groups, [&](int32_t gg) { return logits[(gg * c.window + a) * kGramTile + col]; });
    }
}

// grid (key tile, kv head, job), kImportanceThreads threads,
// importance_fused_shared_bytes(D, rows) of dynamic shared memory.
template <typename T, int D>
__global__ void __launch_bounds__(kImportanceThreads) importance_fused_kernel(CompressParams p, int32_t with_norms) {
    extern __shared__ __align__(128) char fused_shared[];
    const int32_t t = blockIdx.x, h = blockIdx.y, jj = blockIdx.z;
    const Job job = p.jobs[jj];
    if (!job_active(p, job)) return;
    const CacheLayer c = job_cache(p, job);
    const int32_t n = job.held;
    if (t * kGramTile >= n) return;
    const int32_t groups = c.q_heads / c.kv_heads, rows = groups * c.window;  // <= kFusedMaxRows
    const int32_t padded = fused_rows(rows);
    const size_t operands = size_t(kGramTile) * D * 2 + size_t(padded) * D * 2;
    const size_t logit_bytes = size_t(padded) * kGramTile * sizeof(float);
    char *k_tile = fused_shared;                                            // [128][D]
    char *q_tile = fused_shared + kGramTile * D * 2;                        // [padded][D]
    float *logits = reinterpret_cast<float *>(fused_shared);                // [padded][128], after the products
    float *w_sums = reinterpret_cast<float *>(fused_shared + (operands > logit_bytes ? operands : logit_bytes));
    float *inv = w_sums + kImportanceWBytes / sizeof(float);                // [128]
    const uint32_t q_address = shared_address(q_tile);
    const T *keys = scoring_keys<T>(p, c, jj, job, h);
    const T *queries = static_cast<const T *>(c.queries) + query_index(c, job.seq, h * groups, 0);
    load_key_tile<T, D, kImportanceThreads>(shared_address(k_tile), keys, t * kGramTile, n);
    if (p.scratch.int8_answers) {  // the int8 Gram kernel's state of this tile's rows, for this compression
        for (int32_t r = t * kGramTile + threadIdx.x; r < min(n, (t + 1) * kGramTile); r += blockDim.x)
            p.scratch.int8_answers[scratch_row(p, jj, h) + r] = 0;
        if (t == 0 && threadIdx.x == 0) p.scratch.int8_done[int64_t(jj) * p.cache.kv_heads + h] = 0;
    }
    load_rows<T, D>(q_address, queries, 0, padded, rows);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    importance_tile<T, D>(p, c, job, jj, h, t, k_tile, q_address, logits, w_sums, inv, with_norms);
}

// ---------------------------------------------------------------------------
// redundancy

// What the epilogue of one tile needs: where the tile is, the inverse norms of
// its rows (inv_a) and columns (inv_c), and the shared reduction buffers.
struct TileStats {
    int32_t i, j, n;
    float tau;
    int warp_row, warp_col, g, q;
    const float *inv_a, *inv_c;
    int32_t *col_latest;
    float *col_value;
};

// Keeps, per row of the warp's 64 x 64 part of the tile, the latest column with
// S = acc * inv_r * inv_c above tau and S there in `row_latest`/`row_value`,
// which run over the block's walk of column tiles (the tiles come in column
// order, so a later hit is a later column: the rows are merged once, after the
// walk); and off the diagonal the same per column of this tile, merged over the
// lanes into shared memory. Rows ascend along (mt, half) and columns along
// (nt, e), so a later hit overwrites an earlier one. kInterior: no bounds to
// check (no row or column past n, not on the diagonal); kDiagonal: S[r, r] = 0,
// rows only (the tile is symmetric itself).
template <bool kInterior, bool kDiagonal>
__device__ __forceinline__ void tile_epilogue(const TileStats &t, const float (&acc)[4][8][4],
                                              int32_t (&row_latest)[8], float (&row_value)[8]) {
    const int row0 = t.i * kGramTile + t.warp_row * 64 + t.g;      // + mt*16 + half*8
    const int col0 = t.j * kGramTile + t.warp_col * 64 + 2 * t.q;  // + nt*8 + e
    float inv_r[8], inv_c[16];
#pragma unroll
    for (int k = 0; k < 8; ++k) inv_r[k] = t.inv_a[t.warp_row * 64 + t.g + (k >> 1) * 16 + (k & 1) * 8];
#pragma unroll
    for (int k = 0; k < 16; ++k) inv_c[k] = t.inv_c[t.warp_col * 64 + 2 * t.q + (k >> 1) * 8 + (k & 1)];
    float col_value[16];
    int32_t col_latest[16];
#pragma unroll
    for (int k = 0; k < 16; ++k) {
        col_value[k] = 0.0f;
        col_latest[k] = -1;
    }
#pragma unroll
    for (int mt = 0; mt < 4; ++mt)
#pragma unroll
        for (int half = 0; half < 2; ++half)
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int rk = mt * 2 + half, ck = nt * 2 + e;
                    const int32_t r = row0 + mt * 16 + half * 8, c = col0 + nt * 8 + e;
                    float s = acc[mt][nt][half * 2 + e] * inv_r[rk] * inv_c[ck];
                    bool valid = true;
                    if (!kInterior) {
                        valid = r < t.n && c < t.n;
                        if (kDiagonal && r == c) s = 0.0f;
                    }
                    if (valid && s > t.tau) {
                        row_latest[rk] = c;
                        row_value[rk] = s;
                        if (!kDiagonal) {
                            col_latest[ck] = r;
                            col_value[ck] = s;
                        }
                    }
                }
    // Columns: the 8 lanes with the same q share a column; then one value per (warp row, column).
    if constexpr (!kDiagonal) {
#pragma unroll
        for (int k = 0; k < 16; ++k) {
            keep_latest_over_lanes<4, 16>(col_latest[k], col_value[k]);
            if (t.g == 0) {
                const int C = t.warp_col * 64 + 2 * t.q + (k >> 1) * 8 + (k & 1);
                t.col_latest[t.warp_row * kGramTile + C] = col_latest[k];
                t.col_value[t.warp_row * kGramTile + C] = col_value[k];
            }
        }
    }
}

// Entry R of two halves' hits (latest/value [2][128], one half per warp row
// or column): the later one, written to *to_latest and *to_value.
__device__ __forceinline__ void write_later_half(const int32_t *latest, const float *value, int R,
                                                 int32_t *to_latest, float *to_value) {
    int32_t later = latest[R];
    float at = value[R];
    if (latest[kGramTile + R] > later) {
        later = latest[kGramTile + R];
        at = value[kGramTile + R];
    }
    *to_latest = later;
    *to_value = at;
}

// Column tile j's stats after the epilogue (col_latest/col_value [2 warp
// rows][128]): column R of tile j gets the later of its two warp rows' hits in
// slot i, and row R of tile i gets -1 in slot j (its hits there go to slot i
// after the walk). A thread per R.
__device__ __forceinline__ void write_column_stats(int32_t j, int32_t i, int32_t n, int64_t cap,
                                                   const int32_t *col_latest, const float *col_value,
                                                   int32_t *partial_latest, float *partial_value) {
    const int R = threadIdx.x;
    if (i * kGramTile + R < n) partial_latest[j * cap + i * kGramTile + R] = -1;
    const int32_t c = j * kGramTile + R;
    if (c < n) write_later_half(col_latest, col_value, R, partial_latest + i * cap + c, partial_value + i * cap + c);
}

// grid (tile row i * kv_heads * jobs, heavy rows first), kGramThreads threads
// (4 warps as 2 x 2, each 64 rows x 64 columns of the tile: twice the operand
// reuse of 64 x 32 warp tiles, so half the shared-memory fragment traffic),
// gram_fused_shared_bytes(D) of dynamic shared memory. Needs
// importance_fused_kernel's norms and W.
template <typename T, int D>
__global__ void __launch_bounds__(kGramThreads, (D <= 128 ? 2 : 1)) gram_fused_kernel(CompressParams p) {
    extern __shared__ __align__(128) char gram_shared[];
    const int32_t heads_jobs = p.cache.kv_heads * p.num_jobs;
    const int32_t i = blockIdx.x / heads_jobs;
    const int32_t jj = (blockIdx.x % heads_jobs) / p.cache.kv_heads;
    const int32_t h = blockIdx.x % p.cache.kv_heads;
    const Job job = p.jobs[jj];
    if (!job_active(p, job)) return;
    const int32_t n = job.held, tiles = (n + kGramTile - 1) / kGramTile;
    if (i >= tiles) return;

    constexpr int kTileBytes = kGramTile * D * 2;
    char *a_tile = gram_shared;
    char *b_tiles = gram_shared + kTileBytes;                                  // [2]
    float *inv_a = reinterpret_cast<float *>(gram_shared + 3 * kTileBytes);    // [128]
    float *inv_b = inv_a + kGramTile;                                          // [2][128]
    float *w = inv_b + 2 * kGramTile;                                          // [D]
    int32_t *row_latest = reinterpret_cast<int32_t *>(w + D);                  // [2][128]
    float *row_value = reinterpret_cast<float *>(row_latest + 2 * kGramTile);  // [2][128]
    // Column stats of tiles j (written by the epilogue) and j - 1 (merged
    // after the next barrier): [2 tiles][2 warp rows][128].
    int32_t *col_latest = reinterpret_cast<int32_t *>(row_value + 2 * kGramTile);  // [2][2][128]
    float *col_value = reinterpret_cast<float *>(col_latest + 4 * kGramTile);      // [2][2][128]
    const uint32_t a_address = shared_address(a_tile);
    const uint32_t b_address = shared_address(b_tiles);

    const CacheLayer c = job_cache(p, job);
    const T *keys = scoring_keys<T>(p, c, jj, job, h);
    const int64_t row = scratch_row(p, jj, h);
    const int64_t cap = p.cache.capacity;
    const float *inv_norm = p.scratch.inv_norm + row;
    float *partial_sum = p.scratch.partial_sum + row * p.scratch.tiles;
    int32_t *partial_latest = p.scratch.partial_latest + row * p.scratch.tiles;
    float *partial_value = p.scratch.partial_value + row * p.scratch.tiles;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warp_row = warp >> 1, warp_col = warp & 1;  // 64 x 64 part of the tile
    const int g = lane >> 2, q = lane & 3;                // mma fragment coordinates

    // One thread per row of the tile: its inverse norm, loaded first (the
    // stores below wait for these loads; the profile's top prologue stall).
    float next_inv = i * kGramTile + int32_t(threadIdx.x) < n ? inv_norm[i * kGramTile + threadIdx.x] : 0.0f;
    // The row tile, which is also the columns of the diagonal tile i (its B).
    load_key_tile<T, D, kGramThreads>(a_address, keys, i * kGramTile, n);
    cp_async_commit();
    // W = the sum of every normalised key, from the per-tile partials.
    for (int e = threadIdx.x; e < D; e += blockDim.x)
        w[e] = sum_w_partials<D>(p.scratch.partial_w + (row / cap) * p.scratch.tiles * D + e, tiles);
    inv_a[threadIdx.x] = next_inv;

    // The latest column above tau of each of this thread's rows (tile i) over
    // the column tiles walked so far, and S there (see tile_epilogue).
    int32_t running_latest[8];
    float running_value[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        running_latest[k] = -1;
        running_value[k] = 0.0f;
    }

    // One barrier per tile. At the top of step j every warp is past step
    // j - 1: the B buffer of tile j - 1 may take tile j + 1 (issued after the
    // barrier, it has all of step j to land), the inverse-norm buffer of tile
    // j - 2 may take tile j's, and the columns of tile j - 1, complete in
    // shared memory, are merged and written while tile j's products run (the
    // diagonal tile i has none: its rows are the columns).
    // The inverse norms of column tile j + 1 are loaded during tile j (their
    // L2 latency off the critical path: the profile's top stall was the
    // store waiting on them).
    for (int32_t j = i; j < tiles; ++j) {
        const int buffer = (j - i) & 1;
        float *inv_c = inv_b + buffer * kGramTile;
        inv_c[threadIdx.x] = next_inv;
        if (j + 1 < tiles) {
            const int32_t c = (j + 1) * kGramTile + threadIdx.x;
            next_inv = c < n ? inv_norm[c] : 0.0f;
        }
        cp_async_wait<0>();  // tile j, issued a step ago (or before the walk)
        __syncthreads();
        if (j + 1 < tiles) {
            load_key_tile<T, D, kGramThreads>(b_address + (buffer ^ 1) * kTileBytes, keys, (j + 1) * kGramTile, n);
            cp_async_commit();
        }
        if (j - 1 > i) write_column_stats(j - 1, i, n, cap, col_latest + (buffer ^ 1) * 2 * kGramTile,
                                      col_value + (buffer ^ 1) * 2 * kGramTile, partial_latest, partial_value);
        if (j == i) {
            // Row sums of the tile's rows: k^_r . W - k^_r . k^_r (a thread per row).
            const int r = threadIdx.x;
            const float sum = row_sum_from_w<T, D>(a_tile, r, inv_a[r], w,
                                                   [](int row, int chunk) { return swizzle<D>(row, chunk); });
            if (i * kGramTile + r < n) partial_sum[i * kGramTile + r] = sum;
        }

        // acc[mt][nt] = rows warp_row*64 + mt*16 .., columns warp_col*64 + nt*8 ..
        float acc[4][8][4];
#pragma unroll
        for (int mt = 0; mt < 4; ++mt)
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
        const uint32_t b_base = j == i ? a_address : b_address + buffer * kTileBytes;
#pragma unroll
        for (int kk = 0; kk < D; kk += 16) {
            uint32_t a[4][4], b[4][4];
#pragma unroll
            for (int mt = 0; mt < 4; ++mt) {
                const int r = warp_row * 64 + mt * 16 + (lane & 15);
                ldmatrix_x4(a[mt], a_address + swizzle<D>(r, (kk >> 3) + (lane >> 4)));
            }
#pragma unroll
            for (int np = 0; np < 4; ++np) {
                const int c = warp_col * 64 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(b[np], b_base + swizzle<D>(c, (kk >> 3) + ((lane >> 3) & 1)));
            }
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int nt = 0; nt < 8; ++nt)
                    mma_16816<T>(acc[mt][nt], a[mt], b[nt >> 1][(nt & 1) * 2], b[nt >> 1][(nt & 1) * 2 + 1]);
        }

        const bool diagonal = j == i;
        const bool interior = !diagonal && (i + 1) * kGramTile <= n && (j + 1) * kGramTile <= n;
        const TileStats tile{i, j, n, p.threshold, warp_row, warp_col, g, q, inv_a, inv_c,
                             col_latest + buffer * 2 * kGramTile, col_value + buffer * 2 * kGramTile};
        if (diagonal) tile_epilogue<false, true>(tile, acc, running_latest, running_value);
        else if (interior) tile_epilogue<true, false>(tile, acc, running_latest, running_value);
        else tile_epilogue<false, false>(tile, acc, running_latest, running_value);
        if (p.slot0_quirk && i == 0 && warp_row == 0 && g == 0) {
            // S[0, c] for the columns of this tile: row 0 is fragment (mt 0, e 0..1) of lanes g == 0.
#pragma unroll
            for (int nt = 0; nt < 8; ++nt)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int C = warp_col * 64 + nt * 8 + 2 * q + e;
                    const int32_t c = j * kGramTile + C;
                    if (c < n) p.scratch.first_column[row + c] = c == 0 ? 0.0f : acc[0][nt][e] * inv_a[0] * inv_c[C];
                }
        }
    }

    // Rows of tile i over every column tile j >= i: the 4 lanes of a quad
    // share a row, then one value per (warp column, row), into slot i; and
    // the columns of the last tile.
#pragma unroll
    for (int k = 0; k < 8; ++k) {
        keep_latest_over_lanes<1, 2>(running_latest[k], running_value[k]);
        if (q == 0) {
            const int R = warp_row * 64 + g + (k >> 1) * 16 + (k & 1) * 8;
            row_latest[warp_col * kGramTile + R] = running_latest[k];
            row_value[warp_col * kGramTile + R] = running_value[k];
        }
    }
    __syncthreads();
    if (tiles - 1 > i) {
        const int last = (tiles - 1 - i) & 1;
        write_column_stats(tiles - 1, i, n, cap, col_latest + last * 2 * kGramTile, col_value + last * 2 * kGramTile,
                           partial_latest, partial_value);
    }
    const int R = threadIdx.x;
    const int32_t r = i * kGramTile + R;
    if (r < n) write_later_half(row_latest, row_value, R, partial_latest + i * cap + r, partial_value + i * cap + r);
}

}  // namespace rkv::kernels
