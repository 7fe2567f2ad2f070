// The real cache against its model, through the public API only.
#pragma once

#include <cstdint>
#include <vector>

#include "model.h"
#include "rkv/rkv_experimental.h"

namespace fuzz {

// Every (sequence, layer): layer view and view (lengths, capacity, strides,
// positions, K/V bits by position), rkv_seq_length, rkv_compress_due and the
// statistics. Where the model has a pending compression, the cache's choice is
// checked against the documents' constraints and then adopted. Throws Failure.
void check_cache(const rkv_cache *cache, CacheModel &model);

// The statistics of `seq` (or RKV_ALL) against the model; previous compress
// time, when given, must not have decreased.
void check_stats(const rkv_stats &stats, const CacheModel &model, int32_t seq);

// State the model does not predict but a failed call must not change either:
// the scores each (sequence, layer, head) would be ranked by, which reveal the
// stored queries and H2O's accumulated attention.
struct ScoreSnapshot {
    std::vector<int32_t> statuses;
    std::vector<float> scores;
};
ScoreSnapshot take_scores(const rkv_cache *cache, const CacheModel &model);
void expect_same_scores(const ScoreSnapshot &before, const ScoreSnapshot &after);

}  // namespace fuzz
