#include "model.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "params_model.h"
#include "values.h"

namespace fuzz {

namespace {


bool enum_key(int key) {
    return key == RKV_PARAM_DTYPE || key == RKV_PARAM_DEVICE_TYPE || key == RKV_PARAM_METHOD ||
           key == RKV_PARAM_MODE || key == RKV_PARAM_POOLING || key == RKV_PARAM_GUARDS;
}

// Any of the statuses a parameter error may take (the header lists all three
// for create; test_errors.c pins which one each field gets).
void parameter_error(Verdict *v) {
    v->error(RKV_ERR_INVALID_ARGUMENT);
    v->error(RKV_ERR_OUT_OF_RANGE);
    v->error(RKV_ERR_UNSUPPORTED);
}

}  // namespace

Verdict params_verdict(const rkv_cache_params *p) {
    Verdict v;
    if (p == nullptr) {
        v.error(RKV_ERR_INVALID_ARGUMENT);
        return v;
    }
    if (p->struct_size != sizeof(rkv_cache_params)) {
        v.error(RKV_ERR_STRUCT_SIZE);
        return v;  // the other fields cannot be read safely from an unknown layout
    }
    // Shape fields are 0 until set; create rejects them.
    for (int key = RKV_PARAM_MAX_SEQS; key <= RKV_PARAM_HEAD_DIM; ++key)
        if (param_value(*p, key) == 0) parameter_error(&v);
    // Each field within its rkv_params_bounds (any uint64 is a valid seed).
    for (int key = 0; key < kNumParams; ++key) {
        if (key == RKV_PARAM_SEED) continue;
        const double value = param_value(*p, key);
        const Bounds &b = param_bounds(key);
        if (std::isnan(value) || value < b.lower || value > b.upper) parameter_error(&v);
        if (enum_key(key) && value != std::floor(value)) parameter_error(&v);
    }
    if (v.has_errors()) return v;
    // Cross-parameter rules the header and algorithm.md state.
    if (p->num_q_heads % p->num_kv_heads != 0) parameter_error(&v);  // GQA groups
    if (p->kernel % 2 == 0) parameter_error(&v);                      // "max-pool width, odd"
    if (p->method != RKV_METHOD_FULL && p->window >= p->budget) parameter_error(&v);  // window < budget
    if (v.has_errors()) return v;

    // Rules the documents imply but do not state: either answer is accepted.
    const bool sink_used = p->method == RKV_METHOD_STREAMINGLLM || (p->guards & RKV_GUARD_SINK);
    if (p->method != RKV_METHOD_FULL && sink_used && int64_t(p->sink) + p->window > p->budget)
        v.tolerate(RKV_ERR_INVALID_ARGUMENT);
    if ((p->guards & RKV_GUARD_PROMPT) && p->max_prompt_len == 0) v.tolerate(RKV_ERR_INVALID_ARGUMENT);
    if (p->method == RKV_METHOD_FULL && (p->guards & RKV_GUARD_PROMPT)) v.tolerate(RKV_ERR_INVALID_ARGUMENT);

    // Sizes: K and V alone are a lower bound of what create allocates.
    __int128 capacity = p->method == RKV_METHOD_FULL ? __int128(p->max_len) : __int128(p->budget) + p->buffer;
    if (p->method != RKV_METHOD_FULL && (p->guards & RKV_GUARD_PROMPT)) capacity += p->max_prompt_len;
    const __int128 kv_bytes = __int128(2) * p->max_seqs * p->num_layers * p->num_kv_heads * capacity *
                              p->head_dim * __int128(dtype_bytes(p->dtype));
    if (kv_bytes >> 64) {
        v.error(RKV_ERR_OVERFLOW);
        v.tolerate(RKV_ERR_OUT_OF_MEMORY);
        return v;
    }
    if (kv_bytes >> 60) v.tolerate(RKV_ERR_OVERFLOW);
    if (p->device_type == RKV_DEVICE_CUDA) {
        // This build may lack CUDA, the machine a device, or the device the shape.
        v.tolerate(RKV_ERR_UNSUPPORTED);
        v.tolerate(RKV_ERR_OUT_OF_RANGE);
        v.tolerate(RKV_ERR_DEVICE);
    }
    return v;
}

std::vector<int32_t> allowed_capacities(const rkv_cache_params &p) {
    const bool prompt_guard = (p.guards & RKV_GUARD_PROMPT) != 0;
    if (p.method == RKV_METHOD_FULL) {
        if (prompt_guard) return {p.max_len, p.max_len + p.max_prompt_len};
        return {p.max_len};
    }
    return {p.budget + p.buffer + (prompt_guard ? p.max_prompt_len : 0)};
}

CacheModel::CacheModel(const rkv_cache_params &params, int32_t capacity, uint64_t bytes)
    : params_(params), capacity_(capacity), bytes_(bytes) {
    states_.resize(size_t(params.num_layers) * params.max_seqs);
    for (int32_t seq = 0; seq < params.max_seqs; ++seq) apply_reset(seq);
}

int64_t CacheModel::protected_prompt(const SeqLayerModel &s) const {
    return (params_.guards & RKV_GUARD_PROMPT) ? s.prompt_len : 0;
}

bool CacheModel::full(const SeqLayerModel &s) const {
    if (params_.method == RKV_METHOD_FULL) return false;  // appending never compresses
    return s.held - protected_prompt(s) >= int64_t(s.budget) + params_.buffer;
}

bool CacheModel::needs_window_queries() const {
    return params_.method == RKV_METHOD_RKV || params_.method == RKV_METHOD_SNAPKV;
}

bool CacheModel::sink_protected() const {
    return params_.method == RKV_METHOD_STREAMINGLLM || (params_.guards & RKV_GUARD_SINK);
}

int64_t CacheModel::protect_below(const SeqLayerModel &s) const {
    return std::max<int64_t>(protected_prompt(s), sink_protected() ? params_.sink : 0);
}

void extent_verdict(const rkv_tensor &t, __int128 last_index, Verdict *v) {
    // Offsets whose bytes cannot be addressed must be refused; below that the
    // library may still refuse offsets it cannot compute safely.
    if (last_index >= (__int128(1) << 62)) {
        v->error(RKV_ERR_OVERFLOW);
        v->error(RKV_ERR_INVALID_ARGUMENT);
    } else if (last_index >= (__int128(1) << 56)) {
        v->tolerate(RKV_ERR_OVERFLOW);
    }
    // "every element it will touch ... lies in [0, extent)", else CAPACITY; 0 = unchecked.
    if (t.extent > 0 && last_index >= t.extent) v->error(RKV_ERR_CAPACITY);
    if (t.extent < 0) {  // the header gives no status for a negative extent
        v->error(RKV_ERR_INVALID_ARGUMENT);
        v->error(RKV_ERR_CAPACITY);
    }
}

__int128 tensor_last_index(const rkv_tensor &t, int32_t entries, const int32_t *num_tokens,
                           const int64_t *token_offsets, bool uses_tokens) {
    const int64_t stride_token = uses_tokens ? t.stride_token : 0;
    if (t.stride_seq < 0 || stride_token < 0 || t.stride_head < 0) return -1;
    __int128 last = 0;
    for (int32_t i = 0; i < entries; ++i) {
        const int64_t count = num_tokens ? num_tokens[i] : 1;
        const int64_t offset = token_offsets ? token_offsets[i] : 0;
        const __int128 index = __int128(i) * t.stride_seq + (__int128(offset) + count - 1) * stride_token +
                               __int128(t.num_heads - 1) * t.stride_head + (t.head_dim - 1);
        last = std::max(last, index);
    }
    return last;
}

// ---------------------------------------------------------------------------
// append

bool CacheModel::plan_entry(const SeqLayerModel &s, int64_t tokens, bool prompt, bool has_queries,
                            Verdict *v, EntryPlan *plan) const {
    const rkv_cache_params &p = params_;
    const bool prompt_guard = (p.guards & RKV_GUARD_PROMPT) != 0;
    int64_t held = s.held, logical = s.logical;
    int32_t queries = s.queries_valid;
    const auto advance_queries = [&](int64_t count) {
        queries = has_queries ? int32_t(std::min<int64_t>(p.window, queries + count)) : 0;
    };
    plan->tail_start = s.logical;
    if (prompt && s.logical > s.prompt_len) {  // "prompt tokens after generated ones"
        v->error(RKV_ERR_BAD_STATE);
        return false;
    }
    if (p.method == RKV_METHOD_FULL) {
        // "With auto_compress = 0, or the FULL method, tokens that do not fit fail the
        // whole call with RKV_ERR_CAPACITY and nothing is appended."
        if (held + tokens > capacity_) {
            v->error(RKV_ERR_CAPACITY);
            return false;
        }
        // FULL with the prompt guard: whether the reserve bounds the prompt and
        // max_len the rest is the open decision; both answers pass.
        if (prompt_guard && prompt && s.prompt_len + tokens > p.max_prompt_len) v->tolerate(RKV_ERR_CAPACITY);
        if (prompt_guard && !prompt && capacity_ > p.max_len && held - s.prompt_len + tokens > p.max_len)
            v->tolerate(RKV_ERR_CAPACITY);
        plan->held = int32_t(held + tokens);
        advance_queries(tokens);
        plan->queries_valid = queries;
        return true;
    }
    if (prompt && prompt_guard) {
        // A guarded prompt is never evicted and has max_prompt_len slots reserved.
        if (s.prompt_len + tokens > p.max_prompt_len) {
            v->error(RKV_ERR_CAPACITY);
            return false;
        }
        plan->held = int32_t(held + tokens);
        advance_queries(tokens);
        plan->queries_valid = queries;
        return true;
    }
    const int64_t guarded = prompt_guard ? s.prompt_len : 0;
    const int64_t room_limit = guarded + s.budget + p.buffer;
    for (int64_t remaining = tokens; remaining > 0;) {
        if (held - guarded >= int64_t(s.budget) + p.buffer) {  // full: compress to the budget first
            if (!p.auto_compress) {
                v->error(RKV_ERR_CAPACITY);
                return false;
            }
            if (needs_window_queries() && queries < p.window) {
                v->error(RKV_ERR_MISSING_QUERIES);
                return false;
            }
            held = guarded + s.budget;
            plan->compressions += 1;
            plan->last_keep = int32_t(held);
            plan->tail_start = logical;
        }
        const int64_t count = std::min(remaining, room_limit - held);
        held += count;
        logical += count;
        advance_queries(count);
        remaining -= count;
    }
    plan->held = int32_t(held);
    plan->queries_valid = queries;
    return true;
}

Verdict CacheModel::append_verdict(const rkv_append_args *a, bool null_cache) const {
    Verdict v;
    if (null_cache || a == nullptr) {
        v.error(RKV_ERR_INVALID_ARGUMENT);
        return v;
    }
    const rkv_cache_params &p = params_;
    if (a->struct_size != sizeof(rkv_append_args)) {
        v.error(RKV_ERR_STRUCT_SIZE);
        return v;  // an unknown layout: nothing else can be read
    }
    bool plannable = true;
    if (a->layer < 0 || a->layer >= p.num_layers) {
        v.error(RKV_ERR_OUT_OF_RANGE);
        plannable = false;
    }
    if (a->num_seqs < 1) {
        v.error(RKV_ERR_INVALID_ARGUMENT);
        plannable = false;
    } else if (a->num_seqs > p.max_seqs) {
        // More entries than slots: some index repeats or lies outside.
        v.error(RKV_ERR_INVALID_ARGUMENT);
        v.error(RKV_ERR_OUT_OF_RANGE);
        plannable = false;
    }
    if (a->seq_ids == nullptr) {
        v.error(RKV_ERR_INVALID_ARGUMENT);
        plannable = false;
    }
    if (a->flags & ~uint32_t(RKV_APPEND_PROMPT)) {
        v.error(RKV_ERR_UNSUPPORTED);
        v.error(RKV_ERR_INVALID_ARGUMENT);
    }
    const int32_t entries = plannable ? a->num_seqs : 0;
    std::vector<uint8_t> seen(size_t(p.max_seqs), 0);
    bool counts_valid = true;
    for (int32_t i = 0; i < entries; ++i) {
        const int32_t seq = a->seq_ids[i];
        if (seq < 0 || seq >= p.max_seqs) {
            v.error(RKV_ERR_OUT_OF_RANGE);
            plannable = false;
        } else if (seen[size_t(seq)]++) {
            v.error(RKV_ERR_INVALID_ARGUMENT);  // "distinct sequence slots"
            plannable = false;
        }
        if (a->num_tokens && a->num_tokens[i] < 1) {
            v.error(RKV_ERR_INVALID_ARGUMENT);
            counts_valid = false;
        }
        if (a->token_offsets && a->token_offsets[i] < 0) {
            v.error(RKV_ERR_INVALID_ARGUMENT);
            counts_valid = false;
        } else if (a->token_offsets && a->num_tokens &&
                   __int128(a->token_offsets[i]) + a->num_tokens[i] - 1 > INT64_MAX) {
            v.error(RKV_ERR_OVERFLOW);  // the last token's index itself overflows
            v.error(RKV_ERR_INVALID_ARGUMENT);
        }
    }
    plannable = plannable && counts_valid;
    const auto check_tensor = [&](const rkv_tensor &t, int32_t heads, bool required) {
        if (t.data == nullptr) {
            if (required) v.error(RKV_ERR_INVALID_ARGUMENT);
            return;
        }
        if (int(t.dtype) < RKV_DTYPE_F32 || int(t.dtype) > RKV_DTYPE_BF16) {
            v.error(RKV_ERR_UNSUPPORTED);
            v.error(RKV_ERR_INVALID_ARGUMENT);
        }
        // Which check comes first is the library's choice: a mistake that also
        // makes the tensor reach past its extent may be reported as CAPACITY.
        const bool extent_given = t.extent != 0;
        if (t.num_heads != heads || t.head_dim != p.head_dim) {
            v.error(RKV_ERR_SHAPE_MISMATCH);
            if (extent_given) v.tolerate(RKV_ERR_CAPACITY);
            return;  // the extent below assumes the cache's shape
        }
        if (extent_given && (!counts_valid || a->num_seqs > p.max_seqs)) v.tolerate(RKV_ERR_CAPACITY);
        if (t.stride_seq < 0 || t.stride_token < 0 || t.stride_head < 0) {
            v.error(RKV_ERR_INVALID_ARGUMENT);  // "bad stride"
            v.tolerate(RKV_ERR_CAPACITY);       // an index below 0 is outside [0, extent) too
            return;
        }
        if (entries > 0 && counts_valid)
            extent_verdict(t, tensor_last_index(t, entries, a->num_tokens, a->token_offsets, true), &v);
    };
    check_tensor(a->k, p.num_kv_heads, true);
    check_tensor(a->v, p.num_kv_heads, true);
    check_tensor(a->q, p.num_q_heads, false);
    const bool has_queries = a->q.data != nullptr;
    if (p.method == RKV_METHOD_H2O && !has_queries) v.error(RKV_ERR_MISSING_QUERIES);  // "every query"

    if (plannable) {
        const bool prompt = (a->flags & RKV_APPEND_PROMPT) != 0;
        for (int32_t i = 0; i < entries; ++i) {
            EntryPlan plan;
            plan_entry(at(a->seq_ids[i], a->layer), a->num_tokens ? a->num_tokens[i] : 1, prompt,
                       has_queries, &v, &plan);
        }
    }
    return v;
}

void CacheModel::apply_append(const rkv_append_args &a) {
    const rkv_cache_params &p = params_;
    const bool prompt = (a.flags & RKV_APPEND_PROMPT) != 0;
    const bool has_queries = a.q.data != nullptr;
    const int32_t heads = p.num_kv_heads, d = p.head_dim;
    for (int32_t i = 0; i < a.num_seqs; ++i) {
        SeqLayerModel &s = at(a.seq_ids[i], a.layer);
        const int64_t tokens = a.num_tokens ? a.num_tokens[i] : 1;
        const int64_t offset = a.token_offsets ? a.token_offsets[i] : 0;
        Verdict ignored;
        EntryPlan plan;
        plan_entry(s, tokens, prompt, has_queries, &ignored, &plan);

        // The bits each new token must be stored with, read where the header says
        // the library reads it.
        const size_t row = size_t(heads) * d;
        const bool fp8 = p.dtype == RKV_DTYPE_FP8_E4M3;
        s.k_bits.resize(size_t(s.logical + tokens) * row);
        s.v_bits.resize(size_t(s.logical + tokens) * row);
        if (fp8) {
            s.k_scale.resize(size_t(s.logical + tokens) * heads);
            s.v_scale.resize(size_t(s.logical + tokens) * heads);
        }
        std::vector<float> k_row(static_cast<size_t>(d)), v_row(static_cast<size_t>(d));
        for (int64_t t = 0; t < tokens; ++t) {
            const size_t base = size_t(s.logical + t) * row;
            for (int32_t h = 0; h < heads; ++h) {
                const int64_t k_at = tensor_index(a.k, i, offset + t, h);
                const int64_t v_at = tensor_index(a.v, i, offset + t, h);
                uint32_t *k_bits = &s.k_bits[base + size_t(h) * d], *v_bits = &s.v_bits[base + size_t(h) * d];
                if (fp8) {  // a row is quantised whole: its scale depends on every element
                    for (int32_t e = 0; e < d; ++e) {
                        k_row[size_t(e)] = load(a.k.data, k_at + e, a.k.dtype);
                        v_row[size_t(e)] = load(a.v.data, v_at + e, a.v.dtype);
                    }
                    const size_t scale_at = size_t(s.logical + t) * heads + size_t(h);
                    s.k_scale[scale_at] = fp8_row(k_row.data(), d, k_bits);
                    s.v_scale[scale_at] = fp8_row(v_row.data(), d, v_bits);
                    continue;
                }
                for (int32_t e = 0; e < d; ++e) {
                    k_bits[e] = stored_bits(load_bits(a.k.data, k_at + e, a.k.dtype), a.k.dtype, p.dtype);
                    v_bits[e] = stored_bits(load_bits(a.v.data, v_at + e, a.v.dtype), a.v.dtype, p.dtype);
                }
            }
        }

        if (plan.compressions > 0) {
            PendingCompression pending;
            pending.before = s.kept;
            pending.logical_before = s.logical;
            pending.tail_start = plan.tail_start;
            pending.keep = plan.last_keep;
            s.pending = pending;
            s.compressions_min += uint64_t(plan.compressions);
            s.compressions_max += uint64_t(plan.compressions);
        } else {
            for (auto &list : s.kept)
                for (int64_t t = 0; t < tokens; ++t) list.push_back(int32_t(s.logical + t));
        }
        if (plan.compressions > 0) {
            s.since_compression_low = s.since_compression_high = s.logical + tokens - plan.tail_start;
        } else {
            s.since_compression_low += tokens;
            s.since_compression_high += tokens;
        }
        s.had_query.resize(size_t(s.logical + tokens), has_queries ? 1 : 0);
        s.logical += tokens;
        if (prompt) s.prompt_len += tokens;
        s.held = plan.held;
        s.queries_valid = plan.queries_valid;
    }
}

// ---------------------------------------------------------------------------
// compression, reset, parameters

int CacheModel::compress_job(const SeqLayerModel &s, bool only_due) const {
    if (params_.method == RKV_METHOD_FULL) return 0;
    if (only_due) return full(s) ? 1 : 0;  // RKV_ALL: "every sequence that is due"
    const int64_t generated = s.held - protected_prompt(s);
    if (generated > s.budget) return 1;  // "if it holds more than its budget"
    // "reference mode also reorders a cache of exactly the budget"
    if (params_.mode == RKV_MODE_REFERENCE && generated == s.budget) return 2;
    return 0;
}

Verdict CacheModel::compress_verdict(int32_t seq, int32_t layer, bool null_cache) const {
    Verdict v;
    if (null_cache) {
        v.error(RKV_ERR_INVALID_ARGUMENT);
        return v;
    }
    const rkv_cache_params &p = params_;
    bool in_range = true;
    if (seq != RKV_ALL && (seq < 0 || seq >= p.max_seqs)) in_range = false;
    if (layer != RKV_ALL && (layer < 0 || layer >= p.num_layers)) in_range = false;
    if (!in_range) {
        v.error(RKV_ERR_OUT_OF_RANGE);
        return v;
    }
    for (int32_t l = 0; l < p.num_layers; ++l) {
        if (layer != RKV_ALL && l != layer) continue;
        for (int32_t s = 0; s < p.max_seqs; ++s) {
            if (seq != RKV_ALL && s != seq) continue;
            const SeqLayerModel &st = at(s, l);
            if (compress_job(st, seq == RKV_ALL) && needs_window_queries() && st.queries_valid < p.window)
                v.error(RKV_ERR_MISSING_QUERIES);
        }
    }
    return v;
}

void CacheModel::apply_compress(int32_t seq, int32_t layer) {
    const rkv_cache_params &p = params_;
    for (int32_t l = 0; l < p.num_layers; ++l) {
        if (layer != RKV_ALL && l != layer) continue;
        for (int32_t s = 0; s < p.max_seqs; ++s) {
            if (seq != RKV_ALL && s != seq) continue;
            SeqLayerModel &st = at(s, l);
            const int job = compress_job(st, seq == RKV_ALL);
            if (!job) continue;
            PendingCompression pending;
            pending.before = st.kept;
            pending.logical_before = st.logical;
            pending.tail_start = st.logical;
            pending.reorder_only = job == 2;
            pending.keep = job == 2 ? st.held : int32_t(protected_prompt(st) + st.budget);
            st.pending = pending;
            st.held = pending.keep;
            st.since_compression_low = 0;
            if (job == 1) st.since_compression_high = 0;
            st.compressions_min += job == 1 ? 1 : 0;
            st.compressions_max += 1;
        }
    }
}

void CacheModel::apply_reset(int32_t seq) {
    for (int32_t s = 0; s < params_.max_seqs; ++s) {
        if (seq != RKV_ALL && s != seq) continue;
        for (int32_t l = 0; l < params_.num_layers; ++l) {
            SeqLayerModel &st = at(s, l);
            st = SeqLayerModel{};
            st.kept.assign(size_t(params_.num_kv_heads), {});
            // "A reset restores the cache's budget"; FULL's is its max_len.
            st.budget = params_.method == RKV_METHOD_FULL ? params_.max_len : params_.budget;
        }
    }
}

void CacheModel::apply_set_param(rkv_param param, double value) { set_param_value(&params_, param, value); }

bool CacheModel::empty(int32_t seq) const {
    for (int32_t l = 0; l < params_.num_layers; ++l)
        if (at(seq, l).logical > 0) return false;
    return true;
}

Verdict CacheModel::set_budget_verdict(int32_t seq, int32_t budget, bool null_cache) const {
    Verdict v;
    if (null_cache) {
        v.error(RKV_ERR_INVALID_ARGUMENT);
        return v;
    }
    if (seq < 0 || seq >= params_.max_seqs) v.error(RKV_ERR_OUT_OF_RANGE);
    if (params_.method == RKV_METHOD_FULL) {  // "FULL, which never evicts, has no budget"
        v.error(RKV_ERR_UNSUPPORTED);
        return v;
    }
    // "> window, and >= sink + window where sinks are kept ... up to the cache's budget"
    const int64_t lowest = std::max<int64_t>(params_.window + 1, sink_protected() ? int64_t(params_.sink) + params_.window : 0);
    if (budget < lowest || budget > params_.budget) v.error(RKV_ERR_OUT_OF_RANGE);
    if (seq >= 0 && seq < params_.max_seqs && !empty(seq)) v.error(RKV_ERR_BAD_STATE);  // "while the sequence is empty"
    return v;
}

void CacheModel::apply_set_budget(int32_t seq, int32_t budget) {
    for (int32_t l = 0; l < params_.num_layers; ++l) at(seq, l).budget = budget;
}

Verdict CacheModel::copy_verdict(int32_t src, int32_t dst, bool null_cache) const {
    Verdict v;
    if (null_cache) {
        v.error(RKV_ERR_INVALID_ARGUMENT);
        return v;
    }
    const bool src_in = src >= 0 && src < params_.max_seqs, dst_in = dst >= 0 && dst < params_.max_seqs;
    if (!src_in || !dst_in) v.error(RKV_ERR_OUT_OF_RANGE);
    if (src == dst) v.error(RKV_ERR_INVALID_ARGUMENT);  // "dst ... must differ from src"
    else if (dst_in && !empty(dst)) v.error(RKV_ERR_BAD_STATE);  // "dst must be empty"
    return v;
}

int64_t CacheModel::rollback_bound_low(int32_t seq) const {
    int64_t bound = INT64_MAX;
    for (int32_t l = 0; l < params_.num_layers; ++l) bound = std::min(bound, at(seq, l).since_compression_low);
    return bound;
}

int64_t CacheModel::rollback_bound_high(int32_t seq) const {
    int64_t bound = INT64_MAX;
    for (int32_t l = 0; l < params_.num_layers; ++l) bound = std::min(bound, at(seq, l).since_compression_high);
    return bound;
}

void CacheModel::apply_truncate(int32_t seq, int32_t tokens) {
    for (int32_t l = 0; l < params_.num_layers; ++l) {
        SeqLayerModel &s = at(seq, l);
        // The removed tokens came after the last compression, so every head holds
        // them; the others stay where they are.
        s.logical -= tokens;
        s.held -= tokens;
        for (std::vector<int32_t> &list : s.kept)
            list.erase(std::remove_if(list.begin(), list.end(), [&](int32_t pos) { return pos >= s.logical; }),
                       list.end());
        s.prompt_len = std::min(s.prompt_len, s.logical);
        s.since_compression_low -= tokens;
        s.since_compression_high -= tokens;
        const size_t row = size_t(params_.num_kv_heads) * params_.head_dim;
        s.k_bits.resize(size_t(s.logical) * row);
        s.v_bits.resize(size_t(s.logical) * row);
        if (!s.k_scale.empty()) {
            s.k_scale.resize(size_t(s.logical) * params_.num_kv_heads);
            s.v_scale.resize(size_t(s.logical) * params_.num_kv_heads);
        }
        // "the query window ... bit for bit as if the removed tokens had never
        // come": the window holds the queries of the last tokens that had them;
        // except after rolling back over a token appended without queries, when
        // it counts as empty (rkv.h: the queries before it are not on record).
        // The queries of the kept tokens are then off the record for good: a
        // later rollback does not bring them back either.
        const bool removed_unqueried =
            std::find(s.had_query.begin() + s.logical, s.had_query.end(), 0) != s.had_query.end();
        s.had_query.resize(size_t(s.logical));
        if (removed_unqueried) std::fill(s.had_query.begin(), s.had_query.end(), 0);
        int32_t run = 0;
        for (int64_t pos = s.logical - 1; pos >= 0 && run < params_.window && s.had_query[size_t(pos)]; --pos) ++run;
        s.queries_valid = run;
    }
}

void CacheModel::apply_copy(int32_t src, int32_t dst) {
    // "the whole state of sequence src": every layer's tokens, lengths, prompt,
    // queries, schedule, compression count and budget.
    for (int32_t l = 0; l < params_.num_layers; ++l) at(dst, l) = at(src, l);
}

}  // namespace fuzz
