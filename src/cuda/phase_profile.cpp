#include "cuda/phase_profile.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace rkv::cuda {

PhaseProfile::PhaseProfile() {
    const char *flag = std::getenv("RKV_CUDA_PROFILE");
    enabled_ = flag && *flag && std::strcmp(flag, "0") != 0;
    if (enabled_ && (cudaEventCreate(&start_) != cudaSuccess || cudaEventCreate(&stop_) != cudaSuccess)) {
        cudaGetLastError();
        enabled_ = false;
    }
}

PhaseProfile::~PhaseProfile() {
    if (!enabled_) return;
    double total = 0;
    for (int i = 0; i < kPhases && names_[i]; ++i) total += ms_[i];
    std::fprintf(stderr, "rkv CUDA compression phases (synchronised, %.3f ms in all):\n", total);
    for (int i = 0; i < kPhases && names_[i]; ++i)
        std::fprintf(stderr, "  %-28s %10.3f ms %5.1f%%  %6ld calls\n", names_[i], ms_[i],
                     total > 0 ? 100.0 * ms_[i] / total : 0.0, calls_[i]);
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
}

void PhaseProfile::begin(cudaStream_t stream) {
    if (enabled_) cudaEventRecord(start_, stream);
}

void PhaseProfile::end(const char *name, cudaStream_t stream) {
    if (!enabled_) return;
    cudaEventRecord(stop_, stream);
    cudaEventSynchronize(stop_);
    float ms = 0;
    cudaEventElapsedTime(&ms, start_, stop_);
    for (int i = 0; i < kPhases; ++i) {
        if (names_[i] == nullptr) names_[i] = name;
        if (std::strcmp(names_[i], name) != 0) continue;
        ms_[i] += ms;
        calls_[i] += 1;
        return;
    }
}

}  // namespace rkv::cuda
