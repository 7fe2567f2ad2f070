// Parameters: rkv_cache_set on live caches, the params struct API
// (default, set, get, bounds), rkv_cache_size on any shape (overflow), and
// the functions without a cache (names, version, messages).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>

#include "failure.h"
#include "params_model.h"
#include "program.h"

namespace fuzz {

namespace {

// A value for `key`: inside its bounds, on them, just outside, not an
// integer, NaN, or an even kernel.
double decode_value(ByteReader &in, int key) {
    const bool known = key >= 0 && key < kNumParams;
    const Bounds b = known ? param_bounds(key) : Bounds{0, 1};
    const double span = std::min(b.upper - b.lower, 64.0);
    switch (in.byte() % 10) {
        case 0: return b.lower;
        case 1: return b.upper;
        case 2: return b.lower - 1;
        case 3: return b.upper + 1;
        case 4: return std::floor(b.lower + span / 2) + 0.5;
        case 5: return in.chance(50) ? NAN : -INFINITY;
        case 6: return key == RKV_PARAM_KERNEL ? 4.0 : b.lower;
        default: {
            const double fraction = double(in.byte()) / 255.0;
            const double value = b.lower + fraction * span;
            if (param_is_real(key)) return value;
            double integral = std::floor(value);
            if (key == RKV_PARAM_KERNEL && std::fmod(integral, 2.0) == 0) integral += 1;
            return integral;
        }
    }
}

bool valid_value(int key, double value) {
    if (key < 0 || key >= kNumParams || std::isnan(value)) return false;
    const Bounds &b = param_bounds(key);
    if (value < b.lower || value > b.upper) return false;
    if (!param_is_real(key) && value != std::floor(value)) return false;
    if (key == RKV_PARAM_KERNEL && std::fmod(value, 2.0) == 0) return false;  // "odd"
    return true;
}

int decode_key(ByteReader &in, bool prefer_live) {
    static const int live[] = {RKV_PARAM_LAMBDA, RKV_PARAM_THRESHOLD, RKV_PARAM_KERNEL,
                               RKV_PARAM_POOLING, RKV_PARAM_SEED,     RKV_PARAM_AUTO_COMPRESS};
    const uint8_t b = in.byte() % 16;
    if (b == 15) {
        static const int unknown[] = {-1, kNumParams, 1000, INT32_MIN};
        return in.pick(unknown);
    }
    if (prefer_live && b < 12) return live[b % 6];
    return in.range(0, kNumParams - 1);
}

void value_error(Verdict *v) {
    v->error(RKV_ERR_OUT_OF_RANGE);
    v->error(RKV_ERR_UNSUPPORTED);
    v->error(RKV_ERR_INVALID_ARGUMENT);
}

}  // namespace

void Program::op_set_param(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int key = decode_key(in_, true);
    const double value = decode_value(in_, key);
    note("cache%d set_param key %d value %.17g", slot, key, value);
    Verdict verdict;
    if (!s.model) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (key < 0 || key >= kNumParams) verdict.error(RKV_ERR_UNSUPPORTED);
    else {
        if (!param_is_live(key)) verdict.error(RKV_ERR_BAD_STATE);  // sizes memory or defines stored state
        if (!valid_value(key, value)) value_error(&verdict);
    }
    const rkv_status status = rkv_cache_set(s.cache, rkv_param(key), value);
    expect_status("rkv_cache_set", status, verdict);
    if (status == RKV_OK) s.model->apply_set_param(rkv_param(key), value);
    if (options_.mirror && s.cache) options_.mirror->set_param(slot, rkv_param(key), value, status);
}

void Program::op_params_api() {
    rkv_cache_params p;
    std::memset(&p, 0x5c, sizeof p);
    const uint8_t abuse = in_.byte() % 16;
    note("params_default%s", abuse == 0 ? " (NULL)" : abuse == 1 ? " (bad size)" : "");
    Verdict verdict;
    if (abuse == 0) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (abuse == 1) verdict.error(RKV_ERR_STRUCT_SIZE);
    rkv_status status = rkv_params_default(abuse == 0 ? nullptr : &p, abuse == 1 ? sizeof p - 4 : sizeof p);
    expect_status("rkv_params_default", status, verdict);
    if (status != RKV_OK) FUZZ_EXPECT(rkv_params_default(&p, sizeof p) == RKV_OK, "params_default failed");
    FUZZ_EXPECT(p.struct_size == sizeof p && p.budget == 1024 && p.buffer == 128 && p.window == 8 && p.kernel == 7 &&
                    p.method == RKV_METHOD_RKV && p.auto_compress == 1 && p.max_seqs == 0,
                "rkv_params_default: not the header's defaults");

    for (int round = 0; round < 4 && !in_.exhausted(); ++round) {
        const int key = decode_key(in_, false);
        const double value = decode_value(in_, key);
        const uint8_t how = in_.byte() % 16;
        rkv_cache_params *target = how == 0 ? nullptr : &p;
        const size_t saved_size = p.struct_size;
        if (how == 1) p.struct_size = sizeof p + 8;
        Verdict set_verdict;
        if (!target) set_verdict.error(RKV_ERR_INVALID_ARGUMENT);
        else if (how == 1) set_verdict.error(RKV_ERR_STRUCT_SIZE);
        else if (key < 0 || key >= kNumParams) set_verdict.error(RKV_ERR_UNSUPPORTED);
        else if (!valid_value(key, value)) value_error(&set_verdict);
        const rkv_cache_params before = p;
        status = rkv_params_set(target, rkv_param(key), value);
        expect_status("rkv_params_set", status, set_verdict);
        if (status != RKV_OK) {
            FUZZ_EXPECT(std::memcmp(&before, &p, sizeof p) == 0, "rkv_params_set failed but changed the params");
        } else {
            rkv_cache_params expected = before;
            set_param_value(&expected, key, value);
            for (int other = 0; other < kNumParams; ++other)
                FUZZ_EXPECT(param_value(p, other) == param_value(expected, other),
                            "rkv_params_set(%d, %g): parameter %d is %g, expected %g", key, value, other,
                            param_value(p, other), param_value(expected, other));
            double got = NAN;
            FUZZ_EXPECT(rkv_params_get(&p, rkv_param(key), &got) == RKV_OK && got == param_value(expected, key),
                        "rkv_params_get(%d) = %g after setting %g", key, got, value);
        }
        p.struct_size = saved_size;
        double lower = NAN, upper = NAN;
        const bool null_bound = how == 2;
        Verdict bounds_verdict;
        if (null_bound) bounds_verdict.error(RKV_ERR_INVALID_ARGUMENT);
        else if (key < 0 || key >= kNumParams) bounds_verdict.error(RKV_ERR_UNSUPPORTED);
        status = rkv_params_bounds(rkv_param(key), &lower, null_bound ? nullptr : &upper);
        expect_status("rkv_params_bounds", status, bounds_verdict);
        if (status == RKV_OK)
            FUZZ_EXPECT(lower <= upper && (param_is_real(key) || (lower == std::floor(lower) && upper == std::floor(upper))),
                        "rkv_params_bounds(%d) = [%g, %g]", key, lower, upper);
    }
}

void Program::op_cache_size() {
    rkv_cache_params p = decode_params();
    if (in_.chance(50)) {  // shapes large enough to overflow 64 bits
        static const int32_t big[] = {1 << 10, 1 << 16, 1 << 20, 1 << 24, 1 << 26};
        p.max_seqs = std::min(in_.pick(big), 1 << 20);
        p.num_layers = std::min(in_.pick(big), 1024);
        p.num_kv_heads = p.num_q_heads = std::min(in_.pick(big), 1024);
        p.head_dim = std::min(in_.pick(big), 1024);
        p.budget = std::max(in_.pick(big), p.window + 1);
        p.max_len = in_.pick(big);
    }
    if (in_.chance(10)) {  // cross-field rules create checks that the decoder otherwise keeps
        p.sink = p.budget;
        p.guards = RKV_GUARD_SINK | RKV_GUARD_PROMPT;
        p.max_prompt_len = 0;
    }
    const bool null_bytes = in_.chance(5);
    note("cache_size method %d seqs %d layers %d heads %d/%d dim %d budget %d buffer %d max_len %d%s", p.method,
         p.max_seqs, p.num_layers, p.num_kv_heads, p.num_q_heads, p.head_dim, p.budget, p.buffer, p.max_len,
         null_bytes ? " (NULL bytes)" : "");
    Verdict verdict = params_verdict(&p);
    if (null_bytes) {
        verdict = Verdict();
        verdict.error(RKV_ERR_INVALID_ARGUMENT);
        verdict.merge(params_verdict(&p));
    }
    uint64_t bytes = 0;
    const rkv_status status = rkv_cache_size(&p, null_bytes ? nullptr : &bytes);
    expect_status("rkv_cache_size", status, verdict);
    if (status != RKV_OK || p.device_type != RKV_DEVICE_CPU) return;
    const bool prompt_guard = (p.guards & RKV_GUARD_PROMPT) != 0;
    const __int128 capacity = p.method == RKV_METHOD_FULL ? __int128(p.max_len)
                                                          : __int128(p.budget) + p.buffer + (prompt_guard ? p.max_prompt_len : 0);
    const __int128 kv = __int128(2) * p.max_seqs * p.num_layers * p.num_kv_heads * capacity * p.head_dim *
                        __int128(dtype_bytes(p.dtype));
    FUZZ_EXPECT(__int128(bytes) >= kv, "rkv_cache_size = %llu bytes, less than K and V alone",
                (unsigned long long)bytes);
}

void Program::op_misc(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t value = int32_t(in_.u32());
    const int32_t path = in_.range(-1, 3);
    note("cache%d sync_lengths, set_matmul_path %d; status names, version, message (status %d)", slot, path, value);
    // Experimental calls: on a CPU cache sync_lengths changes nothing, and the
    // matrix-product path is AUTO only.
    Verdict verdict;
    if (!s.model) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    expect_status("rkv_cache_sync_lengths", rkv_cache_sync_lengths(s.cache, nullptr), verdict);
    if (s.model && path != RKV_MATMUL_AUTO) verdict.error(RKV_ERR_UNSUPPORTED);
    expect_status("rkv_cache_set_matmul_path", rkv_cache_set_matmul_path(s.cache, rkv_matmul_path(path)), verdict);
    // The attention plan, from bits of `value` (no byte of its own, so older
    // inputs keep their meaning): splits -1 .. 1025, variants -1 .. 4. Out of
    // range is INVALID_ARGUMENT; a CPU cache takes only (0, AUTO).
    const int32_t splits = int32_t((uint32_t(value) >> 8) % 1027u) - 1;
    const int32_t variant = int32_t((uint32_t(value) >> 20) % 6u) - 1;
    note("cache%d set_attend_plan(%d, %d)", slot, splits, variant);
    Verdict plan_verdict;
    if (!s.model || splits < 0 || splits > 1024 || variant < RKV_ATTEND_AUTO || variant > RKV_ATTEND_TENSOR)
        plan_verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (splits != 0 || variant != RKV_ATTEND_AUTO)
        plan_verdict.error(RKV_ERR_UNSUPPORTED);
    expect_status("rkv_cache_set_attend_plan",
                  rkv_cache_set_attend_plan(s.cache, splits, rkv_attend_variant(variant)), plan_verdict);
    static const struct {
        int status;
        const char *name;
    } known[] = {{0, "RKV_OK"},
                 {1, "RKV_ERR_INVALID_ARGUMENT"},
                 {2, "RKV_ERR_OUT_OF_RANGE"},
                 {3, "RKV_ERR_UNSUPPORTED"},
                 {4, "RKV_ERR_SHAPE_MISMATCH"},
                 {5, "RKV_ERR_STRUCT_SIZE"},
                 {6, "RKV_ERR_CAPACITY"},
                 {7, "RKV_ERR_MISSING_QUERIES"},
                 {8, "RKV_ERR_BAD_STATE"},
                 {9, "RKV_ERR_OVERFLOW"},
                 {20, "RKV_ERR_OUT_OF_MEMORY"},
                 {30, "RKV_ERR_DEVICE"},
                 {31, "RKV_ERR_FAULTED"},
                 {99, "RKV_ERR_INTERNAL"}};
    const char *expected = "RKV_UNKNOWN_STATUS";
    for (const auto &k : known)
        if (k.status == value) expected = k.name;
    const char *name = rkv_status_name(rkv_status(value));
    FUZZ_EXPECT(name && std::strcmp(name, expected) == 0, "rkv_status_name(%d) = %s, expected %s", value,
                name ? name : "NULL", expected);
    for (const auto &k : known) FUZZ_EXPECT(std::strcmp(rkv_status_name(rkv_status(k.status)), k.name) == 0,
                                            "rkv_status_name(%d) is not %s", k.status, k.name);
    FUZZ_EXPECT(rkv_version_number() == RKV_VERSION_NUMBER, "rkv_version_number skews from the header");
    char version[32];
    std::snprintf(version, sizeof version, "%d.%d.%d", RKV_VERSION_MAJOR, RKV_VERSION_MINOR, RKV_VERSION_PATCH);
    FUZZ_EXPECT(std::strcmp(rkv_version_string(), version) == 0, "rkv_version_string = %s", rkv_version_string());
    FUZZ_EXPECT(rkv_error_message() != nullptr, "rkv_error_message returned NULL");
    rkv_cache_destroy(nullptr);
}

}  // namespace fuzz
