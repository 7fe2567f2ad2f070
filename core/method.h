// The method table: one row per rkv_method saying what the method computes,
// what it needs from the caller, and which rules it follows. Every decision of
// librkv that depends on the method reads this table; the CUDA kernels receive
// the row's values (scorer, order rule) in their parameters.
//
// Adding a method: an enumerator in rkv.h, a row in method_info (a method
// without one fails to compile: -Werror=switch), its scorer on each backend if
// it ranks tokens differently from every existing one (Scorer below: the CPU
// backend's switch fails to compile without it; kernels/select.cuh holds a
// static_assert on kNumScorers), and tests. Methods are numbered 0 .. n-1
// without gaps; rkv_params_bounds reports n-1 as the largest.
#pragma once

#include <cstdint>

#include "rkv/rkv.h"
#include "rkv/rkv_experimental.h"  // rkv_score_kind

namespace rkv {

// What a compression ranks the candidates by (kernels/select.cuh method_score,
// src/cpu/cpu_backend.cpp score).
enum class Scorer : int32_t {
    None,                  // nothing is ranked: the method never evicts
    ImportanceRedundancy,  // lambda * importance - (1 - lambda) * redundancy
    Importance,            // attention of the observation window, max-pooled
    AccumulatedAttention,  // attention summed over every query since the token arrived
    Recency,               // the original position: the most recent tokens win
    KeyDiff,               // -cos(key, mean key)
    Random,                // core/random_score.h
};
inline constexpr int kNumScorers = int(Scorer::Random) + 1;

// Which queries a method needs from rkv_append_args.q.
enum class QueryNeed : int32_t {
    None,
    Window,      // the last `window` tokens' (the observation window), at each compression
    EveryToken,  // every appended token's, at the append (scores accumulate then)
};

// rkv_score_kind as a bit of MethodInfo::scores.
constexpr uint32_t score_bit(rkv_score_kind kind) { return 1u << uint32_t(kind); }

struct MethodInfo {
    const char *name;      // as messages spell it; nullptr: not a method
    Scorer scorer;
    QueryNeed queries;
    uint32_t scores;       // score_bit()s of the rkv_score_kinds it computes (rkv_seq_scores)
    bool keeps_sink;       // the first `sink` positions are never evicted, guard or not
    bool reference_order;  // in RKV_MODE_REFERENCE the kept candidates go in descending score
                           // order (the official code's); otherwise position order always

    // FULL: capacity is max_len, nothing compresses, the guards are moot.
    constexpr bool evicts() const { return scorer != Scorer::None; }
    // The method reads queries (the window's or every token's): q is required
    // where it needs them, max_rollback sizes a query history, and a rollback
    // is bounded by the queries held (src/schedule.cpp rollback_limit).
    constexpr bool keeps_queries() const { return queries != QueryNeed::None; }
};

constexpr MethodInfo method_info(rkv_method method) {
    constexpr uint32_t I = score_bit(RKV_SCORE_IMPORTANCE), R = score_bit(RKV_SCORE_REDUNDANCY),
                       F = score_bit(RKV_SCORE_FINAL);
    using S = Scorer;
    using Q = QueryNeed;
    switch (method) {
        //                                  name            scorer                   queries        scores     sink   ref. order
        case RKV_METHOD_RKV:          return {"RKV",          S::ImportanceRedundancy, Q::Window,     I | R | F, false, true};
        case RKV_METHOD_SNAPKV:       return {"SNAPKV",       S::Importance,           Q::Window,     I | F,     false, true};
        case RKV_METHOD_H2O:          return {"H2O",          S::AccumulatedAttention, Q::EveryToken, F,         false, true};
        case RKV_METHOD_STREAMINGLLM: return {"STREAMINGLLM", S::Recency,              Q::None,       0,         true,  false};
        case RKV_METHOD_KEYDIFF:      return {"KEYDIFF",      S::KeyDiff,              Q::None,       F,         false, true};
        case RKV_METHOD_RANDOM:       return {"RANDOM",       S::Random,               Q::None,       F,         false, true};
        case RKV_METHOD_FULL:         return {"FULL",         S::None,                 Q::None,       0,         false, false};
    }
    return {nullptr, S::None, Q::None, 0, false, false};
}

// The methods are 0 .. kNumMethods-1.
constexpr int count_methods() {
    int n = 0;
    while (method_info(rkv_method(n)).name != nullptr) ++n;
    return n;
}
inline constexpr int kNumMethods = count_methods();

constexpr bool is_method(int value) { return value >= 0 && value < kNumMethods; }

// Rows that contradict themselves do not compile.
constexpr bool rows_consistent() {
    for (int m = 0; m < kNumMethods; ++m) {
        const MethodInfo row = method_info(rkv_method(m));
        const bool ranks_importance = row.scorer == Scorer::ImportanceRedundancy || row.scorer == Scorer::Importance;
        if ((row.queries == QueryNeed::Window) != ranks_importance) return false;
        if ((row.queries == QueryNeed::EveryToken) != (row.scorer == Scorer::AccumulatedAttention)) return false;
        if (!row.evicts() && (row.scores != 0 || row.keeps_sink || row.reference_order)) return false;
    }
    return true;
}
static_assert(rows_consistent(), "a row of method_info contradicts itself");

// --- the rules, from the params --------------------------------------------

// Positions below `sink` are never evicted.
constexpr bool keeps_sink(const rkv_cache_params &p) {
    return method_info(p.method).keeps_sink || (p.guards & RKV_GUARD_SINK) != 0;
}

// Prompt tokens are never evicted (and max_prompt_len is reserved). Moot for a
// method that never evicts.
constexpr bool guards_prompt(const rkv_cache_params &p) {
    return method_info(p.method).evicts() && (p.guards & RKV_GUARD_PROMPT) != 0;
}

// Kept candidates go in descending score order instead of position order.
constexpr bool kept_in_reference_order(const rkv_cache_params &p) {
    return p.mode == RKV_MODE_REFERENCE && method_info(p.method).reference_order;
}

}  // namespace rkv
