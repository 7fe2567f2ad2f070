#include "cache.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/method.h"
#include "dtype.h"
#include "error.h"

namespace rkv {

namespace {

// a*b + c with overflow detection on int64.
bool mul_add_overflows(int64_t a, int64_t b, int64_t c, int64_t *out) {
    int64_t product;
    return __builtin_mul_overflow(a, b, &product) || __builtin_add_overflow(product, c, out);
}

}  // namespace

MemoryPlan Cache::plan(const rkv_cache_params &params, const char *function) {
    params_validate(params, function);
    backend_check_device(params, function);
    MemoryPlan plan = memory_layout(params, function);
    plan.scratch_bytes = backend_scratch_bytes(params, plan);
    plan.host_bytes = host_bytes(params, function);
    return plan;
}

uint64_t Cache::host_bytes(const rkv_cache_params &p, const char *function) {
    const uint64_t seqs = uint64_t(p.max_seqs);
    const uint64_t per_call = sizeof(AppendChunk) + sizeof(CompressJob) + sizeof(EntryPlan) + sizeof(int32_t) +
                              sizeof(uint8_t);  // chunks_, jobs_, plans_, held_, seen_
    const uint64_t states = checked_mul(checked_mul(uint64_t(p.num_layers), seqs, function),
                                        sizeof(SeqLayerState), function);
    return checked_add(sizeof(Cache) + states, checked_mul(seqs, per_call, function), function);
}

Cache::Cache(const rkv_cache_params &params, const MemoryPlan &plan, uint64_t bytes)
    : params_(params),
      rules_(schedule_rules(params, plan.capacity)),
      live_(live_params(params)),
      plan_(plan),
      bytes_allocated_(bytes) {
    states_.resize(size_t(params_.num_layers) * params_.max_seqs);
    backend_ = make_backend(params_, plan_);
    chunks_.reserve(size_t(params_.max_seqs));
    jobs_.reserve(size_t(params_.max_seqs));
    plans_.resize(size_t(params_.max_seqs));
    seen_.resize(size_t(params_.max_seqs));
    held_.resize(size_t(params_.max_seqs));
    const uint64_t held_bytes = sizeof(Cache) + states_.capacity() * sizeof(SeqLayerState) +
                                chunks_.capacity() * sizeof(AppendChunk) + jobs_.capacity() * sizeof(CompressJob) +
                                plans_.capacity() * sizeof(EntryPlan) + held_.capacity() * sizeof(int32_t) +
                                seen_.capacity() * sizeof(uint8_t);
    if (held_bytes != plan_.host_bytes)
        fail(RKV_ERR_INTERNAL, "rkv_cache_create: the host bookkeeping is %llu bytes, rkv_cache_size counts %llu",
             (unsigned long long)held_bytes, (unsigned long long)plan_.host_bytes);
}

Cache::~Cache() = default;

void Cache::check_usable(const char *function) const {
    if (faulted_)
        fail(RKV_ERR_FAULTED,
             "%s: this cache is unusable after an earlier fault (%s); destroy it and create a "
             "new one",
             function, fault_message_.c_str());
}

void Cache::mark_faulted(const char *message) {
    faulted_ = true;
    fault_message_ = message;
}

void Cache::check_seq(int32_t seq, bool allow_all, const char *function) const {
    if (allow_all && seq == RKV_ALL) return;
    if (seq < 0 || seq >= params_.max_seqs)
        fail(RKV_ERR_OUT_OF_RANGE, "%s: sequence %d is outside 0 .. %d (max_seqs = %d)%s",
             function, seq, params_.max_seqs - 1, params_.max_seqs,
             allow_all ? " and is not RKV_ALL" : "");
}

void Cache::check_layer(int32_t layer, bool allow_all, const char *function) const {
    if (allow_all && layer == RKV_ALL) return;
    if (layer < 0 || layer >= params_.num_layers)
        fail(RKV_ERR_OUT_OF_RANGE, "%s: layer %d is outside 0 .. %d (num_layers = %d)%s",
             function, layer, params_.num_layers - 1, params_.num_layers,
             allow_all ? " and is not RKV_ALL" : "");
}

// ---------------------------------------------------------------------------
// append

void Cache::check_tensor(const rkv_tensor &t, const char *name, int32_t heads, bool required,
                         const rkv_append_args *args, int64_t max_tokens,
                         const char *function) const {
    if (!required && t.data == nullptr) return;
    if (t.data == nullptr) fail(RKV_ERR_INVALID_ARGUMENT, "%s: %s.data is NULL", function, name);
    backend_->check_memory(t.data, name, function);
    if (!dtype_is_valid(t.dtype))
        fail(RKV_ERR_UNSUPPORTED, "%s: %s.dtype = %d is not an rkv_dtype (F32, F16, BF16)",
             function, name, int(t.dtype));
    if (t.num_heads != heads)
        fail(RKV_ERR_SHAPE_MISMATCH, "%s: %s.num_heads is %d but the cache has %d", function,
             name, t.num_heads, heads);
    if (t.head_dim != params_.head_dim)
        fail(RKV_ERR_SHAPE_MISMATCH, "%s: %s.head_dim is %d but the cache has head_dim %d",
             function, name, t.head_dim, params_.head_dim);
    // One-token tensors (attend: args == nullptr) never step along stride_token.
    const int64_t stride_token = args ? t.stride_token : 0;
    if (t.stride_seq < 0 || stride_token < 0 || t.stride_head < 0)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: %s has a negative stride (seq %lld, token %lld, head %lld)",
             function, name, (long long)t.stride_seq, (long long)t.stride_token,
             (long long)t.stride_head);
    // The largest element index any entry touches must fit in int64.
    const int32_t entries = args ? args->num_seqs : int32_t(max_tokens);
    for (int32_t i = 0; i < entries; ++i) {
        int64_t last_token = 0;
        if (args) {
            const int64_t offset = args->token_offsets ? args->token_offsets[i] : 0;
            const int64_t count = args->num_tokens ? args->num_tokens[i] : 1;
            if (__builtin_add_overflow(offset, count - 1, &last_token))
                fail(RKV_ERR_OVERFLOW, "%s: token_offsets[%d] + num_tokens[%d] overflows", function, i, i);
        }
        int64_t index;
        if (mul_add_overflows(i, t.stride_seq, 0, &index) ||
            mul_add_overflows(last_token, stride_token, index, &index) ||
            mul_add_overflows(heads - 1, t.stride_head, index, &index) ||
            __builtin_add_overflow(index, int64_t(params_.head_dim - 1), &index) ||
            index > std::numeric_limits<int64_t>::max() / 4)
            fail(RKV_ERR_OVERFLOW, "%s: the element offsets of %s (entry %d) overflow 64 bits: "
                                   "check the strides", function, name, i);
    }
}

void Cache::validate_append(const rkv_append_args &a, const AppendCall &call) {
    static const char *fn = "rkv_append";
    check_layer(a.layer, false, fn);
    if (a.num_seqs < 1 || a.num_seqs > params_.max_seqs)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: num_seqs is %d; it must be 1 .. %d (max_seqs)", fn,
             a.num_seqs, params_.max_seqs);
    require_non_null(a.seq_ids, fn, "args->seq_ids");
    if (a.flags & ~uint32_t(RKV_APPEND_PROMPT))
        fail(RKV_ERR_UNSUPPORTED, "%s: unknown bits in flags (0x%x); known: RKV_APPEND_PROMPT",
             fn, unsigned(a.flags));
    std::fill(seen_.begin(), seen_.end(), 0);
    for (int32_t i = 0; i < a.num_seqs; ++i) {
        const int32_t seq = a.seq_ids[i];
        check_seq(seq, false, fn);
        if (seen_[seq]) fail(RKV_ERR_INVALID_ARGUMENT, "%s: sequence %d appears twice in seq_ids; "
                                                       "append its tokens as one entry", fn, seq);
        seen_[seq] = 1;
        if (a.num_tokens && a.num_tokens[i] < 1)
            fail(RKV_ERR_INVALID_ARGUMENT, "%s: num_tokens[%d] is %d; every entry needs >= 1 token",
                 fn, i, a.num_tokens[i]);
        if (a.token_offsets && a.token_offsets[i] < 0)
            fail(RKV_ERR_INVALID_ARGUMENT, "%s: token_offsets[%d] is negative (%lld)", fn, i,
                 (long long)a.token_offsets[i]);
    }
    check_tensor(a.k, "args->k", params_.num_kv_heads, true, &a, 0, fn);
    check_tensor(a.v, "args->v", params_.num_kv_heads, true, &a, 0, fn);
    check_tensor(a.q, "args->q", params_.num_q_heads, false, &a, 0, fn);
    check_append_call(call, rules_, fn);
    for (int32_t i = 0; i < a.num_seqs; ++i) {
        const int64_t tokens = a.num_tokens ? a.num_tokens[i] : 1;
        plans_[i] = plan_entry(i, a.seq_ids[i], tokens, state(a.layer, a.seq_ids[i]), call, rules_, fn);
    }
}

void Cache::append(const rkv_append_args &a, void *stream) {
    static const char *fn = "rkv_append";
    check_struct_size(a.struct_size, sizeof(rkv_append_args), fn, "rkv_append_args");
    const AppendCall call{a.layer, (a.flags & RKV_APPEND_PROMPT) != 0, a.q.data != nullptr};
    validate_append(a, call);
    // Phase k compresses the entries whose plan compresses before chunk k, then
    // appends chunk k of every entry that has one. A decode step is one phase.
    int64_t phases = 0;
    for (int32_t i = 0; i < a.num_seqs; ++i) phases = std::max(phases, plans_[i].chunks());
    for (int64_t k = 0; k < phases; ++k) {
        jobs_.clear();
        for (int32_t i = 0; i < a.num_seqs; ++i) {
            const EntryPlan &plan = plans_[i];
            if (k >= plan.chunks() || !plan.compresses_before(k)) continue;
            CompressJob job{};
            if (!plan_compression(plan.seq, state(a.layer, plan.seq), rules_, &job))
                fail(RKV_ERR_INTERNAL, "%s: sequence %d has no compression where its plan has one", fn, plan.seq);
            jobs_.push_back(job);
        }
        run_jobs(a.layer, stream);

        chunks_.clear();
        for (int32_t i = 0; i < a.num_seqs; ++i) {
            const EntryPlan &plan = plans_[i];
            if (k >= plan.chunks()) continue;
            const SeqLayerState &s = state(a.layer, plan.seq);
            const int32_t count = plan.chunk_tokens(k);
            if (int64_t(s.held) + count > plan_.capacity)
                fail(RKV_ERR_INTERNAL, "%s: a chunk of %d tokens does not fit sequence %d", fn, count, plan.seq);
            chunks_.push_back(AppendChunk{plan.seq, i, plan.chunk_start(k), count, s.held, s.logical});
        }
        backend_->append(a.layer, a, chunks_.data(), int32_t(chunks_.size()), live_, stream);
        for (const AppendChunk &c : chunks_) {
            SeqLayerState &s = state(a.layer, c.seq);
            s = after_append(s, c.count, call.prompt, call.has_queries, params_.window);
            backend_->set_length(a.layer, c.seq, s.held, stream);
        }
    }
}

// ---------------------------------------------------------------------------
// compression

void Cache::run_jobs(int32_t layer, void *stream) {
    if (jobs_.empty()) return;
    const auto start = std::chrono::steady_clock::now();
    backend_->compress(layer, jobs_.data(), int32_t(jobs_.size()), live_, stream);
    for (const CompressJob &job : jobs_) {
        SeqLayerState &s = state(layer, job.seq);
        s = after_compression(s, job);
        backend_->set_length(layer, job.seq, s.held, stream);
    }
    compress_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void Cache::compress(int32_t seq, int32_t layer, void *stream) {
    static const char *fn = "rkv_compress";
    check_seq(seq, true, fn);
    check_layer(layer, true, fn);
    const int32_t first_layer = layer == RKV_ALL ? 0 : layer;
    const int32_t last_layer = layer == RKV_ALL ? params_.num_layers - 1 : layer;
    const int32_t first_seq = seq == RKV_ALL ? 0 : seq;
    const int32_t last_seq = seq == RKV_ALL ? params_.max_seqs - 1 : seq;
    // Check every job before running any, so a missing query changes nothing.
    for (int pass = 0; pass < 2; ++pass) {
        for (int32_t l = first_layer; l <= last_layer; ++l) {
            jobs_.clear();
            for (int32_t s = first_seq; s <= last_seq; ++s) {
                const SeqLayerState &st = state(l, s);
                CompressJob job{};
                if (seq == RKV_ALL && !is_full(st, rules_)) continue;
                if (!plan_compression(s, st, rules_, &job)) continue;
                if (pass == 0 && rules_.method.queries == QueryNeed::Window &&
                    st.queries_valid < params_.window)
                    fail(RKV_ERR_MISSING_QUERIES,
                         "%s: sequence %d, layer %d: %s needs the queries of the last %d tokens, "
                         "but only %d were appended with queries: pass rkv_append_args.q",
                         fn, s, l, rules_.method.name, params_.window, st.queries_valid);
                jobs_.push_back(job);
            }
            if (pass == 1) run_jobs(l, stream);
        }
    }
}

int32_t Cache::compress_due(int32_t seq, int32_t layer) const {
    const int32_t first_layer = layer == RKV_ALL ? 0 : layer;
    const int32_t last_layer = layer == RKV_ALL ? params_.num_layers - 1 : layer;
    const int32_t first_seq = seq == RKV_ALL ? 0 : seq;
    const int32_t last_seq = seq == RKV_ALL ? params_.max_seqs - 1 : seq;
    if (!rules_.method.evicts()) return 0;
    for (int32_t l = first_layer; l <= last_layer; ++l)
        for (int32_t s = first_seq; s <= last_seq; ++s)
            if (is_full(state(l, s), rules_)) return 1;
    return 0;
}

void Cache::reset(int32_t seq, void *stream) {
    const int32_t first_seq = seq == RKV_ALL ? 0 : seq;
    const int32_t last_seq = seq == RKV_ALL ? params_.max_seqs - 1 : seq;
    for (int32_t s = first_seq; s <= last_seq; ++s) {
        backend_->clear_sequence(s, stream);
        for (int32_t l = 0; l < params_.num_layers; ++l) {
            state(l, s) = SeqLayerState{};
            backend_->set_length(l, s, 0, stream);
        }
    }
}

void Cache::set_param(rkv_param param, double value) {
    static const char *fn = "rkv_cache_set_param";
    if (!param_is_live(param, fn)) {
        rkv_cache_params probe = params_;
        param_set(&probe, param, value, fn);  // bad values first
        fail(RKV_ERR_BAD_STATE, "%s: parameter %d sizes memory or defines stored state and "
             "cannot change after create; create a new cache", fn, int(param));
    }
    rkv_cache_params updated = params_;
    param_set(&updated, param, value, fn);
    params_validate(updated, fn);
    params_ = updated;
    rules_ = schedule_rules(params_, plan_.capacity);
    live_ = live_params(params_);
}

// ---------------------------------------------------------------------------
// views and inspection

void Cache::view(int32_t seq, int32_t layer, rkv_kv_view *v) const {
    // One sequence of the layer view.
    rkv_layer_view all{};
    view_layer(layer, &all);
    const int64_t elem = int64_t(dtype_size(params_.dtype));
    v->k = static_cast<char *>(all.k) + seq * all.stride_seq * elem;
    v->v = static_cast<char *>(all.v) + seq * all.stride_seq * elem;
    v->positions = all.positions + seq * all.positions_stride_seq;
    v->dtype = all.dtype;
    v->device_type = all.device_type;
    v->device_id = all.device_id;
    v->num_kv_heads = all.num_kv_heads;
    v->head_dim = all.head_dim;
    v->length = state(layer, seq).held;
    v->logical_length = state(layer, seq).logical;
    v->stride_head = all.stride_head;
    v->stride_token = all.stride_token;
    v->positions_stride_head = all.positions_stride_head;
}

void Cache::view_layer(int32_t layer, rkv_layer_view *v) const {
    const int64_t cap = plan_.capacity, d = params_.head_dim;
    const int64_t slot0 = int64_t(layer) * params_.max_seqs * params_.num_kv_heads * cap;
    const size_t elem = dtype_size(params_.dtype);
    v->k = static_cast<char *>(backend_->keys()) + slot0 * d * elem;
    v->v = static_cast<char *>(backend_->values()) + slot0 * d * elem;
    v->positions = backend_->positions() + slot0;
    v->lengths = backend_->lengths() + int64_t(layer) * params_.max_seqs;
    v->dtype = params_.dtype;
    v->device_type = params_.device_type;
    v->device_id = params_.device_id;
    v->max_seqs = params_.max_seqs;
    v->num_kv_heads = params_.num_kv_heads;
    v->head_dim = params_.head_dim;
    v->capacity = plan_.capacity;
    v->stride_seq = params_.num_kv_heads * cap * d;
    v->stride_head = cap * d;
    v->stride_token = d;
    v->positions_stride_seq = params_.num_kv_heads * cap;
    v->positions_stride_head = cap;
}

void Cache::seq_length(int32_t seq, int32_t layer, int64_t *logical, int32_t *physical) const {
    const SeqLayerState &s = state(layer, seq);
    if (logical) *logical = s.logical;
    if (physical) *physical = s.held;
}

void Cache::kept_positions(int32_t seq, int32_t layer, int32_t head, int32_t *out,
                           int32_t out_len, int32_t *count) const {
    static const char *fn = "rkv_kept_positions";
    const SeqLayerState &s = state(layer, seq);
    if (out && out_len < s.held)
        fail(RKV_ERR_CAPACITY, "%s: out_len is %d but sequence %d, layer %d holds %d tokens; pass "
             "a larger buffer (or out = NULL to ask for the count)", fn, out_len, seq, layer, s.held);
    if (out && s.held > 0) backend_->copy_positions(layer, seq, head, s.held, out);
    *count = s.held;
}

void Cache::stats(int32_t seq, rkv_stats *st) const {
    const int32_t first_seq = seq == RKV_ALL ? 0 : seq;
    const int32_t last_seq = seq == RKV_ALL ? params_.max_seqs - 1 : seq;
    const uint64_t token_bytes = uint64_t(params_.num_kv_heads) * params_.head_dim *
                                 dtype_size(params_.dtype) * 2;  // K and V, all heads
    rkv_stats out{};
    out.struct_size = sizeof(rkv_stats);
    out.bytes_allocated = bytes_allocated_;
    for (int32_t l = 0; l < params_.num_layers; ++l) {
        for (int32_t s = first_seq; s <= last_seq; ++s) {
            const SeqLayerState &x = state(l, s);
            out.bytes_kv_capacity += token_bytes * uint64_t(plan_.capacity);
            out.bytes_kv_held += token_bytes * uint64_t(x.held);
            out.bytes_kv_full += token_bytes * uint64_t(x.logical);
            out.tokens_appended += uint64_t(x.logical);
            out.tokens_held += uint64_t(x.held);
            out.tokens_evicted += x.evicted;
            out.compressions += x.compressions;
        }
    }
    out.compress_seconds = compress_seconds_;
    *st = out;
}

void Cache::attend(int32_t layer, int32_t num_seqs, const int32_t *seq_ids, const rkv_tensor &q,
                   const rkv_tensor &out, float scale, void *stream) {
    static const char *fn = "rkv_attend";
    check_layer(layer, false, fn);
    if (num_seqs < 1 || num_seqs > params_.max_seqs)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: num_seqs is %d; it must be 1 .. %d (max_seqs)", fn,
             num_seqs, params_.max_seqs);
    require_non_null(seq_ids, fn, "seq_ids");
    for (int32_t i = 0; i < num_seqs; ++i) {
        check_seq(seq_ids[i], false, fn);
        if (state(layer, seq_ids[i]).held == 0)
            fail(RKV_ERR_BAD_STATE, "%s: sequence %d holds no tokens at layer %d: append the "
                 "token's K/V before attending", fn, seq_ids[i], layer);
    }
    check_tensor(q, "q", params_.num_q_heads, true, nullptr, num_seqs, fn);
    check_tensor(out, "out", params_.num_q_heads, true, nullptr, num_seqs, fn);
    if (std::isnan(scale)) fail(RKV_ERR_INVALID_ARGUMENT, "%s: scale is NaN", fn);
    if (scale <= 0.0f) scale = 1.0f / std::sqrt(float(params_.head_dim));
    for (int32_t i = 0; i < num_seqs; ++i) held_.data()[i] = state(layer, seq_ids[i]).held;
    backend_->attend(layer, num_seqs, seq_ids, held_.data(), q, out, scale, stream);
}

void Cache::inspect_scores(int32_t seq, int32_t layer, int32_t head, int32_t kind, float *out,
                           int32_t out_len, int32_t *count) const {
    static const char *fn = "rkv_inspect_scores";
    if (head < 0 || head >= params_.num_kv_heads)
        fail(RKV_ERR_OUT_OF_RANGE, "%s: head %d is outside 0 .. %d", fn, head, params_.num_kv_heads - 1);
    if (kind < RKV_SCORE_IMPORTANCE || kind > RKV_SCORE_FINAL)
        fail(RKV_ERR_UNSUPPORTED, "%s: score kind %d is not an rkv_score_kind", fn, kind);
    const MethodInfo method = method_info(params_.method);
    if ((method.scores & score_bit(rkv_score_kind(kind))) == 0)
        fail(RKV_ERR_UNSUPPORTED, "%s: method %s does not compute score kind %d", fn, method.name, kind);
    const SeqLayerState &s = state(layer, seq);
    if (s.held <= params_.window)
        fail(RKV_ERR_BAD_STATE, "%s: sequence %d, layer %d holds %d tokens; scores need more than "
             "the window (%d)", fn, seq, layer, s.held, params_.window);
    if (method.queries == QueryNeed::Window && s.queries_valid < params_.window)
        fail(RKV_ERR_MISSING_QUERIES, "%s: only %d of the last %d tokens were appended with queries",
             fn, s.queries_valid, params_.window);
    const int32_t candidates = s.held - params_.window;
    if (out_len < candidates)
        fail(RKV_ERR_CAPACITY, "%s: out_len is %d but there are %d candidates", fn, out_len, candidates);
    CompressJob job{seq, s.held, s.held, 0, s.compressions};
    backend_->inspect_scores(layer, job, head, rkv_score_kind(kind), live_, out);
    *count = candidates;
}

// ---------------------------------------------------------------------------
// CUDA graphs

void Cache::sync_lengths(void *stream) {
    DeviceCounts device{};
    if (!backend_->read_device_counts(&device, stream)) return;
    int64_t dropped = 0;
    int32_t dropped_seq = -1, dropped_layer = -1;
    for (int32_t l = 0; l < params_.num_layers; ++l) {
        for (int32_t seq = 0; seq < params_.max_seqs; ++seq) {
            SeqLayerState &s = state(l, seq);
            const size_t i = size_t(l) * params_.max_seqs + seq;
            // Tokens that arrived minus the change in held ones were evicted (the
            // difference can be negative when a capture recorded work that never ran).
            const int64_t evicted = (int64_t(device.logical[i]) - s.logical) - (int64_t(device.held[i]) - s.held);
            s.evicted = uint64_t(std::max<int64_t>(0, int64_t(s.evicted) + evicted));
            s.held = device.held[i];
            s.logical = device.logical[i];
            s.queries_valid = device.queries_valid[i];
            s.compressions = uint64_t(device.compressions[i]);
            if (device.dropped[i] > 0 && dropped_seq < 0) {
                dropped_seq = seq;
                dropped_layer = l;
            }
            dropped += device.dropped[i];
        }
    }
    if (dropped > 0) {
        char message[256];
        std::snprintf(message, sizeof message,
                      "replayed appends found no room for %lld tokens (first: sequence %d, layer %d) and "
                      "dropped them; compress before a sequence is full", (long long)dropped, dropped_seq,
                      dropped_layer);
        mark_faulted(message);
        fail(RKV_ERR_CAPACITY, "rkv_sync_lengths: %s", message);
    }
}

void Cache::set_matmul_path(int32_t path) { backend_->set_matmul_path(path); }

}  // namespace rkv
