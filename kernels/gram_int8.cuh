// The key-Gram redundancy statistics of gram_wgmma_kernel (same walk, same
// answers) with an int8 filter in front of the exact products, head_dim 128,
// sm_90a. Why: on keys with no near-duplicates (every row walks the whole
// square) the exact 16-bit walk is bound by the tensor cores and its five-
// instruction epilogue; int8 products run at twice the rate, and a filter's
// epilogue is one max per element.
//
// The filter. The importance kernel writes q = round(127 k^) of every
// normalised key (k^ = k / (|k| + 1e-8), |k^_i| <= 1, so nothing clips) into
// scratch.keys_int8. With e = 1/254 the rounding error of an element,
//   |k^_r . k^_c - q_r . q_c / 127^2| <= e (|k^_r|_1 + |k^_c|_1) + D e^2
//                                     <= 2 e sqrt(D) + D e^2 = 0.0911 (D = 128),
// and the int8 products are exact in int32. So a pair whose exact S passes
// tau has q_r . q_c > (tau - margin) 127^2 (the margin adds 1e-3 for the
// float32 rounding of the exact S and of k^): a column tile where no row that
// still looks for its latest near-duplicate has such a product holds none of
// their hits, and is skipped. Only tiles with a candidate are computed exactly
// (the 16-bit products, as gram_wgmma_kernel, in the same order), and their
// epilogue decides. The filter never decides a hit (keys of NaN or infinite
// norm quantise to 0; their exact S is NaN, never a hit), so the answers are
// those of gram_wgmma_kernel, bit for bit (test_gpu_gram compares them; a
// margin of 0 misses hits there). On keys like a model's, where near-
// duplicates are common, most tiles then need both products and the exact
// walk is faster: RKV_MATMUL_AUTO times the two (src/cuda/gram_path_choice.h).
//
// Layout: as gram_wgmma_kernel, one warpgroup per block owns a row tile of 128
// keys (two halves of 64) and walks the column tiles from the last down; two
// blocks share an SM (98 KiB of shared memory each), so one's barriers and
// epilogues overlap the other's products. The row tile is resident in both
// forms; int8 column tiles come through a ring of three, two tiles ahead, each
// by one bulk copy of 16 KiB (the importance kernel wrote them in the SW128
// layout, zeros past the held length) on an mbarrier. A tile that needs the
// exact products copies its 16-bit keys then, 64 columns at a time (the later
// half first, so a row's first hit is still its latest), into the ring slot
// whose next tile is copied only after them; the diagonal tile's are the row
// tile's own. The reference quirk's tile 0 (S[r, 0]) is always exact. A step
// issues both halves' int8 products, looks at half 0 while half 1 is
// computed, then at half 1; its decisions (a tile needs exact products, a
// half stops) are block reductions, and the row sums come after the walk, so
// that a block starts walking as soon as its int8 row tile has landed. (The
// halves in turn across steps, as gram_wgmma_kernel does, measured slower:
// kernels/README.md, Session 17.)
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
    static constexpr uint32_t kHalfColumns = 64;                            // exact columns per copy
    static constexpr uint32_t kA16Region = uint32_t(kGramTile) * 128;       // 64 elements of 128 rows
    static constexpr uint32_t kB16Region = kHalfColumns * 128;              // 64 elements of 64 rows
    static constexpr uint32_t kB8Tile = uint32_t(kGramTile) * 128;          // 128 int8 rows (16 KiB)
    static constexpr uint32_t kA16 = 0;                                     // [128][128] 16-bit SW128 (2 regions)
    static constexpr uint32_t kA8 = kA16 + 2 * kA16Region;                  // [128][128] int8 SW128
    static constexpr uint32_t kB8 = kA8 + kB8Tile;                          // [3][128][128] int8 SW128 (ring); a
                                                                            // slot also holds [64][128] 16-bit
                                                                            // SW128 exact columns
    static constexpr uint32_t kInvA = kB8 + kStages * kB8Tile;              // [128] f32 1/(|k|+1e-8); NaN past n
    static constexpr uint32_t kInvC = kInvA + kGramTile * 4;                // [64] f32 the same for the B16 rows
    static constexpr uint32_t kW = kInvC + kHalfColumns * 4;                // [128] f32 sum of the normalised keys
    static constexpr uint32_t kBarriers = kW + kGramInt8Dim * 4;            // [4] mbarriers: ring slots, A8
    static constexpr uint32_t kEnd = kBarriers + 4 * 8;
    static constexpr size_t kBytes = size_t(kEnd) + 1024;
    static_assert(kB16Region * 2 <= kB8Tile, "a ring slot holds 64 exact columns");
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

// grid (row tiles * kv_heads * jobs, in gram_block's order), kGramInt8Threads
// threads, GramInt8Shared::kBytes of dynamic shared memory. Needs the fused
// importance kernel's inverse norms, W partials and int8 keys. Writes what
// gram_wgmma_kernel writes.
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
    float *inv_b16 = reinterpret_cast<float *>(shared + L::kInvC);
    uint64_t *ring_full = reinterpret_cast<uint64_t *>(shared + L::kBarriers);  // [3] a ring slot's tile landed
    uint64_t *a8_full = ring_full + kStages;                                     // the int8 row tile landed

    const GramBlock block = gram_block(p.cache.kv_heads, p.num_jobs);
    const int32_t i = block.i, jj = block.jj, h = block.h;
    const Job job = p.jobs[jj];
    if (!job_active(p, job)) return;
    const int32_t n = job.held, tiles = (n + kGramTile - 1) / kGramTile, first = i * kGramTile;
    if (i >= tiles) return;

    const CacheLayer c = job_cache(p, job);
    const T *keys = scoring_keys<T>(p, c, jj, job, h);
    const int64_t row = scratch_row(p, jj, h);
    const int8_t *keys8 = keys_int8_rows(p, jj, h);  // [tiles * 128][128], SW128 chunks, zeros past n
    const int64_t cap = c.capacity;
    const float *inv_norm = p.scratch.inv_norm + row;
    float *partial_sum = p.scratch.partial_sum + row * p.scratch.tiles;
    int32_t *partial_latest = p.scratch.partial_latest + row * p.scratch.tiles;
    float *partial_value = p.scratch.partial_value + row * p.scratch.tiles;
    const float not_a_number = __int_as_float(0x7fffffff);
    const int t = threadIdx.x, warp = t >> 5, lane = t & 31, g = lane >> 2;
    // This thread's rows: first + 64 half + 16 warp + g + 8 hr.
    const int32_t my_first = first + 16 * warp + g;
    const auto tile_rows = [](int r, int chunk) { return sw128_offset(r, chunk, kGramTile); };
    const auto slot = [&](int32_t step) { return base + L::kB8 + uint32_t(step % kStages) * L::kB8Tile; };
    // Thread 0: the int8 column tile of `step` (tile tiles - 1 - step) into its ring slot.
    const auto issue_b8 = [&](int32_t step) {
        uint64_t *barrier = &ring_full[step % kStages];
        mbarrier_arrive_expect_bytes(barrier, L::kB8Tile);
        bulk_copy_to_shared(slot(step), keys8 + int64_t(tiles - 1 - step) * kGramTile * 128, L::kB8Tile, barrier);
    };
    int32_t issued = 0;  // steps whose int8 tile was copied (thread 0)
    if (t == 0) {
        for (int b = 0; b < kStages + 1; ++b) mbarrier_init(&ring_full[b], 1);
        mbarrier_arrive_expect_bytes(a8_full, L::kB8Tile);
        bulk_copy_to_shared(base + L::kA8, keys8 + int64_t(first) * 128, L::kB8Tile, a8_full);
        for (; issued < min(2, tiles); ++issued) issue_b8(issued);
    }

    const float inv_row = first + t < n ? inv_norm[first + t] : not_a_number;  // loaded first
    copy_key_tile<T, D, kGramInt8Threads>(base + L::kA16, keys, first, n, tile_rows);
    cp_async_commit();
    // W's per-tile partials of this thread's element, loaded now and added (in
    // tile order, as sum_w_partials) after the walk, with the row sums: the
    // 16-bit row tile and these loads land meanwhile.
    float *w = reinterpret_cast<float *>(shared + L::kW);
    constexpr int kEarlyPartials = 16;
    const float *w_partials = p.scratch.partial_w + (row / cap) * p.scratch.tiles * D + t;
    float early_partials[kEarlyPartials];
#pragma unroll
    for (int u = 0; u < kEarlyPartials; ++u) early_partials[u] = u < tiles ? w_partials[u * D] : 0.0f;
    inv_a[t] = inv_row;
    // done[half][hr]: row (my_first + 64 half + 8 hr) has a hit in one of its
    // quad's lanes, or is past n (the same in the quad's four lanes).
    bool done[2][2];
#pragma unroll
    for (int half = 0; half < 2; ++half)
#pragma unroll
        for (int hr = 0; hr < 2; ++hr) done[half][hr] = my_first + 64 * half + 8 * hr >= n;
    // walking[half]: a row of the half is not done. Every decision of the walk
    // comes from a block reduction (__syncthreads_or), so it is the same in
    // every thread and ptxas keeps the wgmma in the branches on it asynchronous.
    // (The first also publishes the mbarriers' initialisation.)
    bool walking[2];
    walking[0] = __syncthreads_or(!(done[0][0] && done[0][1]));
    walking[1] = __syncthreads_or(!(done[1][0] && done[1][1]));
    mbarrier_wait(a8_full, 0);

    // walk_latest[half][hr]: this lane's latest column above tau of its row
    // over the tiles walked; -1 none.
    int32_t walk_latest[2][2] = {{-1, -1}, {-1, -1}};
    float walk_value[2][2] = {{0.0f, 0.0f}, {0.0f, 0.0f}};
    const float inv_r[2][2] = {{inv_a[my_first - first], inv_a[my_first - first + 8]},
                               {inv_a[my_first - first + 64], inv_a[my_first - first + 72]}};
    const float filter = (p.threshold - kGramInt8Margin) * (kKeyInt8Scale * kKeyInt8Scale);
    // A half's exact answer of some columns: its first hit in the walk is its latest.
    const auto take = [&](int half, const int32_t (&latest)[2], const float (&value)[2]) {
#pragma unroll
        for (int hr = 0; hr < 2; ++hr)
            if (latest[hr] >= 0 && walk_latest[half][hr] < 0) {
                walk_latest[half][hr] = latest[hr];
                walk_value[half][hr] = value[hr];
            }
    };

    int32_t step = 0;
    for (; step < tiles && (walking[0] || walking[1]); ++step) {
        const int32_t j = tiles - 1 - step;                                // the column tile
        mbarrier_wait(&ring_full[step % kStages], (step / kStages) & 1);  // its int8 copy landed
        const bool forced = j == 0 && p.slot0_quirk;                       // S[r, 0]
        bool candidate[2] = {false, false};
        if (!forced) {
            // int8 products of both halves (walking or not: with issues and
            // waits under conditions of their own ptxas serialises every wgmma
            // of the kernel); a half needs the exact products where a row not
            // yet done has a candidate.
            int32_t acc8[2][64];
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                wgmma_fence();
#pragma unroll
                for (int k = 0; k < D / 32; ++k)
                    wgmma_m64n128k32_s8(acc8[half], sw128_descriptor(base + L::kA8 + uint32_t(half) * 64 * 128 + k * 32),
                                        sw128_descriptor(slot(step) + k * 32), k > 0);
                wgmma_commit();
            }
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                if (half == 0) wgmma_wait<1>();
                else wgmma_wait<0>();
                fence_accumulators(acc8[half]);
                int32_t best[2];
                if (j == i) int8_row_maxima<true>(acc8[half], half, best);
                else int8_row_maxima<false>(acc8[half], half, best);
                candidate[half] = walking[half] && ((float(best[0]) > filter && !done[half][0]) ||
                                                    (float(best[1]) > filter && !done[half][1]));
            }
        }
        // (also: every thread is done with this step's ring slot and the ones before)
        const bool exact_step = __syncthreads_or(forced || candidate[0] || candidate[1]);
        if (exact_step) {
            bool exact[2] = {walking[0], walking[1]};
            if (!forced) {
                exact[0] = __syncthreads_or(candidate[0]);
                exact[1] = __syncthreads_or(candidate[1]);
            }
            cp_async_wait<0>();  // the 16-bit row tile
            fence_async_shared();
            __syncthreads();
            if (j == i) {
                // The diagonal tile: its keys are the row tile's own.
#pragma unroll
                for (int half = 0; half < 2; ++half) {
                    if (!exact[half]) continue;
                    float acc[64];
                    issue_half<T, D>(acc, base + L::kA16, base + L::kA16, half);
                    wgmma_wait<0>();
                    fence_accumulators(acc);
                    int32_t latest[2] = {-1, -1};
                    float value[2] = {0.0f, 0.0f};
                    exact_epilogue<16, true>(acc, my_first + 64 * half, first, inv_r[half], inv_a, p.threshold,
                                             latest, value);
                    take(half, latest, value);
                    if (j == 0 && p.slot0_quirk)
                        store_first_column(p.scratch.first_column + row, acc, my_first + 64 * half, n, inv_r[half],
                                           inv_a[0]);
                }
            } else {
                // 64 columns at a time, the later ones first, in the ring slot
                // of step + 2 (whose tile is copied after them).
                const uint32_t b16 = slot(step + 2);
                for (int column_half = 1; column_half >= 0; --column_half) {
                    const int32_t first_column = j * kGramTile + column_half * 64;
                    for (int index = t; index < 64 * (D / 8); index += kGramInt8Threads) {
                        const int r = index / (D / 8), chunk = index % (D / 8);
                        const bool valid = first_column + r < n;
                        cp_async_16(b16 + sw128_offset(r, chunk, 64),
                                    valid ? keys + int64_t(first_column + r) * D + chunk * 8 : keys, valid);
                    }
                    cp_async_commit();
                    if (t < 64) inv_b16[t] = first_column + t < n ? inv_norm[first_column + t] : not_a_number;
                    cp_async_wait<0>();
                    fence_async_shared();
                    __syncthreads();
#pragma unroll
                    for (int half = 0; half < 2; ++half) {
                        if (!exact[half]) continue;
                        float acc[32];
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
                        int32_t latest[2] = {-1, -1};
                        float value[2] = {0.0f, 0.0f};
                        exact_epilogue<8, false>(acc, my_first + 64 * half, first_column, inv_r[half], inv_b16,
                                                 p.threshold, latest, value);
                        take(half, latest, value);
                        if (first_column == 0 && p.slot0_quirk)
                            store_first_column(p.scratch.first_column + row, acc, my_first + 64 * half, n,
                                               inv_r[half], inv_b16[0]);
                    }
                    __syncthreads();  // every warp is done with these columns
                }
            }
#pragma unroll
            for (int half = 0; half < 2; ++half)
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    // The quad's four lanes share the row.
                    uint32_t hit = walk_latest[half][hr] >= 0;
                    hit |= __shfl_xor_sync(0xffffffffu, hit, 1);
                    hit |= __shfl_xor_sync(0xffffffffu, hit, 2);
                    done[half][hr] = done[half][hr] || hit != 0;
                }
            walking[0] = walking[0] && __syncthreads_or(!(done[0][0] && done[0][1]));
            walking[1] = walking[1] && __syncthreads_or(!(done[1][0] && done[1][1]));
        }
        if (t == 0 && issued < tiles) {
            // Into the slot of step - 1 (read by then: the barrier above); after
            // exact columns copied there, those writes come before the copy engine's.
            if (exact_step) fence_proxy_async_shared();
            issue_b8(issued++);
        }
    }
    // Tiles copied for steps the early stop skips land before the block leaves.
    if (t == 0)
        for (int32_t later = step; later < issued; ++later)
            mbarrier_wait(&ring_full[later % kStages], (later / kStages) & 1);
    {
        float w_sum = 0.0f;
#pragma unroll
        for (int u = 0; u < kEarlyPartials; ++u)
            if (u < tiles) w_sum += early_partials[u];
        for (int32_t u = kEarlyPartials; u < tiles; ++u) w_sum += w_partials[u * D];
        w[t] = w_sum;
    }
    cp_async_wait<0>();  // the 16-bit row tile
    __syncthreads();
    {
        // Row sums: k^_r . W - k^_r . k^_r (a thread per row).
        const float sum = row_sum_from_w<T, D>(shared + L::kA16, t, inv_row, w, tile_rows);
        if (first + t < n) partial_sum[first + t] = sum;
    }
    store_walk_answers(walk_latest, walk_value, my_first, n, partial_latest, partial_value);
#else
    __trap();  // never launched: the host selects this kernel only on sm_90 devices
#endif
}

}  // namespace rkv::kernels
