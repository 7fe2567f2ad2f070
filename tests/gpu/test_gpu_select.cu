// The radix select of the winners (kernels/radix_select.cuh, mark_largest_keys),
// white box: a block of the selection's size marks the `count` largest of a
// head's selection keys, against a reference that ranks the scores directly
// (larger first; equal scores: the higher slot first; NaN as -inf; -0 as 0;
// protected candidates never win), on the inputs that stress a radix select:
// scores that all share their top digits, exact ties, NaN, infinities and
// signed zeros, protected candidates mixed in, counts of 0, 1 and all, fewer
// candidates than a warp and more than three passes of the block.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <vector>

#include "kernels/radix_select.cuh"
#include "kernels/select.cuh"

extern "C" {
#include "gpu_util.h"
}

namespace {

namespace k = rkv::kernels;

constexpr int kMaxCandidates = 2048;

// One case per block: the keys as select_compact_head makes them, the winners
// marked, the flags copied out.
__global__ void __launch_bounds__(k::kSelectThreads) mark_kernel(const float *scores, const uint8_t *is_protected,
                                                                 int32_t candidates, int32_t count, uint8_t *flags_out) {
    __shared__ uint64_t keys[kMaxCandidates];
    __shared__ uint8_t flags[kMaxCandidates];
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x) {
        keys[j] = is_protected[j] ? 0 : k::selection_key(scores[j], j);
        flags[j] = is_protected[j] ? 1 : 0;
    }
    __syncthreads();
    k::mark_largest_keys(keys, candidates, count, flags);
    __syncthreads();
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x) flags_out[j] = flags[j];
}

struct Case {
    const char *name;
    std::vector<float> scores;
    std::vector<uint8_t> is_protected;
    int32_t count;
};

// The reference: the unprotected candidates ranked by score (NaN as -inf,
// -0 as 0), equal scores by the higher slot; the first `count` win.
std::vector<uint8_t> reference_flags(const Case &c) {
    const int32_t n = int32_t(c.scores.size());
    auto rank_score = [&](int32_t j) {
        const float s = c.scores[j];
        return std::isnan(s) ? -std::numeric_limits<float>::infinity() : (s == 0.0f ? 0.0f : s);
    };
    std::vector<int32_t> order;
    for (int32_t j = 0; j < n; ++j)
        if (!c.is_protected[j]) order.push_back(j);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
        const float sa = rank_score(a), sb = rank_score(b);
        return sa != sb ? sa > sb : a > b;
    });
    std::vector<uint8_t> flags(n);
    for (int32_t j = 0; j < n; ++j) flags[j] = c.is_protected[j] ? 1 : 0;
    for (int32_t r = 0; r < c.count; ++r) flags[order[r]] |= 2;
    return flags;
}

int32_t unprotected(const Case &c) {
    return int32_t(std::count(c.is_protected.begin(), c.is_protected.end(), uint8_t(0)));
}

std::vector<Case> make_cases() {
    std::vector<Case> cases;
    uint64_t rng = 11;
    auto add = [&](const char *name, int32_t n, auto score, double protected_share, auto count_of) {
        Case c{name, std::vector<float>(n), std::vector<uint8_t>(n), 0};
        for (int32_t j = 0; j < n; ++j) {
            c.scores[j] = score(j);
            c.is_protected[j] = test_rng_uniform(&rng) < protected_share;
        }
        c.count = count_of(unprotected(c));
        cases.push_back(c);
    };
    auto normal = [&](int32_t) { return test_rng_normal(&rng); };
    // R-KV's shape: 1,144 candidates, 1,016 winners.
    add("normal scores, 1144 candidates", 1144, normal, 0.0, [](int32_t) { return 1016; });
    add("normal scores, protected mixed in", 1144, normal, 0.1, [](int32_t free) { return free - 100; });
    // Every score equal: the slots decide (the top 32 bits of every key agree).
    add("all scores equal", 1144, [](int32_t) { return 0.25f; }, 0.0, [](int32_t) { return 500; });
    add("three distinct scores", 1144, [&](int32_t) { return float(int(test_rng_uniform(&rng) * 3.0f)); }, 0.05,
        [](int32_t free) { return free - 3; });
    // Scores 1 + tiny steps: the same top digits, they differ in the last bits.
    add("clustered scores, 2000 candidates", 2000, [&](int32_t) { return 1.0f + float(int(test_rng_uniform(&rng) * 64.0f)) * 1.1920929e-7f; },
        0.02, [](int32_t) { return 1000; });
    add("NaN, infinities, signed zeros", 1500,
        [&](int32_t j) {
            const float special[] = {NAN, -INFINITY, INFINITY, -0.0f, 0.0f, -1.0f, 1.0f};
            return special[j % 7];
        },
        0.1, [](int32_t free) { return free / 2; });
    add("everything wins", 1144, normal, 0.2, [](int32_t free) { return free; });
    add("one winner", 1144, normal, 0.0, [](int32_t) { return 1; });
    add("no winner", 1144, normal, 0.0, [](int32_t) { return 0; });
    add("fewer candidates than a warp", 7, normal, 0.0, [](int32_t) { return 3; });
    add("negative scores only", 1144, [&](int32_t) { return -std::fabs(test_rng_normal(&rng)) - 1.0f; }, 0.0,
        [](int32_t) { return 600; });
    return cases;
}

void test_radix_select_against_sorting(void **state) {
    (void)state;
    int failures = 0;
    for (const Case &c : make_cases()) {
        const int32_t n = int32_t(c.scores.size());
        float *d_scores = static_cast<float *>(gpu_upload(c.scores.data(), size_t(n) * sizeof(float)));
        uint8_t *d_protected = static_cast<uint8_t *>(gpu_upload(c.is_protected.data(), size_t(n)));
        uint8_t *d_flags = static_cast<uint8_t *>(gpu_alloc(size_t(n)));
        mark_kernel<<<1, k::kSelectThreads>>>(d_scores, d_protected, n, c.count, d_flags);
        CUDA_OK(cudaGetLastError());
        CUDA_OK(cudaDeviceSynchronize());
        std::vector<uint8_t> got(n);
        gpu_download(got.data(), d_flags, size_t(n));
        const std::vector<uint8_t> want = reference_flags(c);
        int wrong = 0, marked = 0;
        for (int32_t j = 0; j < n; ++j) {
            marked += (got[j] & 2) != 0;
            if (got[j] != want[j] && wrong++ < 4)
                print_message("MISMATCH %s: slot %d score %g protected %d: flags %d, reference %d\n", c.name, j,
                              c.scores[j], c.is_protected[j], got[j], want[j]);
        }
        print_message("%-36s %5d candidates, %5d to mark: %5d marked, %d wrong\n", c.name, n, c.count, marked, wrong);
        failures += wrong != 0;
        gpu_free(d_scores);
        gpu_free(d_protected);
        gpu_free(d_flags);
    }
    if (failures) fail_msg("%d cases differ from the sorted reference (MISMATCH lines above)", failures);
}

}  // namespace

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_radix_select_against_sorting),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
