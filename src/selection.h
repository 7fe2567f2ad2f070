// Which slots of one (sequence, layer, KV head) survive a compression, and in
// which order they are compacted. Shared by every method; pure host code.
//
// Slots 0 .. held-window-1 are candidates, the last `window` slots are always
// kept. Candidates whose original position is below `protect_below` (sink or
// prompt guard, StreamingLLM's sinks) are always kept too. The rest compete for
// the remaining keep - window - protected places by score: larger wins, and on
// equal scores the higher slot (the more recent token in position order) wins.
// NaN scores rank below every number.
#pragma once

#include <cstdint>

namespace rkv {

enum class KeptOrder {
    Position,   // every kept slot in ascending slot order
    Reference,  // protected (ascending), then winners by descending score, then the window
};

// scores     [held - window]   candidate scores
// positions  [held]            original positions, slot order
// scratch    [held]
// kept       [keep]            output: source slot of each destination slot
void select_kept(const float *scores, const int32_t *positions, int32_t held, int32_t window,
                 int32_t keep, int64_t protect_below, KeptOrder order, int32_t *scratch,
                 int32_t *kept);

}  // namespace rkv
