// The program driver: the cache header, the call loop, cache lifetime, and the
// calls that read state. Appends live in program_append.cpp, attention and
// scores in program_attend.cpp, parameters in program_params.cpp.
#include "program.h"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "checks.h"
#include "failure.h"
#include "params_model.h"

namespace fuzz {

Program::Program(const uint8_t *data, size_t size, RunOptions options) : in_(data, size), options_(options) {}

Program::~Program() {
    for (size_t slot = 0; slot < slots_.size(); ++slot) destroy(int(slot));
}

void Program::note(const char *format, ...) {
    char text[512];
    va_list args;
    va_start(args, format);
    std::vsnprintf(text, sizeof text, format, args);
    va_end(args);
    current_ = text;
    if (options_.trace) std::printf("  %3d  %s\n", calls_, text);
}

void Program::expect_status(const char *call, rkv_status status, const Verdict &verdict) {
    if (options_.trace) std::printf("         -> %s\n", rkv_status_name(status));
    FUZZ_EXPECT(verdict.allows(status), "%s returned %s (%s); the header says %s", call, rkv_status_name(status),
                status == RKV_OK ? "" : rkv_error_message(), verdict.describe().c_str());
    if (status != RKV_OK) {
        const char *message = rkv_error_message();
        FUZZ_EXPECT(message != nullptr && message[0] != '\0', "%s returned %s with no message", call,
                    rkv_status_name(status));
    }
}

uint64_t Program::stream_of(int slot, int32_t seq) const {
    const Slot &s = slots_[size_t(slot)];
    const uint32_t epoch = seq >= 0 && size_t(seq) < s.epochs.size() ? s.epochs[size_t(seq)] : 0;
    return hash_of({uint64_t(slot), uint64_t(uint32_t(seq)), epoch});
}

int32_t Program::pick_index(int32_t count, bool allow_all) {
    const uint8_t b = in_.byte();
    if (b >= 244) {
        const int32_t outside[] = {-2, INT32_MIN, INT32_MAX, count};
        return outside[b % 4];
    }
    if (b >= 236 || (allow_all && b >= 200)) return RKV_ALL;  // outside where RKV_ALL is not accepted
    return int32_t(b % uint32_t(std::max(count, 1)));
}

// ---------------------------------------------------------------------------
// caches

rkv_cache_params Program::decode_params() {
    rkv_cache_params p;
    FUZZ_EXPECT(rkv_params_default(&p, sizeof p) == RKV_OK, "rkv_params_default failed");
    p.method = rkv_method(in_.byte() % 7);
    p.mode = in_.chance(25) ? RKV_MODE_REFERENCE : RKV_MODE_POSITION;
    p.dtype = rkv_dtype(in_.byte() % 3);
    p.max_seqs = in_.range(1, 4);
    p.num_layers = in_.range(1, 2);
    p.num_kv_heads = in_.range(1, 3);
    p.num_q_heads = p.num_kv_heads * in_.range(1, 3);
    static const int32_t dims[] = {1, 2, 3, 4, 5, 8, 8, 16, 16, 32, 64, 128};
    p.head_dim = in_.pick(dims);
    if (p.head_dim >= 64) p.max_seqs = p.num_layers = 1;  // large rows, few of them
    p.window = in_.range(1, 6);
    p.budget = p.window + in_.range(1, 20);
    p.buffer = in_.range(1, 16);
    p.kernel = 1 + 2 * in_.range(0, 4);
    p.lambda = float(in_.byte()) / 255.0f;
    p.threshold = float(in_.byte()) / 127.5f - 1.0f;
    p.pooling = rkv_pooling(in_.byte() % 2);
    p.guards = in_.byte() % 4;
    p.sink = std::min(in_.range(0, 6), p.budget - p.window);
    p.max_prompt_len = in_.range(0, 24);
    if ((p.guards & RKV_GUARD_PROMPT) && p.max_prompt_len == 0) p.max_prompt_len = 1;
    p.max_len = in_.range(1, 48);
    p.seed = in_.u32();
    // FP8 E4M3 storage: a quarter of the bf16 caches, by bits of the seed so
    // that the bytes of existing inputs keep their meaning (a seed only orders
    // the Random method's ties).
    if (p.dtype == RKV_DTYPE_BF16 && (p.seed & 3u) == 3u) p.dtype = RKV_DTYPE_FP8_E4M3;
    p.auto_compress = in_.chance(85) ? 1 : 0;
    p.max_rollback = in_.chance(80) ? 0 : in_.range(1, 8);  // a query history beside the window
    if (in_.chance(6)) {  // one documented mistake: create must refuse it
        switch (in_.byte() % 12) {
            case 0: p.struct_size = in_.chance(50) ? 0 : sizeof p + 8; break;
            case 1: p.max_seqs = 0; break;
            case 2: p.head_dim = -p.head_dim; break;
            // Not a storage dtype (3 is RKV_DTYPE_FP8_E4M3 since 0.2.0: valid).
            case 3: p.dtype = rkv_dtype(in_.chance(50) ? RKV_DTYPE_FP8_E4M3 + 1 : -1); break;
            case 4: p.method = rkv_method(7); break;
            case 5: p.window = p.budget; p.method = RKV_METHOD_RKV; break;
            case 6: p.kernel += 1; break;
            case 7: p.num_kv_heads = 2; p.num_q_heads = 3; break;
            case 8: p.pooling = rkv_pooling(2); break;
            case 9: p.lambda = in_.chance(50) ? 1.5f : NAN; break;
            case 10: p.guards = 4; break;
            default: p.budget = -5; break;
        }
    }
    return p;
}

void Program::create(int slot) {
    Slot &s = slots_[size_t(slot)];
    const rkv_cache_params p = decode_params();
    s.params = p;
    s.epochs.assign(size_t(std::max(p.max_seqs, 1)), 0);
    note("cache%d create method %d mode %d dtype %d seqs %d layers %d heads %d/%d dim %d budget %d buffer %d "
         "window %d kernel %d sink %d guards %u max_prompt %d max_len %d auto %d%s",
         slot, p.method, p.mode, p.dtype, p.max_seqs, p.num_layers, p.num_kv_heads, p.num_q_heads, p.head_dim,
         p.budget, p.buffer, p.window, p.kernel, p.sink, p.guards, p.max_prompt_len, p.max_len, p.auto_compress,
         p.struct_size != sizeof p ? " (bad struct_size)" : "");
    const Verdict verdict = params_verdict(&p);
    rkv_cache *const untouched = reinterpret_cast<rkv_cache *>(uintptr_t(0x5a5a));
    rkv_cache *cache = untouched;
    const rkv_status status = rkv_cache_create(&p, &cache);
    expect_status("rkv_cache_create", status, verdict);
    if (options_.mirror) options_.mirror->create(slot, p, status);
    if (status != RKV_OK) {
        FUZZ_EXPECT(cache == untouched, "rkv_cache_create failed but set *cache");
        return;
    }
    s.cache = cache;
    uint64_t bytes = 0;
    FUZZ_EXPECT(rkv_cache_size(&p, &bytes) == RKV_OK, "rkv_cache_size refused params create accepted: %s",
                rkv_error_message());
    rkv_layer_view lv;
    std::memset(&lv, 0, sizeof lv);
    lv.struct_size = sizeof lv;
    FUZZ_EXPECT(rkv_view_layer(cache, 0, &lv) == RKV_OK, "rkv_view_layer of a new cache failed");
    const std::vector<int32_t> capacities = allowed_capacities(p);
    FUZZ_EXPECT(std::find(capacities.begin(), capacities.end(), lv.capacity) != capacities.end(),
                "capacity %d; algorithm.md gives %d%s", lv.capacity, capacities[0],
                capacities.size() > 1 ? " (or with the prompt reserve)" : "");
    s.model.emplace(p, lv.capacity, bytes);
}

void Program::destroy(int slot) {
    Slot &s = slots_[size_t(slot)];
    rkv_cache_destroy(s.cache);  // NULL is a no-op
    s.cache = nullptr;
    s.model.reset();
    if (options_.mirror) options_.mirror->destroy(slot);
}

void Program::check_all() {
    for (size_t slot = 0; slot < slots_.size(); ++slot) {
        Slot &s = slots_[slot];
        if (!s.cache) continue;
        check_cache(s.cache, *s.model);
        if (options_.mirror) options_.mirror->compare(int(slot), s.cache, *s.model);
    }
}

void Program::run() {
    const int caches = 1 + in_.byte() % kMaxCaches;
    slots_.resize(size_t(caches));
    for (int slot = 0; slot < caches; ++slot) create(slot);
    pattern_ = Pattern(in_.byte() % uint8_t(Pattern::Count));
    salt_ = in_.u32();
    if (options_.trace) std::printf("  data pattern %d, salt %llu\n", int(pattern_), (unsigned long long)salt_);
    check_all();
    while (!in_.exhausted() && calls_ < kMaxCalls) {
        const uint8_t op = in_.byte();
        const int slot = (op >> 5) % caches;
        ++calls_;
        switch (op & 31) {
            case 11: op_truncate(slot); break;
            case 12: case 13: op_compress(slot); break;
            case 14: op_compress_due(slot); break;
            case 15: op_reset(slot); break;
            case 16: op_view(slot); break;
            case 17: op_layer_view(slot); break;
            case 18: op_seq_length(slot); break;
            case 19: op_kept_positions(slot); break;
            case 20: op_stats(slot); break;
            case 21: case 22: op_attend(slot); break;
            case 23: op_set_param(slot); break;
            case 24: op_inspect_scores(slot); break;
            case 25: op_get_params(slot); break;
            case 26: op_params_api(); break;
            case 27:
                note("cache%d destroy, then create", slot);
                destroy(slot);
                create(slot);
                break;
            case 28: op_misc(slot); break;
            case 29: op_cache_size(); break;
            case 30: op_seq_copy(slot); break;
            case 31: op_budget(slot); break;
            default: op_append(slot); break;
        }
        check_all();
    }
}

// ---------------------------------------------------------------------------
// calls that read state or change it without data

void Program::op_compress(int slot) {
    Slot &s = slots_[size_t(slot)];
    const rkv_cache_params &p = s.params;
    const int32_t seq = pick_index(p.max_seqs, true), layer = pick_index(p.num_layers, true);
    rkv_cache *cache = in_.chance(3) ? nullptr : s.cache;
    note("cache%d compress seq %d layer %d%s", slot, seq, layer, cache ? "" : " (NULL cache)");
    Verdict verdict;
    if (s.model) verdict = s.model->compress_verdict(seq, layer, cache == nullptr);
    else verdict.error(RKV_ERR_INVALID_ARGUMENT);
    ScoreSnapshot before;
    if (s.model && verdict.allows_error()) before = take_scores(s.cache, *s.model);
    if (options_.mirror && s.cache) options_.mirror->before_mutation(slot, s.cache);
    const rkv_status status = rkv_compress(cache, seq, layer, nullptr);
    expect_status("rkv_compress", status, verdict);
    if (status == RKV_OK) s.model->apply_compress(seq, layer);
    else if (s.model && verdict.allows_error()) expect_same_scores(before, take_scores(s.cache, *s.model));
    if (options_.mirror && s.cache && cache) options_.mirror->compress(slot, seq, layer, status);
}

void Program::op_compress_due(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t seq = pick_index(s.params.max_seqs, true), layer = pick_index(s.params.num_layers, true);
    const bool null_due = in_.chance(4);
    note("cache%d compress_due seq %d layer %d%s", slot, seq, layer, null_due ? " (NULL due)" : "");
    Verdict verdict;
    int32_t expected = 0;
    if (!s.model || null_due) {
        verdict.error(RKV_ERR_INVALID_ARGUMENT);
    } else if ((seq != RKV_ALL && (seq < 0 || seq >= s.params.max_seqs)) ||
               (layer != RKV_ALL && (layer < 0 || layer >= s.params.num_layers))) {
        verdict.error(RKV_ERR_OUT_OF_RANGE);
    } else {
        for (int32_t l = 0; l < s.params.num_layers; ++l)
            for (int32_t q = 0; q < s.params.max_seqs; ++q)
                if ((layer == RKV_ALL || l == layer) && (seq == RKV_ALL || q == seq))
                    expected |= s.model->full(s.model->at(q, l)) ? 1 : 0;
    }
    int32_t due = -7;
    const rkv_status status = rkv_compress_due(s.cache, seq, layer, null_due ? nullptr : &due);
    expect_status("rkv_compress_due", status, verdict);
    if (status == RKV_OK) FUZZ_EXPECT(due == expected, "rkv_compress_due = %d, expected %d", due, expected);
}

void Program::op_reset(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t seq = pick_index(s.params.max_seqs, true);
    note("cache%d reset seq %d", slot, seq);
    Verdict verdict;
    if (!s.model) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (seq != RKV_ALL && (seq < 0 || seq >= s.params.max_seqs)) verdict.error(RKV_ERR_OUT_OF_RANGE);
    const rkv_status status = rkv_seq_reset(s.cache, seq, nullptr);
    expect_status("rkv_seq_reset", status, verdict);
    if (status == RKV_OK) {
        s.model->apply_reset(seq);
        for (size_t q = 0; q < s.epochs.size(); ++q)
            if (seq == RKV_ALL || int32_t(q) == seq) ++s.epochs[q];
    }
    if (options_.mirror && s.cache) options_.mirror->reset(slot, seq, status);
}

void Program::op_seq_copy(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t src = pick_index(s.params.max_seqs, false), dst = pick_index(s.params.max_seqs, false);
    note("cache%d seq_copy %d -> %d", slot, src, dst);
    Verdict verdict;
    if (s.model) verdict = s.model->copy_verdict(src, dst, false);
    else verdict.error(RKV_ERR_INVALID_ARGUMENT);
    ScoreSnapshot before;
    if (s.model && verdict.allows_error()) before = take_scores(s.cache, *s.model);
    const rkv_status status = rkv_seq_copy(s.cache, src, dst, nullptr);
    expect_status("rkv_seq_copy", status, verdict);
    if (status == RKV_OK) s.model->apply_copy(src, dst);
    else if (s.model) expect_same_scores(before, take_scores(s.cache, *s.model));
    if (options_.mirror && s.cache) options_.mirror->seq_copy(slot, src, dst, status);
}

void Program::op_truncate(int slot) {
    Slot &s = slots_[size_t(slot)];
    const rkv_cache_params &p = s.params;
    const int32_t seq = pick_index(p.max_seqs, false);
    const bool valid = s.model && seq >= 0 && seq < p.max_seqs;
    // How many tokens the sequence can roll back now.
    const bool null_tokens = in_.chance(4);
    int32_t limit = -7;
    Verdict limit_verdict;
    if (!s.model || null_tokens) limit_verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (!valid) limit_verdict.error(RKV_ERR_OUT_OF_RANGE);
    const rkv_status limit_status = rkv_seq_rollback_limit(s.cache, seq, null_tokens ? nullptr : &limit);
    if (limit_status == RKV_OK) {
        // Never past the last compression; exactly that for methods that keep no queries.
        const int64_t low = s.model->rollback_bound_low(seq), high = s.model->rollback_bound_high(seq);
        const bool keeps_queries = p.method == RKV_METHOD_RKV || p.method == RKV_METHOD_SNAPKV || p.method == RKV_METHOD_H2O;
        FUZZ_EXPECT(limit >= 0 && limit <= high && (keeps_queries || limit >= low),
                    "rkv_seq_rollback_limit(%d) = %d; tokens since the last compression: %lld (%lld counting re-sorts)",
                    seq, limit, (long long)high, (long long)low);
    }
    const uint8_t pick = in_.byte() % 8;
    int32_t tokens = pick == 0 ? 0 : pick == 2 ? -1 : in_.range(0, 3);
    if (limit_status == RKV_OK) tokens = pick == 0 ? 0 : pick == 1 ? limit + 1 : pick == 2 ? -1 : pick == 3 ? limit
                                                                                            : in_.range(0, std::max(limit, 0));
    note("cache%d rollback_limit seq %d = %d (%s); truncate %d", slot, seq, limit, rkv_status_name(limit_status), tokens);
    expect_status("rkv_seq_rollback_limit", limit_status, limit_verdict);
    Verdict verdict;
    if (!s.model) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (!valid) verdict.error(RKV_ERR_OUT_OF_RANGE);
    if (s.model && tokens < 0) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    // "More fails with BAD_STATE": the limit the library itself gave.
    if (valid && limit_status == RKV_OK && tokens > limit) verdict.error(RKV_ERR_BAD_STATE);
    if (valid && limit_status != RKV_OK && tokens > 0) {  // no limit to go by: what the model can tell
        if (tokens > s.model->rollback_bound_high(seq)) verdict.error(RKV_ERR_BAD_STATE);
        else verdict.tolerate(RKV_ERR_BAD_STATE);
    }
    ScoreSnapshot before;
    if (s.model && verdict.allows_error()) before = take_scores(s.cache, *s.model);
    const rkv_status status = rkv_seq_truncate(s.cache, seq, tokens, nullptr);
    expect_status("rkv_seq_truncate", status, verdict);
    if (status == RKV_OK && tokens > 0) s.model->apply_truncate(seq, tokens);
    else if (status != RKV_OK && s.model) expect_same_scores(before, take_scores(s.cache, *s.model));
    if (options_.mirror && s.cache) options_.mirror->truncate(slot, seq, tokens, status);
}

void Program::op_budget(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t seq = pick_index(s.params.max_seqs, false);
    // Around the bounds: below the window, at the smallest allowed, up to and past the cache's.
    const int32_t budget = s.params.window + in_.range(-1, std::max(s.params.budget - s.params.window + 1, 0));
    const bool set = in_.chance(60);
    note("cache%d seq %s_budget %d%s", slot, set ? "set" : "get", seq, set ? (" to " + std::to_string(budget)).c_str() : "");
    if (set) {
        Verdict verdict;
        if (s.model) verdict = s.model->set_budget_verdict(seq, budget, false);
        else verdict.error(RKV_ERR_INVALID_ARGUMENT);
        const rkv_status status = rkv_seq_set_budget(s.cache, seq, budget);
        expect_status("rkv_seq_set_budget", status, verdict);
        if (status == RKV_OK) s.model->apply_set_budget(seq, budget);
        if (options_.mirror && s.cache) options_.mirror->set_budget(slot, seq, budget, status);
        return;
    }
    Verdict verdict;
    if (!s.model) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (seq < 0 || seq >= s.params.max_seqs) verdict.error(RKV_ERR_OUT_OF_RANGE);
    int32_t got = -7;
    const rkv_status status = rkv_seq_get_budget(s.cache, seq, &got);
    expect_status("rkv_seq_get_budget", status, verdict);
    if (status == RKV_OK)
        FUZZ_EXPECT(got == s.model->at(seq, 0).budget, "rkv_seq_get_budget(%d) = %d, expected %d", seq, got,
                    s.model->at(seq, 0).budget);
}

void Program::op_view(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t seq = pick_index(s.params.max_seqs, false), layer = pick_index(s.params.num_layers, false);
    const uint8_t abuse = in_.byte() % 16;
    rkv_seq_view view;
    std::memset(&view, 0, sizeof view);
    view.struct_size = abuse == 1 ? sizeof view - 8 : abuse == 2 ? 0 : sizeof view;
    note("cache%d view seq %d layer %d%s", slot, seq, layer, abuse == 0 ? " (NULL view)" : "");
    Verdict verdict;
    if (!s.model || abuse == 0) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (abuse <= 2) verdict.error(RKV_ERR_STRUCT_SIZE);
    else if (seq < 0 || seq >= s.params.max_seqs || layer < 0 || layer >= s.params.num_layers)
        verdict.error(RKV_ERR_OUT_OF_RANGE);
    const rkv_status status = rkv_view(s.cache, seq, layer, abuse == 0 ? nullptr : &view);
    expect_status("rkv_view", status, verdict);
    // A successful view is what check_all reads for every (sequence, layer).
}

void Program::op_layer_view(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t layer = pick_index(s.params.num_layers, false);
    const uint8_t abuse = in_.byte() % 16;
    rkv_layer_view view;
    std::memset(&view, 0, sizeof view);
    view.struct_size = abuse == 1 ? sizeof view + 8 : sizeof view;
    note("cache%d layer_view layer %d%s", slot, layer, abuse == 0 ? " (NULL view)" : "");
    Verdict verdict;
    if (!s.model || abuse == 0) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (abuse == 1) verdict.error(RKV_ERR_STRUCT_SIZE);
    else if (layer < 0 || layer >= s.params.num_layers) verdict.error(RKV_ERR_OUT_OF_RANGE);
    const rkv_status status = rkv_view_layer(s.cache, layer, abuse == 0 ? nullptr : &view);
    expect_status("rkv_view_layer", status, verdict);
}

void Program::op_seq_length(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t seq = pick_index(s.params.max_seqs, false), layer = pick_index(s.params.num_layers, false);
    const uint8_t outputs = in_.byte() % 4;  // bit 0: logical, bit 1: physical
    note("cache%d seq_length seq %d layer %d outputs %d", slot, seq, layer, outputs);
    Verdict verdict;
    if (!s.model || outputs == 0) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (seq < 0 || seq >= s.params.max_seqs || layer < 0 || layer >= s.params.num_layers)
        verdict.error(RKV_ERR_OUT_OF_RANGE);
    int64_t logical = -7;
    int32_t physical = -7;
    const rkv_status status = rkv_seq_length(s.cache, seq, layer, (outputs & 1) ? &logical : nullptr,
                                             (outputs & 2) ? &physical : nullptr);
    expect_status("rkv_seq_length", status, verdict);
    if (status != RKV_OK) return;
    const SeqLayerModel &m = s.model->at(seq, layer);
    if (outputs & 1) FUZZ_EXPECT(logical == m.logical, "rkv_seq_length: logical %lld, expected %lld",
                                 (long long)logical, (long long)m.logical);
    if (outputs & 2) FUZZ_EXPECT(physical == m.held, "rkv_seq_length: physical %d, expected %d", physical, m.held);
}

void Program::op_kept_positions(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t seq = pick_index(s.params.max_seqs, false), layer = pick_index(s.params.num_layers, false);
    const int32_t head = pick_index(s.params.num_kv_heads, false);
    const uint8_t how = in_.byte();
    const bool null_out = how % 8 == 0, null_count = how % 16 == 1;
    int32_t held = 0;
    if (s.model && seq >= 0 && seq < s.params.max_seqs && layer >= 0 && layer < s.params.num_layers)
        held = s.model->at(seq, layer).held;
    const int32_t out_len = std::max(0, held + in_.range(-2, 3));
    note("cache%d kept_positions seq %d layer %d head %d out_len %d%s%s", slot, seq, layer, head, out_len,
         null_out ? " (NULL out)" : "", null_count ? " (NULL count)" : "");
    Verdict verdict;
    if (!s.model || null_count) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (seq < 0 || seq >= s.params.max_seqs || layer < 0 || layer >= s.params.num_layers || head < 0 ||
             head >= s.params.num_kv_heads)
        verdict.error(RKV_ERR_OUT_OF_RANGE);
    else if (!null_out && out_len < held)
        verdict.error(RKV_ERR_CAPACITY);
    // Exactly out_len slots, so that a write past them is caught; canaries show untouched ones.
    std::unique_ptr<int32_t[]> out(new int32_t[size_t(std::max(out_len, 1))]);
    std::fill(out.get(), out.get() + std::max(out_len, 1), -12345);
    int32_t count = -7;
    const rkv_status status = rkv_seq_positions(s.cache, seq, layer, head, null_out ? nullptr : out.get(), out_len,
                                                 null_count ? nullptr : &count);
    expect_status("rkv_seq_positions", status, verdict);
    if (status != RKV_OK) {
        for (int32_t i = 0; i < out_len; ++i)
            FUZZ_EXPECT(out[i] == -12345, "rkv_seq_positions failed but wrote out[%d]", i);
        return;
    }
    FUZZ_EXPECT(count == held, "rkv_seq_positions: count %d, holds %d", count, held);
    if (null_out) return;
    const std::vector<int32_t> &expected = s.model->at(seq, layer).kept[size_t(head)];
    for (int32_t i = 0; i < out_len; ++i) {
        if (i < held) FUZZ_EXPECT(out[i] == expected[size_t(i)], "rkv_seq_positions: out[%d] = %d, view says %d",
                                  i, out[i], expected[size_t(i)]);
        else FUZZ_EXPECT(out[i] == -12345, "rkv_seq_positions wrote out[%d] past the %d held", i, held);
    }
}

void Program::op_stats(int slot) {
    Slot &s = slots_[size_t(slot)];
    const int32_t seq = pick_index(s.params.max_seqs, true);
    const uint8_t abuse = in_.byte() % 16;
    note("cache%d stats seq %d%s", slot, seq, abuse == 0 ? " (NULL stats)" : abuse == 1 ? " (bad struct_size)" : "");
    rkv_stats stats;
    std::memset(&stats, 0, sizeof stats);
    stats.struct_size = abuse == 1 ? 8 : sizeof stats;
    Verdict verdict;
    if (!s.model || abuse == 0) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (abuse == 1) verdict.error(RKV_ERR_STRUCT_SIZE);
    else if (seq != RKV_ALL && (seq < 0 || seq >= s.params.max_seqs)) verdict.error(RKV_ERR_OUT_OF_RANGE);
    const rkv_status status = rkv_cache_stats(s.cache, seq, abuse == 0 ? nullptr : &stats);
    expect_status("rkv_cache_stats", status, verdict);
    if (status == RKV_OK) check_stats(stats, *s.model, seq);
}

void Program::op_get_params(int slot) {
    Slot &s = slots_[size_t(slot)];
    const uint8_t abuse = in_.byte() % 16;
    // 0.1's struct ended at auto_compress (padded to its 8-byte alignment): the
    // library fills that much and no more.
    const size_t v01_size = (offsetof(rkv_cache_params, max_rollback) + 7) / 8 * 8;
    static const char *what[] = {" (NULL params)", " (struct_size too large)", " (odd struct_size)",
                                 " (0.1's struct_size)"};
    note("cache%d get_params%s", slot, abuse < 4 ? what[abuse] : "");
    rkv_cache_params got;
    std::memset(&got, 0x5c, sizeof got);
    got.struct_size = abuse == 1 ? sizeof got + 8 : abuse == 2 ? 7 : abuse == 3 ? v01_size : sizeof got;
    Verdict verdict;
    if (!s.model || abuse == 0) verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (abuse == 1 || abuse == 2) verdict.error(RKV_ERR_STRUCT_SIZE);
    const rkv_status status = rkv_cache_get_params(s.cache, abuse == 0 ? nullptr : &got);
    expect_status("rkv_cache_get_params", status, verdict);
    if (status == RKV_OK) {
        const size_t size = abuse == 3 ? v01_size : sizeof got;
        FUZZ_EXPECT(got.struct_size == size, "rkv_cache_get_params: struct_size %zu, expected %zu", got.struct_size, size);
        for (int key = 0; key < kNumParams; ++key) {
            if (abuse == 3 && key == RKV_PARAM_MAX_ROLLBACK) continue;
            const double a = param_value(got, key), b = param_value(s.model->params(), key);
            FUZZ_EXPECT(a == b || (std::isnan(a) && std::isnan(b)),
                        "rkv_cache_get_params: parameter %d is %g, expected %g", key, a, b);
        }
        if (abuse == 3) {
            const unsigned char *tail = reinterpret_cast<const unsigned char *>(&got) + v01_size;
            for (size_t i = 0; i < sizeof got - v01_size; ++i)
                FUZZ_EXPECT(tail[i] == 0x5c, "rkv_cache_get_params wrote past a 0.1 struct_size (byte %zu)",
                            v01_size + i);
        }
    }
    // One parameter by key.
    const int key = in_.range(-1, kNumParams);
    const bool null_value = in_.chance(5);
    Verdict get_verdict;
    if (!s.model || null_value) get_verdict.error(RKV_ERR_INVALID_ARGUMENT);
    else if (key < 0 || key >= kNumParams) get_verdict.error(RKV_ERR_UNSUPPORTED);
    double value = NAN;
    const rkv_status get_status = rkv_cache_get(s.cache, rkv_param(key), null_value ? nullptr : &value);
    expect_status("rkv_cache_get", get_status, get_verdict);
    if (get_status == RKV_OK && key != RKV_PARAM_SEED)  // a seed beyond 2^53 is rounded as a double
        FUZZ_EXPECT(value == param_value(s.model->params(), key), "rkv_cache_get(%d) = %g, expected %g", key, value,
                    param_value(s.model->params(), key));
}

}  // namespace fuzz
