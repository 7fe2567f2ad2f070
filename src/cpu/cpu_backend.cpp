#include "cpu/cpu_backend.h"

#include <algorithm>
#include <cstring>

#include "core/method.h"
#include "core/random_score.h"
#include "cpu/scoring.h"
#include "dtype.h"
#include "error.h"
#include "selection.h"

namespace rkv::cpu {

namespace {

constexpr int32_t kH2OTokenBlock = 64;  // query tokens converted at once for H2O's accumulation

// Element counts of every scratch buffer; one definition for the size query and create.
struct ScratchPlan {
    int64_t rows_d;       // keys32, values32, normalized: [capacity, head_dim] each
    int64_t queries;      // [max(G*window, G*kH2OTokenBlock), head_dim]
    int64_t logits;       // [max(G*window, G), capacity]
    int64_t block;        // [kRedundancyBlockRows, capacity]
    int64_t per_slot;     // averaged, importance, redundancy, final, state copy: [capacity] each
    int64_t head_dim;     // mean and row32 [head_dim] each, and out32 is [G, head_dim]
    int64_t groups;

    explicit ScratchPlan(const rkv_cache_params &p, int32_t capacity) {
        groups = p.num_q_heads / p.num_kv_heads;
        rows_d = int64_t(capacity) * p.head_dim;
        queries = std::max<int64_t>(groups * p.window, groups * kH2OTokenBlock) * p.head_dim;
        logits = std::max<int64_t>(groups * p.window, groups) * capacity;
        block = int64_t(kRedundancyBlockRows) * capacity;
        per_slot = capacity;
        head_dim = p.head_dim;
    }
    uint64_t bytes(size_t element_size, size_t query_size) const {
        return uint64_t(3 * rows_d + queries + logits + block + 5 * per_slot + 2 * head_dim +
                        groups * head_dim) * 4 +
               uint64_t(per_slot) * 8 /* column sums */ + uint64_t(per_slot) * 4 * 3 /* order, select, positions */ +
               uint64_t(rows_d) * element_size /* gather */ + uint64_t(head_dim) * query_size /* query row */;
    }
};

template <typename T>
struct Buffer {
    std::unique_ptr<T[]> data;
    explicit Buffer(uint64_t count = 0) : data(new T[count]()) {}
    T *get() const { return data.get(); }
    T &operator[](int64_t i) const { return data[i]; }
};

class CpuBackend final : public Backend {
 public:
    CpuBackend(const rkv_cache_params &params, const MemoryPlan &plan)
        : p_(params),
          method_(method_info(params.method)),
          capacity_(plan.capacity),
          groups_(params.num_q_heads / params.num_kv_heads),
          element_size_(dtype_size(params.dtype)),
          query_dtype_(query_dtype(params.dtype)),
          query_size_(dtype_size(query_dtype_)),
          scratch_plan_(params, plan.capacity),
          history_len_(plan.history),
          max_rollback_(params.max_rollback),
          seq_layers_(int64_t(plan.length_entries)),
          keys_(plan.kv_elements * element_size_),
          values_(plan.kv_elements * element_size_),
          key_scales_(plan.scale_entries),
          value_scales_(plan.scale_entries),
          positions_(plan.slot_entries),
          state_(plan.slot_entries),
          queries_(plan.query_elements * query_size_),
          history_(plan.history_elements * query_size_),
          counts_(plan.length_entries * kNumCountArrays),
          keys32_(scratch_plan_.rows_d),
          values32_(scratch_plan_.rows_d),
          normalized_(scratch_plan_.rows_d),
          queries32_(scratch_plan_.queries),
          logits_(scratch_plan_.logits),
          block_(scratch_plan_.block),
          averaged_(capacity_),
          importance_(capacity_),
          redundancy_(capacity_),
          final_(capacity_),
          state_copy_(capacity_),
          mean_(params.head_dim),
          row32_(params.head_dim),
          out32_(uint64_t(groups_) * params.head_dim),
          column_sums_(capacity_),
          kept_(capacity_),
          select_scratch_(capacity_),
          positions_copy_(capacity_),
          gather_(uint64_t(scratch_plan_.rows_d) * element_size_),
          query_row_(uint64_t(params.head_dim) * query_size_) {}

    void append(int32_t layer, const rkv_append_args &a, const AppendChunk *chunks,
                int32_t num_chunks, const LiveParams &live, void *) override {
        for (int32_t c = 0; c < num_chunks; ++c) {
            const AppendChunk &chunk = chunks[c];
            const int64_t offset = a.token_offsets ? a.token_offsets[chunk.entry] : 0;
            append_chunk(layer, a, chunk.seq, chunk.entry, offset + chunk.first_token, chunk.count, live.pooling);
        }
    }

    void append_batch(int32_t layer, const rkv_append_args &a, const int32_t *batch_ids, int32_t entries,
                      const LiveParams &live, void *) override {
        for (int32_t i = 0; i < entries; ++i)
            if (batch_ids[i] >= 0) append_chunk(layer, a, batch_ids[i], i, 0, 1, live.pooling);
    }

    void compress(const CompressJob *jobs, int32_t num_jobs, const LiveParams &live, void *) override {
        const KeptOrder order = kept_in_reference_order(p_) ? KeptOrder::Reference : KeptOrder::Position;
        for (int32_t j = 0; j < num_jobs; ++j) {
            const CompressJob &job = jobs[j];
            const int32_t layer = job.layer;
            if (count(kHeld, layer, job.seq) != job.held) continue;  // as the device (job_active)
            if (method_.scorer == Scorer::AccumulatedAttention)
                for (int32_t h = 0; h < p_.num_kv_heads; ++h)
                    commit_pending(layer, job.seq, h, count(kPending, layer, job.seq),
                                   state_.get() + slot_index(layer, job.seq, h, 0), live.pooling);
            for (int32_t h = 0; h < p_.num_kv_heads; ++h) {
                const float *scores = score(layer, job, h, RKV_SCORE_FINAL, live);
                const int64_t base = slot_index(layer, job.seq, h, 0);
                select_kept(scores, positions_.get() + base, job.held, p_.window, job.keep,
                            job.protect_below, order, select_scratch_.get(), kept_.get());
                compact(base, job.keep);
            }
            count(kHeld, layer, job.seq) = job.keep;
            count(kCompressions, layer, job.seq) += 1;
            count(kRecent, layer, job.seq) = 0;
            count(kPending, layer, job.seq) = 0;
        }
    }

    void truncate(int32_t seq, int32_t tokens, void *) override {
        for (int32_t l = 0; l < p_.num_layers; ++l) {
            count(kHeld, l, seq) -= tokens;
            count(kLogical, l, seq) -= tokens;
            count(kQueriesValid, l, seq) = std::max(0, count(kQueriesValid, l, seq) - tokens);
            count(kRecent, l, seq) -= tokens;
            count(kPending, l, seq) = std::max(0, count(kPending, l, seq) - tokens);
            if (history_len_ > 0) restore_window(l, seq);
        }
    }

    void copy_sequence(int32_t src, int32_t dst, void *) override {
        const int64_t row_bytes = int64_t(p_.head_dim) * element_size_;
        const int64_t query_row_bytes = int64_t(p_.head_dim) * query_size_;
        const int64_t query_rows = int64_t(p_.num_q_heads) * p_.window;
        const int64_t history_rows = int64_t(p_.num_q_heads) * history_len_;
        for (int32_t l = 0; l < p_.num_layers; ++l) {
            const int32_t held = count(kHeld, l, src);
            for (int32_t h = 0; h < p_.num_kv_heads; ++h) {
                const int64_t from = slot_index(l, src, h, 0), to = slot_index(l, dst, h, 0);
                for (uint8_t *storage : {keys_.get(), values_.get()})
                    std::memcpy(storage + to * row_bytes, storage + from * row_bytes, size_t(held * row_bytes));
                std::copy(positions_.get() + from, positions_.get() + from + held, positions_.get() + to);
                std::copy(state_.get() + from, state_.get() + from + held, state_.get() + to);
                if (is_fp8(p_.dtype))
                    for (float *scales : {key_scales_.get(), value_scales_.get()})
                        std::copy(scales + from, scales + from + held, scales + to);
            }
            std::memcpy(queries_.get() + query_index(l, dst, 0, 0) * query_size_,
                        queries_.get() + query_index(l, src, 0, 0) * query_size_,
                        size_t(query_rows * query_row_bytes));
            if (history_len_ > 0)
                std::memcpy(history_.get() + history_index(l, dst, 0, 0) * query_size_,
                            history_.get() + history_index(l, src, 0, 0) * query_size_,
                            size_t(history_rows * query_row_bytes));
            for (int32_t array = 0; array < kNumCountArrays; ++array)
                count(CountArray(array), l, dst) = count(CountArray(array), l, src);
        }
    }

    void clear_sequence(int32_t seq, void *) override {
        for (int32_t l = 0; l < p_.num_layers; ++l) {
            const int64_t base = slot_index(l, seq, 0, 0);
            std::fill(state_.get() + base, state_.get() + base + int64_t(p_.num_kv_heads) * capacity_, 0.0f);
            for (int32_t array = 0; array < kNumCountArrays; ++array) count(CountArray(array), l, seq) = 0;
        }
    }

    void attend(int32_t layer, int32_t num_seqs, const int32_t *seq_ids, const int32_t *batch_ids, int32_t,
                const rkv_tensor &q, const rkv_tensor &out, float scale, void *) override {
        const int32_t d = p_.head_dim;
        for (int32_t i = 0; i < num_seqs; ++i) {
            const int32_t seq = batch_ids ? batch_ids[i] : seq_ids[i];
            if (seq < 0) continue;  // padding
            const int32_t held = count(kHeld, layer, seq);
            for (int32_t h = 0; h < p_.num_kv_heads; ++h) {
                const int64_t base = slot_index(layer, seq, h, 0);
                const float *k = rows_f32(keys_.get(), key_scales_.get(), base, held, keys32_.get());
                const float *v = rows_f32(values_.get(), value_scales_.get(), base, held, values32_.get());
                for (int32_t g = 0; g < groups_; ++g)
                    convert_row(element(q, i, 0, h * groups_ + g), q.dtype,
                                queries32_.get() + int64_t(g) * d, RKV_DTYPE_F32, d);
                if (held == 0) {  // a batch sequence without tokens: zeros, as the device
                    std::fill(out32_.get(), out32_.get() + int64_t(groups_) * d, 0.0f);
                } else {
                    cpu::attend(queries32_.get(), groups_, k, v, held, d, scale, logits_.get(), out32_.get());
                }
                for (int32_t g = 0; g < groups_; ++g)
                    convert_row(out32_.get() + int64_t(g) * d, RKV_DTYPE_F32,
                                const_cast<void *>(element(out, i, 0, h * groups_ + g)), out.dtype, d);
            }
        }
    }

    void copy_positions(int32_t layer, int32_t seq, int32_t head, int32_t held, int32_t *out) override {
        std::memcpy(out, positions_.get() + slot_index(layer, seq, head, 0), size_t(held) * 4);
    }

    void inspect_scores(int32_t layer, const CompressJob &job, int32_t head, rkv_score_kind kind,
                        const LiveParams &live, float *out) override {
        const float *scores = score(layer, job, head, kind, live);
        if (method_.scorer == Scorer::AccumulatedAttention) {
            // The state as the compression will rank it: pending queries committed, into a copy.
            float *state = state_copy_.get();
            std::copy(scores, scores + job.held, state);
            commit_pending(layer, job.seq, head, count(kPending, layer, job.seq), state, live.pooling);
            scores = state;
        }
        std::memcpy(out, scores, size_t(job.held - p_.window) * 4);
    }

    BatchIds allocate_batch(int32_t entries) override {
        int32_t *ids = new int32_t[size_t(entries)];
        std::fill(ids, ids + entries, -1);
        return BatchIds(ids, [](int32_t *p) { delete[] p; });
    }

    void set_batch(int32_t *batch_ids, const int32_t *ids, int32_t entries, void *) override {
        std::copy(ids, ids + entries, batch_ids);
    }

    DeviceCounts read_counts(void *) override {
        DeviceCounts out{};
        for (int32_t array = 0; array < kNumCountArrays; ++array)
            out.arrays[array] = counts_.get() + array * seq_layers_;
        return out;
    }

    void *keys() const override { return keys_.get(); }
    void *values() const override { return values_.get(); }
    float *key_scales() const override { return is_fp8(p_.dtype) ? key_scales_.get() : nullptr; }
    float *value_scales() const override { return is_fp8(p_.dtype) ? value_scales_.get() : nullptr; }
    int32_t *positions() const override { return positions_.get(); }
    const int32_t *lengths() const override { return counts_.get(); }  // kHeld comes first

 private:
    // Index of (layer, seq, head, slot) in positions/state; times head_dim in K/V.
    int64_t slot_index(int32_t layer, int32_t seq, int32_t head, int32_t slot) const {
        return ((int64_t(layer) * p_.max_seqs + seq) * p_.num_kv_heads + head) * capacity_ + slot;
    }
    // Element index of the first dim of (layer, seq, query head, ring slot).
    int64_t query_index(int32_t layer, int32_t seq, int32_t q_head, int32_t ring) const {
        return (((int64_t(layer) * p_.max_seqs + seq) * p_.num_q_heads + q_head) * p_.window + ring) *
               p_.head_dim;
    }
    // Element index of the first dim of (layer, seq, query head, history slot).
    int64_t history_index(int32_t layer, int32_t seq, int32_t q_head, int32_t slot) const {
        return (((int64_t(layer) * p_.max_seqs + seq) * p_.num_q_heads + q_head) * history_len_ + slot) *
               p_.head_dim;
    }
    int32_t &count(CountArray array, int32_t layer, int32_t seq) const {
        return counts_.get()[array * seq_layers_ + int64_t(layer) * p_.max_seqs + seq];
    }
    // Address of (entry, token, head, 0) of a caller's tensor.
    static const void *element(const rkv_tensor &t, int64_t entry, int64_t token, int64_t head) {
        const int64_t index = entry * t.stride_seq + token * t.stride_token + head * t.stride_head;
        return static_cast<const char *>(t.data) + index * int64_t(dtype_size(t.dtype));
    }

    // One K or V row of a caller's tensor into slot `index` of storage (FP8:
    // quantised through row32_, its scale into `scales`).
    void store_row(const void *src, rkv_dtype src_dtype, uint8_t *storage, float *scales, int64_t index) {
        const int32_t d = p_.head_dim;
        uint8_t *dst = storage + index * d * element_size_;
        if (!is_fp8(p_.dtype)) {
            convert_row(src, src_dtype, dst, p_.dtype, d);
            return;
        }
        convert_row(src, src_dtype, row32_.get(), RKV_DTYPE_F32, d);
        scales[index] = quantize_row_fp8(row32_.get(), d, dst);
    }

    // Rows [0, n) of a head's K or V (from slot index `base`) as float32: the
    // storage itself for F32, else converted (FP8: dequantised) into `scratch`.
    const float *rows_f32(const uint8_t *storage, const float *scales, int64_t base, int32_t n,
                          float *scratch) const {
        const int64_t d = p_.head_dim;
        const uint8_t *src = storage + base * d * element_size_;
        if (p_.dtype == RKV_DTYPE_F32) return reinterpret_cast<const float *>(src);
        if (!is_fp8(p_.dtype)) {
            convert_row(src, p_.dtype, scratch, RKV_DTYPE_F32, n * d);
            return scratch;
        }
        for (int32_t i = 0; i < n; ++i) dequantize_row_fp8(src + i * d, scales[base + i], d, scratch + i * d);
        return scratch;
    }

    // `tokens` tokens of entry `entry` (from token index `token0`) into `seq`,
    // at the slot and position the bookkeeping gives; a chunk without room is
    // dropped and counted (only replays and batches can bring one).
    void append_chunk(int32_t layer, const rkv_append_args &a, int32_t seq, int32_t entry, int64_t token0,
                      int32_t tokens, rkv_pooling pooling) {
        const int32_t d = p_.head_dim;
        const int32_t slot0 = count(kHeld, layer, seq);
        const int64_t position0 = count(kLogical, layer, seq);
        if (slot0 + tokens > capacity_) {
            count(kDropped, layer, seq) += tokens;
            return;
        }
        const bool h2o = method_.scorer == Scorer::AccumulatedAttention;
        const int32_t pending = count(kPending, layer, seq);
        // H2O commits the oldest pending queries that this append pushes past
        // max_rollback before their history slots are overwritten below.
        if (h2o && max_rollback_ > 0) {
            const int32_t old = std::min(pending, std::max(0, pending + tokens - max_rollback_));
            for (int32_t h = 0; h < p_.num_kv_heads; ++h)
                commit_pending(layer, seq, h, old, state_.get() + slot_index(layer, seq, h, 0), pooling);
        }
        for (int32_t t = 0; t < tokens; ++t) {
            const int64_t token = token0 + t;
            const int32_t slot = slot0 + t;
            const int64_t position = position0 + t;
            for (int32_t h = 0; h < p_.num_kv_heads; ++h) {
                const int64_t index = slot_index(layer, seq, h, slot);
                store_row(element(a.k, entry, token, h), a.k.dtype, keys_.get(), key_scales_.get(), index);
                store_row(element(a.v, entry, token, h), a.v.dtype, values_.get(), value_scales_.get(), index);
                positions_.get()[index] = int32_t(position);
                state_.get()[index] = 0.0f;
            }
            if (a.q.data == nullptr) continue;
            for (int32_t qh = 0; qh < p_.num_q_heads; ++qh) {
                const void *q = element(a.q, entry, token, qh);
                if (t >= tokens - p_.window)
                    convert_row(q, a.q.dtype,
                                queries_.get() + query_index(layer, seq, qh, int32_t(position % p_.window)) * query_size_,
                                query_dtype_, d);
                if (history_len_ > 0 && t >= tokens - history_len_)
                    convert_row(q, a.q.dtype,
                                history_.get() + history_index(layer, seq, qh, int32_t(position % history_len_)) *
                                                     query_size_,
                                query_dtype_, d);
            }
        }
        // H2O: the new tokens older than max_rollback commit now (all of them without a history).
        if (h2o) {
            const int32_t fresh = std::max(0, tokens - max_rollback_);
            for (int32_t h = 0; h < p_.num_kv_heads; ++h)
                accumulate_new(layer, a, seq, entry, token0, slot0, fresh, h, pooling);
        }
        count(kHeld, layer, seq) = slot0 + tokens;
        count(kLogical, layer, seq) = int32_t(position0 + tokens);
        count(kQueriesValid, layer, seq) =
            a.q.data ? std::min(std::max(p_.window, history_len_), count(kQueriesValid, layer, seq) + tokens) : 0;
        count(kRecent, layer, seq) += tokens;
        count(kPending, layer, seq) = h2o ? std::min(pending + tokens, max_rollback_) : 0;
    }

    // H2O: the first `tokens` new tokens' queries (from the caller's tensor) attend
    // over the held keys up to themselves, in order. With a history their
    // queries are rounded through the query dtype first, as the history holds
    // them, so a query gives the same sums whichever way it is committed.
    void accumulate_new(int32_t layer, const rkv_append_args &a, int32_t seq, int32_t entry, int64_t token0,
                        int32_t slot0, int32_t tokens, int32_t h, rkv_pooling pooling) {
        if (tokens <= 0) return;
        const int32_t d = p_.head_dim;
        const int64_t base = slot_index(layer, seq, h, 0);
        const float *k = rows_f32(keys_.get(), key_scales_.get(), base, slot0 + tokens, keys32_.get());
        for (int32_t t0 = 0; t0 < tokens; t0 += kH2OTokenBlock) {
            const int32_t block = std::min(kH2OTokenBlock, tokens - t0);
            for (int32_t t = 0; t < block; ++t)
                for (int32_t g = 0; g < groups_; ++g) {
                    float *row = queries32_.get() + (int64_t(t) * groups_ + g) * d;
                    const void *q = element(a.q, entry, token0 + t0 + t, h * groups_ + g);
                    if (history_len_ > 0) {
                        convert_row(q, a.q.dtype, query_row_.get(), query_dtype_, d);
                        convert_row(query_row_.get(), query_dtype_, row, RKV_DTYPE_F32, d);
                    } else {
                        convert_row(q, a.q.dtype, row, RKV_DTYPE_F32, d);
                    }
                }
            h2o_accumulate(queries32_.get(), block, groups_, k, slot0 + t0, d, pooling, logits_.get(), state_.get() + base);
        }
    }

    // H2O: the oldest `commits` pending queries of (layer, seq), from the
    // history, attend over the keys up to their own slots (unchanged since they
    // came: no compression in between) and add to `state` (head h's [held]).
    void commit_pending(int32_t layer, int32_t seq, int32_t h, int32_t commits, float *state, rkv_pooling pooling) {
        if (commits <= 0) return;
        const int32_t d = p_.head_dim;
        const int32_t held = count(kHeld, layer, seq);
        const int64_t logical = count(kLogical, layer, seq);
        const int32_t pending = count(kPending, layer, seq);
        const int64_t first_position = logical - pending;
        const int32_t first_slot = held - pending;
        const float *k = rows_f32(keys_.get(), key_scales_.get(), slot_index(layer, seq, h, 0), first_slot + commits,
                                  keys32_.get());
        for (int32_t t0 = 0; t0 < commits; t0 += kH2OTokenBlock) {
            const int32_t block = std::min(kH2OTokenBlock, commits - t0);
            for (int32_t t = 0; t < block; ++t) {
                const int32_t ring = int32_t((first_position + t0 + t) % history_len_);
                for (int32_t g = 0; g < groups_; ++g)
                    convert_row(history_.get() + history_index(layer, seq, h * groups_ + g, ring) * query_size_,
                                query_dtype_, queries32_.get() + (int64_t(t) * groups_ + g) * d, RKV_DTYPE_F32, d);
            }
            h2o_accumulate(queries32_.get(), block, groups_, k, first_slot + t0, d, pooling, logits_.get(), state);
        }
    }

    // After a rollback: the window ring holds the last min(window, queries held)
    // positions again, from the history.
    void restore_window(int32_t layer, int32_t seq) {
        const int64_t logical = count(kLogical, layer, seq);
        const int32_t restore = std::min(p_.window, count(kQueriesValid, layer, seq));
        const int64_t row_bytes = int64_t(p_.head_dim) * query_size_;
        for (int64_t position = logical - restore; position < logical; ++position)
            for (int32_t qh = 0; qh < p_.num_q_heads; ++qh)
                std::memcpy(queries_.get() + query_index(layer, seq, qh, int32_t(position % p_.window)) * query_size_,
                            history_.get() + history_index(layer, seq, qh, int32_t(position % history_len_)) *
                                                 query_size_,
                            size_t(row_bytes));
    }

    // The scores a compression of `job` ranks for one head (kind Final), or one
    // of R-KV's parts. Returns a scratch buffer of held - window floats.
    const float *score(int32_t layer, const CompressJob &job, int32_t head, rkv_score_kind kind,
                       const LiveParams &live) {
        const int32_t d = p_.head_dim, n = job.held, window = p_.window;
        const int32_t candidates = n - window;
        const int64_t base = slot_index(layer, job.seq, head, 0);
        float *final_scores = final_.get();
        switch (method_.scorer) {
            case Scorer::ImportanceRedundancy:
            case Scorer::Importance: {
                const float *k = rows_f32(keys_.get(), key_scales_.get(), base, n, keys32_.get());
                gather_window_queries(layer, job.seq, head);
                importance(queries32_.get(), groups_, window, k, n, d, live.kernel, live.pooling,
                           logits_.get(), averaged_.get(), importance_.get());
                if (kind == RKV_SCORE_IMPORTANCE || method_.scorer == Scorer::Importance)
                    return importance_.get();
                redundancy(k, n, d, window, live.threshold, p_.mode == RKV_MODE_REFERENCE,
                           normalized_.get(), block_.get(), column_sums_.get(), redundancy_.get());
                if (kind == RKV_SCORE_REDUNDANCY) return redundancy_.get();
                const float lambda = live.lambda;
                for (int32_t j = 0; j < candidates; ++j)
                    final_scores[j] = lambda * importance_[j] - (1.0f - lambda) * redundancy_[j];
                return final_scores;
            }
            case Scorer::AccumulatedAttention:
                return state_.get() + base;
            case Scorer::KeyDiff: {
                const float *k = rows_f32(keys_.get(), key_scales_.get(), base, n, keys32_.get());
                keydiff(k, n, d, window, mean_.get(), final_scores);
                return final_scores;
            }
            case Scorer::Random: {
                const int32_t *positions = positions_.get() + base;
                for (int32_t j = 0; j < candidates; ++j)
                    final_scores[j] = random_score(live.seed, job.seq, layer, head, job.round, positions[j]);
                return final_scores;
            }
            case Scorer::Recency:
                // The most recent tokens win: in position order, slot order is recency.
                for (int32_t j = 0; j < candidates; ++j) final_scores[j] = float(positions_[base + j]);
                return final_scores;
            case Scorer::None:
                break;
        }
        fail(RKV_ERR_INTERNAL, "score: method %s does not rank tokens", method_.name);
    }

    // The last `window` queries of the G query heads of KV head `head`, as
    // float32 rows g * window + a (the ring order does not matter: importance
    // averages over the window).
    void gather_window_queries(int32_t layer, int32_t seq, int32_t head) {
        const int32_t d = p_.head_dim;
        for (int32_t g = 0; g < groups_; ++g) {
            const int64_t src = query_index(layer, seq, head * groups_ + g, 0);
            convert_row(queries_.get() + src * query_size_, query_dtype_,
                        queries32_.get() + int64_t(g) * p_.window * d, RKV_DTYPE_F32,
                        int64_t(p_.window) * d);
        }
    }

    // Slots kept_[0 .. keep) of the head at `base` move to slots 0 .. keep-1:
    // K, V, their scales (FP8), positions and scorer state together.
    void compact(int64_t base, int32_t keep) {
        const int64_t row_bytes = int64_t(p_.head_dim) * element_size_;
        const int32_t *kept = kept_.get();
        for (uint8_t *storage : {keys_.get(), values_.get()}) {
            uint8_t *head = storage + base * row_bytes;
            for (int32_t i = 0; i < keep; ++i)
                std::memcpy(gather_.get() + i * row_bytes, head + kept[i] * row_bytes, size_t(row_bytes));
            std::memcpy(head, gather_.get(), size_t(keep * row_bytes));
        }
        int32_t *positions = positions_.get() + base;
        float *state = state_.get() + base;
        for (int32_t i = 0; i < keep; ++i) {
            positions_copy_[i] = positions[kept[i]];
            state_copy_[i] = state[kept[i]];
        }
        std::copy(positions_copy_.get(), positions_copy_.get() + keep, positions);
        std::copy(state_copy_.get(), state_copy_.get() + keep, state);
        if (!is_fp8(p_.dtype)) return;
        for (float *scales : {key_scales_.get() + base, value_scales_.get() + base}) {
            for (int32_t i = 0; i < keep; ++i) state_copy_[i] = scales[kept[i]];
            std::copy(state_copy_.get(), state_copy_.get() + keep, scales);
        }
    }

    const rkv_cache_params p_;  // as created: the shape, method, mode and window (the live
                                // parameters come with each call)
    const MethodInfo method_;
    const int32_t capacity_;
    const int32_t groups_;
    const size_t element_size_;   // of K and V in storage
    const rkv_dtype query_dtype_;  // the query window and history (bf16 for FP8 storage)
    const size_t query_size_;
    const ScratchPlan scratch_plan_;
    const int32_t history_len_;   // query_history(params): 0 = no history
    const int32_t max_rollback_;
    const int64_t seq_layers_;

    // Cache memory (layouts in backend.h).
    Buffer<uint8_t> keys_, values_;
    Buffer<float> key_scales_, value_scales_;  // FP8 only (else empty)
    Buffer<int32_t> positions_;
    Buffer<float> state_;
    Buffer<uint8_t> queries_;
    Buffer<uint8_t> history_;
    Buffer<int32_t> counts_;      // [kNumCountArrays, layers, seqs]: kHeld is the lengths buffer

    // Scratch, sized by ScratchPlan.
    Buffer<float> keys32_, values32_, normalized_;  // [capacity, head_dim]
    Buffer<float> queries32_;                       // [max(G*window, G*kH2OTokenBlock), head_dim]
    Buffer<float> logits_;                          // [max(G*window, G), capacity]
    Buffer<float> block_;                           // [kRedundancyBlockRows, capacity]
    Buffer<float> averaged_, importance_, redundancy_, final_, state_copy_;  // [capacity]
    Buffer<float> mean_;                            // [head_dim]
    Buffer<float> row32_;                           // [head_dim] a row on its way to FP8
    Buffer<float> out32_;                           // [G, head_dim]
    Buffer<double> column_sums_;                    // [capacity]
    Buffer<int32_t> kept_, select_scratch_, positions_copy_;  // [capacity]
    Buffer<uint8_t> gather_;                        // [capacity, head_dim] storage dtype
    Buffer<uint8_t> query_row_;                     // [head_dim] query dtype
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const rkv_cache_params &params, const MemoryPlan &plan) {
    return std::make_unique<CpuBackend>(params, plan);
}

uint64_t cpu_scratch_bytes(const rkv_cache_params &params, const MemoryPlan &plan) {
    // The bookkeeping beyond the lengths (which MemoryPlan counts).
    const uint64_t counts = plan.length_entries * (kNumCountArrays - 1) * sizeof(int32_t);
    return ScratchPlan(params, plan.capacity).bytes(dtype_size(params.dtype), dtype_size(query_dtype(params.dtype))) +
           counts + sizeof(CpuBackend);
}

}  // namespace rkv::cpu
