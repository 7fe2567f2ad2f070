#include "cpu/scoring.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>

namespace rkv::cpu {

namespace {

// row[0..n) <- softmax(row[0..n)), stable (max subtracted first).
void softmax_in_place(float *row, int32_t n) {
    float max_value = -std::numeric_limits<float>::infinity();
    for (int32_t j = 0; j < n; ++j) max_value = std::max(max_value, row[j]);
    double sum = 0.0;
    for (int32_t j = 0; j < n; ++j) {
        row[j] = std::exp(row[j] - max_value);
        sum += row[j];
    }
    const float inverse = float(1.0 / sum);
    for (int32_t j = 0; j < n; ++j) row[j] *= inverse;
}

// logits [G * rows, n] -> rows of pooled logits written to the first `rows` rows.
// Row r of group g sits at (g * rows + r).
void pool_groups(float *logits, int32_t groups, int32_t rows, int32_t n, rkv_pooling pooling) {
    if (groups == 1) return;
    for (int32_t r = 0; r < rows; ++r) {
        float *dst = logits + int64_t(r) * n;
        for (int32_t g = 1; g < groups; ++g) {
            const float *src = logits + (int64_t(g) * rows + r) * n;
            if (pooling == RKV_POOLING_MAX)
                for (int32_t j = 0; j < n; ++j) dst[j] = std::max(dst[j], src[j]);
            else
                for (int32_t j = 0; j < n; ++j) dst[j] += src[j];
        }
        if (pooling == RKV_POOLING_MEAN) {
            const float inverse = 1.0f / float(groups);
            for (int32_t j = 0; j < n; ++j) dst[j] *= inverse;
        }
    }
}

// logits[g, j] = scale * q_g . k_j for the few query rows of one decode step.
// One matrix-vector product per row: a matrix product would spend more time
// packing the keys than multiplying them when there are only G rows.
void group_logits(const float *queries, int32_t groups, const float *keys, int32_t n, int32_t d,
                  float scale, float *logits) {
    for (int32_t g = 0; g < groups; ++g)
        cblas_sgemv(CblasRowMajor, CblasNoTrans, n, d, scale, keys, d, queries + int64_t(g) * d, 1,
                    0.0f, logits + int64_t(g) * n, 1);
}

}  // namespace

void importance(const float *queries, int32_t groups, int32_t window, const float *keys, int32_t n,
                int32_t d, int32_t kernel, rkv_pooling pooling, float *logits, float *averaged,
                float *out) {
    const int32_t candidates = n - window;
    const int32_t rows = groups * window;
    // logits[r, j] = q_r . k_j / sqrt(d) over the candidate keys only: the window
    // keys are outside the softmax's normaliser.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, candidates, d,
                1.0f / std::sqrt(float(d)), queries, d, keys, d, 0.0f, logits, candidates);
    pool_groups(logits, groups, window, candidates, pooling);
    std::fill(averaged, averaged + candidates, 0.0f);
    for (int32_t a = 0; a < window; ++a) {
        float *row = logits + int64_t(a) * candidates;
        softmax_in_place(row, candidates);
        for (int32_t j = 0; j < candidates; ++j) averaged[j] += row[j];
    }
    const float inverse_window = 1.0f / float(window);
    for (int32_t j = 0; j < candidates; ++j) averaged[j] *= inverse_window;
    // Max-pool along slots; neighbours outside 0 .. C-1 are ignored.
    const int32_t half = kernel / 2;
    for (int32_t j = 0; j < candidates; ++j) {
        const int32_t lo = std::max(0, j - half), hi = std::min(candidates - 1, j + half);
        float best = averaged[lo];
        for (int32_t i = lo + 1; i <= hi; ++i) best = std::max(best, averaged[i]);
        out[j] = best;
    }
}

void redundancy(const float *keys, int32_t n, int32_t d, int32_t window, float threshold,
                bool slot0_quirk, float *normalized, float *block, double *column_sums, float *out) {
    for (int32_t i = 0; i < n; ++i) {
        const float *k = keys + int64_t(i) * d;
        double squares = 0.0;
        for (int32_t e = 0; e < d; ++e) squares += double(k[e]) * k[e];
        const float inverse = 1.0f / (float(std::sqrt(squares)) + 1e-8f);
        for (int32_t e = 0; e < d; ++e) normalized[int64_t(i) * d + e] = k[e] * inverse;
    }
    // S is symmetric, so the sum of column c equals the sum of row c. One pass
    // over each row finds its latest near-duplicate and its sum; the entries the
    // rule zeroes are then taken off the columns they sit in.
    std::fill(column_sums, column_sums + n, 0.0);
    for (int32_t r0 = 0; r0 < n; r0 += kRedundancyBlockRows) {
        const int32_t rows = std::min(kRedundancyBlockRows, n - r0);
        // block[r, c] = cos(k_{r0+r}, k_c)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n, d, 1.0f,
                    normalized + int64_t(r0) * d, d, normalized, d, 0.0f, block, n);
        for (int32_t r = 0; r < rows; ++r) {
            float *row = block + int64_t(r) * n;
            row[r0 + r] = 0.0f;  // a key is not its own duplicate
            float sum = 0.0f;
            int32_t latest = -1;
#pragma omp simd reduction(+ : sum) reduction(max : latest)
            for (int32_t c = 0; c < n; ++c) {
                sum += row[c];
                latest = std::max(latest, row[c] > threshold ? c : -1);
            }
            column_sums[r0 + r] += sum;
            // The most recent slot above the threshold does not count: a token is
            // not redundant because of its own latest near-repeat. Without one,
            // the official code's argmax of an all-zero row picks slot 0.
            if (latest >= 0) column_sums[latest] -= row[latest];
            else if (slot0_quirk) column_sums[0] -= row[0];
        }
    }
    // R = softmax over all n slots of the column means; the first C are returned.
    double max_mean = -std::numeric_limits<double>::infinity();
    for (int32_t c = 0; c < n; ++c) max_mean = std::max(max_mean, column_sums[c] / n);
    double sum = 0.0;
    for (int32_t c = 0; c < n; ++c) {
        column_sums[c] = std::exp(column_sums[c] / n - max_mean);
        sum += column_sums[c];
    }
    for (int32_t j = 0; j < n - window; ++j) out[j] = float(column_sums[j] / sum);
}

void keydiff(const float *keys, int32_t n, int32_t d, int32_t window, float *mean, float *out) {
    std::fill(mean, mean + d, 0.0f);
    for (int32_t i = 0; i < n; ++i)
        for (int32_t e = 0; e < d; ++e) mean[e] += keys[int64_t(i) * d + e];
    for (int32_t e = 0; e < d; ++e) mean[e] /= float(n);
    const float mean_norm = cblas_snrm2(d, mean, 1);
    for (int32_t j = 0; j < n - window; ++j) {
        const float *k = keys + int64_t(j) * d;
        const float denominator = std::max(cblas_snrm2(d, k, 1) * mean_norm, 1e-12f);
        out[j] = -cblas_sdot(d, k, 1, mean, 1) / denominator;
    }
}

void h2o_accumulate(const float *queries, int32_t tokens, int32_t groups, const float *keys,
                    int32_t first_slot, int32_t d, rkv_pooling pooling, float *logits,
                    float *state) {
    const float scale = 1.0f / std::sqrt(float(d));
    for (int32_t t = 0; t < tokens; ++t) {
        const int32_t visible = first_slot + t + 1;  // causal: up to and including itself
        group_logits(queries + int64_t(t) * groups * d, groups, keys, visible, d, scale, logits);
        pool_groups(logits, groups, 1, visible, pooling);
        softmax_in_place(logits, visible);
        for (int32_t j = 0; j < visible; ++j) state[j] += logits[j];
    }
}

void attend(const float *queries, int32_t groups, const float *keys, const float *values,
            int32_t n, int32_t d, float scale, float *logits, float *out) {
    group_logits(queries, groups, keys, n, d, scale, logits);
    for (int32_t g = 0; g < groups; ++g) {
        float *probabilities = logits + int64_t(g) * n;
        softmax_in_place(probabilities, n);
        // out_g = V^T p_g
        cblas_sgemv(CblasRowMajor, CblasTrans, n, d, 1.0f, values, d, probabilities, 1, 0.0f,
                    out + int64_t(g) * d, 1);
    }
}

}  // namespace rkv::cpu
