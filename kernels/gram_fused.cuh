// R-KV redundancy statistics straight from the keys, without the N x N
// similarity matrix: a tensor-core kernel (mma.sync m16n8k16, f16/bf16 in,
// float32 accumulate) whose epilogue reduces each 128 x 128 tile of
//   S[r, c] = (k_r . k_c) * inv_r * inv_c,   inv = 1 / (|k| + 1e-8),  S[r, r] = 0
// to per-row statistics: the row sum, the latest column above tau and S there,
// and S[0, c] for the reference's slot-0 quirk.
//
// Symmetry halves the work: a block owns row tile i of one (job, head) and
// walks the column tiles j >= i; tile (i, j) gives row statistics to the rows
// of tile i (partial slot j) and, read transposed, to the rows of tile j
// (partial slot i). Every (row, slot) is written exactly once, so the sums
// are reproducible; redundancy_kernel adds the slots in order.
//
// The products of 16-bit keys are exact in float32, so S is float32-accurate
// for bf16/f16 storage, the same precision the CPU computes it in.
//
// grid (tile row i * kv_heads * jobs, heavy rows first), 256 threads (8 warps
// as 2 x 4, each 64 rows x 32 columns of the tile); dynamic shared memory
// gram_fused_shared_bytes(D): the row tile, two column tiles (double-buffered
// with cp.async), inverse norms and the reduction buffers.
#pragma once

#include "common.cuh"

namespace rkv::kernels {

constexpr int kGramThreads = 256;

__host__ __device__ constexpr size_t gram_fused_shared_bytes(int head_dim) {
    return size_t(3) * kGramTile * head_dim * 2                // A tile, two B tiles
           + size_t(kGramTile) * 3 * sizeof(float)             // inv_a, inv_b[2]
           + size_t(kGramTile) * 4 * 3 * sizeof(float)         // row stats [4 warp columns]
           + size_t(kGramTile) * 2 * 3 * sizeof(float);        // column stats [2 warp rows]
}

template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);

template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                                         uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t address) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(address));
}

__device__ __forceinline__ void cp_async_16(uint32_t address, const void *source, bool valid) {
    const int bytes = valid ? 16 : 0;  // 0: fill with zeros, read nothing
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(address), "l"(source), "r"(bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending)); }

// Byte offset of the 16-byte chunk `chunk` of row `row` in a swizzled tile:
// the chunk index is XORed with row % 8, so the 8 rows an ldmatrix reads at
// one logical chunk sit in 8 different bank groups.
template <int D>
__device__ __forceinline__ uint32_t swizzle(int row, int chunk) {
    return uint32_t(row * (D * 2) + ((chunk ^ (row & 7)) << 4));
}

// Rows first_row .. first_row+127 of a head's keys into a tile; rows >= n are zeros.
template <typename T, int D>
__device__ __forceinline__ void load_tile(uint32_t tile, const T *keys, int32_t first_row, int32_t n) {
    constexpr int kChunks = D / 8;
    for (int index = threadIdx.x; index < kGramTile * kChunks; index += kGramThreads) {
        const int row = index / kChunks, chunk = index % kChunks;
        const bool valid = first_row + row < n;
        const T *source = valid ? keys + int64_t(first_row + row) * D + chunk * 8 : keys;
        cp_async_16(tile + swizzle<D>(row, chunk), source, valid);
    }
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
    char *b_tiles = gram_shared + kTileBytes;  // [2]
    float *inv_a = reinterpret_cast<float *>(gram_shared + 3 * kTileBytes);  // [128]
    float *inv_b = inv_a + kGramTile;                                          // [2][128]
    float *row_sum = inv_b + 2 * kGramTile;                                    // [4][128]
    int32_t *row_latest = reinterpret_cast<int32_t *>(row_sum + 4 * kGramTile);  // [4][128]
    float *row_value = reinterpret_cast<float *>(row_latest + 4 * kGramTile);    // [4][128]
    float *col_sum = row_value + 4 * kGramTile;                                  // [2][128]
    int32_t *col_latest = reinterpret_cast<int32_t *>(col_sum + 2 * kGramTile);  // [2][128]
    float *col_value = reinterpret_cast<float *>(col_latest + 2 * kGramTile);    // [2][128]
    const uint32_t a_address = uint32_t(__cvta_generic_to_shared(a_tile));
    const uint32_t b_address = uint32_t(__cvta_generic_to_shared(b_tiles));

    const T *keys = static_cast<const T *>(p.cache.keys) + slot_index(p.cache, job.seq, h, 0) * D;
    const int64_t row = scratch_row(p, jj, h);
    const int64_t cap = p.cache.capacity;
    float *partial_sum = p.scratch.partial_sum + row * p.scratch.tiles;
    int32_t *partial_latest = p.scratch.partial_latest + row * p.scratch.tiles;
    float *partial_value = p.scratch.partial_value + row * p.scratch.tiles;
    const float tau = p.threshold;

    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int warp_row = warp >> 2, warp_col = warp & 3;  // 64-row, 32-column slab of the tile
    const int g = lane >> 2, q = lane & 3;                // mma fragment coordinates

    load_tile<T, D>(a_address, keys, i * kGramTile, n);
    load_tile<T, D>(b_address, keys, i * kGramTile, n);
    cp_async_commit();

    for (int32_t j = i; j < tiles; ++j) {
        const int buffer = (j - i) & 1;
        if (j + 1 < tiles) {
            load_tile<T, D>(b_address + (buffer ^ 1) * kTileBytes, keys, (j + 1) * kGramTile, n);
            cp_async_commit();
            cp_async_wait<1>();
        } else {
            cp_async_wait<0>();
        }
        __syncthreads();
        const char *b_tile = b_tiles + buffer * kTileBytes;
        float *inv_c = inv_b + buffer * kGramTile;
        if (j == i) tile_inverse_norms<T, D>(a_tile, inv_a);
        tile_inverse_norms<T, D>(b_tile, inv_c);

        // acc[mt][nt] = rows warp_row*64 + mt*16 .., columns warp_col*32 + nt*8 ..
        float acc[4][4][4];
#pragma unroll
        for (int mt = 0; mt < 4; ++mt)
#pragma unroll
            for (int nt = 0; nt < 4; ++nt)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc[mt][nt][e] = 0.0f;
        const uint32_t b_base = b_address + buffer * kTileBytes;
#pragma unroll
        for (int kk = 0; kk < D; kk += 16) {
            uint32_t a[4][4], b[2][4];
#pragma unroll
            for (int mt = 0; mt < 4; ++mt) {
                const int r = warp_row * 64 + mt * 16 + (lane & 15);
                ldmatrix_x4(a[mt], a_address + swizzle<D>(r, (kk >> 3) + (lane >> 4)));
            }
#pragma unroll
            for (int np = 0; np < 2; ++np) {
                const int c = warp_col * 32 + np * 16 + (lane & 7) + ((lane >> 4) << 3);
                ldmatrix_x4(b[np], b_base + swizzle<D>(c, (kk >> 3) + ((lane >> 3) & 1)));
            }
#pragma unroll
            for (int mt = 0; mt < 4; ++mt)
#pragma unroll
                for (int nt = 0; nt < 4; ++nt)
                    mma_16816<T>(acc[mt][nt], a[mt], b[nt >> 1][(nt & 1) * 2], b[nt >> 1][(nt & 1) * 2 + 1]);
        }
        __syncthreads();  // the inverse norms are complete

        const bool diagonal = j == i;
        // S of fragment element (mt, nt, e): row R = warp_row*64 + mt*16 + g + (e>>1)*8,
        // column C = warp_col*32 + nt*8 + 2q + (e&1) of the tile. Invalid = 0 and never above tau.
        auto similarity = [&](int mt, int nt, int e, bool &valid) {
            const int R = warp_row * 64 + mt * 16 + g + (e >> 1) * 8;
            const int C = warp_col * 32 + nt * 8 + 2 * q + (e & 1);
            const int32_t r = i * kGramTile + R, c = j * kGramTile + C;
            valid = r < n && c < n;
            if (!valid || r == c) return 0.0f;
            return acc[mt][nt][e] * inv_a[R] * inv_c[C];
        };
        // Row statistics: this thread's 8 columns of each of its 8 rows, then the quad.
#pragma unroll
        for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                float sum = 0.0f, value = 0.0f;
                int32_t latest = -1;
#pragma unroll
                for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
                    for (int e = 0; e < 2; ++e) {  // columns ascend along nt, e
                        bool valid;
                        const float s = similarity(mt, nt, half * 2 + e, valid);
                        sum += s;
                        if (valid && s > tau) {
                            latest = j * kGramTile + warp_col * 32 + nt * 8 + 2 * q + e;
                            value = s;
                        }
                        if (p.slot0_quirk && i == 0 && warp_row == 0 && mt == 0 && half == 0 && g == 0 && valid)
                            p.scratch.first_column[row + j * kGramTile + warp_col * 32 + nt * 8 + 2 * q + e] = s;
                    }
                }
#pragma unroll
                for (int offset = 1; offset <= 2; offset <<= 1) {
                    sum += __shfl_xor_sync(0xffffffffu, sum, offset);
                    const int32_t other_latest = __shfl_xor_sync(0xffffffffu, latest, offset);
                    const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
                    if (other_latest > latest) {
                        latest = other_latest;
                        value = other_value;
                    }
                }
                if (q == 0) {
                    const int R = warp_row * 64 + mt * 16 + g + half * 8;
                    row_sum[warp_col * kGramTile + R] = sum;
                    row_latest[warp_col * kGramTile + R] = latest;
                    row_value[warp_col * kGramTile + R] = value;
                }
            }
        }
        // Column statistics (off the diagonal): this thread's 8 rows of each of
        // its 8 columns, then the 8 lanes sharing the columns.
        if (!diagonal) {
#pragma unroll
            for (int nt = 0; nt < 4; ++nt) {
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    float sum = 0.0f, value = 0.0f;
                    int32_t latest = -1;
#pragma unroll
                    for (int mt = 0; mt < 4; ++mt) {
#pragma unroll
                        for (int half = 0; half < 2; ++half) {  // rows ascend along mt, half
                            bool valid;
                            const float s = similarity(mt, nt, half * 2 + e, valid);
                            sum += s;
                            if (valid && s > tau) {
                                latest = i * kGramTile + warp_row * 64 + mt * 16 + g + half * 8;
                                value = s;
                            }
                        }
                    }
#pragma unroll
                    for (int offset = 4; offset <= 16; offset <<= 1) {
                        sum += __shfl_xor_sync(0xffffffffu, sum, offset);
                        const int32_t other_latest = __shfl_xor_sync(0xffffffffu, latest, offset);
                        const float other_value = __shfl_xor_sync(0xffffffffu, value, offset);
                        if (other_latest > latest) {
                            latest = other_latest;
                            value = other_value;
                        }
                    }
                    if (g == 0) {
                        const int C = warp_col * 32 + nt * 8 + 2 * q + e;
                        col_sum[warp_row * kGramTile + C] = sum;
                        col_latest[warp_row * kGramTile + C] = latest;
                        col_value[warp_row * kGramTile + C] = value;
                    }
                }
            }
        }
        __syncthreads();
        if (threadIdx.x < kGramTile) {  // rows of tile i, slot j
            const int R = threadIdx.x;
            const int32_t r = i * kGramTile + R;
            if (r < n) {
                float sum = row_sum[R];
                int32_t latest = row_latest[R];
                float value = row_value[R];
                for (int w = 1; w < 4; ++w) {
                    sum += row_sum[w * kGramTile + R];
                    if (row_latest[w * kGramTile + R] > latest) {
                        latest = row_latest[w * kGramTile + R];
                        value = row_value[w * kGramTile + R];
                    }
                }
                partial_sum[j * cap + r] = sum;
                partial_latest[j * cap + r] = latest;
                partial_value[j * cap + r] = value;
            }
        } else if (!diagonal) {  // rows of tile j (the tile's columns), slot i
            const int C = threadIdx.x - kGramTile;
            const int32_t c = j * kGramTile + C;
            if (c < n) {
                float sum = col_sum[C] + col_sum[kGramTile + C];
                int32_t latest = col_latest[C];
                float value = col_value[C];
                if (col_latest[kGramTile + C] > latest) {
                    latest = col_latest[kGramTile + C];
                    value = col_value[kGramTile + C];
                }
                partial_sum[i * cap + c] = sum;
                partial_latest[i * cap + c] = latest;
                partial_value[i * cap + c] = value;
            }
        }
        __syncthreads();  // reduction buffers and the B buffer are reused
    }
}

}  // namespace rkv::kernels
