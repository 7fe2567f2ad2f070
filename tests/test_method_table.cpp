// The method table (core/method.h) against what a CPU cache does, for every
// method rkv_params_bounds accepts: a row added for a new method is checked
// here without a new test.
//   - evicts:    a method that evicts holds at most budget + buffer after any
//                append; one that does not fails an append past max_len
//   - queries:   Window: a compression without the window's queries fails with
//                MISSING_QUERIES; EveryToken: an append without q fails; None: neither
//   - scores:    rkv_seq_scores answers exactly the kinds of the row
//   - sink:      keeps_sink: the first `sink` positions survive every compression
//   - order:     in position mode kept positions ascend; in reference mode a
//                method without the reference order keeps them ascending too
extern "C" {
#include "test_util.h"
}

#include <cstdlib>
#include <vector>

#include "core/method.h"

namespace {

constexpr int32_t kHeads = 2, kDim = 8, kBudget = 12, kBuffer = 4, kWindow = 2, kSink = 2;

rkv_cache_params params_for(rkv_method method, rkv_mode mode) {
    rkv_cache_params p = test_params(1, 1, kHeads, 2 * kHeads, kDim, method, kBudget, kBuffer, kWindow);
    p.mode = mode;
    p.sink = kSink;
    p.max_len = 64;
    return p;
}

void random_tokens(std::vector<float> *k, std::vector<float> *v, std::vector<float> *q, int32_t tokens,
                   uint64_t *rng) {
    k->resize(size_t(tokens) * kHeads * kDim);
    v->resize(k->size());
    q->resize(2 * k->size());
    test_fill_normal(k->data(), k->size(), rng);
    test_fill_normal(v->data(), v->size(), rng);
    test_fill_normal(q->data(), q->size(), rng);
}

int32_t held(const rkv_cache *cache) {
    int32_t physical = 0;
    ASSERT_OK(rkv_seq_length(cache, 0, 0, nullptr, &physical));
    return physical;
}

void check_kept(const rkv_cache *cache, const rkv::MethodInfo &row, const rkv_cache_params &p) {
    std::vector<int32_t> positions(64);
    for (int32_t h = 0; h < kHeads; ++h) {
        int32_t count = 0;
        ASSERT_OK(rkv_seq_positions(cache, 0, 0, h, positions.data(), int32_t(positions.size()), &count));
        const bool ascending_expected = p.mode == RKV_MODE_POSITION || !row.reference_order;
        for (int32_t i = 1; i < count && ascending_expected; ++i)
            if (positions[i - 1] >= positions[i])
                fail_msg("%s: head %d keeps positions out of order at slot %d", row.name, h, i);
        if (!row.keeps_sink) continue;
        for (int32_t sink = 0; sink < kSink; ++sink) {
            bool found = false;
            for (int32_t i = 0; i < count; ++i) found = found || positions[i] == sink;
            if (!found) fail_msg("%s keeps the sink, but head %d lost position %d", row.name, h, sink);
        }
    }
}

void check_method(rkv_method method, rkv_mode mode) {
    const rkv::MethodInfo row = rkv::method_info(method);
    assert_non_null(row.name);
    const rkv_cache_params p = params_for(method, mode);
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 77 + uint64_t(method);
    std::vector<float> k, v, q;

    // Queries: an append without q.
    random_tokens(&k, &v, &q, 1, &rng);
    const rkv_status without_q = test_append(cache, 0, 0, k.data(), v.data(), nullptr, 1, 0);
    if (row.queries == rkv::QueryNeed::EveryToken) {
        assert_int_equal(without_q, RKV_ERR_MISSING_QUERIES);
    } else {
        assert_int_equal(without_q, RKV_OK);
        ASSERT_OK(rkv_seq_reset(cache, 0, nullptr));
    }

    // Fill to just past what the method holds, with queries, one token at a time.
    const int32_t tokens = row.evicts() ? 3 * (kBudget + kBuffer) : p.max_len;
    for (int32_t t = 0; t < tokens; ++t) {
        random_tokens(&k, &v, &q, 1, &rng);
        ASSERT_OK(test_append(cache, 0, 0, k.data(), v.data(), q.data(), 1, 0));
        if (row.evicts()) assert_true(held(cache) <= kBudget + kBuffer);
        else assert_int_equal(held(cache), t + 1);
    }
    random_tokens(&k, &v, &q, 1, &rng);
    const rkv_status past = test_append(cache, 0, 0, k.data(), v.data(), q.data(), 1, 0);
    assert_int_equal(past, row.evicts() ? RKV_OK : RKV_ERR_CAPACITY);
    check_kept(cache, row, p);

    // Scores: exactly the row's kinds.
    std::vector<float> scores(64);
    for (int kind = RKV_SCORE_IMPORTANCE; kind <= RKV_SCORE_FINAL; ++kind) {
        int32_t count = 0;
        const rkv_status status = rkv_seq_scores(cache, 0, 0, 0, rkv_score_kind(kind), scores.data(),
                                                     int32_t(scores.size()), &count);
        const bool computed = (row.scores & rkv::score_bit(rkv_score_kind(kind))) != 0;
        if (status != (computed ? RKV_OK : RKV_ERR_UNSUPPORTED))
            fail_msg("%s, score kind %d: %s (%s)", row.name, kind, rkv_status_name(status), rkv_error_message());
    }

    // Queries: a compression of budget + 1 tokens appended without q (H2O
    // cannot append without them).
    if (row.evicts()) {
        ASSERT_OK(rkv_seq_reset(cache, 0, nullptr));
        const bool with_q = row.queries == rkv::QueryNeed::EveryToken;
        random_tokens(&k, &v, &q, kBudget + 1, &rng);
        ASSERT_OK(test_append(cache, 0, 0, k.data(), v.data(), with_q ? q.data() : nullptr, kBudget + 1, 0));
        const rkv_status compressed = rkv_compress(cache, 0, 0, nullptr);
        assert_int_equal(compressed, row.queries == rkv::QueryNeed::Window ? RKV_ERR_MISSING_QUERIES : RKV_OK);
        assert_int_equal(held(cache), compressed == RKV_OK ? kBudget : kBudget + 1);
    }
    rkv_cache_destroy(cache);
}

void test_every_method_keeps_its_row(void **) {
    double lower = 0, upper = 0;
    ASSERT_OK(rkv_params_bounds(RKV_PARAM_METHOD, &lower, &upper));
    assert_int_equal(int(lower), 0);
    assert_int_equal(int(upper), rkv::kNumMethods - 1);
    for (int m = int(lower); m <= int(upper); ++m)
        for (rkv_mode mode : {RKV_MODE_POSITION, RKV_MODE_REFERENCE}) check_method(rkv_method(m), mode);
    // One past the table is no method.
    rkv_cache_params p = params_for(RKV_METHOD_RKV, RKV_MODE_POSITION);
    ASSERT_STATUS(rkv_params_set(&p, RKV_PARAM_METHOD, upper + 1), RKV_ERR_UNSUPPORTED);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_method_keeps_its_row),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
