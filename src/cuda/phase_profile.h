// Optional time per compression phase, for tuning: with RKV_CUDA_PROFILE=1 in
// the environment at create, every phase of a compression is timed with CUDA
// events (synchronising after each, so phases do not overlap) and the totals
// are printed to stderr when the cache is destroyed. Off by default: it
// synchronises the host, so it must not be used with CUDA graphs.
#pragma once

#include <cuda_runtime_api.h>

namespace rkv::cuda {

class PhaseProfile {
 public:
    PhaseProfile();
    ~PhaseProfile();
    PhaseProfile(const PhaseProfile &) = delete;
    PhaseProfile &operator=(const PhaseProfile &) = delete;

    bool enabled() const { return enabled_; }
    // Marks the start of a phase on `stream` (no-op when disabled).
    void begin(cudaStream_t stream);
    // Ends the phase begun last and adds its time to `name` (a string literal).
    void end(const char *name, cudaStream_t stream);

 private:
    static constexpr int kPhases = 16;
    bool enabled_ = false;
    cudaEvent_t start_ = nullptr, stop_ = nullptr;
    const char *names_[kPhases] = {};
    double ms_[kPhases] = {};
    long calls_[kPhases] = {};
};

}  // namespace rkv::cuda
