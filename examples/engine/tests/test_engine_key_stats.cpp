// The key-Gram walk statistics (key_stats.h) without a model, on keys whose
// near-duplicates are placed by hand (unit vectors: two keys are either
// identical, cosine 1, or orthogonal, cosine 0), and on a real librkv cache.
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "key_stats.h"
#include "test_util.h"

using namespace engine;

namespace {

// n keys of dimension d, key r = the unit vector e_{axis(r)}.
template <typename Axis>
std::vector<float> unit_keys(int32_t n, int32_t d, Axis axis) {
    std::vector<float> keys(size_t(n) * d, 0.0f);
    for (int32_t r = 0; r < n; ++r) keys[size_t(r) * d + axis(r)] = 1.0f;
    return keys;
}

bool near(double a, double b) { return a > b - 1e-9 && a < b + 1e-9; }

void check_walks() {
    // Every key alike: each finds a near-duplicate in the last tile.
    std::vector<float> same = unit_keys(300, 16, [](int32_t) { return 3; });
    WalkStats s = walk_stats(same.data(), 300, 16, 0.5f);
    EXPECT(s.keys == 300 && s.tiles == 3, "keys %d, tiles %d", s.keys, s.tiles);
    EXPECT(near(s.with_hit, 1.0) && near(s.tiles_walked, 1.0) && near(s.half_tiles_walked, 1.0),
           "alike keys: %.3f with a hit, %.3f / %.3f tiles walked", s.with_hit, s.tiles_walked, s.half_tiles_walked);

    // No near-duplicates: every row tile walks every tile.
    std::vector<float> apart = unit_keys(200, 256, [](int32_t r) { return r; });
    s = walk_stats(apart.data(), 200, 256, 0.5f);
    EXPECT(near(s.with_hit, 0.0) && near(s.tiles_walked, 2.0) && near(s.half_tiles_walked, 2.0),
           "orthogonal keys: %.3f with a hit, %.3f / %.3f tiles walked", s.with_hit, s.tiles_walked,
           s.half_tiles_walked);
    // ... unless tau < 0, where a cosine of 0 is a hit (the diagonal too).
    s = walk_stats(apart.data(), 200, 256, -0.25f);
    EXPECT(near(s.with_hit, 1.0) && near(s.tiles_walked, 1.0), "tau -0.25: %.3f with a hit, %.3f tiles walked",
           s.with_hit, s.tiles_walked);

    // Rows 0-63 duplicate rows 128-191 (a hit in the last tile for the first,
    // in tile 0 for the second); rows 64-127 and 192-255 have none. Row tiles
    // walk 2 and 2; halves 1, 2, 2, 2.
    std::vector<float> halves = unit_keys(256, 192, [](int32_t r) {
        if (r < 64) return r;                 // e_0 .. e_63
        if (r < 128) return 128 + (r - 64);   // e_128 .. e_191, unique
        return r - 128;                       // e_0 .. e_63 again (rows 128-191), then e_64 .. e_127 (unique)
    });
    s = walk_stats(halves.data(), 256, 192, 0.5f);
    EXPECT(near(s.with_hit, 0.5) && near(s.tiles_walked, 2.0) && near(s.half_tiles_walked, 1.75),
           "placed duplicates: %.3f with a hit, %.3f / %.3f tiles walked (want 0.5, 2, 1.75)", s.with_hit,
           s.tiles_walked, s.half_tiles_walked);
    s = walk_stats(halves.data(), 0, 192, 0.5f);
    EXPECT(s.keys == 0 && s.tiles == 0, "no keys: %d keys, %d tiles", s.keys, s.tiles);
}

// On a cache: the keys appended are the keys read (one layer of three alike
// keys per head: each has a near-duplicate), and a cache that is not f32 on
// the CPU is refused.
void check_cache() {
    rkv_cache_params p;
    rkv_params_default(&p, sizeof p);
    p.max_seqs = 1, p.num_layers = 2, p.num_kv_heads = 2, p.num_q_heads = 2, p.head_dim = 8;
    p.method = RKV_METHOD_FULL, p.max_len = 16;
    rkv_cache *cache = nullptr;
    if (rkv_cache_create(&p, &cache) != RKV_OK) {
        EXPECT(false, "rkv_cache_create: %s", rkv_error_message());
        return;
    }
    std::vector<float> k(size_t(3) * 16, 1.0f), v(k.size(), 0.0f), q(k.size(), 0.0f);  // [token, head, dim]
    const int32_t seq = 0, tokens = 3;
    for (int32_t layer = 0; layer < 2; ++layer) {
        rkv_append_args a;
        std::memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.layer = layer, a.num_seqs = 1, a.seq_ids = &seq, a.num_tokens = &tokens;
        a.k = {k.data(), RKV_DTYPE_F32, 2, 8, 48, 16, 8, int64_t(k.size())};
        a.v = {v.data(), RKV_DTYPE_F32, 2, 8, 48, 16, 8, int64_t(v.size())};
        a.q = {q.data(), RKV_DTYPE_F32, 2, 8, 48, 16, 8, int64_t(q.size())};
        EXPECT(rkv_append(cache, &a, nullptr) == RKV_OK, "append: %s", rkv_error_message());
    }
    std::FILE *out = std::tmpfile();
    print_walk_stats(out, cache, 0, 2, 0.5f);
    std::rewind(out);
    char text[2048] = {0};
    const size_t read = std::fread(text, 1, sizeof text - 1, out);
    std::fclose(out);
    text[read] = 0;
    EXPECT(std::strstr(text, "100.0%") != nullptr, "every held key alike, yet:\n%s", text);
    rkv_cache_destroy(cache);

    p.dtype = RKV_DTYPE_BF16;
    if (rkv_cache_create(&p, &cache) != RKV_OK) {
        EXPECT(false, "rkv_cache_create (bf16): %s", rkv_error_message());
        return;
    }
    bool refused = false;
    try {
        print_walk_stats(stdout, cache, 0, 2, 0.5f);
    } catch (const std::runtime_error &) {
        refused = true;
    }
    EXPECT(refused, "a bf16 cache's keys were read as f32");
    rkv_cache_destroy(cache);
}

}  // namespace

int main() {
    check_walks();
    check_cache();
    return finish();
}
