// RKV_MATMUL_AUTO's choice between the two key-Gram kernels of compute
// capability 9.0 at head_dim 128: WGMMA (the exact walk, which stops once
// every key of a half row tile has a near-duplicate) and WGMMA_INT8 (int8
// products of half the square, the exact ones only where a tile can pass the
// threshold). They give the same bits (test_gpu_gram), so the choice never
// changes what a cache keeps, only how fast: WGMMA where keys have many near-
// duplicates (keys like a real model's: 13.4 ms at batch 64 on the H200
// against 40.1), WGMMA_INT8 where they have few (Gaussian keys: 13.6 against
// 20.7; kernels/README.md, Session 18). Which one a model's keys are is known
// only by trying, so the cache times its compressions with events (outside
// graph capture) and keeps the one of lower cost per unit of Gram work (the
// jobs' held^2 summed), trying the other again after kReprobe x r^2 timed
// calls, r its cost over the kept one's: a try costs r - 1 calls' time, so
// the tries cost (r - 1) / (kReprobe r^2) of the time on average, at most
// 1 / (4 kReprobe) = 0.8% (at r = 2), and a path about as fast is tried often.
//
// This is the policy only (no CUDA): the backend times the calls.
#pragma once

#include <algorithm>
#include <cstdint>

namespace rkv::cuda {

class GramPathChoice {
 public:
    enum Path { kWgmma = 0, kInt8 = 1 };
    static constexpr int64_t kReprobe = 32;  // the slower path's tries: one per kReprobe x its cost ratio^2
    static constexpr double kMostRatio = 8.0;  // (so a far slower path is still tried, every 2048 calls)

    // The path of the next timed call: each path once (WGMMA first), then the
    // one of lower cost, the other after kReprobe x r^2 calls of it (r: its
    // cost over the kept one's).
    Path next_timed() {
        if (!known_[kWgmma]) return kWgmma;
        if (!known_[kInt8]) return kInt8;
        const Path best_path = best();
        const double ratio = std::min(kMostRatio, std::max(1.0, cost_[other(best_path)] / cost_[best_path]));
        if (++since_try_ < int64_t(double(kReprobe) * ratio * ratio)) return best_path;
        since_try_ = 0;
        return other(best_path);
    }
    // The path of a call that is not timed (captured into a graph, or the
    // previous timing has not finished): the best known.
    Path best() const {
        if (!known_[kWgmma] || !known_[kInt8]) return known_[kInt8] && !known_[kWgmma] ? kInt8 : kWgmma;
        return cost_[kInt8] < cost_[kWgmma] ? kInt8 : kWgmma;
    }
    // A timed call's time and work (held^2 summed over its jobs). The cost
    // is averaged with the path's earlier ones (half each), so a noisy call
    // moves it half way.
    void record(Path path, double milliseconds, double work) {
        if (!(milliseconds > 0.0) || !(work > 0.0)) return;
        const double cost = milliseconds / work;
        cost_[path] = known_[path] ? 0.5 * (cost_[path] + cost) : cost;
        known_[path] = true;
    }
    bool known(Path path) const { return known_[path]; }

 private:
    static Path other(Path path) { return path == kWgmma ? kInt8 : kWgmma; }
    double cost_[2] = {0.0, 0.0};  // milliseconds per unit of work
    bool known_[2] = {false, false};
    int64_t since_try_ = 0;  // timed calls on the kept path since the other's last try
};

}  // namespace rkv::cuda
