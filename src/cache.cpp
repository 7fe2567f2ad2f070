#include "cache.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>

#include "core/method.h"
#include "abi.h"
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
    const uint64_t per_call = sizeof(AppendChunk) + sizeof(EntryPlan) + sizeof(uint8_t);  // chunks_, plans_, seen_
    // states_ and jobs_ (a compression of every layer plans one job per (layer, seq))
    const uint64_t states = checked_mul(checked_mul(uint64_t(p.num_layers), seqs, function),
                                        sizeof(SeqLayerState) + sizeof(CompressJob), function);
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
    jobs_.reserve(states_.size());
    plans_.resize(size_t(params_.max_seqs));
    seen_.resize(size_t(params_.max_seqs));
    const uint64_t held_bytes = sizeof(Cache) + states_.capacity() * sizeof(SeqLayerState) +
                                chunks_.capacity() * sizeof(AppendChunk) + jobs_.capacity() * sizeof(CompressJob) +
                                plans_.capacity() * sizeof(EntryPlan) + seen_.capacity() * sizeof(uint8_t);
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

void Cache::check_tensor(const rkv_tensor &t, const char *name, int32_t heads, bool required, const TensorUse &use,
                         const char *function) const {
    if (!required && t.data == nullptr) return;
    if (t.data == nullptr) fail(RKV_ERR_INVALID_ARGUMENT, "%s: %s.data is NULL", function, name);
    backend_->check_memory(t.data, name, function);
    if (t.dtype == RKV_DTYPE_FP8_E4M3)
        fail(RKV_ERR_UNSUPPORTED, "%s: %s.dtype is FP8_E4M3, a storage dtype only: pass F32, F16 or BF16 "
             "tensors (an FP8 cache quantises them itself)", function, name);
    if (!tensor_dtype_is_valid(t.dtype))
        fail(RKV_ERR_UNSUPPORTED, "%s: %s.dtype = %d is not an rkv_dtype (F32, F16, BF16)",
             function, name, int(t.dtype));
    if (t.num_heads != heads)
        fail(RKV_ERR_SHAPE_MISMATCH, "%s: %s.num_heads is %d but the cache has %d", function,
             name, t.num_heads, heads);
    if (t.head_dim != params_.head_dim)
        fail(RKV_ERR_SHAPE_MISMATCH, "%s: %s.head_dim is %d but the cache has head_dim %d",
             function, name, t.head_dim, params_.head_dim);
    // One-token tensors (attend) never step along stride_token.
    const int64_t stride_token = use.tokens ? t.stride_token : 0;
    if (t.stride_seq < 0 || stride_token < 0 || t.stride_head < 0)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: %s has a negative stride (seq %lld, token %lld, head %lld)",
             function, name, (long long)t.stride_seq, (long long)t.stride_token,
             (long long)t.stride_head);
    if (t.extent < 0)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: %s.extent is %lld; it counts elements (0 = unchecked)", function,
             name, (long long)t.extent);
    // The largest element index any entry touches must fit in int64 (and in
    // the extent, when the caller gave one).
    int64_t largest = 0;
    int32_t largest_entry = 0;
    for (int32_t i = 0; i < use.entries; ++i) {
        int64_t last_token = 0;
        if (use.tokens) {
            const int64_t offset = use.token_offsets ? use.token_offsets[i] : 0;
            const int64_t count = use.num_tokens ? use.num_tokens[i] : 1;
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
        if (index > largest) {
            largest = index;
            largest_entry = i;
        }
    }
    if (t.extent > 0 && largest >= t.extent)
        fail(RKV_ERR_CAPACITY, "%s: %s.extent is %lld elements but the call touches element %lld (entry %d): "
             "check the strides, token counts and offsets, or the buffer is too small", function, name,
             (long long)t.extent, (long long)largest, largest_entry);
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
    const TensorUse use{a.num_seqs, a.num_tokens, a.token_offsets, true};
    check_tensor(a.k, "args->k", params_.num_kv_heads, true, use, fn);
    check_tensor(a.v, "args->v", params_.num_kv_heads, true, use, fn);
    check_tensor(a.q, "args->q", params_.num_q_heads, false, use, fn);
    check_append_call(call, rules_, fn);
    for (int32_t i = 0; i < a.num_seqs; ++i) {
        const int64_t tokens = a.num_tokens ? a.num_tokens[i] : 1;
        plans_[i] = plan_entry(i, a.seq_ids[i], tokens, state(a.layer, a.seq_ids[i]), call, rules_, fn);
    }
}

void Cache::append(const rkv_append_args &a, void *stream) {
    static const char *fn = "rkv_append";
    if (a.batch) {
        append_batch(a, stream);
        return;
    }
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
            job.layer = a.layer;
            jobs_.push_back(job);
        }
        run_jobs(stream);

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
            s = after_append(s, c.count, call.prompt, call.has_queries, rules_);
        }
    }
}

void Cache::append_batch(const rkv_append_args &a, void *stream) {
    static const char *fn = "rkv_append";
    const Batch &batch = *a.batch;
    if (&batch.cache() != this)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: args->batch belongs to another cache", fn);
    check_layer(a.layer, false, fn);
    if (a.num_seqs != batch.entries())
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: num_seqs is %d but the batch has %d entries: a batch append "
             "takes one token for every entry (padding included)", fn, a.num_seqs, batch.entries());
    if (a.seq_ids || a.num_tokens || a.token_offsets)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: with a batch, seq_ids, num_tokens and token_offsets must be NULL "
             "(the batch names the sequences, one token each)", fn);
    if (a.flags & ~uint32_t(RKV_APPEND_PROMPT))
        fail(RKV_ERR_UNSUPPORTED, "%s: unknown bits in flags (0x%x); known: RKV_APPEND_PROMPT",
             fn, unsigned(a.flags));
    if (a.flags & RKV_APPEND_PROMPT)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: RKV_APPEND_PROMPT with a batch: append prompts with seq_ids", fn);
    if (rules_.method.keeps_queries() && a.q.data == nullptr)
        fail(RKV_ERR_MISSING_QUERIES, "%s: %s keeps queries: a batch append needs args->q (rkv_batch_advance "
             "counts every step as one with queries)", fn, rules_.method.name);
    const TensorUse use{batch.entries(), nullptr, nullptr, true};
    check_tensor(a.k, "args->k", params_.num_kv_heads, true, use, fn);
    check_tensor(a.v, "args->v", params_.num_kv_heads, true, use, fn);
    check_tensor(a.q, "args->q", params_.num_q_heads, false, use, fn);
    backend_->append_batch(a.layer, a, batch.ids(), batch.entries(), live_, stream);
}

// ---------------------------------------------------------------------------
// compression

void Cache::run_jobs(void *stream) {
    if (jobs_.empty()) return;
    const auto start = std::chrono::steady_clock::now();
    backend_->compress(jobs_.data(), int32_t(jobs_.size()), live_, stream);
    for (const CompressJob &job : jobs_) {
        SeqLayerState &s = state(job.layer, job.seq);
        s = after_compression(s, job);
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
    // Every job is planned and checked before any runs, so a missing query
    // changes nothing; then the jobs of all layers go to the backend at once.
    jobs_.clear();
    for (int32_t l = first_layer; l <= last_layer; ++l) {
        for (int32_t s = first_seq; s <= last_seq; ++s) {
            const SeqLayerState &st = state(l, s);
            CompressJob job{};
            if (seq == RKV_ALL && !is_full(st, rules_)) continue;
            if (!plan_compression(s, st, rules_, &job)) continue;
            if (rules_.method.queries == QueryNeed::Window && st.queries_valid < params_.window)
                fail(RKV_ERR_MISSING_QUERIES,
                     "%s: sequence %d, layer %d: %s needs the queries of the last %d tokens, "
                     "but only %d were appended with queries: pass rkv_append_args.q",
                     fn, s, l, rules_.method.name, params_.window, st.queries_valid);
            job.layer = l;
            jobs_.push_back(job);
        }
    }
    run_jobs(stream);
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
        for (int32_t l = 0; l < params_.num_layers; ++l) state(l, s) = SeqLayerState{};
    }
}

// ---------------------------------------------------------------------------
// sequences: rollback, fork, budget

bool Cache::is_empty(int32_t seq) const {
    for (int32_t l = 0; l < params_.num_layers; ++l)
        if (state(l, seq).logical != 0) return false;
    return true;
}

int32_t Cache::rollback_limit(int32_t seq) const {
    int32_t limit = std::numeric_limits<int32_t>::max();
    for (int32_t l = 0; l < params_.num_layers; ++l) limit = std::min(limit, rkv::rollback_limit(state(l, seq), rules_));
    return limit;
}

void Cache::truncate(int32_t seq, int32_t tokens, void *stream) {
    static const char *fn = "rkv_seq_truncate";
    if (tokens < 0) fail(RKV_ERR_INVALID_ARGUMENT, "%s: tokens is %d; it must be >= 0", fn, tokens);
    if (tokens == 0) return;
    const int32_t limit = rollback_limit(seq);
    if (tokens > limit) {
        // Name the rule that binds, for the layer that binds it.
        int32_t layer = 0;
        for (int32_t l = 0; l < params_.num_layers; ++l)
            if (rkv::rollback_limit(state(l, seq), rules_) == limit) {
                layer = l;
                break;
            }
        const SeqLayerState &s = state(layer, seq);
        const char *why = s.recent == limit ? "tokens appended since its last compression (or reset)"
                          : rules_.method.queries == QueryNeed::EveryToken
                              ? "H2O queries not yet accumulated (raise max_rollback at create)"
                              : "queries held beyond the observation window (raise max_rollback at create)";
        fail(RKV_ERR_BAD_STATE, "%s: sequence %d can roll back %d token(s), not %d: layer %d has %d %s", fn, seq,
             limit, tokens, layer, limit, why);
    }
    backend_->truncate(seq, tokens, stream);
    for (int32_t l = 0; l < params_.num_layers; ++l) state(l, seq) = after_truncate(state(l, seq), tokens);
}

void Cache::copy(int32_t src, int32_t dst, void *stream) {
    static const char *fn = "rkv_seq_copy";
    if (src == dst) fail(RKV_ERR_INVALID_ARGUMENT, "%s: src and dst are both sequence %d", fn, src);
    if (!is_empty(dst))
        fail(RKV_ERR_BAD_STATE, "%s: sequence %d (dst) holds tokens; reset it first (a fork copies onto an "
             "empty slot)", fn, dst);
    backend_->copy_sequence(src, dst, stream);
    for (int32_t l = 0; l < params_.num_layers; ++l) state(l, dst) = state(l, src);
}

void Cache::set_budget(int32_t seq, int32_t budget) {
    static const char *fn = "rkv_seq_set_budget";
    if (!rules_.method.evicts())
        fail(RKV_ERR_UNSUPPORTED, "%s: %s never evicts, so a sequence has no budget (its capacity is max_len)",
             fn, rules_.method.name);
    const int32_t lowest = std::max(params_.window + 1, rules_.keeps_sink ? params_.sink + params_.window : 0);
    if (budget < lowest || budget > params_.budget)
        fail(RKV_ERR_OUT_OF_RANGE, "%s: budget %d is outside [%d, %d]: above the window (%d)%s, and at most the "
             "cache's budget, which sized its memory", fn, budget, lowest, params_.budget, params_.window,
             rules_.keeps_sink ? " with room for the sinks" : "");
    if (!is_empty(seq))
        fail(RKV_ERR_BAD_STATE, "%s: sequence %d holds tokens; set its budget when the request starts (after a "
             "reset)", fn, seq);
    for (int32_t l = 0; l < params_.num_layers; ++l) state(l, seq).budget = budget == params_.budget ? 0 : budget;
}

int32_t Cache::budget(int32_t seq) const {
    if (!rules_.method.evicts()) return params_.max_len;
    return budget_of(state(0, seq), rules_);
}

// ---------------------------------------------------------------------------
// batches

BatchIds Cache::allocate_batch(int32_t entries) { return backend_->allocate_batch(entries); }

void Cache::set_batch(int32_t *batch_ids, const int32_t *ids, int32_t entries, void *stream) {
    backend_->set_batch(batch_ids, ids, entries, stream);
}

void Cache::advance(const int32_t *ids, int32_t entries, int32_t steps) {
    static const char *fn = "rkv_batch_advance";
    if (steps < 0) fail(RKV_ERR_INVALID_ARGUMENT, "%s: steps is %d; it must be >= 0", fn, steps);
    if (steps == 0) return;
    // The device dropped what did not fit: the host learns it here, after the fact.
    for (int32_t i = 0; i < entries; ++i) {
        if (ids[i] < 0) continue;
        for (int32_t l = 0; l < params_.num_layers; ++l) {
            const SeqLayerState &s = state(l, ids[i]);
            if (int64_t(s.held) + steps > plan_.capacity || s.logical + steps > std::numeric_limits<int32_t>::max()) {
                char message[256];
                std::snprintf(message, sizeof message,
                              "sequence %d, layer %d held %d of its %d slots, so %d batch step(s) dropped tokens; "
                              "compress due sequences (rkv_compress_due) before each step", ids[i], l, s.held,
                              plan_.capacity, steps);
                mark_faulted(message);
                fail(RKV_ERR_CAPACITY, "%s: %s", fn, message);
            }
        }
    }
    const bool queries = rules_.method.keeps_queries();
    for (int32_t i = 0; i < entries; ++i) {
        if (ids[i] < 0) continue;
        for (int32_t l = 0; l < params_.num_layers; ++l)
            state(l, ids[i]) = after_append(state(l, ids[i]), steps, false, queries, rules_);
    }
}

Batch::Batch(Cache &cache, int32_t entries)
    : cache_(&cache),
      entries_(entries),
      ids_(cache.allocate_batch(entries)),
      host_ids_(size_t(entries), -1),
      staged_(size_t(entries), -1),
      seen_(size_t(cache.params().max_seqs), 0) {}

void Batch::set(const int32_t *seq_ids, int32_t num_ids, void *stream) {
    static const char *fn = "rkv_batch_set";
    if (num_ids < 0 || num_ids > entries_)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: num_ids is %d; this batch has %d entries", fn, num_ids, entries_);
    if (num_ids > 0) require_non_null(seq_ids, fn, "seq_ids");
    std::fill(seen_.begin(), seen_.end(), 0);
    for (int32_t i = 0; i < num_ids; ++i) {
        const int32_t seq = seq_ids[i];
        if (seq == -1) continue;
        if (seq < 0 || seq >= cache_->params().max_seqs)
            fail(RKV_ERR_OUT_OF_RANGE, "%s: seq_ids[%d] is %d, outside 0 .. %d (max_seqs = %d) and not -1 "
                 "(padding)", fn, i, seq, cache_->params().max_seqs - 1, cache_->params().max_seqs);
        if (seen_[seq])
            fail(RKV_ERR_INVALID_ARGUMENT, "%s: sequence %d appears twice in seq_ids (entries of a batch are "
                 "distinct sequences or -1)", fn, seq);
        seen_[seq] = 1;
    }
    std::copy(seq_ids, seq_ids + num_ids, staged_.begin());
    std::fill(staged_.begin() + num_ids, staged_.end(), -1);
    cache_->set_batch(ids_.get(), staged_.data(), entries_, stream);
    host_ids_.swap(staged_);
}

void Batch::advance(int32_t steps) { cache_->advance(host_ids_.data(), entries_, steps); }

void Cache::set_param(rkv_param param, double value) {
    static const char *fn = "rkv_cache_set";
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

void Cache::view(int32_t seq, int32_t layer, rkv_seq_view *v) const {
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
    v->k_scale = all.k_scale ? all.k_scale + seq * all.scale_stride_seq : nullptr;
    v->v_scale = all.v_scale ? all.v_scale + seq * all.scale_stride_seq : nullptr;
    v->scale_stride_head = all.scale_stride_head;
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
    float *k_scales = backend_->key_scales(), *v_scales = backend_->value_scales();
    v->k_scale = k_scales ? k_scales + slot0 : nullptr;
    v->v_scale = v_scales ? v_scales + slot0 : nullptr;
    v->scale_stride_seq = k_scales ? params_.num_kv_heads * cap : 0;
    v->scale_stride_head = k_scales ? cap : 0;
}

void Cache::seq_length(int32_t seq, int32_t layer, int64_t *logical, int32_t *physical) const {
    const SeqLayerState &s = state(layer, seq);
    if (logical) *logical = s.logical;
    if (physical) *physical = s.held;
}

void Cache::kept_positions(int32_t seq, int32_t layer, int32_t head, int32_t *out,
                           int32_t out_len, int32_t *count) const {
    static const char *fn = "rkv_seq_positions";
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
    // K and V of all heads, with their scales (FP8)
    const uint64_t row_bytes = uint64_t(params_.head_dim) * dtype_size(params_.dtype) +
                               (is_fp8(params_.dtype) ? sizeof(float) : 0);
    const uint64_t token_bytes = uint64_t(params_.num_kv_heads) * row_bytes * 2;
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

void Cache::attend(const rkv_attend_args &a, void *stream) {
    static const char *fn = "rkv_attend";
    check_struct_size(a.struct_size, sizeof(rkv_attend_args), fn, "rkv_attend_args");
    check_layer(a.layer, false, fn);
    if (a.flags != 0) fail(RKV_ERR_UNSUPPORTED, "%s: args->flags is 0x%x; no flags are defined", fn, unsigned(a.flags));
    const Batch *batch = a.batch;
    if (batch) {
        if (&batch->cache() != this) fail(RKV_ERR_INVALID_ARGUMENT, "%s: args->batch belongs to another cache", fn);
        if (a.num_seqs != batch->entries())
            fail(RKV_ERR_INVALID_ARGUMENT, "%s: num_seqs is %d but the batch has %d entries (padding included)", fn,
                 a.num_seqs, batch->entries());
        if (a.seq_ids)
            fail(RKV_ERR_INVALID_ARGUMENT, "%s: with a batch, seq_ids must be NULL (the batch names the sequences)",
                 fn);
    } else {
        if (a.num_seqs < 1 || a.num_seqs > params_.max_seqs)
            fail(RKV_ERR_INVALID_ARGUMENT, "%s: num_seqs is %d; it must be 1 .. %d (max_seqs)", fn, a.num_seqs,
                 params_.max_seqs);
        require_non_null(a.seq_ids, fn, "args->seq_ids");
        for (int32_t i = 0; i < a.num_seqs; ++i) {
            check_seq(a.seq_ids[i], false, fn);
            if (state(a.layer, a.seq_ids[i]).held == 0)
                fail(RKV_ERR_BAD_STATE, "%s: sequence %d holds no tokens at layer %d: append the "
                     "token's K/V before attending", fn, a.seq_ids[i], a.layer);
        }
    }
    const TensorUse use{a.num_seqs, nullptr, nullptr, false};
    check_tensor(a.q, "args->q", params_.num_q_heads, true, use, fn);
    check_tensor(a.out, "args->out", params_.num_q_heads, true, use, fn);
    float scale = a.scale;
    if (std::isnan(scale)) fail(RKV_ERR_INVALID_ARGUMENT, "%s: scale is NaN", fn);
    if (scale <= 0.0f) scale = 1.0f / std::sqrt(float(params_.head_dim));
    int32_t max_held = plan_.capacity;  // with a batch the device decides the sequences
    if (!batch) {
        max_held = 0;
        for (int32_t i = 0; i < a.num_seqs; ++i) max_held = std::max(max_held, state(a.layer, a.seq_ids[i]).held);
    }
    backend_->attend(a.layer, a.num_seqs, a.seq_ids, batch ? batch->ids() : nullptr, max_held, a.q, a.out, scale,
                     stream);
}

void Cache::inspect_scores(int32_t seq, int32_t layer, int32_t head, int32_t kind, float *out,
                           int32_t out_len, int32_t *count) const {
    static const char *fn = "rkv_seq_scores";
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
    CompressJob job{seq, s.held, s.held, 0, s.compressions, layer};
    backend_->inspect_scores(layer, job, head, rkv_score_kind(kind), live_, out);
    *count = candidates;
}

// ---------------------------------------------------------------------------
// CUDA graphs

void Cache::sync_lengths(void *stream) {
    const DeviceCounts device = backend_->read_counts(stream);
    int64_t dropped = 0;
    int32_t dropped_seq = -1, dropped_layer = -1;
    for (int32_t l = 0; l < params_.num_layers; ++l) {
        for (int32_t seq = 0; seq < params_.max_seqs; ++seq) {
            SeqLayerState &s = state(l, seq);
            const size_t i = size_t(l) * params_.max_seqs + seq;
            const int32_t held = device.at(kHeld, i);
            const int64_t logical = device.at(kLogical, i);
            // Tokens that arrived minus the change in held ones were evicted (the
            // difference can be negative when a capture recorded work that never ran).
            const int64_t evicted = (logical - s.logical) - (int64_t(held) - s.held);
            s.evicted = uint64_t(std::max<int64_t>(0, int64_t(s.evicted) + evicted));
            s.held = held;
            s.logical = logical;
            s.prompt_len = std::min(s.prompt_len, s.logical);
            s.queries_valid = device.at(kQueriesValid, i);
            s.compressions = uint64_t(device.at(kCompressions, i));
            s.recent = device.at(kRecent, i);
            s.pending = device.at(kPending, i);
            if (device.at(kDropped, i) > 0 && dropped_seq < 0) {
                dropped_seq = seq;
                dropped_layer = l;
            }
            dropped += device.at(kDropped, i);
        }
    }
    if (dropped > 0) {
        char message[256];
        std::snprintf(message, sizeof message,
                      "replayed appends found no room for %lld tokens (first: sequence %d, layer %d) and "
                      "dropped them; compress before a sequence is full", (long long)dropped, dropped_seq,
                      dropped_layer);
        mark_faulted(message);
        fail(RKV_ERR_CAPACITY, "rkv_cache_sync_lengths: %s", message);
    }
}

void Cache::set_matmul_path(int32_t path) { backend_->set_matmul_path(path); }

void Cache::set_attend_plan(int32_t splits, int32_t variant) { backend_->set_attend_plan(splits, variant); }

}  // namespace rkv
