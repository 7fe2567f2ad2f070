#include "cuda/cuda_backend.h"

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "core/method.h"
#include "cuda/cuda_check.h"
#include "cuda/gram_path_choice.h"
#include "cuda/lt_matmul.h"
#include "cuda/phase_profile.h"
#include "cuda/scratch_plan.h"
#include "cuda/side_stream.h"
#include "dtype.h"
#include "error.h"
#include "kernels/launch.h"

namespace rkv::cuda {

namespace {

namespace k = rkv::kernels;

cudaStream_t as_stream(void *stream) { return static_cast<cudaStream_t>(stream); }

k::Tensor tensor(const rkv_tensor &t) {
    k::Tensor out{};
    out.data = t.data;
    out.dtype = int32_t(t.dtype);
    out.stride_seq = t.stride_seq;
    out.stride_token = t.stride_token;
    out.stride_head = t.stride_head;
    return out;
}

class CudaBackend final : public Backend {
 public:
    CudaBackend(const rkv_cache_params &params, const MemoryPlan &plan)
        : p_(params),
          device_(params.device_id),
          capacity_(plan.capacity),
          groups_(params.num_q_heads / params.num_kv_heads),
          element_size_(dtype_size(params.dtype)),
          score_size_(dtype_size(query_dtype(params.dtype))),
          seq_layers_(int64_t(plan.length_entries)),
          history_len_(plan.history),
          scratch_(params, plan),
          method_(method_info(params.method)) {
        DeviceGuard guard(device_);
        keys_ = DeviceBuffer(plan.kv_elements * element_size_, "K", device_);
        values_ = DeviceBuffer(plan.kv_elements * element_size_, "V", device_);
        key_scales_ = DeviceBuffer(plan.scale_entries * 4, "K scales", device_);
        value_scales_ = DeviceBuffer(plan.scale_entries * 4, "V scales", device_);
        positions_ = DeviceBuffer(plan.slot_entries * 4, "positions", device_);
        state_ = DeviceBuffer(plan.slot_entries * 4, "scorer state", device_);
        queries_ = DeviceBuffer(plan.query_elements * score_size_, "the query window", device_);
        history_ = DeviceBuffer(plan.history_elements * score_size_, "the query history", device_);
        bookkeeping_ = DeviceBuffer(uint64_t(seq_layers_) * 4 * k::kBookkeepingArrays, "lengths", device_);
        counter_ = DeviceBuffer(scratch_.counter, "a grid counter", device_);
        importance_ = DeviceBuffer(scratch_.per_head_f32, "scratch (importance)", device_);
        redundancy_ = DeviceBuffer(scratch_.per_head_f32, "scratch (redundancy)", device_);
        final_ = DeviceBuffer(scratch_.per_head_f32, "scratch (scores)", device_);
        aux_ = DeviceBuffer(scratch_.per_head_f32, "scratch (averaged attention)", device_);
        inv_norm_ = DeviceBuffer(scratch_.per_head_f32, "scratch (key norms)", device_);
        first_column_ = DeviceBuffer(scratch_.per_head_f32, "scratch (first column)", device_);
        corrections_ = DeviceBuffer(scratch_.corrections, "scratch (column corrections)", device_);
        partial_sum_ = DeviceBuffer(scratch_.partials, "scratch (row sums)", device_);
        partial_latest_ = DeviceBuffer(scratch_.partials, "scratch (latest near-duplicates)", device_);
        partial_value_ = DeviceBuffer(scratch_.partials, "scratch (near-duplicate similarities)", device_);
        partial_w_ = DeviceBuffer(scratch_.partial_w, "scratch (normalised key sums)", device_);
        logits_ = DeviceBuffer(scratch_.logits, "scratch (window logits)", device_);
        gram_ = DeviceBuffer(scratch_.gram, "scratch (key Gram rows)", device_);
        gather_ = DeviceBuffer(scratch_.gather_bytes, "scratch (reference-order compaction)", device_);
        workspace_ = DeviceBuffer(scratch_.workspace, "the cuBLASLt workspace", device_);
        keys_dequantised_ = DeviceBuffer(scratch_.keys_dequantised, "scratch (dequantised keys)", device_);
        attend_state_ = DeviceBuffer(scratch_.attend_state, "scratch (attention partial states)", device_);
        attend_acc_ = DeviceBuffer(scratch_.attend_acc, "scratch (attention partial sums)", device_);
        attend_counters_ = DeviceBuffer(scratch_.attend_counters, "scratch (attention counters)", device_);
        pinned_ = std::make_unique<PinnedBuffer>(scratch_.pinned, "the bookkeeping copy");
        check(cudaMemset(bookkeeping_.get(), 0, bookkeeping_.bytes()), "cudaMemset(lengths)");
        check(cudaMemset(counter_.get(), 0, counter_.bytes()), "cudaMemset(counter)");
        check(cudaMemset(state_.get(), 0, state_.bytes()), "cudaMemset(scorer state)");
        check(cudaMemset(positions_.get(), 0, positions_.bytes()), "cudaMemset(positions)");
        check(cudaMemset(attend_counters_.get(), 0, attend_counters_.bytes()), "cudaMemset(attention counters)");
        // FULL never selects: its (possibly huge) capacity sizes no kernel's shared memory.
        check(k::configure_kernels(int32_t(p_.dtype), p_.head_dim, scratch_.compresses ? capacity_ : 0, groups_),
              "configuring the kernels' shared memory");
        check(cudaDeviceGetAttribute(&major_, cudaDevAttrComputeCapabilityMajor, device_), "cudaDeviceGetAttribute");
        check(cudaDeviceGetAttribute(&minor_, cudaDevAttrComputeCapabilityMinor, device_), "cudaDeviceGetAttribute");
        wgmma_ = k::gram_wgmma_supported(int32_t(p_.dtype), p_.head_dim, scratch_.rows, major_, minor_);
        int8_gram_ = k::gram_int8_supported(int32_t(p_.dtype), p_.head_dim, scratch_.rows,
                                            scratch_.compresses ? capacity_ : 0, major_, minor_);
        if (int8_gram_ && method_.scorer == Scorer::ImportanceRedundancy) {  // AUTO times the two Gram paths
            check(cudaEventCreate(&gram_timing_.start), "cudaEventCreate (the compression timing)");
            check(cudaEventCreate(&gram_timing_.end), "cudaEventCreate (the compression timing)");
        }
        if (scratch_.attention) {  // FP8: the products read the bf16 copy of the keys and the bf16 queries
            lt_ = std::make_unique<LtMatmul>(query_dtype(p_.dtype), workspace_.get(), workspace_.bytes());
            plan_steady_state();
            for (int32_t lane = 1; lane < max_lanes(); ++lane) sides_[lane - 1].create();
        }
        const int32_t dtype = int32_t(p_.dtype);
        resident_.wide = k::attend_resident_blocks(dtype, p_.head_dim, groups_, k::AttendKernel::kWide);
        resident_.narrow = k::attend_resident_blocks(dtype, p_.head_dim, groups_, k::AttendKernel::kNarrow);
        resident_.tensor = k::attend_resident_blocks(dtype, p_.head_dim, groups_, k::AttendKernel::kTensor);
        check(cudaDeviceGetAttribute(&resident_.sms, cudaDevAttrMultiProcessorCount, device_), "cudaDeviceGetAttribute");
        resident_.tensor_row_maps = k::attend_uses_row_maps(dtype, p_.head_dim);
        if (resident_.tensor_row_maps) {
            const int64_t rows = int64_t(p_.max_seqs) * p_.num_kv_heads * capacity_;
            row_maps_.resize(size_t(p_.num_layers));
            for (int32_t layer = 0; layer < p_.num_layers; ++layer) {
                const k::CacheLayer c = layer_view(layer);
                check(k::make_attend_row_maps(dtype, p_.head_dim, c.keys, c.values, rows, &row_maps_[size_t(layer)]),
                      "describing each layer's K/V rows to the copy engine for rkv_attend (cuTensorMapEncodeTiled)");
            }
        }
        check(cudaDeviceSynchronize(), "cudaDeviceSynchronize (create)");
    }

    ~CudaBackend() override {
        // rkv_cache_destroy waits for the work enqueued on the cache's memory.
        int previous = -1;
        if (cudaGetDevice(&previous) == cudaSuccess) {
            cudaSetDevice(device_);
            cudaDeviceSynchronize();
            cudaSetDevice(previous);
        }
    }

    void append(int32_t layer, const rkv_append_args &a, const AppendChunk *chunks, int32_t num_chunks,
                const LiveParams &live, void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_append");
        k::AppendParams p{};
        p.cache = layer_view(layer);
        p.k = tensor(a.k);
        p.v = tensor(a.v);
        if (a.q.data) p.q = tensor(a.q);
        p.counter = counter_.get<unsigned>();
        p.h2o = method_.scorer == Scorer::AccumulatedAttention;
        p.pooling = live.pooling;
        p.scale = 1.0f / std::sqrt(float(p_.head_dim));
        for (int32_t first = 0; first < num_chunks; first += k::kMaxAppendChunks) {
            p.num_chunks = std::min(k::kMaxAppendChunks, num_chunks - first);
            p.max_count = 0;
            for (int32_t i = 0; i < p.num_chunks; ++i) {
                const AppendChunk &c = chunks[first + i];
                const int64_t offset = a.token_offsets ? a.token_offsets[c.entry] : 0;
                p.chunks[i] = k::AppendChunk{c.seq, c.entry, c.count, 0, offset + c.first_token};
                p.max_count = std::max(p.max_count, c.count);
            }
            check(k::launch_append(p, as_stream(stream)), "rkv_append: launching the append kernel");
        }
    }

    void append_batch(int32_t layer, const rkv_append_args &a, const int32_t *batch_ids, int32_t entries,
                      const LiveParams &live, void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_append");
        k::AppendParams p{};
        p.cache = layer_view(layer);
        p.batch_ids = batch_ids;
        p.k = tensor(a.k);
        p.v = tensor(a.v);
        if (a.q.data) p.q = tensor(a.q);
        p.counter = counter_.get<unsigned>();
        p.h2o = method_.scorer == Scorer::AccumulatedAttention;
        p.pooling = live.pooling;
        p.scale = 1.0f / std::sqrt(float(p_.head_dim));
        p.num_chunks = entries;
        p.max_count = 1;
        check(k::launch_append(p, as_stream(stream)), "rkv_append: launching the append kernel (batch)");
    }

    // Jobs of any layers, in groups of up to scratch_.jobs: every kernel of a
    // group covers all of its jobs (one launch for the 32 layers of a sequence).
    // A call of more than one lane's group runs them in two or four lanes (compress_lanes).
    void compress(const CompressJob *jobs, int32_t num_jobs, const LiveParams &live, void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_compress");
        const cudaStream_t caller = as_stream(stream);
        const bool timed = choose_gram_path(jobs, num_jobs, caller);
        const int32_t lanes = compress_lanes(num_jobs);
        const int32_t group_jobs = scratch_.jobs / lanes;
        ForkScope fork(sides_, lanes - 1, caller);
        for (int32_t first = 0, group = 0; first < num_jobs; first += group_jobs, ++group) {
            const int32_t lane = group % lanes;
            // lane 0 on the caller's stream and scratch jobs [0, group_jobs); lane l > 0 on side stream
            // l - 1 and scratch jobs [l * group_jobs, (l + 1) * group_jobs)
            k::CompressParams p = compress_params(live, lane * group_jobs);
            p.num_jobs = std::min(group_jobs, num_jobs - first);
            for (int32_t j = 0; j < p.num_jobs; ++j) p.jobs[j] = job(jobs[first + j]);
            const cudaStream_t s = lane == 0 ? caller : sides_[lane - 1].get();
            if (method_.scorer == Scorer::AccumulatedAttention && p_.max_rollback > 0)
                commit_pending(p, nullptr, live, s, "rkv_compress: launching the H2O commit of pending queries");
            dequantize_keys(p, s);
            enqueue_scores(p, s);
            enqueue_selection(p, s);
            check(k::launch_commit(p, s), "rkv_compress: launching the commit");
        }
        fork.join();
        if (timed) {
            check(cudaEventRecord(gram_timing_.end, caller), "rkv_compress: cudaEventRecord");
            gram_timing_.pending = true;
        }
    }

    // A timed call's time, once its end event has passed (relaxed capture mode:
    // another thread's graph capture does not forbid the query here).
    void collect_gram_timing() {
        if (!gram_timing_.pending) return;
        cudaStreamCaptureMode mode = cudaStreamCaptureModeRelaxed;
        check(cudaThreadExchangeStreamCaptureMode(&mode), "rkv_compress: cudaThreadExchangeStreamCaptureMode");
        const cudaError_t ready = cudaEventQuery(gram_timing_.end);
        float milliseconds = 0.0f;
        const cudaError_t elapsed =
            ready == cudaSuccess ? cudaEventElapsedTime(&milliseconds, gram_timing_.start, gram_timing_.end) : ready;
        check(cudaThreadExchangeStreamCaptureMode(&mode), "rkv_compress: cudaThreadExchangeStreamCaptureMode");
        if (ready == cudaErrorNotReady) return;
        check(elapsed, "rkv_compress: timing the previous compression (cudaEventQuery, cudaEventElapsedTime)");
        gram_choice_.record(gram_timing_.path, milliseconds, gram_timing_.work);
        gram_timing_.pending = false;
    }

    // RKV_MATMUL_AUTO between the wgmma Gram and its int8-filtered form (where
    // both apply, for R-KV): the path of this call, by the measured times of
    // earlier calls (src/cuda/gram_path_choice.h). Returns whether this call
    // is timed (its start event recorded; the end event after its join).
    bool choose_gram_path(const CompressJob *jobs, int32_t num_jobs, cudaStream_t caller) {
        if (!gram_timing_.start || matmul_path_ != RKV_MATMUL_AUTO) return false;
        // Nothing is timed or queried while the caller's stream is captured
        // into a graph (an event query there invalidates the capture;
        // test_graphs_match_eager): the graph keeps the best path known.
        cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
        if (cudaStreamIsCapturing(caller, &capture) != cudaSuccess) {
            (void)cudaGetLastError();  // (the legacy stream while another captures: not timed either)
            capture = cudaStreamCaptureStatusActive;
        }
        if (capture != cudaStreamCaptureStatusNone) {
            gram_path_ = gram_choice_.best();
            return false;
        }
        collect_gram_timing();
        if (gram_timing_.pending) {
            gram_path_ = gram_choice_.best();
            return false;
        }
        double work = 0.0;
        for (int32_t j = 0; j < num_jobs; ++j) work += double(jobs[j].held) * double(jobs[j].held);
        gram_path_ = gram_choice_.next_timed();
        gram_timing_.path = gram_path_;
        gram_timing_.work = work;
        check(cudaEventRecord(gram_timing_.start, caller), "rkv_compress: cudaEventRecord");
        return true;
    }

    // Lanes: groups of a half or a quarter of the scratch's jobs, taken in
    // turn by the caller's stream and the side streams, each lane in its part
    // of the scratch (no more memory). The groups of a call touch disjoint
    // (sequence, layer)s, so the lanes need no ordering between them, and the
    // GPU runs their kernels side by side: one group's memory-bound compaction
    // beside another's Gram. Measured on the H200 (kernels/README.md, "Two
    // lanes", Session 13): two lanes against one, batch 64 26.4 -> 25.0-25.2
    // ms, batch 8 3.30 -> 3.18 ms (groups of 32; 32-job groups in one lane take
    // 28.1 ms at batch 64), batch 1 (32 jobs: two groups of 16) 0.447 ->
    // 0.441; four lanes of 16 against two of 32 (wgmma path), batch 64 on
    // Gaussian keys 20.92-20.93 -> 20.00-20.47 ms, on model keys unchanged
    // (14.9-15.1), batch 8 1.99 -> 1.93-1.97. One lane where that does not
    // apply: a call of at most one group, the cuBLASLt path (one workspace),
    // methods without window queries (H2O's pending-query commit,
    // StreamingLLM), and the phase profile (it times phases on one stream).
    int32_t compress_lanes(int32_t num_jobs) const {
        if (path() == RKV_MATMUL_CUBLASLT || profile_.enabled()) return 1;
        int32_t lanes = max_lanes();
        while (lanes > 1 && num_jobs <= scratch_.jobs / lanes) lanes /= 2;
        return lanes;
    }
    // The lanes this cache's scratch can run: four where it holds four groups
    // of kMinLaneJobs (smaller groups leave too few blocks to each kernel),
    // else two (as before the four: any scratch of two jobs or more).
    int32_t max_lanes() const {
        if (!scratch_.attention || scratch_.jobs < 2) return 1;
        return scratch_.jobs >= kMaxLanes * kMinLaneJobs ? kMaxLanes : 2;
    }
    static constexpr int32_t kMaxLanes = 4, kMinLaneJobs = 16;

    void truncate(int32_t seq, int32_t tokens, void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_seq_truncate");
        k::SequenceParams p = sequence_params();
        p.seq = seq;
        p.tokens = tokens;
        check(k::launch_truncate(p, as_stream(stream)), "rkv_seq_truncate: launching the rollback kernel");
    }

    void copy_sequence(int32_t src, int32_t dst, void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_seq_copy");
        k::SequenceParams p = sequence_params();
        p.seq = dst;
        p.src = src;
        check(k::launch_copy(p, as_stream(stream)), "rkv_seq_copy: launching the copy kernel");
    }

    void clear_sequence(int32_t seq, void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_seq_reset");
        k::ClearParams p{};
        p.state = state_.get<float>();
        p.bookkeeping = bookkeeping_.get<int32_t>();
        p.book_stride = seq_layers_;
        p.layers = p_.num_layers;
        p.max_seqs = p_.max_seqs;
        p.kv_heads = p_.num_kv_heads;
        p.capacity = capacity_;
        p.seq = seq;
        check(k::launch_clear_sequence(p, as_stream(stream)), "rkv_seq_reset: launching the reset kernel");
    }

    void attend(int32_t layer, int32_t num_seqs, const int32_t *seq_ids, const int32_t *batch_ids, int32_t max_held,
                const rkv_tensor &q, const rkv_tensor &out, float scale, void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_attend");
        k::AttendParams p{};
        p.cache = layer_view(layer);
        p.scale = scale;
        p.groups = groups_;
        p.partial_state = attend_state_.get<float>();
        p.partial_acc = attend_acc_.get<float>();
        p.counters = attend_counters_.get<unsigned>();
        if (batch_ids) {  // the ids are read on the device: one launch (entries <= 65535 = grid.z)
            p.batch_ids = batch_ids;
            p.num_seqs = num_seqs;
            p.q = tensor(q);
            p.out = tensor(out);
            // One split per (entry, KV head) unless a plan is forced: the rule's
            // splits depend on the number of entries, so a sequence would attend
            // with different rounding in batches of different sizes (an engine
            // compares a slot with decoding it alone, bit for bit).
            k::AttendPlan plan = attend_plan(num_seqs, max_held);
            if (attend_splits_ == 0) plan.splits = 1;
            p.splits = plan.splits;
            check(k::launch_attend(p, plan.kernel, row_maps(layer), as_stream(stream)),
                  "rkv_attend: launching the attention kernel (batch)");
            return;
        }
        for (int32_t first = 0; first < num_seqs; first += k::kMaxAttendSeqs) {
            p.num_seqs = std::min(k::kMaxAttendSeqs, num_seqs - first);
            p.q = tensor(q);
            p.out = tensor(out);
            p.q.data = static_cast<const char *>(q.data) + first * q.stride_seq * int64_t(dtype_size(q.dtype));
            p.out.data = static_cast<const char *>(out.data) + first * out.stride_seq * int64_t(dtype_size(out.dtype));
            std::copy(seq_ids + first, seq_ids + first + p.num_seqs, p.seq_ids);
            const k::AttendPlan plan = attend_plan(p.num_seqs, max_held);
            p.splits = plan.splits;
            check(k::launch_attend(p, plan.kernel, row_maps(layer), as_stream(stream)),
                  "rkv_attend: launching the attention kernel");
        }
    }

    void set_attend_plan(int32_t splits, int32_t variant) override {
        if (variant == RKV_ATTEND_NARROW && !k::attend_narrow_exists(p_.head_dim, groups_))
            fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_attend_plan: the narrow kernel serves head_dim 64, 128 or 256 "
                 "and at most 4 query heads per KV head (this cache: head_dim %d, %d)", p_.head_dim, groups_);
        if (variant == RKV_ATTEND_TENSOR && !k::attend_tensor_exists(int32_t(p_.dtype), p_.head_dim))
            fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_attend_plan: the tensor-core kernel serves f16, bf16 and FP8 "
                 "storage of head_dim 64, 128 or 256 (this cache: %s, head_dim %d)", dtype_name(p_.dtype), p_.head_dim);
        if (splits > 1 && !k::attend_splits_apply(p_.head_dim))
            fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_attend_plan: splitting a sequence needs head_dim 64, 128 or "
                 "256 (this cache: %d)", p_.head_dim);
        attend_splits_ = splits;
        attend_variant_ = variant;
    }

    void copy_positions(int32_t layer, int32_t seq, int32_t head, int32_t held, int32_t *out) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_seq_positions");
        check(cudaDeviceSynchronize(), "rkv_seq_positions: waiting for the cache's work");
        const int64_t slot0 = ((int64_t(layer) * p_.max_seqs + seq) * p_.num_kv_heads + head) * capacity_;
        check(cudaMemcpy(out, positions_.get<int32_t>() + slot0, size_t(held) * 4, cudaMemcpyDeviceToHost),
              "rkv_seq_positions: cudaMemcpy");
    }

    void inspect_scores(int32_t layer, const CompressJob &j, int32_t head, rkv_score_kind kind, const LiveParams &live,
                        float *out) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_seq_scores");
        check(cudaDeviceSynchronize(), "rkv_seq_scores: waiting for the cache's work");
        k::CompressParams p = compress_params(live);
        p.num_jobs = 1;
        p.jobs[0] = job(j);
        p.jobs[0].layer = layer;
        p.score_only = 1;
        if (method_.scorer == Scorer::AccumulatedAttention) {
            // The state as the compression will rank it: pending queries committed, into a copy.
            float *copy = final_.get<float>();
            const float *state = state_.get<float>() + slot_index(layer, j.seq, 0, 0);
            check(cudaMemcpy(copy, state, size_t(p_.num_kv_heads) * capacity_ * 4, cudaMemcpyDeviceToDevice),
                  "rkv_seq_scores: copying the H2O state");
            if (p_.max_rollback > 0)
                commit_pending(p, copy, live, nullptr, "rkv_seq_scores: launching the H2O commit of pending queries");
            check(cudaMemcpy(out, copy + int64_t(head) * capacity_, size_t(j.held - p_.window) * 4,
                             cudaMemcpyDeviceToHost),
                  "rkv_seq_scores: cudaMemcpy");
            return;
        }
        dequantize_keys(p, nullptr);
        enqueue_scores(p, nullptr);
        enqueue_selection(p, nullptr);
        const float *source = kind == RKV_SCORE_IMPORTANCE   ? importance_.get<float>()
                              : kind == RKV_SCORE_REDUNDANCY ? redundancy_.get<float>()
                                                              : final_.get<float>();
        check(cudaMemcpy(out, source + int64_t(head) * capacity_, size_t(j.held - p_.window) * 4,
                         cudaMemcpyDeviceToHost),
              "rkv_seq_scores: cudaMemcpy");
    }

    void *keys() const override { return keys_.get(); }
    void *values() const override { return values_.get(); }
    float *key_scales() const override { return key_scales_.get<float>(); }      // nullptr unless FP8
    float *value_scales() const override { return value_scales_.get<float>(); }
    int32_t *positions() const override { return positions_.get<int32_t>(); }
    const int32_t *lengths() const override { return bookkeeping_.get<int32_t>(); }

    void check_memory(const void *data, const char *name, const char *function) const override {
        cudaPointerAttributes attributes{};
        const cudaError_t error = cudaPointerGetAttributes(&attributes, data);
        if (error != cudaSuccess) {
            cudaGetLastError();
            if (is_sticky(error))
                fail(RKV_ERR_DEVICE, "%s: an earlier kernel on this device faulted (%s: %s); the cache memory "
                     "is undefined", function, cudaGetErrorName(error), cudaGetErrorString(error));
            fail(RKV_ERR_INVALID_ARGUMENT, "%s: %s is not memory CUDA knows (%s); a CUDA cache reads "
                 "device memory of CUDA device %d", function, name, cudaGetErrorName(error), device_);
        }
        switch (attributes.type) {
            case cudaMemoryTypeDevice:
                if (attributes.device != device_)
                    fail(RKV_ERR_INVALID_ARGUMENT, "%s: %s is memory of CUDA device %d, but the cache lives on "
                         "device %d", function, name, attributes.device, device_);
                return;
            case cudaMemoryTypeManaged:
            case cudaMemoryTypeHost:  // page-locked host memory is mapped into the device's address space
                return;
            default:
                fail(RKV_ERR_INVALID_ARGUMENT, "%s: %s is ordinary host memory; a CUDA cache reads device "
                     "memory of CUDA device %d (copy it there first, or use a CPU cache)",
                     function, name, device_);
        }
    }

    BatchIds allocate_batch(int32_t entries) override {
        DeviceGuard guard(device_);
        void *ids = nullptr;
        const size_t bytes = size_t(entries) * sizeof(int32_t);
        const cudaError_t error = cudaMalloc(&ids, bytes);
        if (error != cudaSuccess) {
            cudaGetLastError();
            fail(RKV_ERR_OUT_OF_MEMORY, "rkv_batch_create: cudaMalloc of %zu bytes on CUDA device %d failed (%s)",
                 bytes, device_, cudaGetErrorString(error));
        }
        BatchIds owned(static_cast<int32_t *>(ids), [](int32_t *p) { cudaFree(p); });
        check(cudaMemset(ids, 0xff, bytes), "rkv_batch_create: cudaMemset");  // -1: padding
        check(cudaDeviceSynchronize(), "rkv_batch_create: cudaDeviceSynchronize");
        return owned;
    }

    void set_batch(int32_t *batch_ids, const int32_t *ids, int32_t entries, void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_batch_set");
        k::BatchSetParams p;
        p.ids = batch_ids;
        for (int32_t first = 0; first < entries; first += k::kMaxBatchSetIds) {
            p.first = first;
            p.count = std::min(k::kMaxBatchSetIds, entries - first);
            std::copy(ids + first, ids + first + p.count, p.values);
            check(k::launch_batch_set(p, as_stream(stream)), "rkv_batch_set: launching the id copy");
        }
    }

    DeviceCounts read_counts(void *stream) override {
        DeviceGuard guard(device_);
        check_sticky("rkv_cache_sync_lengths");
        int32_t *host = pinned_->get<int32_t>();
        check(cudaMemcpyAsync(host, bookkeeping_.get(), bookkeeping_.bytes(), cudaMemcpyDeviceToHost,
                              as_stream(stream)),
              "rkv_cache_sync_lengths: cudaMemcpyAsync");
        check(cudaStreamSynchronize(as_stream(stream)), "rkv_cache_sync_lengths: cudaStreamSynchronize");
        static_assert(k::kBookkeepingArrays == kNumCountArrays, "the device keeps every CountArray");
        DeviceCounts out{};
        for (int32_t array = 0; array < kNumCountArrays; ++array) out.arrays[array] = host + array * seq_layers_;
        return out;
    }

    void set_matmul_path(int32_t path) override {
        if (path < RKV_MATMUL_AUTO || path > RKV_MATMUL_WGMMA_INT8)
            fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_matmul_path: unknown path %d", path);
        const bool fused = k::gram_fused_supported(int32_t(p_.dtype), p_.head_dim, scratch_.rows);
        if (path != RKV_MATMUL_AUTO && path != RKV_MATMUL_CUBLASLT && !fused)
            fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_matmul_path: the %s kernels need f16, bf16 or FP8 storage, "
                 "head_dim 64, 128 or 256 and at most 64 window queries per KV head (this cache: %s, "
                 "head_dim %d, %d)", path == RKV_MATMUL_FUSED ? "fused" : "wgmma", dtype_name(p_.dtype),
                 p_.head_dim, scratch_.rows);
        if ((path == RKV_MATMUL_WGMMA || path == RKV_MATMUL_WGMMA_INT8) && !wgmma_)
            fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_matmul_path: the wgmma kernels are sm_90a code and need a "
                 "GPU of compute capability 9.0 (device %d is %d.%d)", device_, major_, minor_);
        if (path == RKV_MATMUL_WGMMA_INT8 && !int8_gram_)
            fail(RKV_ERR_UNSUPPORTED, "rkv_cache_set_matmul_path: the int8-filtered Gram needs head_dim 128 "
                 "and a capacity of at least 33 tokens (this cache: head_dim %d, capacity %d)", p_.head_dim,
                 capacity_);
        matmul_path_ = path;
    }

 private:
    const k::AttendRowMaps *row_maps(int32_t layer) const {
        return row_maps_.empty() ? nullptr : &row_maps_[size_t(layer)];
    }

    k::CacheLayer layer_view(int32_t layer) const {
        k::CacheLayer c{};
        const int64_t seqs = p_.max_seqs, cap = capacity_, d = p_.head_dim;
        const int64_t slot0 = int64_t(layer) * seqs * p_.num_kv_heads * cap;
        c.keys = keys_.get<char>() + slot0 * d * int64_t(element_size_);
        c.values = values_.get<char>() + slot0 * d * int64_t(element_size_);
        c.positions = positions_.get<int32_t>() + slot0;
        c.state = state_.get<float>() + slot0;
        c.queries = queries_.get<char>() +
                    int64_t(layer) * seqs * p_.num_q_heads * p_.window * d * int64_t(score_size_);
        c.history_queries = history_len_ == 0 ? nullptr
                                              : history_.get<char>() + int64_t(layer) * seqs * p_.num_q_heads *
                                                                           history_len_ * d * int64_t(score_size_);
        int32_t *book = bookkeeping_.get<int32_t>() + int64_t(layer) * seqs;
        c.lengths = book + kHeld * seq_layers_;
        c.logical = book + kLogical * seq_layers_;
        c.queries_valid = book + kQueriesValid * seq_layers_;
        c.compressions = book + kCompressions * seq_layers_;
        c.dropped = book + kDropped * seq_layers_;
        c.recent = book + kRecent * seq_layers_;
        c.pending = book + kPending * seq_layers_;
        c.layer = layer;
        c.max_seqs = p_.max_seqs;
        c.kv_heads = p_.num_kv_heads;
        c.q_heads = p_.num_q_heads;
        c.capacity = capacity_;
        c.head_dim = p_.head_dim;
        c.window = p_.window;
        c.dtype = int32_t(p_.dtype);
        c.history = history_len_;
        c.max_rollback = p_.max_rollback;
        if (is_fp8(p_.dtype)) {
            c.k_scale = key_scales_.get<float>() + slot0;
            c.v_scale = value_scales_.get<float>() + slot0;
        }
        return c;
    }

    int64_t slot_index(int32_t layer, int32_t seq, int32_t head, int32_t slot) const {
        return ((int64_t(layer) * p_.max_seqs + seq) * p_.num_kv_heads + head) * capacity_ + slot;
    }

    k::SequenceParams sequence_params() const {
        k::SequenceParams p{};
        p.layer0 = layer_view(0);
        p.layer_slots = int64_t(p_.max_seqs) * p_.num_kv_heads * capacity_;
        p.layer_queries = int64_t(p_.max_seqs) * p_.num_q_heads * p_.window * p_.head_dim;
        p.layer_history = int64_t(p_.max_seqs) * p_.num_q_heads * history_len_ * p_.head_dim;
        p.bookkeeping = bookkeeping_.get<int32_t>();
        p.book_stride = seq_layers_;
        p.layers = p_.num_layers;
        return p;
    }

    // H2O's pending queries of the jobs of `p`, into the cache's state (out
    // NULL) or, for jobs[0], into `out` [kv_heads, capacity].
    // The commit kernel reads one layer's view: one launch per layer among the
    // jobs of the group (a group of one layer, the usual case at large batches,
    // is one launch).
    void commit_pending(const k::CompressParams &p, float *out, const LiveParams &live, cudaStream_t stream,
                        const char *what) {
        bool done[k::kMaxGroupJobs] = {};
        for (int32_t first = 0; first < p.num_jobs; ++first) {
            if (done[first]) continue;
            const int32_t layer = p.jobs[first].layer;
            k::CommitParams c{};
            c.cache = layer_view(layer);
            c.state_out = out;
            c.pooling = live.pooling;
            c.scale = 1.0f / std::sqrt(float(p_.head_dim));
            for (int32_t j = first; j < p.num_jobs; ++j) {
                if (p.jobs[j].layer != layer) continue;
                c.jobs[c.num_jobs++] = p.jobs[j];
                done[j] = true;
            }
            check(k::launch_h2o_commit_all(c, stream), what);
        }
    }

    // The parameters of a group of jobs (the caller fills in the jobs), its
    // scratch starting at scratch job `first_scratch_job` (every scratch
    // buffer of a group is [J, ...]: one slice per job).
    k::CompressParams compress_params(const LiveParams &live, int32_t first_scratch_job = 0) const {
        k::CompressParams p{};
        p.cache = layer_view(0);
        p.layer_slots = int64_t(p_.max_seqs) * p_.num_kv_heads * capacity_;
        p.layer_queries = int64_t(p_.max_seqs) * p_.num_q_heads * p_.window * p_.head_dim;
        p.layer_history = int64_t(p_.max_seqs) * p_.num_q_heads * history_len_ * p_.head_dim;
        k::Scratch &s = p.scratch;
        const auto slice = [&](const DeviceBuffer &buffer) -> void * {
            if (!buffer.get()) return nullptr;
            return buffer.get<char>() + buffer.bytes() / uint64_t(scratch_.jobs) * uint64_t(first_scratch_job);
        };
        s.importance = static_cast<float *>(slice(importance_));
        s.redundancy = static_cast<float *>(slice(redundancy_));
        s.final_scores = static_cast<float *>(slice(final_));
        s.aux = static_cast<float *>(slice(aux_));
        s.inv_norm = static_cast<float *>(slice(inv_norm_));
        s.first_column = static_cast<float *>(slice(first_column_));
        s.corrections = static_cast<long long *>(slice(corrections_));
        s.partial_sum = static_cast<float *>(slice(partial_sum_));
        s.partial_latest = static_cast<int32_t *>(slice(partial_latest_));
        s.partial_value = static_cast<float *>(slice(partial_value_));
        s.partial_w = static_cast<float *>(slice(partial_w_));
        s.logits = static_cast<float *>(slice(logits_));
        s.gram = static_cast<float *>(slice(gram_));
        s.gather = slice(gather_);
        s.keys_dequantised = slice(keys_dequantised_);  // nullptr unless FP8 storage and a scorer of keys
        s.tiles = scratch_.tiles;
        s.rows = scratch_.rows;
        p.scorer = method_.scorer;
        p.reference_order = kept_in_reference_order(p_);
        p.slot0_quirk = p_.mode == RKV_MODE_REFERENCE;
        p.pooling = live.pooling;
        p.kernel = live.kernel;
        p.lambda = live.lambda;
        p.threshold = live.threshold;
        p.seed = live.seed;
        return p;
    }

    static k::Job job(const CompressJob &j) {
        const int64_t protect = std::min<int64_t>(j.protect_below, std::numeric_limits<int32_t>::max());
        return k::Job{j.seq, j.layer, j.held, j.keep, int32_t(protect)};
    }

    // The path a compression takes: the one set, or for AUTO the fastest that
    // applies (kernels/README.md, "Performance": measured on the H200).
    int32_t path() const {
        if (matmul_path_ != RKV_MATMUL_AUTO) return matmul_path_;
        // WGMMA before FUSED: its walk stops once every key has a near-duplicate,
        // which keys like a model's find among the latest keys (H200, batch 64:
        // 13.08 ms against 20.08 on `rkv_bench_gpu --keys model`, 17.13 against
        // 20.00 with a weaker shared direction), and it is as fast or faster
        // where no pair passes the threshold (Gaussian keys: 18.89 against 19.91;
        // batch 1 0.339 against 0.348); so at head_dim 64 and 256 (model keys
        // 9.9 and 33.7 against 15.5 and 42.8, session 13; kernels/README.md,
        // Performance). At head_dim 128 (R-KV), WGMMA or its int8-filtered form,
        // whichever this cache's timed calls found faster (choose_gram_path).
        if (wgmma_) return int8_gram_ && gram_path_ == GramPathChoice::kInt8 ? RKV_MATMUL_WGMMA_INT8 : RKV_MATMUL_WGMMA;
        if (k::gram_fused_supported(int32_t(p_.dtype), p_.head_dim, scratch_.rows)) return RKV_MATMUL_FUSED;
        return RKV_MATMUL_CUBLASLT;
    }
    // Window logits (and the norms and W of R-KV) from the fused importance
    // kernel: the FUSED and WGMMA paths differ only in the key Gram.
    bool fused() const { return path() != RKV_MATMUL_CUBLASLT; }

    // Selection and compaction.
    void enqueue_selection(const k::CompressParams &p, cudaStream_t stream) {
        profile_.begin(stream);
        check(k::launch_select_compact(p, stream), "rkv_compress: launching the selection");
        profile_.end(p.scores_in_selection ? "scores + selection + compaction" : "selection + compaction", stream);
    }

    // FP8 storage: the group's held keys as bf16 for the scoring kernels
    // (scratch.keys_dequantised; empty for other dtypes and for scorers of no keys).
    void dequantize_keys(const k::CompressParams &p, cudaStream_t stream) {
        if (p.scratch.keys_dequantised == nullptr) return;
        check(k::launch_dequantize_keys(p, stream), "rkv_compress: launching the FP8 key dequantisation");
    }

    // How rkv_attend runs `entries` entries holding up to `max_held` tokens:
    // the plan rkv_cache_set_attend_plan forced, or the measured rule.
    k::AttendPlan attend_plan(int32_t entries, int32_t max_held) const {
        if (!k::attend_splits_apply(p_.head_dim)) return k::AttendPlan{1, k::AttendKernel::kWide};
        const int32_t pairs = entries * p_.num_kv_heads;
        k::AttendPlan plan = k::choose_attend_plan(pairs, max_held, resident_);
        if (attend_variant_ != RKV_ATTEND_AUTO) {
            plan.kernel = attend_variant_ == RKV_ATTEND_NARROW   ? k::AttendKernel::kNarrow
                          : attend_variant_ == RKV_ATTEND_TENSOR ? k::AttendKernel::kTensor
                                                                 : k::AttendKernel::kWide;
            plan.splits = k::choose_kernel_splits(plan.kernel, pairs, max_held, resident_);
        }
        if (attend_splits_ > 0) plan.splits = attend_splits_;
        plan.splits = std::max(1, std::min(plan.splits, k::kAttendMaxPartials / pairs));
        // The merge counters have a row per entry for min(max_seqs, kMaxAttendSeqs)
        // entries; a batch may have more entries (padding): one split each.
        if (entries > std::min(p_.max_seqs, k::kMaxAttendSeqs)) plan.splits = 1;
        return plan;
    }

    // The scores of every job of the group, into scratch (see kernels/scoring.cuh):
    // what the method's scorer ranks by that select_compact_kernel does not
    // compute itself.
    void enqueue_scores(k::CompressParams &p, cudaStream_t stream) {
        int32_t max_held = 0;
        for (int32_t j = 0; j < p.num_jobs; ++j) max_held = std::max(max_held, p.jobs[j].held);
        switch (method_.scorer) {
            case Scorer::ImportanceRedundancy:
                enqueue_importance(p, max_held, stream);
                enqueue_redundancy(p, max_held, stream);
                return;
            case Scorer::Importance:
                enqueue_importance(p, max_held, stream);
                return;
            case Scorer::KeyDiff:
                profile_.begin(stream);
                check(k::launch_keydiff(p, stream), "rkv_compress: launching the KeyDiff kernel");
                profile_.end("keydiff", stream);
                return;
            case Scorer::AccumulatedAttention:  // the state the append kernels accumulated
            case Scorer::Recency:               // positions
            case Scorer::Random:                // a hash of the positions
            case Scorer::None:
                return;
        }
    }

    // Window-query attention, max-pooled: scratch.importance.
    void enqueue_importance(k::CompressParams &p, int32_t max_held, cudaStream_t stream) {
        profile_.begin(stream);
        if (fused()) {
            // pooled logits, and for R-KV the key norms and W the Gram kernel needs;
            // the pooling (softmax, window mean, max-pool) of each head is done by
            // select_compact_kernel before it selects (kernels/params.h,
            // kSelectionPools): no launch of its own.
            p.pooled_groups = 1;
            p.scores_in_selection |= k::kSelectionPools;
            const int32_t with_norms = method_.scorer == Scorer::ImportanceRedundancy;
            // The int8 Gram's keys, answers and counts, in the memory of the
            // cuBLASLt path's Gram rows ([J, H, 128, cap] f32; kernels/params.h).
            k::GramInt8Scratch int8_scratch{};
            if (with_norms && path() == RKV_MATMUL_WGMMA_INT8)
                int8_scratch = k::gram_int8_scratch(p.scratch.gram, int64_t(p.num_jobs) * p_.num_kv_heads, capacity_);
            p.scratch.keys_int8 = int8_scratch.keys;
            p.scratch.int8_answers = int8_scratch.answers;
            p.scratch.int8_done = int8_scratch.done;
            check(k::launch_importance_fused(p, max_held, with_norms, stream),
                  "rkv_compress: launching the fused importance kernel");
            profile_.end("window logits (fused)", stream);
            return;
        }
        p.pooled_groups = groups_;
        for_each_run(p, [&](int32_t first, int32_t count) { window_logits(p, first, count, stream); });
        profile_.end("window logits (cuBLASLt)", stream);
        profile_.begin(stream);
        check(k::launch_importance_pool(p, stream), "rkv_compress: launching the importance pooling");
        profile_.end("importance pooling", stream);
    }

    // Key-Gram redundancy: scratch.redundancy (after enqueue_importance, whose
    // fused kernel wrote the key norms).
    void enqueue_redundancy(k::CompressParams &p, int32_t max_held, cudaStream_t stream) {
        profile_.begin(stream);
        if (path() == RKV_MATMUL_WGMMA_INT8) {
            p.gram_fused = 0;  // the wgmma kernel's layout
            check(k::launch_gram_int8(p, max_held, stream), "rkv_compress: launching the int8-filtered Gram kernel");
            profile_.end("key Gram (wgmma, int8 filter)", stream);
        } else if (path() == RKV_MATMUL_WGMMA) {
            p.gram_fused = 0;  // one partial slot per row: its walk over every column tile
            check(k::launch_gram_wgmma(p, max_held, stream), "rkv_compress: launching the wgmma Gram kernel");
            profile_.end("key Gram (wgmma)", stream);
        } else if (fused()) {
            p.gram_fused = 1;
            check(k::launch_gram_fused(p, max_held, stream), "rkv_compress: launching the fused Gram kernel");
            profile_.end("key Gram (fused)", stream);
        } else {
            p.gram_fused = 0;
            gram_rows(p, stream);
            profile_.end("key Gram (cuBLASLt + rows)", stream);
        }
        if (fused()) {  // likewise the redundancy (kSelectionRedundancy)
            p.scores_in_selection |= k::kSelectionRedundancy;
            return;
        }
        profile_.begin(stream);
        check(k::launch_redundancy(p, stream), "rkv_compress: launching the redundancy kernel");
        profile_.end("redundancy", stream);
    }

    // Calls run(first, count) for each run of jobs of one layer with consecutive
    // sequence slots and equal lengths: one strided-batched product covers a run.
    template <typename Run>
    static void for_each_run(const k::CompressParams &p, Run &&run) {
        for (int32_t first = 0; first < p.num_jobs;) {
            int32_t last = first + 1;
            while (last < p.num_jobs && p.jobs[last].seq == p.jobs[last - 1].seq + 1 &&
                   p.jobs[last].layer == p.jobs[first].layer && p.jobs[last].held == p.jobs[first].held)
                ++last;
            run(first, last - first);
            first = last;
        }
    }

    // The keys the products read for the run of jobs starting at `first` (one
    // layer, consecutive sequences): the cache's K of (layer, seq), head 0,
    // slot 0, or FP8's bf16 copy (consecutive jobs, the same stride).
    const char *key_base(const k::CompressParams &p, int32_t first) const {
        if (p.scratch.keys_dequantised) {
            const int64_t per_job = int64_t(p_.num_kv_heads) * capacity_ * p_.head_dim;
            return static_cast<const char *>(p.scratch.keys_dequantised) + first * per_job * int64_t(score_size_);
        }
        const k::Job &job = p.jobs[first];
        const int64_t slot0 = (int64_t(job.layer) * p_.max_seqs + job.seq) * p_.num_kv_heads * capacity_;
        return keys_.get<char>() + slot0 * p_.head_dim * int64_t(element_size_);
    }

    // logits [rows, cap] of each (job, head) = window queries x candidate keys / sqrt(d).
    LtProblem window_problem(const void *keys, const void *queries, const float *out, int32_t held,
                             int32_t jobs) const {
        const int64_t d = p_.head_dim, elem = int64_t(score_size_);
        LtProblem problem;
        problem.m = uint64_t(held - p_.window);
        problem.n = uint64_t(scratch_.rows);
        problem.k = uint64_t(d);
        problem.lda = d;
        problem.ldb = d;
        problem.ldd = capacity_;
        problem.stride_a = int64_t(capacity_) * d;
        problem.stride_b = int64_t(scratch_.rows) * d;
        problem.stride_d = int64_t(scratch_.rows) * capacity_;
        problem.batch = jobs * p_.num_kv_heads;
        problem.align_a = lt_alignment(keys, problem.stride_a * elem, d * elem);
        problem.align_b = lt_alignment(queries, problem.stride_b * elem, d * elem);
        problem.align_d = lt_alignment(out, problem.stride_d * 4, int64_t(capacity_) * 4);
        return problem;
    }

    void window_logits(const k::CompressParams &p, int32_t first, int32_t count, cudaStream_t stream) {
        const k::Job &job = p.jobs[first];
        const int64_t d = p_.head_dim;
        const void *keys = key_base(p, first);
        const int64_t ring0 = (int64_t(job.layer) * p_.max_seqs + job.seq) * p_.num_q_heads * p_.window;
        const void *queries = queries_.get<char>() + ring0 * d * int64_t(score_size_);
        const int32_t held = job.held;
        float *out = logits_.get<float>() + int64_t(first) * p_.num_kv_heads * scratch_.rows * capacity_;
        const LtProblem problem = window_problem(keys, queries, out, held, count);
        lt_->run(problem, 1.0f / std::sqrt(float(d)), keys, queries, out, stream);
    }

    // Raw Gram rows [kGramTile, cap] of each (job, head) for rows r0 .. r0+127.
    LtProblem gram_problem(const void *keys, const void *rows, const float *out, int32_t held, int32_t r0,
                           int32_t jobs) const {
        const int64_t d = p_.head_dim, elem = int64_t(score_size_);
        LtProblem problem;
        problem.m = uint64_t(held);
        problem.n = uint64_t(std::min(k::kGramTile, held - r0));
        problem.k = uint64_t(d);
        problem.lda = d;
        problem.ldb = d;
        problem.ldd = capacity_;
        problem.stride_a = int64_t(capacity_) * d;
        problem.stride_b = problem.stride_a;
        problem.stride_d = int64_t(k::kGramTile) * capacity_;
        problem.batch = jobs * p_.num_kv_heads;
        problem.align_a = lt_alignment(keys, problem.stride_a * elem, d * elem);
        problem.align_b = lt_alignment(rows, problem.stride_b * elem, d * elem);
        problem.align_d = lt_alignment(out, problem.stride_d * 4, int64_t(capacity_) * 4);
        return problem;
    }

    void gram_rows(const k::CompressParams &p, cudaStream_t stream) {
        check(k::launch_key_norms(p, stream), "rkv_compress: launching the key norms");
        int32_t max_held = 0;
        for (int32_t j = 0; j < p.num_jobs; ++j) max_held = std::max(max_held, p.jobs[j].held);
        const int64_t row_bytes = int64_t(p_.head_dim) * int64_t(score_size_);
        for (int32_t r0 = 0; r0 < max_held; r0 += k::kGramTile) {
            for_each_run(p, [&](int32_t first, int32_t count) {
                const int32_t held = p.jobs[first].held;
                if (r0 >= held) return;
                const char *keys = key_base(p, first);
                const char *rows = keys + r0 * row_bytes;
                float *out = gram_.get<float>() + int64_t(first) * p_.num_kv_heads * k::kGramTile * capacity_;
                lt_->run(gram_problem(keys, rows, out, held, r0, count), 1.0f, keys, rows, out, stream);
            });
            check(k::launch_gram_row_stats(p, r0, k::kGramTile, stream), "rkv_compress: launching the Gram row stats");
        }
    }

    // Plans of the steady state (every sequence full: runs of the consecutive
    // sequences of a layer in a group), so the first compressions plan nothing.
    void plan_steady_state() {
        const char *keys = static_cast<const char *>(keys_dequantised_.get() ? keys_dequantised_.get() : keys_.get());
        const int32_t held = capacity_;
        if (held <= p_.window) return;
        for (int32_t jobs : {std::min(scratch_.jobs, p_.max_seqs), 1}) {
            lt_->plan(window_problem(keys, queries_.get(), logits_.get<float>(), held, jobs));
            if (scratch_.redundancy) lt_->plan(gram_problem(keys, keys, gram_.get<float>(), held, 0, jobs));
        }
    }

    const rkv_cache_params p_;  // as created: the shape, method, mode and window (the live
                                // parameters come with each call)
    const int device_;
    const int32_t capacity_;
    const int32_t groups_;
    const size_t element_size_;  // of K and V in storage
    const size_t score_size_;    // of the keys and queries the scoring reads: bf16 for FP8 storage
    const int64_t seq_layers_;
    const int32_t history_len_;    // query_history(params): 0 = none
    const ScratchPlan scratch_;
    const MethodInfo method_;
    int32_t matmul_path_ = RKV_MATMUL_AUTO;
    int major_ = 0, minor_ = 0;  // the device's compute capability
    bool wgmma_ = false;         // the wgmma path applies (cache shape and device)
    bool int8_gram_ = false;     // and its int8 filter (head_dim 128)
    // AUTO's choice between the two (R-KV where both apply): the policy, the
    // path of the current call, and the events that time calls.
    GramPathChoice gram_choice_;
    GramPathChoice::Path gram_path_ = GramPathChoice::kWgmma;
    struct GramTiming {
        cudaEvent_t start = nullptr, end = nullptr;  // null: AUTO has one path here
        bool pending = false;                         // `end` recorded, not yet read
        GramPathChoice::Path path = GramPathChoice::kWgmma;
        double work = 0.0;
        GramTiming() = default;
        GramTiming(const GramTiming &) = delete;
        GramTiming &operator=(const GramTiming &) = delete;
        ~GramTiming() {
            if (start) cudaEventDestroy(start);
            if (end) cudaEventDestroy(end);
        }
    } gram_timing_;
    int32_t attend_splits_ = 0;    // rkv_cache_set_attend_plan: 0 = choose per call
    int32_t attend_variant_ = RKV_ATTEND_AUTO;
    k::AttendResidency resident_{1, 0, 0, 1, false};  // blocks of each attention kernel the GPU holds at once
    std::vector<k::AttendRowMaps> row_maps_;  // [layers] (16-bit rows the tensor-core attention serves; else empty)
                                            // (0: the kernel does not serve this cache)
    PhaseProfile profile_;  // RKV_CUDA_PROFILE=1: time per compression phase
    SideStream sides_[kMaxLanes - 1];  // rkv_compress's lanes after the first (created where max_lanes allows)

    // Cache memory (layouts in src/backend.h).
    DeviceBuffer keys_, values_;   // [layers, seqs, kv_heads, cap, d]
    DeviceBuffer key_scales_, value_scales_;  // [layers, seqs, kv_heads, cap] f32, FP8 storage only
    DeviceBuffer positions_;       // [layers, seqs, kv_heads, cap] int32
    DeviceBuffer state_;           // [layers, seqs, kv_heads, cap] f32
    DeviceBuffer queries_;         // [layers, seqs, q_heads, window, d]
    DeviceBuffer history_;         // [layers, seqs, q_heads, history, d] (history 0: empty)
    DeviceBuffer bookkeeping_;     // [kNumCountArrays, layers, seqs] int32 (src/backend.h CountArray)
    DeviceBuffer counter_;         // the append kernels' grid counter
    // Scratch of one group of jobs (shapes in kernels/params.h Scratch).
    DeviceBuffer importance_, redundancy_, final_, aux_, inv_norm_, first_column_;  // [J, H, cap] f32
    DeviceBuffer corrections_;     // [J, H, cap] int64
    DeviceBuffer partial_sum_, partial_latest_, partial_value_;  // [J, H, tiles, cap]
    DeviceBuffer partial_w_;       // [J, H, tiles, d] f32
    DeviceBuffer logits_;          // [J, H, G*window, cap] f32
    DeviceBuffer gram_;            // [J, H, kGramTile, cap] f32
    DeviceBuffer gather_;          // [J, H, cap, d] storage dtype (reference mode)
    DeviceBuffer workspace_;       // cuBLASLt
    DeviceBuffer keys_dequantised_;  // [J, H, cap, d] bf16: FP8 keys for the scoring (else empty)
    // decode attention: partial softmax states of the split kernel (kernels/params.h AttendParams)
    DeviceBuffer attend_state_;    // [kAttendMaxPartials, G, 2] f32
    DeviceBuffer attend_acc_;      // [kAttendMaxPartials, G, d] f32
    DeviceBuffer attend_counters_; // [min(seqs, kMaxAttendSeqs), kv_heads] uint32
    std::unique_ptr<PinnedBuffer> pinned_;  // [kNumCountArrays, layers, seqs] int32 host copy of the bookkeeping
    std::unique_ptr<LtMatmul> lt_;
};

}  // namespace

std::unique_ptr<Backend> make_cuda_backend(const rkv_cache_params &params, const MemoryPlan &plan) {
    return std::make_unique<CudaBackend>(params, plan);
}

uint64_t cuda_scratch_bytes(const rkv_cache_params &params, const MemoryPlan &plan) {
    // Host objects: the backend, its cuBLASLt plans (cuBLASLt's own handle is
    // cuBLASLt's to size) and the pinned buffer's owner.
    return ScratchPlan(params, plan).total() + sizeof(CudaBackend) + sizeof(LtMatmul) + sizeof(PinnedBuffer);
}

void check_cuda_params(const rkv_cache_params &p, const char *function) {
    int count = 0;
    const cudaError_t error = cudaGetDeviceCount(&count);
    if (error != cudaSuccess || count == 0) {
        cudaGetLastError();
        fail(RKV_ERR_UNSUPPORTED, "%s: device_type is CUDA but no CUDA device is usable here (%s)", function,
             error != cudaSuccess ? cudaGetErrorString(error) : "no device");
    }
    if (p.device_id >= count)
        fail(RKV_ERR_OUT_OF_RANGE, "%s: device_id %d, but this machine has %d CUDA device(s)", function,
             p.device_id, count);
    int major = 0, minor = 0;
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, p.device_id),
          "cudaDeviceGetAttribute");
    check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, p.device_id),
          "cudaDeviceGetAttribute");
    check_storage_on_device(p.dtype, major, minor, p.device_id, function);
    if (major < 9)
        fail(RKV_ERR_UNSUPPORTED, "%s: CUDA device %d has compute capability %d.x; librkv's kernels are built "
             "for 9.0 (sm_90a, with compute_90 PTX for newer GPUs)", function, p.device_id, major);
    if (p.head_dim > 256)
        fail(RKV_ERR_UNSUPPORTED, "%s: the CUDA backend supports head_dim up to 256 (got %d)", function,
             p.head_dim);
    const int32_t capacity = params_capacity(p);
    if (method_info(p.method).evicts() && capacity > k::kSelectMaxCapacity)
        fail(RKV_ERR_UNSUPPORTED, "%s: the CUDA selection kernel holds up to %d slots per head; budget + "
             "buffer (+ max_prompt_len) is %d", function, k::kSelectMaxCapacity, capacity);
    // H2O's kernel holds a row of logits and the group's queries in shared memory.
    const int64_t h2o_shared = (int64_t(capacity) + int64_t(p.num_q_heads / p.num_kv_heads) * p.head_dim) * 4;
    if (method_info(p.method).scorer == Scorer::AccumulatedAttention && h2o_shared > 200 * 1024)
        fail(RKV_ERR_UNSUPPORTED, "%s: H2O on CUDA needs (capacity + query heads per KV head * head_dim) * 4 "
             "bytes of shared memory, at most 200 KiB (got %lld)", function, (long long)h2o_shared);
}

}  // namespace rkv::cuda
