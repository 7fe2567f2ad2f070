// How the wgmma key-Gram walk (kernels/gram_wgmma.cuh) would go on a model's
// own keys: per (layer, KV head), the share of keys with a near-duplicate
// (cosine above tau with another held key) and how many column tiles of 128
// keys a row tile (and each half of 64 rows) walks, from the last tile down,
// before every one of its keys has found its latest near-duplicate. Keys with
// no near-duplicates walk every tile (the wgmma path's worst case, where the
// fused path is faster); `rkv_bench_gpu --keys shared` keys walk 7.2 of 9
// tiles a row tile, 5.9 a half (where the wgmma path is faster).
#pragma once

#include <cstdint>
#include <cstdio>

#include "rkv/rkv.h"

namespace engine {

struct WalkStats {
    int32_t keys = 0, tiles = 0;     // keys of the head; column tiles of 128 keys
    double with_hit = 0.0;           // share of keys with a near-duplicate
    double tiles_walked = 0.0;       // mean over row tiles of 128 keys
    double half_tiles_walked = 0.0;  // mean over halves of 64 keys
};

// keys: [n, d] row-major. The diagonal counts as 0 (R-KV's rule: with tau < 0
// a key is its own hit).
WalkStats walk_stats(const float *keys, int32_t n, int32_t d, float tau);

// One line per layer of sequence `seq` of an f32 CPU cache (the mean over its
// KV heads), and the mean over layers. Throws if the cache is not f32 on the CPU.
void print_walk_stats(std::FILE *out, const rkv_cache *cache, int32_t seq, int32_t layers, float tau);

}  // namespace engine
