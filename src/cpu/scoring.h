// The scores each method ranks candidates by, for one (sequence, layer, KV head),
// in float32 on the CPU. Matrix products go through CBLAS. These functions are
// the readable definition of algorithm.md; the CUDA kernels must agree with them.
//
// Common shapes: n held keys (slot order), window alpha, candidates C = n - alpha,
// head dim d, `groups` G query heads per KV head.
#pragma once

#include <cstdint>

#include "rkv/rkv.h"

namespace rkv::cpu {

constexpr int32_t kRedundancyBlockRows = 256;  // rows of the similarity matrix computed at once

// R-KV importance: I[j] for j < C.
//   queries  [G * window, d]  row g*window + a = query a of group head g
//   keys     [n, d]
//   logits   scratch [G * window, C]
//   averaged scratch [C]
//   out      [C]
void importance(const float *queries, int32_t groups, int32_t window, const float *keys, int32_t n,
                int32_t d, int32_t kernel, rkv_pooling pooling, float *logits, float *averaged,
                float *out);

// R-KV redundancy: R[j] for j < C (softmax over all n column means).
//   keys        [n, d]
//   normalized  scratch [n, d]
//   block       scratch [kRedundancyBlockRows, n]
//   column_sums scratch [n]
//   out         [C]
void redundancy(const float *keys, int32_t n, int32_t d, int32_t window, float threshold,
                bool slot0_quirk, float *normalized, float *block, double *column_sums, float *out);

// KeyDiff: -cos(k_j, mean of all n keys) for j < C.
//   mean scratch [d]
void keydiff(const float *keys, int32_t n, int32_t d, int32_t window, float *mean, float *out);

// H2O: T new query tokens, at slots first_slot .. first_slot+T-1, each attend
// causally over keys[0 .. own slot]; the group-pooled probabilities are added to state.
//   queries [T, G, d]     keys [first_slot + T, d]
//   logits  scratch [G, first_slot + T]
//   state   [first_slot + T]
void h2o_accumulate(const float *queries, int32_t tokens, int32_t groups, const float *keys,
                    int32_t first_slot, int32_t d, rkv_pooling pooling, float *logits,
                    float *state);

// Decode attention of the G query heads of one KV head over n held tokens.
//   queries [G, d]   keys, values [n, d]   logits scratch [G, n]   out [G, d]
void attend(const float *queries, int32_t groups, const float *keys, const float *values,
            int32_t n, int32_t d, float scale, float *logits, float *out);

}  // namespace rkv::cpu
