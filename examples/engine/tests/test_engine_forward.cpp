// The forward pass against an independent float64 numpy implementation
// (known_outputs.h, recorded by make_known_outputs.py), and the engine's two
// attention paths against each other.
//
// 1. Full cache: the greedy continuation of a fixed chat prompt, token for
//    token, and the five largest logits after the prompt.
// 2. Prefill through rkv_view (pieces of many tokens, explicit compression)
//    equals decode through rkv_attend (one token at a time, compression inside
//    rkv_append) with a compressing method and a small budget: every row's
//    logits agree. The evaluation's teacher-forced replay relies on this.
#include <algorithm>
#include <cmath>
#include <vector>

#include "known_outputs.h"
#include "model.h"
#include "test_util.h"
#include "tokenizer.h"

using namespace engine;

static void greedy_full(Model &model) {
    const int32_t vocab = model.config().vocab_size;
    CacheOptions options;
    options.method = RKV_METHOD_FULL;
    options.max_len = int32_t(kPromptIds.size() + kGreedyIds.size());
    rkv_cache *cache = create_cache(model, options);
    std::vector<float> logits(static_cast<size_t>(vocab));  // [vocab]
    model.prefill(cache, 0, kPromptIds.data(), int32_t(kPromptIds.size()), logits.data(), true, true);

    for (size_t i = 0; i < kTopIds.size(); ++i) {
        const double got = logits[size_t(kTopIds[i])];
        EXPECT(std::fabs(got - kTopLogits[i]) < 2e-2, "logit of token %d: %.5f, reference %.5f", kTopIds[i], got,
               kTopLogits[i]);
    }
    std::vector<int32_t> generated;
    for (size_t i = 0; i < kGreedyIds.size(); ++i) {
        const int32_t next = argmax(logits.data(), vocab);
        generated.push_back(next);
        // Keep going through control tokens: this checks the forward pass, not stopping.
        const int32_t seq = 0;
        if (i + 1 < kGreedyIds.size()) model.decode(cache, &seq, &next, 1, logits.data());
    }
    size_t same = 0;
    while (same < generated.size() && generated[same] == kGreedyIds[same]) ++same;
    EXPECT(same == kGreedyIds.size(), "greedy continuation differs from the reference at token %zu of %zu", same,
           kGreedyIds.size());
    rkv_cache_destroy(cache);
}

static void prefill_equals_decode(Model &model, rkv_method method) {
    const int32_t vocab = model.config().vocab_size;
    std::vector<int32_t> tokens = kPromptIds;
    tokens.insert(tokens.end(), kGreedyIds.begin(), kGreedyIds.end());
    const int32_t n = int32_t(tokens.size());  // 87: compresses several times at 16 + 16
    CacheOptions options;
    options.method = method;
    options.budget = 16;
    options.buffer = 16;
    options.window = 8;

    rkv_cache *chunked = create_cache(model, options);
    std::vector<float> prefill_logits(size_t(n) * vocab);  // [n, vocab]
    model.prefill(chunked, 0, tokens.data(), n, prefill_logits.data(), false, false);

    rkv_cache *stepped = create_cache(model, options);
    std::vector<float> step_logits(static_cast<size_t>(vocab));  // [vocab]
    const int32_t seq = 0;
    double worst = 0.0;
    int32_t worst_row = 0;
    for (int32_t t = 0; t < n; ++t) {
        model.decode(stepped, &seq, &tokens[size_t(t)], 1, step_logits.data());
        for (int32_t i = 0; i < vocab; ++i) {
            const double d = std::fabs(double(step_logits[size_t(i)]) - prefill_logits[size_t(t) * vocab + i]);
            if (d > worst) worst = d, worst_row = t;
        }
    }
    EXPECT(worst < 1e-2, "%s: prefill and decode logits differ by %.4f at token %d", kMethodNames[method], worst,
           worst_row);
    const rkv_stats a = cache_stats(chunked), b = cache_stats(stepped);
    EXPECT(a.compressions > 0 && a.compressions == b.compressions, "%s: compressions %llu vs %llu",
           kMethodNames[method], (unsigned long long)a.compressions, (unsigned long long)b.compressions);
    EXPECT(a.tokens_held == b.tokens_held && a.tokens_held <= uint64_t(32 * model.config().n_layers),
           "%s: held %llu vs %llu", kMethodNames[method], (unsigned long long)a.tokens_held,
           (unsigned long long)b.tokens_held);
    std::printf("%s: %d tokens, %llu compressions, max |prefill - decode| logit difference %.2e\n",
                kMethodNames[method], n, (unsigned long long)a.compressions, worst);
    rkv_cache_destroy(chunked);
    rkv_cache_destroy(stepped);
}

int main() {
    auto file = open_model_or_skip();
    Model model(*file);
    const Config &c = model.config();
    EXPECT(c.dim == 576 && c.n_layers == 30 && c.n_heads == 9 && c.n_kv_heads == 3 && c.head_dim == 64 &&
               c.hidden_dim == 1536 && c.vocab_size == 49152,
           "SmolLM2-135M hyper-parameters");
    EXPECT(std::fabs(c.rope_theta - 100000.0f) < 1.0f, "rope theta %g", double(c.rope_theta));
    greedy_full(model);
    prefill_equals_decode(model, RKV_METHOD_RKV);
    prefill_equals_decode(model, RKV_METHOD_H2O);
    return finish();
}
