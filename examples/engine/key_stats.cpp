// Walk statistics of held keys (key_stats.h).
#include "key_stats.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine {

namespace {

constexpr int32_t kTile = 128;  // the key-Gram kernels' tile (kernels/params.h, kGramTile)

// Column tiles walked from the last by rows first .. first + count - 1: the
// fewest trailing tiles holding a hit for every row (rows without any hit make
// the walk go through every tile). hit_tiles[r * tiles + t]: row r has a hit in
// column tile t.
int32_t tiles_walked(const std::vector<uint8_t> &hit_tiles, int32_t tiles, int32_t first, int32_t count) {
    int32_t walked = 1;
    for (int32_t r = first; r < first + count; ++r) {
        int32_t t = tiles - 1;
        while (t > 0 && !hit_tiles[size_t(r) * tiles + t]) --t;
        walked = std::max(walked, tiles - t);
    }
    return walked;
}

}  // namespace

WalkStats walk_stats(const float *keys, int32_t n, int32_t d, float tau) {
    WalkStats stats;
    stats.keys = n;
    stats.tiles = (n + kTile - 1) / kTile;
    if (n == 0) return stats;
    // The normalised keys (as the kernels: k / (|k| + 1e-8)), then S = K^ K^T
    // by blocks of kTile rows (memory O(n) per row, not O(n^2)).
    std::vector<float> normalised(size_t(n) * d), block(size_t(kTile) * n);  // [n, d], [kTile, n]
    for (int32_t r = 0; r < n; ++r) {
        double squares = 0.0;
        for (int32_t e = 0; e < d; ++e) squares += double(keys[size_t(r) * d + e]) * keys[size_t(r) * d + e];
        const float inv = 1.0f / (float(std::sqrt(squares)) + 1e-8f);
        for (int32_t e = 0; e < d; ++e) normalised[size_t(r) * d + e] = keys[size_t(r) * d + e] * inv;
    }
    std::vector<uint8_t> hit_tiles(size_t(n) * stats.tiles, 0);  // [n, tiles]: row r has a hit in tile t
    int32_t with_hit = 0;
    for (int32_t first = 0; first < n; first += kTile) {
        const int32_t rows = std::min(kTile, n - first);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, d, 1.0f, &normalised[size_t(first) * d], d,
                    normalised.data(), d, 0.0f, block.data(), n);
        for (int32_t i = 0; i < rows; ++i) {
            const int32_t r = first + i;
            bool any = false;
            for (int32_t c = 0; c < n; ++c) {
                const float s = c == r ? 0.0f : block[size_t(i) * n + c];
                if (s > tau) {
                    hit_tiles[size_t(r) * stats.tiles + c / kTile] = 1;
                    any = true;
                }
            }
            with_hit += any;
        }
    }
    stats.with_hit = double(with_hit) / n;
    double rows = 0.0, halves = 0.0;
    int32_t row_tiles = 0, half_tiles = 0;
    for (int32_t first = 0; first < n; first += kTile, ++row_tiles)
        rows += tiles_walked(hit_tiles, stats.tiles, first, std::min(kTile, n - first));
    for (int32_t first = 0; first < n; first += kTile / 2, ++half_tiles)
        halves += tiles_walked(hit_tiles, stats.tiles, first, std::min(kTile / 2, n - first));
    stats.tiles_walked = rows / row_tiles;
    stats.half_tiles_walked = halves / half_tiles;
    return stats;
}

void print_walk_stats(std::FILE *out, const rkv_cache *cache, int32_t seq, int32_t layers, float tau) {
    std::vector<WalkStats> per_layer;  // the mean over the layer's KV heads
    for (int32_t layer = 0; layer < layers; ++layer) {
        rkv_seq_view view;
        std::memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        if (rkv_view(cache, seq, layer, &view) != RKV_OK)
            throw std::runtime_error(std::string("rkv_view: ") + rkv_error_message());
        if (view.dtype != RKV_DTYPE_F32 || view.device_type != RKV_DEVICE_CPU)
            throw std::runtime_error("key statistics read an f32 CPU cache");
        WalkStats mean;
        std::vector<float> keys(size_t(view.length) * view.head_dim);  // [length, head_dim] of one head
        for (int32_t h = 0; h < view.num_kv_heads; ++h) {
            const float *k = static_cast<const float *>(view.k) + h * view.stride_head;
            for (int32_t t = 0; t < view.length; ++t)
                std::copy(k + t * view.stride_token, k + t * view.stride_token + view.head_dim,
                          keys.begin() + size_t(t) * view.head_dim);
            const WalkStats s = walk_stats(keys.data(), view.length, view.head_dim, tau);
            mean.keys = s.keys;
            mean.tiles = s.tiles;
            mean.with_hit += s.with_hit / view.num_kv_heads;
            mean.tiles_walked += s.tiles_walked / view.num_kv_heads;
            mean.half_tiles_walked += s.half_tiles_walked / view.num_kv_heads;
        }
        per_layer.push_back(mean);
    }
    std::fprintf(out, "key-Gram walk on the held keys (tau %.2f; tiles of %d keys, walked from the last):\n", tau,
                 kTile);
    std::fprintf(out, "  layer   keys  tiles  with a near-duplicate  tiles walked (row tile)  (half)\n");
    WalkStats all;
    for (size_t layer = 0; layer < per_layer.size(); ++layer) {
        const WalkStats &m = per_layer[layer];
        std::fprintf(out, "  %5zu  %5d  %5d  %20.1f%%  %23.2f  %6.2f\n", layer, m.keys, m.tiles, 100.0 * m.with_hit,
                     m.tiles_walked, m.half_tiles_walked);
        all.with_hit += m.with_hit / per_layer.size();
        all.tiles_walked += m.tiles_walked / per_layer.size();
        all.half_tiles_walked += m.half_tiles_walked / per_layer.size();
    }
    if (!per_layer.empty())
        std::fprintf(out, "  mean                %20.1f%%  %23.2f  %6.2f\n", 100.0 * all.with_hit, all.tiles_walked,
                     all.half_tiles_walked);
}

}  // namespace engine
