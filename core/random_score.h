// The Random method's score of one token: a hash of (seed, sequence, layer,
// head, compression round, original position) mapped to [0, 1). Depending on
// the position rather than the slot makes it independent of slot order, and a
// pure function makes CPU and CUDA evict the same tokens.
#pragma once

#include <cstdint>

#include "core/host_device.h"

namespace rkv {

RKV_HOST_DEVICE inline uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

RKV_HOST_DEVICE inline float random_score(uint64_t seed, int32_t seq, int32_t layer, int32_t head,
                                          uint64_t round, int32_t position) {
    uint64_t h = splitmix64(seed);
    h = splitmix64(h ^ (uint64_t(uint32_t(seq)) << 32 | uint32_t(layer)));
    h = splitmix64(h ^ (uint64_t(uint32_t(head)) << 32 | uint32_t(position)));
    h = splitmix64(h ^ round);
    return float(h >> 40) * (1.0f / 16777216.0f);  // 24 bits: exact in a float
}

}  // namespace rkv
