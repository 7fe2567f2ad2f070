// The key-Gram redundancy statistics of gram_wgmma_kernel (the same answers,
// bit for bit) with an int8 filter in front of the exact products, head_dim
// 128, sm_90a. Why: on keys with no near-duplicates the exact 16-bit walk
// computes the whole square, bound by the tensor cores and its five-
// instruction epilogue; int8 products run at twice the rate, S is symmetric
// (half the square decides), and a filter's epilogue is one max per element.
//
// The filter. The importance kernel writes q = round(127 k^) of every
// normalised key (k^ = k / (|k| + 1e-8), |k^_i| <= 1, so nothing clips) into
// scratch.keys_int8. With e = 1/254 the rounding error of an element,
//   |k^_r . k^_c - q_r . q_c / 127^2| <= e (|k^_r|_1 + |k^_c|_1) + D e^2
//                                     <= 2 e sqrt(D) + D e^2 = 0.0911 (D = 128),
// and the int8 products are exact in int32. So a pair whose exact S passes
// tau has q_r . q_c > (tau - margin) 127^2 (the margin adds 1e-3 for the
// float32 rounding of the exact S and of k^): a tile of S where no int8
// product passes that holds no S above tau. The filter never decides a hit
// (keys of NaN or infinite norm quantise to 0; their exact S is NaN, never a
// hit).
//
// The exact answers. A row's answer is its latest column with S above tau and
// S there (gram_wgmma_kernel walks the columns from the last down to find
// it). Here every tile (i, j >= i) that passes the filter is computed exactly
// (the 16-bit products, in quarters of 64 x 64, on the tensor cores as the
// wgmma kernel computes them) and each hit is offered to both its row (row
// direction) and, S being symmetric, to its column as a row (column
// direction): (column + 1) << 32 | S bits, kept by a 64-bit atomicMax per
// row, so the latest column wins. The column direction's S is acc * inv_c *
// inv_r, the wgmma kernel's order for that row; its products are the same
// bf16/f16 products summed in the same order (test_gpu_gram checks the
// answers equal gram_wgmma_kernel's bit for bit, and that a margin of 0 would
// miss hits). RKV_MATMUL_AUTO may take either kernel by measured time
// (src/cuda/gram_path_choice.h): on keys like a model's, where near-
// duplicates are common, most tiles pass and the walk alone is faster.
//
// The blocks. One warpgroup per pair of row tiles (i, tiles - 1 - i) of a
// head: tiles + 1 tiles (i, j >= i) each. Two blocks share an SM (104 KiB of
// shared memory each), so one's barriers and loads overlap the other's
// products. A block's int8 products are pipelined by halves (the tensor cores
// compute one half while the other's maxima are taken), column tiles coming
// through a ring of three, three tiles ahead, each by one bulk copy of 16 KiB
// on an mbarrier (the importance kernel wrote them in the SW128 layout, zeros
// past the held length). A row tile's 16-bit keys arrive (cp.async) while its
// int8 products run; they serve its exact tiles, whose 16-bit columns come 64
// at a time into the ring slot of the tile (its next copy waits for them), and
// at its end its row sums k^_r . W - k^_r . k^_r (a thread per row). The
// head's last block to finish writes every row's answer where the redundancy
// kernel reads it (partial slot 0). On keys without near-duplicates a block is
// int8 products and one read of its rows' 16-bit keys (Gaussian keys, batch 64:
// the Gram 7.2 -> 5.9 ms, kernels/README.md, Session 18).
#pragma once

#include <climits>

#include "gram_wgmma.cuh"
#include "tma.cuh"

namespace rkv::kernels {

constexpr int kGramInt8Threads = 128;  // one warpgroup
constexpr int kGramInt8Dim = 128;      // head_dim: an int8 key row is one 128-byte SW128 row
constexpr float kKeyInt8Scale = 127.0f;

// The filter's margin at head_dim 128: 2 e sqrt(128) + 128 e^2 with e = 1/254,
// plus 1e-3 for float32 rounding (see above).
constexpr float kGramInt8Margin = 2.0f / 254.0f * 11.3137085f + 128.0f / (254.0f * 254.0f) + 1e-3f;

// Dynamic shared memory of gram_int8_kernel, by byte offset from a 1024-aligned
// base (the allocation adds 1 KiB to align it).
struct GramInt8Shared {
    static constexpr int kStages = 3;                                       // int8 column tiles in the ring
    static constexpr uint32_t kB8Tile = uint32_t(kGramTile) * 128;          // 128 int8 rows (16 KiB)
    static constexpr uint32_t kA16Region = uint32_t(kGramTile) * 128;       // 64 elements of 128 16-bit rows
    static constexpr uint32_t kB16Region = 64 * 128;                        // 64 elements of 64 16-bit rows
    static constexpr uint32_t kRing = 0;                                    // [3][128][128] int8 SW128 column tiles;
                                                                            // a slot also holds [64][128] 16-bit
                                                                            // SW128 columns of an exact tile
    static constexpr uint32_t kA8 = kRing + kStages * kB8Tile;              // [128][128] int8 SW128 row tile
    static constexpr uint32_t kA16 = kA8 + kB8Tile;                         // [128][128] 16-bit SW128 row tile
    static constexpr uint32_t kInvA = kA16 + 2 * kA16Region;                // [128] f32 1/(|k|+1e-8), row tile; NaN
                                                                            // past n
    static constexpr uint32_t kInvC = kInvA + kGramTile * 4;                // [128] f32 the same, column tile
    static constexpr uint32_t kW = kInvC + kGramTile * 4;                   // [128] f32 sum of the normalised keys
    static constexpr uint32_t kRowAnswers = kW + kGramInt8Dim * 4;          // [128] u64 the row tile's offers
    static constexpr uint32_t kColumnOffers = kRowAnswers + kGramTile * 8;  // [2][4][64] u64 the column-
                                                                            // direction offers of 64 exact
                                                                            // columns, per row half and warp
    static constexpr uint32_t kBarriers = kColumnOffers + 2 * 4 * 64 * 8;   // [4] mbarriers: ring slots, A8
    static constexpr uint32_t kEnd = kBarriers + (kStages + 1) * 8;
    static constexpr size_t kBytes = size_t(kEnd) + 1024;
    static_assert(2 * kB16Region <= kB8Tile, "a ring slot holds 64 exact columns");
};

#if RKV_HAS_WGMMA

// The filter's epilogue of one half: the largest int8 product of each of this
// thread's two rows over its 32 columns of the tile. kDiagonal: the row's own
// column does not count (S[r, r] = 0).
template <bool kDiagonal>
__device__ __forceinline__ void int8_row_maxima(const int32_t (&acc)[64], int half, int32_t (&best)[2]) {
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, q = lane & 3;
    best[0] = best[1] = INT_MIN;
#pragma unroll
    for (int s = 0; s < 16; ++s)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
            const int hr = e >> 1;
            int32_t v = acc[4 * s + e];
            if (kDiagonal && half * 64 + warp * 16 + g + 8 * hr == 8 * s + 2 * q + (e & 1)) v = INT_MIN;
            best[hr] = max(best[hr], v);
        }
}

#endif  // RKV_HAS_WGMMA

// A hit's offer to a row's answer: (column + 1) << 32 | S bits; the largest is
// the latest column (0: none).
__device__ __forceinline__ unsigned long long int8_answer(int32_t column, float value) {
    return (static_cast<unsigned long long>(column + 1) << 32) | __float_as_uint(value);
}

// grid (ceil(row tiles / 2), kv_heads, jobs), kGramInt8Threads threads,
// GramInt8Shared::kBytes of dynamic shared memory. Needs the fused importance
// kernel's inverse norms, W partials, int8 keys and zeroed int8 answers and
// counts. Writes what gram_wgmma_kernel writes.
template <typename T>
__global__ void __launch_bounds__(kGramInt8Threads, 2) gram_int8_kernel(CompressParams p) {
#if RKV_HAS_WGMMA
    constexpr int D = kGramInt8Dim, kStages = GramInt8Shared::kStages;
    using L = GramInt8Shared;
    extern __shared__ char gram_int8_raw[];
    const uint32_t raw = shared_address(gram_int8_raw);
    const uint32_t base = (raw + 1023u) & ~1023u;
    char *shared = gram_int8_raw + (base - raw);
    float *inv_a = reinterpret_cast<float *>(shared + L::kInvA);
    float *inv_c = reinterpret_cast<float *>(shared + L::kInvC);
    float *w = reinterpret_cast<float *>(shared + L::kW);
    uint64_t *ring_full = reinterpret_cast<uint64_t *>(shared + L::kBarriers);  // [3] a ring slot's tile landed
    uint64_t *a8_full = ring_full + kStages;                                    // the int8 row tile landed

    const int32_t chunk = int32_t(blockIdx.x), h = int32_t(blockIdx.y), jj = int32_t(blockIdx.z);
    const Job job = p.jobs[jj];
    if (!job_active(p, job)) return;
    const int32_t n = job.held, tiles = (n + kGramTile - 1) / kGramTile, chunks = (tiles + 1) / 2;
    if (chunk >= chunks) return;
    // This block's row tiles: `chunk` and its mirror (the same tile for the
    // middle one of an odd count).
    const int32_t row_a = chunk, row_b = tiles - 1 - chunk, own_rows = row_b != row_a ? 2 : 1;

    const CacheLayer c = job_cache(p, job);
    const T *keys = scoring_keys<T>(p, c, jj, job, h);
    const int64_t row = scratch_row(p, jj, h);
    const int8_t *keys8 = keys_int8_rows(p, jj, h);  // [tiles * 128][128], SW128 chunks, zeros past n
    const int64_t cap = c.capacity;
    const float *inv_norm = p.scratch.inv_norm + row;
    unsigned long long *answers = p.scratch.int8_answers + row;  // [n] int8_answer offers, maximum kept
    const float not_a_number = __int_as_float(0x7fffffff);
    const int t = threadIdx.x, warp = t >> 5, lane = t & 31, g = lane >> 2, q = lane & 3;
    const auto ring_slot = [&](int32_t seq) { return base + L::kRing + uint32_t(seq % kStages) * L::kB8Tile; };
    const auto wait_ring = [&](int32_t seq) { mbarrier_wait(&ring_full[seq % kStages], (seq / kStages) & 1); };
    // Thread 0: int8 key tile `tile` into ring slot `seq` (the block's seq-th ring copy).
    const auto issue_ring = [&](int32_t seq, int32_t tile) {
        uint64_t *barrier = &ring_full[seq % kStages];
        mbarrier_arrive_expect_bytes(barrier, L::kB8Tile);
        bulk_copy_to_shared(ring_slot(seq), keys8 + int64_t(tile) * kGramTile * 128, L::kB8Tile, barrier);
    };
    // Thread 0: int8 key tile `tile` into the row tile buffer.
    const auto issue_a8 = [&](int32_t tile) {
        mbarrier_arrive_expect_bytes(a8_full, L::kB8Tile);
        bulk_copy_to_shared(base + L::kA8, keys8 + int64_t(tile) * kGramTile * 128, L::kB8Tile, a8_full);
    };
    const auto load_inverse_norms = [&](float *to, int32_t tile) {
        const int32_t at = tile * kGramTile + t;
        to[t] = at < n ? inv_norm[at] : not_a_number;
    };
    // A tile passes the filter where one of its int8 products exceeds this;
    // with a negative one (tau below the margin) every tile is exact.
    const float filter = (p.threshold - kGramInt8Margin) * (kKeyInt8Scale * kKeyInt8Scale);
    if (t == 0)
        for (int b = 0; b < kStages + 1; ++b) mbarrier_init(&ring_full[b], 1);
    __syncthreads();  // (publishes the mbarriers' initialisation)

    unsigned long long *row_answers = reinterpret_cast<unsigned long long *>(shared + L::kRowAnswers);
    unsigned long long *column_offers = reinterpret_cast<unsigned long long *>(shared + L::kColumnOffers);
    const auto a16_rows = [](int r, int chunk16) { return sw128_offset(r, chunk16, kGramTile); };

    // 64 16-bit key rows (columns of S) from `first` on into a ring slot (zeros past n).
    const auto load_columns = [&](uint32_t to, int32_t first) {
        for (int index = t; index < 64 * (D / 8); index += kGramInt8Threads) {
            const int r = index / (D / 8), chunk16 = index % (D / 8);
            const bool valid = first + r < n;
            cp_async_16(to + sw128_offset(r, chunk16, 64), valid ? keys + int64_t(first + r) * D + chunk16 * 8 : keys,
                        valid);
        }
        cp_async_commit();
        cp_async_wait<0>();  // (also the row tile's 16-bit keys)
        fence_async_shared();
        __syncthreads();  // the columns and the inverse norms visible
    };
    // acc = rows 64 half.. of the row tile times the 64 columns at b16.
    const auto exact_products = [&](float(&acc)[32], uint32_t b16, int half) {
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < D / 16; ++k) {
            const uint32_t a = base + L::kA16 + (k >> 2) * L::kA16Region + (k & 3) * 32 + half * 64 * 128;
            const uint32_t b = b16 + (k >> 2) * L::kB16Region + (k & 3) * 32;
            wgmma_m64n64k16<T>(acc, sw128_descriptor(a), sw128_descriptor(b), k > 0);
        }
        wgmma_commit();
        wgmma_wait<0>();
        fence_accumulators(acc);
    };
    // Tile (i, j >= i) exactly, its 16-bit columns 64 at a time in ring slot
    // b16: each hit offered to its row (row_answers: each row's offers come
    // from its quad, whose lane 0 keeps the largest) and, j > i, to its column
    // as a row (the latest row of each warp's 16, column_offers, then the
    // latest over the warps into the head's answers: no shared atomics, which
    // are compare-and-swap loops for 64 bits).
    const auto exact_tile = [&](int32_t i, int32_t j, uint32_t b16) {
        load_inverse_norms(inv_c, j);
#pragma unroll 1
        for (int column_half = 0; column_half < 2; ++column_half) {
            const int32_t first_column = j * kGramTile + 64 * column_half;
            load_columns(b16, first_column);
#pragma unroll 1
            for (int half = 0; half < 2; ++half) {
                float acc[32];
                exact_products(acc, b16, half);
                const int local_row = 64 * half + 16 * warp + g;  // and + 8
                const float inv_r[2] = {inv_a[local_row], inv_a[local_row + 8]};
                int32_t latest[2] = {-1, -1};
                float value[2] = {0.0f, 0.0f};
                if (i == j)
                    exact_epilogue<8, true>(acc, i * kGramTile + local_row, first_column, inv_r,
                                            inv_c + 64 * column_half, p.threshold, latest, value);
                else
                    exact_epilogue<8, false>(acc, i * kGramTile + local_row, first_column, inv_r,
                                             inv_c + 64 * column_half, p.threshold, latest, value);
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    keep_latest_over_lanes<1, 2>(latest[hr], value[hr]);
                    if (q == 0 && latest[hr] >= 0)
                        row_answers[local_row + 8 * hr] =
                            max(row_answers[local_row + 8 * hr], int8_answer(latest[hr], value[hr]));
                }
                if (i != j) {
                    // The column direction: column c's offer is the later of
                    // this thread's two rows with S above tau (S as the wgmma
                    // kernel computes it for row c: acc inv_c inv_r), then the
                    // latest over the warp's eight row pairs (lanes 4 apart).
#pragma unroll
                    for (int s = 0; s < 8; ++s)
#pragma unroll
                        for (int ec = 0; ec < 2; ++ec) {
                            const int local_column = 8 * s + 2 * q + ec;
                            const float inv_column = inv_c[64 * column_half + local_column];
                            unsigned long long offer = 0;
#pragma unroll
                            for (int hr = 0; hr < 2; ++hr) {
                                const float v = acc[4 * s + 2 * hr + ec] * inv_column * inv_r[hr];
                                if (v > p.threshold) offer = int8_answer(i * kGramTile + local_row + 8 * hr, v);
                            }
#pragma unroll
                            for (int offset = 4; offset < 32; offset <<= 1)
                                offer = max(offer, __shfl_xor_sync(0xffffffffu, offer, offset));
                            if (g == 0) column_offers[(half * 4 + warp) * 64 + local_column] = offer;
                        }
                }
            }
            __syncthreads();  // every warp is done with these columns and has made its offers
            if (i != j && t < 64) {
                unsigned long long best = 0;
#pragma unroll
                for (int slot = 0; slot < 8; ++slot) best = max(best, column_offers[slot * 64 + t]);
                if (best != 0 && first_column + t < n) atomicMax(&answers[first_column + t], best);
            }
        }
    };

    // ---- The tiles (i, j >= i) of this block's row tiles ----
    // Int8 products pipelined by halves (while one half's maxima are taken,
    // the tensor cores compute the other half, or the next tile's first);
    // where a tile passes the filter, its exact products; at a row tile's
    // end, its row sums and answers.
    const int32_t pairs = (tiles - row_a) + (own_rows == 2 ? tiles - row_b : 0);
    // Thread 0's next copy: tile `issued`, column tile issue_j.
    int32_t issued = 0, issue_j = row_a;
    const auto issue_next = [&] {
        if (issued < pairs) {
            issue_ring(issued++, issue_j);
            if (++issue_j == tiles) issue_j = row_b;
        }
    };
    if (t == 0) {
        issue_a8(row_a);
        while (issued < min(kStages, pairs)) issue_next();
    }
    w[t] = sum_w_partials<D>(p.scratch.partial_w + (row / cap) * p.scratch.tiles * D + t, tiles);
    // A row tile's 16-bit keys (its row sums and exact products), inverse norms and offers.
    const auto start_row_tile = [&](int32_t i) {
        copy_key_tile<T, D, kGramInt8Threads>(base + L::kA16, keys, i * kGramTile, n, a16_rows);
        cp_async_commit();
        load_inverse_norms(inv_a, i);
        row_answers[t] = 0;
    };
    // One half's int8 products: rows 64 half.. of the row tile, every column of ring slot b8.
    const auto issue_products = [&](int32_t(&acc)[64], uint32_t b8, int half) {
        wgmma_fence();
#pragma unroll
        for (int k = 0; k < D / 32; ++k)
            wgmma_m64n128k32_s8(acc, sw128_descriptor(base + L::kA8 + uint32_t(half) * 64 * 128 + k * 32),
                                sw128_descriptor(b8 + k * 32), k > 0);
        wgmma_commit();
    };
    int32_t acc_even[64], acc_odd[64];  // half 0, half 1
    int32_t a8_phase = 0;
    const auto first_products = [&](int32_t s) {  // half 0 of tile s, the first of a row tile
        mbarrier_wait(a8_full, a8_phase++ & 1);
        wait_ring(s);
        issue_products(acc_even, ring_slot(s), 0);
        wgmma_wait<0>();
        fence_accumulators(acc_even);
    };
    start_row_tile(row_a);
    first_products(0);
    int32_t i = row_a, j = row_a;  // tile s; its half 0 is in acc_even
    for (int32_t s = 0; s < pairs; ++s) {
        issue_products(acc_odd, ring_slot(s), 1);
        int32_t best[2];
        if (j == i) int8_row_maxima<true>(acc_even, 0, best);
        else int8_row_maxima<false>(acc_even, 0, best);
        int32_t most = max(best[0], best[1]);
        wgmma_wait<0>();
        fence_accumulators(acc_odd);
        // Half 0 of the row tile's next tile, during half 1's maxima and the
        // barrier. (Nothing is in flight where the loop turns: with a product
        // in flight there ptxas serialises every wgmma.)
        const bool row_end = j + 1 == tiles;
        if (!row_end) {
            wait_ring(s + 1);
            issue_products(acc_even, ring_slot(s + 1), 0);
        }
        if (j == i) int8_row_maxima<true>(acc_odd, 1, best);
        else int8_row_maxima<false>(acc_odd, 1, best);
        most = max(most, max(best[0], best[1]));
        // (also: every thread is done with ring slot s and, at a row tile's
        // end, with the int8 row tile)
        const bool exact = __syncthreads_or(float(most) > filter || !(filter >= 0.0f));
        // Ring slot s takes tile s + 3 now, or after the exact products and
        // the quirk's S[r, 0], which use it for 16-bit columns.
        const bool hold = exact || (row_end && p.slot0_quirk);
        if (t == 0) {
            if (!hold) issue_next();
            if (row_end && s + 1 < pairs) issue_a8(row_b);
        }
        wgmma_wait<0>();
        fence_accumulators(acc_even);
        if (exact) exact_tile(i, j, ring_slot(s));
        if (row_end) {
            // The row tile's row sums: k^_r . W - k^_r . k^_r (a thread per row).
            cp_async_wait<0>();
            __syncthreads();  // the 16-bit row tile visible (the first also publishes w)
            const int32_t r = i * kGramTile + t;
            const float sum = row_sum_from_w<T, D>(shared + L::kA16, t, inv_a[t], w, a16_rows);
            if (r < n) p.scratch.partial_sum[row * p.scratch.tiles + r] = sum;
            if (p.slot0_quirk) {
                // S[r, 0] of every row (the reference reads it where a row has no hit).
                load_inverse_norms(inv_c, 0);
                load_columns(ring_slot(s), 0);
#pragma unroll 1
                for (int half = 0; half < 2; ++half) {
                    float acc[32];
                    exact_products(acc, ring_slot(s), half);
                    const int local_row = 64 * half + 16 * warp + g;
                    const float inv_r[2] = {inv_a[local_row], inv_a[local_row + 8]};
                    store_first_column(p.scratch.first_column + row, acc, i * kGramTile + local_row, n, inv_r,
                                       inv_c[0]);
                }
            }
            __syncthreads();  // the row tile's offers made, its keys read
            if (r < n && row_answers[t] != 0) atomicMax(&answers[r], row_answers[t]);
        }
        if (hold) {
            fence_proxy_async_shared();  // the 16-bit columns' writes before the copy engine's
            __syncthreads();
            if (t == 0) issue_next();
        }
        if (!row_end) {
            ++j;
        } else if (s + 1 < pairs) {
            i = j = row_b;
            start_row_tile(row_b);  // (every read of row a's keys, norms and offers is behind a barrier)
            first_products(s + 1);
        }
    }

    // The head's last block to finish writes every row's answer. (Every
    // block's offers come before its count: the fence, after the barrier, is
    // cumulative.)
    __syncthreads();
    bool last = false;
    if (t == 0) {
        __threadfence();
        last = atomicAdd(p.scratch.int8_done + (int64_t(jj) * p.cache.kv_heads + h), 1u) == unsigned(chunks - 1);
    }
    if (!__syncthreads_or(last)) return;
    __threadfence();
    int32_t *partial_latest = p.scratch.partial_latest + row * p.scratch.tiles;
    float *partial_value = p.scratch.partial_value + row * p.scratch.tiles;
    for (int32_t r = t; r < n; r += kGramInt8Threads) {
        const unsigned long long answer = __ldcg(&answers[r]);
        partial_latest[r] = int32_t(answer >> 32) - 1;
        partial_value[r] = answer ? __uint_as_float(uint32_t(answer)) : 0.0f;
    }
#else
    __trap();  // never launched: the host selects this kernel only on sm_90 devices
#endif
}

}  // namespace rkv::kernels
