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
// 3. A decode batch of two sequences equals decoding each alone, with
//    compression inside the batched rkv_append.
#include <algorithm>
#include <cmath>
#include <cstring>
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

    double worst = 0.0;
    for (size_t i = 0; i < kTopIds.size(); ++i) {
        const double got = logits[size_t(kTopIds[i])];
        worst = std::max(worst, std::fabs(got - kTopLogits[i]));
        EXPECT(std::fabs(got - kTopLogits[i]) < 1e-3, "logit of token %d: %.5f, reference %.5f", kTopIds[i], got,
               kTopLogits[i]);
    }
    std::printf("full: top-5 logits within %.1e of the float64 reference\n", worst);
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

// A decode batch (one rkv_append per layer for both sequences, one rkv_attend)
// equals decoding each sequence alone, with R-KV compressing the two sequences
// at different steps (their prompts differ in length).
static void batch_equals_alone(Model &model) {
    const int32_t vocab = model.config().vocab_size, steps = 40;
    const std::vector<int32_t> prompts[2] = {kPromptIds, kKnownTokens[6].ids};
    CacheOptions options;
    options.budget = 16;
    options.buffer = 16;
    options.max_seqs = 2;

    // alone: sequence s of its own cache, greedy
    std::vector<int32_t> alone[2];
    std::vector<float> alone_logits[2];  // [steps, vocab] each
    for (int32_t s = 0; s < 2; ++s) {
        rkv_cache *cache = create_cache(model, options);
        std::vector<float> logits(static_cast<size_t>(vocab));  // [vocab]
        model.prefill(cache, s, prompts[s].data(), int32_t(prompts[s].size()), logits.data(), true, true);
        for (int32_t t = 0; t < steps; ++t) {
            const int32_t next = argmax(logits.data(), vocab);
            alone[s].push_back(next);
            model.decode(cache, &s, &next, 1, logits.data());
            alone_logits[s].insert(alone_logits[s].end(), logits.begin(), logits.end());
        }
        rkv_cache_destroy(cache);
    }

    // batched: both sequences, one decode call per step
    rkv_cache *cache = create_cache(model, options);
    std::vector<float> logits(2 * static_cast<size_t>(vocab));  // [2, vocab]
    int32_t next[2];
    const int32_t ids[2] = {0, 1};
    for (int32_t s = 0; s < 2; ++s) {
        model.prefill(cache, s, prompts[s].data(), int32_t(prompts[s].size()), logits.data(), true, true);
        next[s] = argmax(logits.data(), vocab);
    }
    double worst = 0.0;
    bool same_tokens = true;
    for (int32_t t = 0; t < steps; ++t) {
        for (int32_t s = 0; s < 2; ++s) same_tokens = same_tokens && next[s] == alone[s][size_t(t)];
        model.decode(cache, ids, next, 2, logits.data());
        for (int32_t s = 0; s < 2; ++s) {
            for (int32_t i = 0; i < vocab; ++i)
                worst = std::max(worst, std::fabs(double(logits[size_t(s) * vocab + i]) -
                                                  alone_logits[s][size_t(t) * vocab + i]));
            next[s] = argmax(&logits[size_t(s) * vocab], vocab);
        }
    }
    EXPECT(same_tokens && worst < 1e-2, "batched decode: same tokens %d, max logit difference %.4f", same_tokens,
           worst);
    rkv_stats stats[2];
    for (int32_t s = 0; s < 2; ++s) {
        std::memset(&stats[s], 0, sizeof stats[s]);
        stats[s].struct_size = sizeof stats[s];
        rkv_cache_stats(cache, s, &stats[s]);
    }
    EXPECT(stats[0].compressions > 0 && stats[1].compressions > 0 && stats[0].compressions != stats[1].compressions,
           "the two sequences compressed on their own schedules (%llu, %llu compressions)",
           (unsigned long long)stats[0].compressions, (unsigned long long)stats[1].compressions);
    std::printf("batch of 2: %d steps, max |batched - alone| logit difference %.2e\n", steps, worst);
    rkv_cache_destroy(cache);
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
    batch_equals_alone(model);
    return finish();
}
