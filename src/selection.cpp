#include "selection.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace rkv {

void select_kept(const float *scores, const int32_t *positions, int32_t held, int32_t window,
                 int32_t keep, int64_t protect_below, KeptOrder order, int32_t *scratch,
                 int32_t *kept) {
    const int32_t candidates = held - window;
    int32_t num_kept = 0;
    int32_t num_open = 0;  // candidates that compete, collected in scratch
    for (int32_t j = 0; j < candidates; ++j) {
        if (positions[j] < protect_below) kept[num_kept++] = j;
        else scratch[num_open++] = j;
    }
    const int32_t winners = keep - window - num_kept;
    auto key = [&](int32_t j) {
        const float s = scores[j];
        return std::isnan(s) ? -std::numeric_limits<float>::infinity() : s;
    };
    // Strict weak order: higher score first, then higher slot first.
    auto better = [&](int32_t a, int32_t b) {
        const float ka = key(a), kb = key(b);
        return ka != kb ? ka > kb : a > b;
    };
    if (winners > 0) {
        std::partial_sort(scratch, scratch + winners, scratch + num_open, better);
        std::copy(scratch, scratch + winners, kept + num_kept);
        num_kept += winners;
    }
    if (order == KeptOrder::Position) std::sort(kept, kept + num_kept);
    for (int32_t j = candidates; j < held; ++j) kept[num_kept++] = j;
}

}  // namespace rkv
