#include "checks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "failure.h"
#include "values.h"

namespace fuzz {

namespace {

const char *method_name(rkv_method m) {
    static const char *names[] = {"RKV", "SNAPKV", "H2O", "STREAMINGLLM", "KEYDIFF", "RANDOM", "FULL"};
    return int(m) >= 0 && int(m) < 7 ? names[m] : "?";
}

// The compression the model recorded for (seq, layer), against what the cache
// holds at one head: the documents' constraints on the kept tokens.
void check_compression(const CacheModel &model, const SeqLayerModel &s, const PendingCompression &c,
                       int32_t head, const int32_t *positions, int32_t length, int32_t seq, int32_t layer) {
    const rkv_cache_params &p = model.params();
    const char *method = method_name(p.method);
    const int32_t keep = c.keep;
    const int64_t tail = s.logical - c.tail_start;
    FUZZ_EXPECT(length == keep + tail, "seq %d layer %d head %d: holds %d after compressing to %d plus %lld new",
                seq, layer, head, length, keep, (long long)tail);
    // Tokens that arrived after the last compression follow the kept ones, in order.
    for (int64_t t = 0; t < tail; ++t)
        FUZZ_EXPECT(positions[keep + t] == c.tail_start + t,
                    "seq %d layer %d head %d: slot %lld holds position %d; tokens appended after the "
                    "compression go to the end in order (expected %lld)",
                    seq, layer, head, (long long)(keep + t), positions[keep + t], (long long)(c.tail_start + t));
    // Kept tokens: distinct, and tokens the sequence had (held before, or appended since).
    std::set<int32_t> before(c.before[size_t(head)].begin(), c.before[size_t(head)].end());
    std::set<int32_t> kept;
    for (int32_t j = 0; j < keep; ++j) {
        const int32_t pos = positions[j];
        FUZZ_EXPECT(kept.insert(pos).second, "seq %d layer %d head %d: position %d held twice after a %s compression",
                    seq, layer, head, pos, method);
        FUZZ_EXPECT(before.count(pos) || (pos >= c.logical_before && pos < c.tail_start),
                    "seq %d layer %d head %d: position %d kept by a compression was not held "
                    "(held before: %zu tokens; appended: %lld .. %lld)",
                    seq, layer, head, pos, before.size(), (long long)c.logical_before, (long long)c.tail_start - 1);
    }
    if (c.reorder_only) {
        FUZZ_EXPECT(kept == before, "seq %d layer %d head %d: re-sorting a cache of exactly the budget "
                    "changed which tokens it holds", seq, layer, head);
        return;
    }
    // The window (the `window` most recent tokens) is always kept.
    for (int64_t pos = std::max<int64_t>(0, c.tail_start - p.window); pos < c.tail_start; ++pos)
        FUZZ_EXPECT(kept.count(int32_t(pos)), "seq %d layer %d head %d: window token %lld evicted (%s)", seq,
                    layer, head, (long long)pos, method);
    // Sinks and the guarded prompt are never evicted.
    const int64_t protect = std::min<int64_t>(model.protect_below(s), c.tail_start);
    for (int64_t pos = 0; pos < protect; ++pos)
        FUZZ_EXPECT(kept.count(int32_t(pos)),
                    "seq %d layer %d head %d: protected token %lld evicted (%s, guards %u, sink %d, prompt %lld)",
                    seq, layer, head, (long long)pos, method, p.guards, p.sink, (long long)s.prompt_len);
    if (p.method == RKV_METHOD_STREAMINGLLM) {
        // Exactly the protected tokens and the most recent others.
        const int64_t recent = keep - protect;
        for (int32_t pos : kept)
            FUZZ_EXPECT(pos < protect || pos >= c.tail_start - recent,
                        "seq %d layer %d head %d: StreamingLLM kept position %d, neither a sink nor among "
                        "the %lld most recent before %lld", seq, layer, head, pos, (long long)recent,
                        (long long)c.tail_start);
    }
    if (p.mode == RKV_MODE_REFERENCE && p.method != RKV_METHOD_STREAMINGLLM && p.guards == 0) {
        // "kept candidates in descending score order, then the window"
        for (int32_t w = 0; w < p.window; ++w)
            FUZZ_EXPECT(positions[keep - p.window + w] == c.tail_start - p.window + w,
                        "seq %d layer %d head %d: reference order ends with the window in order; slot %d "
                        "holds %d", seq, layer, head, keep - p.window + w, positions[keep - p.window + w]);
    }
}

void check_seq_layer(const rkv_cache *cache, CacheModel &model, int32_t seq, int32_t layer,
                     const rkv_layer_view &layer_view) {
    const rkv_cache_params &p = model.params();
    SeqLayerModel &s = model.at(seq, layer);
    rkv_seq_view view;
    std::memset(&view, 0xab, sizeof view);
    view.struct_size = sizeof view;
    const rkv_status status = rkv_view(cache, seq, layer, &view);
    FUZZ_EXPECT(status == RKV_OK, "rkv_view(%d, %d) failed: %s: %s", seq, layer, rkv_status_name(status),
                rkv_error_message());
    const size_t elem = dtype_bytes(p.dtype);
    FUZZ_EXPECT(view.length == s.held, "seq %d layer %d: view length %d, expected %d held", seq, layer,
                view.length, s.held);
    FUZZ_EXPECT(view.logical_length == s.logical, "seq %d layer %d: logical length %lld, expected %lld", seq,
                layer, (long long)view.logical_length, (long long)s.logical);
    FUZZ_EXPECT(view.length <= model.capacity(), "seq %d layer %d: holds %d tokens, capacity %d", seq, layer,
                view.length, model.capacity());
    FUZZ_EXPECT(view.dtype == p.dtype && view.device_type == RKV_DEVICE_CPU && view.num_kv_heads == p.num_kv_heads &&
                    view.head_dim == p.head_dim && view.stride_token == p.head_dim,
                "seq %d layer %d: view fields disagree with the params", seq, layer);
    // The same memory as the layer view's entry for this sequence.
    FUZZ_EXPECT(view.k == static_cast<char *>(layer_view.k) + seq * layer_view.stride_seq * int64_t(elem) &&
                    view.v == static_cast<char *>(layer_view.v) + seq * layer_view.stride_seq * int64_t(elem) &&
                    view.positions == layer_view.positions + seq * layer_view.positions_stride_seq &&
                    view.stride_head == layer_view.stride_head &&
                    view.positions_stride_head == layer_view.positions_stride_head,
                "seq %d layer %d: rkv_view and rkv_view_layer disagree on where the sequence lives", seq, layer);
    int64_t logical = 0;
    int32_t physical = -1;
    FUZZ_EXPECT(rkv_seq_length(cache, seq, layer, &logical, &physical) == RKV_OK && logical == s.logical &&
                    physical == s.held,
                "seq %d layer %d: rkv_seq_length says %lld/%d, expected %lld/%d", seq, layer, (long long)logical,
                physical, (long long)s.logical, s.held);

    const bool fp8 = p.dtype == RKV_DTYPE_FP8_E4M3;
    const rkv_dtype bits_dtype = model_dtype(p.dtype);
    FUZZ_EXPECT(fp8 == (view.k_scale != nullptr && view.v_scale != nullptr),
                "seq %d layer %d: the view's scales are %s for storage dtype %d", seq, layer,
                view.k_scale ? "set" : "NULL", int(p.dtype));
    if (fp8 && view.k_scale)
        FUZZ_EXPECT(view.k_scale == layer_view.k_scale + seq * layer_view.scale_stride_seq &&
                        view.v_scale == layer_view.v_scale + seq * layer_view.scale_stride_seq &&
                        view.scale_stride_head == layer_view.scale_stride_head,
                    "seq %d layer %d: rkv_view and rkv_view_layer disagree on where the scales live", seq, layer);
    const int32_t d = p.head_dim;
    const size_t row = size_t(p.num_kv_heads) * d;
    for (int32_t h = 0; h < p.num_kv_heads && (!fp8 || view.k_scale); ++h) {
        const int32_t *positions = view.positions + h * view.positions_stride_head;
        if (s.pending) {
            check_compression(model, s, *s.pending, h, positions, view.length, seq, layer);
            s.kept[size_t(h)].assign(positions, positions + view.length);
        } else {
            const std::vector<int32_t> &expected = s.kept[size_t(h)];
            for (int32_t j = 0; j < view.length; ++j)
                FUZZ_EXPECT(positions[j] == expected[size_t(j)],
                            "seq %d layer %d head %d: slot %d holds position %d, expected %d", seq, layer, h, j,
                            positions[j], expected[size_t(j)]);
        }
        std::set<int32_t> distinct;
        for (int32_t j = 0; j < view.length; ++j) {
            const int32_t pos = positions[j];
            FUZZ_EXPECT(pos >= 0 && pos < s.logical && distinct.insert(pos).second,
                        "seq %d layer %d head %d: slot %d holds position %d (logical length %lld; positions "
                        "must be distinct and below it)", seq, layer, h, j, pos, (long long)s.logical);
            if (p.mode == RKV_MODE_POSITION && j > 0)
                FUZZ_EXPECT(positions[j - 1] < pos, "seq %d layer %d head %d: position order broken at slot %d "
                            "(%d after %d)", seq, layer, h, j, pos, positions[j - 1]);
            // The token's K and V where the view says, as it was appended (FP8:
            // the row's scale, and each byte's value times it).
            const int64_t at = h * view.stride_head + int64_t(j) * view.stride_token;
            const size_t expected_at = size_t(pos) * row + size_t(h) * d;
            float k_scale = 1.0f, v_scale = 1.0f;
            if (fp8) {
                const size_t scale_at = size_t(pos) * p.num_kv_heads + size_t(h);
                k_scale = view.k_scale[h * view.scale_stride_head + j];
                v_scale = view.v_scale[h * view.scale_stride_head + j];
                FUZZ_EXPECT(same_bits(half_float_bits(k_scale), half_float_bits(s.k_scale[scale_at]), RKV_DTYPE_F32) &&
                                same_bits(half_float_bits(v_scale), half_float_bits(s.v_scale[scale_at]), RKV_DTYPE_F32),
                            "seq %d layer %d head %d: scales of position %d (slot %d) are %g/%g, appended as %g/%g", seq,
                            layer, h, pos, j, k_scale, v_scale, s.k_scale[scale_at], s.v_scale[scale_at]);
            }
            for (int32_t e = 0; e < d; ++e) {
                const uint32_t k = fp8 ? fp8_value_bits(static_cast<const uint8_t *>(view.k)[at + e], k_scale)
                                       : load_bits(view.k, at + e, p.dtype);
                const uint32_t v = fp8 ? fp8_value_bits(static_cast<const uint8_t *>(view.v)[at + e], v_scale)
                                       : load_bits(view.v, at + e, p.dtype);
                FUZZ_EXPECT(same_bits(k, s.k_bits[expected_at + e], bits_dtype),
                            "seq %d layer %d head %d: K of position %d (slot %d) element %d is %#x, appended as %#x",
                            seq, layer, h, pos, j, e, k, s.k_bits[expected_at + e]);
                FUZZ_EXPECT(same_bits(v, s.v_bits[expected_at + e], bits_dtype),
                            "seq %d layer %d head %d: V of position %d (slot %d) element %d is %#x, appended as %#x",
                            seq, layer, h, pos, j, e, v, s.v_bits[expected_at + e]);
            }
        }
    }
    s.pending.reset();
}

}  // namespace

void check_stats(const rkv_stats &st, const CacheModel &model, int32_t seq) {
    const rkv_cache_params &p = model.params();
    // K and V of one token: FP8 rows count their float32 scale ("with the scales").
    const uint64_t row_bytes = uint64_t(p.head_dim) * dtype_bytes(p.dtype) + (p.dtype == RKV_DTYPE_FP8_E4M3 ? 4 : 0);
    const uint64_t token_bytes = uint64_t(p.num_kv_heads) * row_bytes * 2;
    uint64_t appended = 0, held = 0, min_c = 0, max_c = 0, seqs = 0;
    for (int32_t s = 0; s < p.max_seqs; ++s) {
        if (seq != RKV_ALL && s != seq) continue;
        ++seqs;
        for (int32_t l = 0; l < p.num_layers; ++l) {
            const SeqLayerModel &x = model.at(s, l);
            appended += uint64_t(x.logical);
            held += uint64_t(x.held);
            min_c += x.compressions_min;
            max_c += x.compressions_max;
        }
    }
    FUZZ_EXPECT(st.bytes_allocated == model.bytes(), "stats: bytes_allocated %llu, rkv_cache_size said %llu",
                (unsigned long long)st.bytes_allocated, (unsigned long long)model.bytes());
    FUZZ_EXPECT(st.tokens_appended == appended && st.tokens_held == held && st.tokens_evicted == appended - held,
                "stats(seq %d): appended/held/evicted %llu/%llu/%llu, expected %llu/%llu/%llu", seq,
                (unsigned long long)st.tokens_appended, (unsigned long long)st.tokens_held,
                (unsigned long long)st.tokens_evicted, (unsigned long long)appended, (unsigned long long)held,
                (unsigned long long)(appended - held));
    FUZZ_EXPECT(st.bytes_kv_held == held * token_bytes && st.bytes_kv_full == appended * token_bytes &&
                    st.bytes_kv_capacity == token_bytes * uint64_t(model.capacity()) * uint64_t(p.num_layers) * seqs,
                "stats(seq %d): K/V bytes held/full/capacity %llu/%llu/%llu disagree with the token counts", seq,
                (unsigned long long)st.bytes_kv_held, (unsigned long long)st.bytes_kv_full,
                (unsigned long long)st.bytes_kv_capacity);
    FUZZ_EXPECT(st.compressions >= min_c && st.compressions <= max_c,
                "stats(seq %d): %llu compressions, expected %llu .. %llu", seq, (unsigned long long)st.compressions,
                (unsigned long long)min_c, (unsigned long long)max_c);
    FUZZ_EXPECT(std::isfinite(st.compress_seconds) && st.compress_seconds >= 0, "stats: compress_seconds %g",
                st.compress_seconds);
}

void check_cache(const rkv_cache *cache, CacheModel &model) {
    const rkv_cache_params &p = model.params();
    int32_t any_full = 0;
    for (int32_t layer = 0; layer < p.num_layers; ++layer) {
        rkv_layer_view lv;
        std::memset(&lv, 0xab, sizeof lv);
        lv.struct_size = sizeof lv;
        const rkv_status status = rkv_view_layer(cache, layer, &lv);
        FUZZ_EXPECT(status == RKV_OK, "rkv_view_layer(%d) failed: %s: %s", layer, rkv_status_name(status),
                    rkv_error_message());
        FUZZ_EXPECT(lv.capacity == model.capacity() && lv.max_seqs == p.max_seqs && lv.num_kv_heads == p.num_kv_heads &&
                        lv.head_dim == p.head_dim && lv.dtype == p.dtype && lv.device_type == RKV_DEVICE_CPU,
                    "layer view %d: fields disagree with the params (capacity %d, expected %d)", layer, lv.capacity,
                    model.capacity());
        // [max_seqs, heads, capacity, dim] at non-overlapping strides.
        FUZZ_EXPECT(lv.stride_token >= p.head_dim && lv.stride_head >= int64_t(lv.capacity) * lv.stride_token &&
                        lv.stride_seq >= p.num_kv_heads * lv.stride_head &&
                        lv.positions_stride_head >= lv.capacity &&
                        lv.positions_stride_seq >= p.num_kv_heads * lv.positions_stride_head,
                    "layer view %d: strides overlap (seq %lld head %lld token %lld)", layer, (long long)lv.stride_seq,
                    (long long)lv.stride_head, (long long)lv.stride_token);
        for (int32_t seq = 0; seq < p.max_seqs; ++seq) {
            FUZZ_EXPECT(lv.lengths[seq] == model.at(seq, layer).held, "layer view %d: lengths[%d] = %d, expected %d",
                        layer, seq, lv.lengths[seq], model.at(seq, layer).held);
            check_seq_layer(cache, model, seq, layer, lv);
            any_full |= model.full(model.at(seq, layer)) ? 1 : 0;
        }
    }
    int32_t due = -1;
    FUZZ_EXPECT(rkv_compress_due(cache, RKV_ALL, RKV_ALL, &due) == RKV_OK && due == any_full,
                "rkv_compress_due(ALL, ALL) = %d, expected %d", due, any_full);
    rkv_stats stats;
    std::memset(&stats, 0xab, sizeof stats);
    stats.struct_size = sizeof stats;
    FUZZ_EXPECT(rkv_cache_stats(cache, RKV_ALL, &stats) == RKV_OK, "rkv_cache_stats failed: %s",
                rkv_error_message());
    check_stats(stats, model, RKV_ALL);
}

ScoreSnapshot take_scores(const rkv_cache *cache, const CacheModel &model) {
    const rkv_cache_params &p = model.params();
    ScoreSnapshot snap;
    std::vector<float> out(size_t(model.capacity()) + 1);
    for (int32_t layer = 0; layer < p.num_layers; ++layer)
        for (int32_t seq = 0; seq < p.max_seqs; ++seq)
            for (int32_t head = 0; head < p.num_kv_heads; ++head)
                for (rkv_score_kind kind : {RKV_SCORE_IMPORTANCE, RKV_SCORE_FINAL}) {
                    int32_t count = 0;
                    const rkv_status status = rkv_seq_scores(cache, seq, layer, head, kind, out.data(),
                                                                 int32_t(out.size()), &count);
                    snap.statuses.push_back(status);
                    if (status == RKV_OK) snap.scores.insert(snap.scores.end(), out.begin(), out.begin() + count);
                }
    return snap;
}

void expect_same_scores(const ScoreSnapshot &before, const ScoreSnapshot &after) {
    FUZZ_EXPECT(before.statuses == after.statuses && before.scores.size() == after.scores.size(),
                "a failed call changed which scores can be inspected");
    for (size_t i = 0; i < before.scores.size(); ++i) {
        const float a = before.scores[i], b = after.scores[i];
        FUZZ_EXPECT(std::memcmp(&a, &b, 4) == 0 || (std::isnan(a) && std::isnan(b)),
                    "a failed call changed the scores (the stored queries or scorer state): %g became %g", a, b);
    }
}

}  // namespace fuzz
