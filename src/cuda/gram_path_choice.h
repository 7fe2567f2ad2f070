// RKV_MATMUL_AUTO's choice between the two key-Gram kernels of compute
// capability 9.0 at head_dim 128: WGMMA (the exact walk, which stops once
// every key of a half row tile has a near-duplicate) and WGMMA_INT8 (the same
// walk behind an int8 filter that skips the column tiles where no key can pass
// the threshold). They give the same bits (test_gpu_gram), so the choice never
// changes what a cache keeps, only how fast: WGMMA where keys have near-
// duplicates among the latest keys (keys like a real model's: 13.3 ms at
// batch 64 on the H200 against 18.0), WGMMA_INT8 where they have few
// (Gaussian keys: 15.9 against 19.1; kernels/README.md, Session 17). Which one a model's keys are is known
// only by trying, so the cache times its compressions with events (outside
// graph capture) and keeps the one of lower cost per unit of Gram work (the
// jobs' held^2 summed), trying the other again every kReprobe-th timed call.
//
// This is the policy only (no CUDA): the backend times the calls.
#pragma once

#include <cstdint>

namespace rkv::cuda {

class GramPathChoice {
 public:
    enum Path { kWgmma = 0, kInt8 = 1 };
    static constexpr int64_t kReprobe = 32;  // a timed call in this many tries the slower path again

    // The path of the next timed call: each path once (WGMMA first), then the
    // one of lower cost, the other every kReprobe-th timed call.
    Path next_timed() {
        ++timed_;
        if (!known_[kWgmma]) return kWgmma;
        if (!known_[kInt8]) return kInt8;
        const Path best_path = best();
        return timed_ % kReprobe == 0 ? other(best_path) : best_path;
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
    int64_t timed_ = 0;
};

}  // namespace rkv::cuda
