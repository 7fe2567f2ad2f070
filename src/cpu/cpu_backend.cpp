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
    int64_t head_dim;     // mean, and out32 is [G, head_dim]
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
    uint64_t bytes(size_t element_size) const {
        return uint64_t(3 * rows_d + queries + logits + block + 5 * per_slot + head_dim +
                        groups * head_dim) * 4 +
               uint64_t(per_slot) * 8 /* column sums */ + uint64_t(per_slot) * 4 * 3 /* order, select, positions */ +
               uint64_t(rows_d) * element_size /* gather */;
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
          scratch_plan_(params, plan.capacity),
          keys_(plan.kv_elements * element_size_),
          values_(plan.kv_elements * element_size_),
          positions_(plan.slot_entries),
          state_(plan.slot_entries),
          queries_(plan.query_elements * element_size_),
          lengths_(plan.length_entries),
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
          out32_(uint64_t(groups_) * params.head_dim),
          column_sums_(capacity_),
          kept_(capacity_),
          select_scratch_(capacity_),
          positions_copy_(capacity_),
          gather_(uint64_t(scratch_plan_.rows_d) * element_size_) {}

    void append(int32_t layer, const rkv_append_args &a, const AppendChunk *chunks,
                int32_t num_chunks, const LiveParams &live, void *) override {
        const int32_t d = p_.head_dim;
        for (int32_t c = 0; c < num_chunks; ++c) {
            const AppendChunk &chunk = chunks[c];
            const int64_t offset = a.token_offsets ? a.token_offsets[chunk.entry] : 0;
            for (int32_t t = 0; t < chunk.count; ++t) {
                const int64_t token = offset + chunk.first_token + t;
                const int32_t slot = chunk.slot + t;
                const int64_t position = chunk.position + t;
                for (int32_t h = 0; h < p_.num_kv_heads; ++h) {
                    const int64_t entry = slot_index(layer, chunk.seq, h, slot);
                    convert_row(element(a.k, chunk.entry, token, h), a.k.dtype,
                                keys_.get() + entry * d * element_size_, p_.dtype, d);
                    convert_row(element(a.v, chunk.entry, token, h), a.v.dtype,
                                values_.get() + entry * d * element_size_, p_.dtype, d);
                    positions_.get()[entry] = int32_t(position);
                    state_.get()[entry] = 0.0f;
                }
                if (a.q.data == nullptr) continue;
                const int32_t ring = int32_t(position % p_.window);
                for (int32_t qh = 0; qh < p_.num_q_heads; ++qh)
                    convert_row(element(a.q, chunk.entry, token, qh), a.q.dtype,
                                queries_.get() + query_index(layer, chunk.seq, qh, ring) * element_size_,
                                p_.dtype, d);
            }
            if (method_.scorer == Scorer::AccumulatedAttention) accumulate_h2o(layer, a, chunk, offset, live.pooling);
        }
    }

    void compress(int32_t layer, const CompressJob *jobs, int32_t num_jobs, const LiveParams &live,
                  void *) override {
        const KeptOrder order = kept_in_reference_order(p_) ? KeptOrder::Reference : KeptOrder::Position;
        for (int32_t j = 0; j < num_jobs; ++j) {
            const CompressJob &job = jobs[j];
            for (int32_t h = 0; h < p_.num_kv_heads; ++h) {
                const float *scores = score(layer, job, h, RKV_SCORE_FINAL, live);
                const int64_t base = slot_index(layer, job.seq, h, 0);
                select_kept(scores, positions_.get() + base, job.held, p_.window, job.keep,
                            job.protect_below, order, select_scratch_.get(), kept_.get());
                compact(base, job.keep);
            }
        }
    }

    void set_length(int32_t layer, int32_t seq, int32_t held, void *) override {
        lengths_.get()[int64_t(layer) * p_.max_seqs + seq] = held;
    }

    void clear_sequence(int32_t seq, void *) override {
        for (int32_t l = 0; l < p_.num_layers; ++l) {
            const int64_t base = slot_index(l, seq, 0, 0);
            std::fill(state_.get() + base, state_.get() + base + int64_t(p_.num_kv_heads) * capacity_, 0.0f);
        }
    }

    void attend(int32_t layer, int32_t num_seqs, const int32_t *seq_ids, const int32_t *held,
                const rkv_tensor &q, const rkv_tensor &out, float scale, void *) override {
        const int32_t d = p_.head_dim;
        for (int32_t i = 0; i < num_seqs; ++i) {
            for (int32_t h = 0; h < p_.num_kv_heads; ++h) {
                const int64_t base = slot_index(layer, seq_ids[i], h, 0);
                const float *k = keys_f32(base, held[i], keys32_.get(), keys_.get());
                const float *v = keys_f32(base, held[i], values32_.get(), values_.get());
                for (int32_t g = 0; g < groups_; ++g)
                    convert_row(element(q, i, 0, h * groups_ + g), q.dtype,
                                queries32_.get() + int64_t(g) * d, RKV_DTYPE_F32, d);
                cpu::attend(queries32_.get(), groups_, k, v, held[i], d, scale, logits_.get(), out32_.get());
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
        std::memcpy(out, scores, size_t(job.held - p_.window) * 4);
    }

    void *keys() const override { return keys_.get(); }
    void *values() const override { return values_.get(); }
    int32_t *positions() const override { return positions_.get(); }
    const int32_t *lengths() const override { return lengths_.get(); }

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
    // Address of (entry, token, head, 0) of a caller's tensor.
    static const void *element(const rkv_tensor &t, int64_t entry, int64_t token, int64_t head) {
        const int64_t index = entry * t.stride_seq + token * t.stride_token + head * t.stride_head;
        return static_cast<const char *>(t.data) + index * int64_t(dtype_size(t.dtype));
    }

    // Rows [0, n) of a head's K or V as float32: the storage itself for F32,
    // else converted into `scratch`.
    const float *keys_f32(int64_t base, int32_t n, float *scratch, const uint8_t *storage) const {
        const int64_t d = p_.head_dim;
        const uint8_t *src = storage + base * d * element_size_;
        if (p_.dtype == RKV_DTYPE_F32) return reinterpret_cast<const float *>(src);
        convert_row(src, p_.dtype, scratch, RKV_DTYPE_F32, n * d);
        return scratch;
    }

    // H2O: each new token's query attends over the held keys up to itself.
    void accumulate_h2o(int32_t layer, const rkv_append_args &a, const AppendChunk &chunk,
                        int64_t offset, rkv_pooling pooling) {
        const int32_t d = p_.head_dim;
        const int32_t visible = chunk.slot + chunk.count;
        for (int32_t h = 0; h < p_.num_kv_heads; ++h) {
            const int64_t base = slot_index(layer, chunk.seq, h, 0);
            const float *k = keys_f32(base, visible, keys32_.get(), keys_.get());
            for (int32_t t0 = 0; t0 < chunk.count; t0 += kH2OTokenBlock) {
                const int32_t tokens = std::min(kH2OTokenBlock, chunk.count - t0);
                for (int32_t t = 0; t < tokens; ++t)
                    for (int32_t g = 0; g < groups_; ++g)
                        convert_row(element(a.q, chunk.entry, offset + chunk.first_token + t0 + t, h * groups_ + g),
                                    a.q.dtype, queries32_.get() + (int64_t(t) * groups_ + g) * d,
                                    RKV_DTYPE_F32, d);
                h2o_accumulate(queries32_.get(), tokens, groups_, k, chunk.slot + t0, d, pooling,
                               logits_.get(), state_.get() + base);
            }
        }
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
                const float *k = keys_f32(base, n, keys32_.get(), keys_.get());
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
                const float *k = keys_f32(base, n, keys32_.get(), keys_.get());
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
            convert_row(queries_.get() + src * element_size_, p_.dtype,
                        queries32_.get() + int64_t(g) * p_.window * d, RKV_DTYPE_F32,
                        int64_t(p_.window) * d);
        }
    }

    // Slots kept_[0 .. keep) of the head at `base` move to slots 0 .. keep-1:
    // K, V, positions and scorer state together.
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
    }

    const rkv_cache_params p_;  // as created: the shape, method, mode and window (the live
                                // parameters come with each call)
    const MethodInfo method_;
    const int32_t capacity_;
    const int32_t groups_;
    const size_t element_size_;
    const ScratchPlan scratch_plan_;

    // Cache memory (layouts in backend.h).
    Buffer<uint8_t> keys_, values_;
    Buffer<int32_t> positions_;
    Buffer<float> state_;
    Buffer<uint8_t> queries_;
    Buffer<int32_t> lengths_;

    // Scratch, sized by ScratchPlan.
    Buffer<float> keys32_, values32_, normalized_;  // [capacity, head_dim]
    Buffer<float> queries32_;                       // [max(G*window, G*kH2OTokenBlock), head_dim]
    Buffer<float> logits_;                          // [max(G*window, G), capacity]
    Buffer<float> block_;                           // [kRedundancyBlockRows, capacity]
    Buffer<float> averaged_, importance_, redundancy_, final_, state_copy_;  // [capacity]
    Buffer<float> mean_;                            // [head_dim]
    Buffer<float> out32_;                           // [G, head_dim]
    Buffer<double> column_sums_;                    // [capacity]
    Buffer<int32_t> kept_, select_scratch_, positions_copy_;  // [capacity]
    Buffer<uint8_t> gather_;                        // [capacity, head_dim] storage dtype
};

}  // namespace

std::unique_ptr<Backend> make_cpu_backend(const rkv_cache_params &params, const MemoryPlan &plan) {
    return std::make_unique<CpuBackend>(params, plan);
}

uint64_t cpu_scratch_bytes(const rkv_cache_params &params, const MemoryPlan &plan) {
    return ScratchPlan(params, plan.capacity).bytes(dtype_size(params.dtype)) + sizeof(CpuBackend);
}

}  // namespace rkv::cpu
