// rkv_attend against a float64 reference over the model's held tokens, and
// rkv_seq_scores: verdicts, the output written exactly where it should be,
// the scores within the ranges their definitions give.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "checks.h"
#include "failure.h"
#include "program.h"
#include "tensors.h"

namespace fuzz {

namespace {

// Unit roundoff of an output dtype.
double roundoff(rkv_dtype dtype) {
    return dtype == RKV_DTYPE_F16 ? 1.0 / 2048 : dtype == RKV_DTYPE_BF16 ? 1.0 / 256 : 1.0 / 16777216;
}

// out[i, hq] of the header's formula in float64, or false where the inputs are
// not finite (the header promises nothing about NaN and Inf there).
bool reference_attention(const CacheModel &model, int32_t seq, int32_t layer, int32_t q_head, const float *q,
                         double scale, std::vector<double> *out, double *tolerance) {
    const rkv_cache_params &p = model.params();
    const int32_t d = p.head_dim, group = p.num_q_heads / p.num_kv_heads, kv_head = q_head / group;
    const SeqLayerModel &s = model.at(seq, layer);
    const std::vector<int32_t> &held = s.kept[size_t(kv_head)];
    const size_t row = size_t(p.num_kv_heads) * d;
    std::vector<double> logits(held.size());
    double largest = -INFINITY, magnitude = 0, v_max = 0;
    for (int32_t e = 0; e < d; ++e)
        if (!std::isfinite(q[e])) return false;
    for (size_t j = 0; j < held.size(); ++j) {
        const size_t base = size_t(held[j]) * row + size_t(kv_head) * d;
        double dot = 0, abs_dot = 0;
        for (int32_t e = 0; e < d; ++e) {
            const double k = from_bits(s.k_bits[base + e], model_dtype(p.dtype)),
                         v = from_bits(s.v_bits[base + e], model_dtype(p.dtype));
            if (!std::isfinite(k) || !std::isfinite(v)) return false;
            dot += double(q[e]) * k;
            abs_dot += std::fabs(double(q[e]) * k);
            v_max = std::max(v_max, std::fabs(v));
        }
        logits[j] = scale * dot;
        largest = std::max(largest, logits[j]);
        magnitude = std::max(magnitude, scale * abs_dot);
    }
    if (magnitude > 1e6) return false;
    double total = 0;
    for (double &l : logits) total += (l = std::exp(l - largest));
    out->assign(size_t(d), 0.0);
    for (size_t j = 0; j < held.size(); ++j) {
        const size_t base = size_t(held[j]) * row + size_t(kv_head) * d;
        for (int32_t e = 0; e < d; ++e)
            (*out)[size_t(e)] += logits[j] / total * from_bits(s.v_bits[base + e], model_dtype(p.dtype));
    }
    // float32 arithmetic: logit errors of ~magnitude * d * eps move each
    // probability by that much relative; sums add ~(n + d) eps.
    const double eps = 6e-8;
    *tolerance = v_max * (4.0 * magnitude * (d + 2) * eps + 4e-6 * double(held.size() + size_t(d))) + 1e-30;
    return true;
}

bool finite_pattern(Pattern pattern) { return pattern != Pattern::NonFinite && pattern != Pattern::Magnitudes; }

}  // namespace

void Program::op_attend(int slot) {
    Slot &s = slots_[size_t(slot)];
    const rkv_cache_params &p = s.params;
    const int32_t seqs_n = std::max(p.max_seqs, 1);
    const int32_t layer = pick_index(std::max(p.num_layers, 1), false);
    const int32_t n = in_.range(1, seqs_n);
    std::vector<int32_t> seqs(static_cast<size_t>(n));
    for (int32_t &seq : seqs) seq = in_.range(0, seqs_n - 1);  // repeats are allowed
    static const float scales[] = {0.0f, -1.0f, 0.25f, 1.0f, 2.0f, 0.0f, 0.5f, NAN};
    const float scale = in_.chance(97) ? scales[in_.byte() % 7] : NAN;

    rkv_tensor q{}, out{};
    q.dtype = rkv_dtype(in_.byte() % 3);
    out.dtype = rkv_dtype(in_.byte() % 3);
    q.num_heads = out.num_heads = p.num_q_heads;
    q.head_dim = out.head_dim = p.head_dim;
    const LayoutChoice q_layout = decode_layout(in_);
    apply_layout(q_layout, &q, n, 1, false);
    LayoutChoice out_layout = decode_layout(in_);
    out_layout.packed = false;  // entries must not write over each other
    apply_layout(out_layout, &out, n, 1, false);
    TensorBuffer q_buffer = allocate_for(q, n, nullptr, nullptr, false);
    TensorBuffer out_buffer = allocate_for(out, n, nullptr, nullptr, false);
    q.data = q_buffer.bytes.get();
    out.data = out_buffer.bytes.get();
    q.extent = extent_for(q_layout, q_buffer);
    out.extent = extent_for(out_layout, out_buffer);
    for (int32_t i = 0; i < n; ++i)
        for (int32_t h = 0; h < q.num_heads; ++h) {
            const DataRow row(pattern_, salt_, stream_of(slot, seqs[size_t(i)]), layer, Tensor::AttendQ, h, calls_);
            for (int32_t e = 0; e < q.head_dim; ++e)
                store_bits(q.data, tensor_index(q, i, 0, h) + e, q.dtype, to_bits(row(e), q.dtype));
        }

    rkv_attend_args a;
    std::memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = layer;
    a.num_seqs = n;
    a.seq_ids = seqs.data();
    a.scale = scale;
    rkv_cache *cache = s.cache;
    const rkv_attend_args *passed = &a;
    const uint8_t mistake = in_.chance(15) ? in_.byte() % 14 + 1 : 0;
    rkv_tensor &victim = in_.chance(50) ? q : out;
    switch (mistake) {
        case 1: passed = nullptr; break;
        case 2: a.struct_size = in_.chance(50) ? 0 : sizeof a + 8; break;
        case 3: victim.data = nullptr; break;
        case 4: victim.num_heads += 1; break;
        case 5: victim.head_dim = 0; break;
        case 6: (in_.chance(50) ? victim.stride_seq : victim.stride_head) = -1; break;
        case 7: victim.dtype = rkv_dtype(3); break;
        case 8:
            a.num_seqs = in_.chance(50) ? 0 : seqs_n + 1;
            seqs.resize(size_t(std::max(a.num_seqs, n)), 0);
            a.seq_ids = seqs.data();
            break;
        case 9: seqs[0] = in_.chance(50) ? seqs_n : -1; break;
        case 10: a.seq_ids = nullptr; break;
        case 11: cache = nullptr; break;
        case 12:
            if (victim.num_heads > 1) victim.stride_head = int64_t(1) << 62;
            else victim.stride_seq = int64_t(1) << 62;
            break;
        case 13: victim.extent = std::max<int64_t>(victim.extent - 1, 1); break;  // one short
        case 14: a.flags = 1u << in_.range(0, 31); break;                         // none defined
        default: break;
    }
    a.q = q;
    a.out = out;
    const int32_t num_seqs = a.num_seqs;
    note("cache%d attend layer %d seqs [%d%s] num_seqs %d q{%s} out{%s} scale %g%s", slot, layer, seqs[0],
         n > 1 ? ",..." : "", num_seqs, describe_tensor(q).c_str(), describe_tensor(out).c_str(), double(scale),
         mistake ? " (mistake)" : "");

    Verdict verdict;
    if (!s.model || !cache || !passed || !a.seq_ids) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    if (s.model && passed && a.struct_size != sizeof a) verdict.error(RKV_ERR_STRUCT_SIZE);
    if (s.model && passed && a.struct_size == sizeof a) {
        if (a.flags) {
            verdict.error(RKV_ERR_UNSUPPORTED);
            verdict.error(RKV_ERR_INVALID_ARGUMENT);
        }
        if (layer < 0 || layer >= p.num_layers) verdict.error(RKV_ERR_OUT_OF_RANGE);
        if (num_seqs < 1) verdict.error(RKV_ERR_INVALID_ARGUMENT);
        if (num_seqs > p.max_seqs) {
            verdict.error(RKV_ERR_INVALID_ARGUMENT);
            verdict.error(RKV_ERR_OUT_OF_RANGE);
            verdict.tolerate(RKV_ERR_CAPACITY);  // more rows than the tensors hold
        }
        if (a.seq_ids && num_seqs >= 1 && num_seqs <= p.max_seqs)
            for (int32_t i = 0; i < num_seqs; ++i) {
                const int32_t seq = seqs[size_t(i)];
                if (seq < 0 || seq >= p.max_seqs) verdict.error(RKV_ERR_OUT_OF_RANGE);
                else if (layer >= 0 && layer < p.num_layers && s.model->at(seq, layer).held == 0)
                    verdict.error(RKV_ERR_BAD_STATE);  // "a sequence of seq_ids holds no tokens"
            }
        for (const rkv_tensor *t : {&a.q, &a.out}) {
            if (!t->data) {
                verdict.error(RKV_ERR_INVALID_ARGUMENT);
            } else if (int(t->dtype) < 0 || int(t->dtype) > 2) {
                verdict.error(RKV_ERR_UNSUPPORTED);
                verdict.error(RKV_ERR_INVALID_ARGUMENT);
            } else if (t->num_heads != p.num_q_heads || t->head_dim != p.head_dim) {
                verdict.error(RKV_ERR_SHAPE_MISMATCH);
                if (t->extent) verdict.tolerate(RKV_ERR_CAPACITY);
            } else if (t->stride_seq < 0 || t->stride_head < 0) {
                verdict.error(RKV_ERR_INVALID_ARGUMENT);
                if (t->extent) verdict.tolerate(RKV_ERR_CAPACITY);
            } else if (num_seqs >= 1) {
                extent_verdict(*t, tensor_last_index(*t, std::min(num_seqs, p.max_seqs), nullptr, nullptr, false),
                               &verdict);
            }
        }
        if (std::isnan(scale)) verdict.tolerate(RKV_ERR_INVALID_ARGUMENT);  // the header does not say
    }
    const std::vector<uint8_t> q_copy(q_buffer.bytes.get(), q_buffer.bytes.get() + q_buffer.size_bytes());
    ScoreSnapshot before;
    if (s.model) before = take_scores(s.cache, *s.model);

    const rkv_status status = rkv_attend(cache, passed, nullptr);
    expect_status("rkv_attend", status, verdict);
    FUZZ_EXPECT(std::memcmp(q_copy.data(), q_buffer.bytes.get(), q_copy.size()) == 0, "rkv_attend wrote into q");
    if (s.model) expect_same_scores(before, take_scores(s.cache, *s.model));

    // Written exactly at out[i, h, 0 .. d), and nowhere else.
    std::vector<uint8_t> written(size_t(out_buffer.elements), 0);
    std::vector<AttendPromise> promised(size_t(out_buffer.elements));
    if (status == RKV_OK) {
        const double scale_used = scale > 0 ? double(scale) : 1.0 / std::sqrt(double(p.head_dim));
        std::vector<float> q_row(size_t(p.head_dim));
        std::vector<double> expected;
        for (int32_t i = 0; i < n; ++i)
            for (int32_t h = 0; h < p.num_q_heads; ++h) {
                const int64_t out_at = tensor_index(out, i, 0, h), q_at = tensor_index(q, i, 0, h);
                for (int32_t e = 0; e < p.head_dim; ++e) {
                    written[size_t(out_at + e)] = 1;
                    q_row[size_t(e)] = load(q.data, q_at + e, q.dtype);
                }
                double tolerance = 0;
                if (std::isnan(scale) ||
                    !reference_attention(*s.model, seqs[size_t(i)], layer, h, q_row.data(), scale_used, &expected,
                                         &tolerance))
                    continue;
                for (int32_t e = 0; e < p.head_dim; ++e) {
                    const double want = expected[size_t(e)];
                    if (out.dtype == RKV_DTYPE_F16 && std::fabs(want) > 60000) continue;  // rounds to Inf
                    const double got = load(out.data, out_at + e, out.dtype);
                    const double allowed = tolerance + (std::fabs(want) + tolerance) * roundoff(out.dtype) + 6e-8;
                    promised[size_t(out_at + e)] = AttendPromise{want, allowed};
                    FUZZ_EXPECT(std::fabs(got - want) <= allowed,
                                "rkv_attend: out[entry %d, head %d, %d] = %.9g, float64 reference %.9g (tolerance %.3g)",
                                i, h, e, got, want, allowed);
                }
            }
    }
    for (int64_t i = 0; i < out_buffer.elements; ++i)
        if (!written[size_t(i)])
            FUZZ_EXPECT(load_bits(out.data ? out.data : out_buffer.bytes.get(), i, out_buffer.dtype) ==
                            poison_bits(out_buffer.dtype),
                        "rkv_attend wrote element %lld of out, outside [entry, head, dim] (status %s)", (long long)i,
                        rkv_status_name(status));
    if (options_.mirror && s.cache && cache && passed) options_.mirror->attend(slot, a, q_buffer, out_buffer, promised, status);
}

void Program::op_inspect_scores(int slot) {
    Slot &s = slots_[size_t(slot)];
    const rkv_cache_params &p = s.params;
    const int32_t seq = pick_index(std::max(p.max_seqs, 1), false), layer = pick_index(std::max(p.num_layers, 1), false);
    const int32_t head = pick_index(std::max(p.num_kv_heads, 1), false);
    const uint8_t kind_byte = in_.byte() % 16;
    const int32_t kind = kind_byte < 14 ? kind_byte % 3 : kind_byte == 14 ? 3 : -1;
    const uint8_t how = in_.byte();
    const bool null_out = how % 16 == 0, null_count = how % 16 == 1;
    const bool valid = s.model && seq >= 0 && seq < p.max_seqs && layer >= 0 && layer < p.num_layers && head >= 0 &&
                       head < p.num_kv_heads;
    const SeqLayerModel *m = valid ? &s.model->at(seq, layer) : nullptr;
    const int32_t candidates = m ? m->held - p.window : 0;
    const int32_t out_len = std::max(0, candidates + in_.range(-2, 3));
    note("cache%d inspect_scores seq %d layer %d head %d kind %d out_len %d%s%s", slot, seq, layer, head, kind,
         out_len, null_out ? " (NULL out)" : "", null_count ? " (NULL count)" : "");

    Verdict verdict;
    if (!s.model || null_out || null_count) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    if (s.model && !valid) verdict.error(RKV_ERR_OUT_OF_RANGE);
    if (kind < 0 || kind > 2) {
        verdict.error(RKV_ERR_UNSUPPORTED);
        verdict.tolerate(RKV_ERR_INVALID_ARGUMENT);
    } else if (s.model) {
        // Which scores a method computes: R-KV all three; SnapKV importance (its
        // final score); every ranking method its final score; FULL none.
        const rkv_method method = p.method;
        const bool must = (method == RKV_METHOD_RKV) ||
                          (method == RKV_METHOD_SNAPKV && kind != RKV_SCORE_REDUNDANCY) ||
                          (kind == RKV_SCORE_FINAL && method != RKV_METHOD_STREAMINGLLM && method != RKV_METHOD_FULL);
        if (method == RKV_METHOD_FULL) verdict.error(RKV_ERR_UNSUPPORTED);
        else if (!must) verdict.tolerate(RKV_ERR_UNSUPPORTED);
    }
    if (m) {
        if (m->held <= p.window) verdict.error(RKV_ERR_BAD_STATE);
        else if (s.model->needs_window_queries() && m->queries_valid < p.window) {
            if (kind == RKV_SCORE_REDUNDANCY) verdict.tolerate(RKV_ERR_MISSING_QUERIES);  // needs no queries
            else verdict.error(RKV_ERR_MISSING_QUERIES);
        } else if (!null_out && out_len < candidates) {
            verdict.error(RKV_ERR_CAPACITY);
        }
        if (p.method == RKV_METHOD_H2O) verdict.tolerate(RKV_ERR_MISSING_QUERIES);
    }
    std::unique_ptr<float[]> out(new float[size_t(std::max(out_len, 1))]);
    std::fill(out.get(), out.get() + std::max(out_len, 1), -777.0f);
    int32_t count = -7;
    const rkv_status status = rkv_seq_scores(s.cache, seq, layer, head, rkv_score_kind(kind),
                                                 null_out ? nullptr : out.get(), out_len, null_count ? nullptr : &count);
    expect_status("rkv_seq_scores", status, verdict);
    if (status != RKV_OK) return;
    FUZZ_EXPECT(count == candidates, "rkv_seq_scores: count %d, expected %d candidates", count, candidates);
    for (int32_t j = candidates; j < out_len; ++j)
        FUZZ_EXPECT(out[j] == -777.0f, "rkv_seq_scores wrote out[%d] past its %d candidates", j, candidates);
    if (!finite_pattern(pattern_)) return;
    // Ranges from the definitions (algorithm.md), with float32 slack.
    double lo = -INFINITY, hi = INFINITY;
    if (kind == RKV_SCORE_IMPORTANCE || kind == RKV_SCORE_REDUNDANCY) lo = 0, hi = 1;  // pooled/soft-maxed probabilities
    else if (p.method == RKV_METHOD_RKV) lo = -1, hi = 1;                                // lambda*I - (1-lambda)*R
    else if (p.method == RKV_METHOD_SNAPKV || p.method == RKV_METHOD_RANDOM) lo = 0, hi = 1;
    else if (p.method == RKV_METHOD_KEYDIFF) lo = -1, hi = 1;                            // -cos
    else if (p.method == RKV_METHOD_H2O) lo = 0;                                         // accumulated attention
    for (int32_t j = 0; j < candidates; ++j)
        FUZZ_EXPECT(std::isfinite(out[j]) && out[j] >= lo - 1e-4 && out[j] <= hi + 1e-4,
                    "rkv_seq_scores(kind %d): candidate %d scores %g, outside [%g, %g]", kind, j, double(out[j]), lo,
                    hi);
}

}  // namespace fuzz
