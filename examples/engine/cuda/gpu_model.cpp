#include "gpu_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

namespace engine::cuda {

namespace {

// Bytes of each activation buffer for `rows` rows (decode or prefill).
struct RowBytes {
    uint64_t x, xb, qkv, q, kv, att, gate_up, h;
    explicit RowBytes(const Config &c) {
        const uint64_t hd = uint64_t(c.head_dim);
        x = uint64_t(c.dim) * 4;
        xb = uint64_t(c.dim) * 2;
        qkv = uint64_t(c.n_heads + 2 * c.n_kv_heads) * hd * 4;
        q = uint64_t(c.n_heads) * hd * 4;
        kv = uint64_t(c.n_kv_heads) * hd * 4;
        att = uint64_t(c.n_heads) * hd * 2;
        gate_up = 2 * uint64_t(c.hidden_dim) * 2;
        h = uint64_t(c.hidden_dim) * 2;
    }
    uint64_t total() const { return x + xb + qkv + q + 2 * kv + att + gate_up + h; }
};

// A row-major [rows, heads, head_dim] tensor as librkv reads it, with its extent.
rkv_tensor row_tensor(void *data, rkv_dtype dtype, int32_t rows, int32_t heads, int32_t head_dim,
                      bool tokens_of_one_sequence) {
    const int64_t row = int64_t(heads) * head_dim;
    // decode: one entry (slot) per row (stride_seq); prefill: the rows are the tokens of one entry (stride_token)
    return rkv_tensor{data, dtype, heads, head_dim, tokens_of_one_sequence ? 0 : row,
                      tokens_of_one_sequence ? row : 0, head_dim, int64_t(rows) * row};
}

}  // namespace

uint64_t GpuModel::activation_bytes(const Config &c, const ModelOptions &o) {
    const RowBytes row(c);
    const uint64_t slots = uint64_t(o.slots), prefill = uint64_t(o.prefill_rows);
    return slots * (row.total() + uint64_t(c.vocab_size) * 4 + 8) + uint64_t(o.history_rows) * slots * 4 +
           prefill * (row.total() + 4) + uint64_t(c.vocab_size) * 4 + GemmContext::kWorkspaceBytes;
}

GpuModel::Plans GpuModel::make_plans(int64_t rows) const {
    const Config &c = config();
    const int64_t hd = c.head_dim, q_width = int64_t(c.n_heads) * hd;
    Plans p;
    p.qkv = std::make_unique<GemmPlan>(gemm_, rows, int64_t(c.n_heads + 2 * c.n_kv_heads) * hd, c.dim, Output::F32);
    p.o = std::make_unique<GemmPlan>(gemm_, rows, c.dim, q_width, Output::F32_ACCUMULATE);
    p.gate_up = std::make_unique<GemmPlan>(gemm_, rows, 2 * int64_t(c.hidden_dim), c.dim, Output::BF16);
    p.down = std::make_unique<GemmPlan>(gemm_, rows, c.dim, c.hidden_dim, Output::F32_ACCUMULATE);
    return p;
}

GpuModel::GpuModel(const DeviceWeights &weights, const ModelOptions &options)
    : weights_(weights), options_(options) {
    const Config &c = config();
    if (options.slots < 1) throw Error("the CUDA engine needs at least one slot");
    if (options.prefill_rows < 16 || (options.prefill_rows & (options.prefill_rows - 1)) != 0)
        throw Error("prefill rows must be a power of two >= 16 (got " + std::to_string(options.prefill_rows) + ")");
    if (options.history_rows < 1) throw Error("the history ring needs at least one row");
    const RowBytes row(c);
    const size_t s = size_t(options.slots), p = size_t(options.prefill_rows);
    x_ = DeviceBuffer(s * row.x, "decode activations (residual)");
    xb_ = DeviceBuffer(s * row.xb, "decode activations (normalised)");
    qkv_ = DeviceBuffer(s * row.qkv, "decode activations (Q/K/V)");
    q_ = DeviceBuffer(s * row.q, "decode activations (queries)");
    k_ = DeviceBuffer(s * row.kv, "decode activations (keys)");
    v_ = DeviceBuffer(s * row.kv, "decode activations (values)");
    att_ = DeviceBuffer(s * row.att, "decode activations (attention)");
    gate_up_ = DeviceBuffer(s * row.gate_up, "decode activations (gate/up)");
    h_ = DeviceBuffer(s * row.h, "decode activations (SwiGLU)");
    logits_ = DeviceBuffer(s * size_t(c.vocab_size) * 4, "decode logits");
    tokens_ = DeviceBuffer(s * 4, "slot tokens");
    positions_ = DeviceBuffer(s * 4, "slot positions");
    history_ = DeviceBuffer(size_t(options.history_rows) * s * 4, "token history");
    counter_ = DeviceBuffer(4, "step counter");
    p_tokens_ = DeviceBuffer(p * 4, "prompt tokens");
    p_x_ = DeviceBuffer(p * row.x, "prefill activations (residual)");
    p_xb_ = DeviceBuffer(p * row.xb, "prefill activations (normalised)");
    p_qkv_ = DeviceBuffer(p * row.qkv, "prefill activations (Q/K/V)");
    p_q_ = DeviceBuffer(p * row.q, "prefill activations (queries)");
    p_k_ = DeviceBuffer(p * row.kv, "prefill activations (keys)");
    p_v_ = DeviceBuffer(p * row.kv, "prefill activations (values)");
    p_att_ = DeviceBuffer(p * row.att, "prefill activations (attention)");
    p_gate_up_ = DeviceBuffer(p * row.gate_up, "prefill activations (gate/up)");
    p_h_ = DeviceBuffer(p * row.h, "prefill activations (SwiGLU)");
    prefill_logits_ = DeviceBuffer(size_t(c.vocab_size) * 4, "prefill logits");
    // Every product the engine will run, planned now: decode over all slots,
    // prefill pieces padded to a power of two of rows, and the logits of one row.
    decode_plans_ = make_plans(options.slots);
    decode_logits_plan_ = std::make_unique<GemmPlan>(gemm_, options.slots, c.vocab_size, c.dim, Output::F32);
    prefill_logits_plan_ = std::make_unique<GemmPlan>(gemm_, 1, c.vocab_size, c.dim, Output::F32);
    for (int32_t rows = 16; rows <= options.prefill_rows; rows *= 2) prefill_buckets_.emplace_back(rows, make_plans(rows));
    Stream stream;
    // Zeros everywhere: rows that are padding (idle slots, the tail of a piece) stay finite.
    for (const DeviceBuffer *b : {&x_, &xb_, &qkv_, &q_, &k_, &v_, &att_, &gate_up_, &h_, &logits_,
                                  &tokens_, &positions_, &history_, &counter_, &p_tokens_, &p_x_, &p_xb_, &p_qkv_,
                                  &p_q_, &p_k_, &p_v_, &p_att_, &p_gate_up_, &p_h_, &prefill_logits_})
        check_cuda(cudaMemsetAsync(b->data(), 0, b->bytes(), stream.get()), "cudaMemsetAsync of the activations");
    warm_up(stream.get());
}

// Run every kernel and product of a decode step once, before any of them is
// captured in a graph: CUDA loads kernels lazily, at their first launch, and
// that first launch is better not inside a capture. Nothing here changes the
// state a decode relies on (the slots are empty until a prefill or set_slot).
// (The Decoder warms librkv's batch kernels up the same way.)
void GpuModel::warm_up(cudaStream_t stream) {
    const Config &c = config();
    const int32_t slots = options_.slots, hd = c.head_dim;
    const LayerWeights &L = weights_.layers[0];
    float *x = x_.as<float>();
    bf16 *xb = xb_.as<bf16>();
    const DeviceBuffer no_slot(size_t(slots) * 4, "warm-up mask");  // [slots] 0: no slot decodes
    check_cuda(cudaMemsetAsync(no_slot.data(), 0, no_slot.bytes(), stream), "cudaMemsetAsync");
    embed(slot_tokens(), slots, weights_.embedding, c.dim, c.vocab_size, x, stream);
    rmsnorm(x, c.dim, slots, c.dim, L.attn_norm, c.norm_eps, xb, stream);
    decode_plans_.qkv->run(xb, L.qkv, qkv_.data(), stream);
    RopeArgs rope{qkv_.as<float>(), slots, slot_positions(), 0, c.n_heads, c.n_kv_heads, hd, weights_.rope_freq,
                  q_.as<float>(), k_.as<float>(), v_.as<float>()};
    rope_split(rope, stream);
    decode_plans_.o->run(att_.as<bf16>(), L.o, x, stream);
    decode_plans_.gate_up->run(xb, L.gate_up, gate_up_.data(), stream);
    swiglu(gate_up_.as<bf16>(), slots, c.hidden_dim, h_.as<bf16>(), stream);
    decode_plans_.down->run(h_.as<bf16>(), L.down, x, stream);
    decode_logits_plan_->run(xb, weights_.output, logits_.data(), stream);
    argmax(logits_.as<float>(), slots, c.vocab_size, no_slot.as<int32_t>(), slot_tokens(), stream);
    finish_step(slot_positions(), no_slot.as<int32_t>(), slot_tokens(), slots, history(), options_.history_rows,
                step_counter(), stream);
    advance_counter(step_counter(), stream);
    check_launch("warm-up of the decode step");
    // back to the state of a new model: no tokens, positions or history
    for (const DeviceBuffer *b : {&tokens_, &positions_, &history_, &counter_, &x_, &att_})
        check_cuda(cudaMemsetAsync(b->data(), 0, b->bytes(), stream), "cudaMemsetAsync");
    check_cuda(cudaStreamSynchronize(stream), "warm-up of the decode step");
}

const GpuModel::Plans &GpuModel::prefill_plans(int32_t rows, int32_t *padded) const {
    for (const auto &bucket : prefill_buckets_)
        if (rows <= bucket.first) {
            *padded = bucket.first;
            return bucket.second;
        }
    throw Error("prefill piece of " + std::to_string(rows) + " rows (at most " +
                std::to_string(options_.prefill_rows) + ")");
}

void GpuModel::set_cache_shape(rkv_cache_params &p) const {
    const Config &c = config();
    p.max_seqs = options_.slots;
    p.num_layers = c.n_layers;
    p.num_kv_heads = c.n_kv_heads;
    p.num_q_heads = c.n_heads;
    p.head_dim = c.head_dim;
    p.dtype = RKV_DTYPE_BF16;
    p.device_type = RKV_DEVICE_CUDA;
    p.device_id = 0;
    p.auto_compress = 0;  // compressions run outside the captured decode step, when rkv_compress_due says so
}

void GpuModel::set_slot(int32_t slot, int32_t token, int32_t position, cudaStream_t stream) {
    if (slot < 0 || slot >= options_.slots) throw Error("set_slot: slot " + std::to_string(slot) + " out of range");
    engine::cuda::set_slot(slot_tokens(), slot_positions(), slot, token, position, stream);
    check_launch("set_slot");
}

void GpuModel::decode_step(rkv_cache *cache, const StepSlots &step, cudaStream_t stream, unsigned phases) {
    const Config &c = config();
    const int32_t slots = options_.slots, hd = c.head_dim;
    const bool matmul = phases & kPhaseMatmul, other = phases & kPhaseOther;
    if (!step.batch || !step.decoding) throw Error("decode_step: no batch (the Decoder sets the step's slots)");
    float *x = x_.as<float>();
    bf16 *xb = xb_.as<bf16>();

    // Entry s of the batch is slot s: librkv reads row s of K/V/Q and writes row s of the
    // attention, and skips the rows of padding entries.
    rkv_append_args args;
    std::memset(&args, 0, sizeof args);
    args.struct_size = sizeof args;
    args.num_seqs = slots;
    args.batch = step.batch;
    args.k = row_tensor(k_.data(), RKV_DTYPE_F32, slots, c.n_kv_heads, hd, false);
    args.v = row_tensor(v_.data(), RKV_DTYPE_F32, slots, c.n_kv_heads, hd, false);
    args.q = row_tensor(q_.data(), RKV_DTYPE_F32, slots, c.n_heads, hd, false);
    rkv_attend_args attend;
    std::memset(&attend, 0, sizeof attend);
    attend.struct_size = sizeof attend;
    attend.num_seqs = slots;
    attend.batch = step.batch;
    attend.q = args.q;
    attend.out = row_tensor(att_.data(), RKV_DTYPE_BF16, slots, c.n_heads, hd, false);

    RopeArgs rope{qkv_.as<float>(), slots, slot_positions(), 0, c.n_heads, c.n_kv_heads, hd, weights_.rope_freq,
                  q_.as<float>(), k_.as<float>(), v_.as<float>()};

    if (other) embed(slot_tokens(), slots, weights_.embedding, c.dim, c.vocab_size, x, stream);
    for (int32_t l = 0; l < c.n_layers; ++l) {
        const LayerWeights &L = weights_.layers[size_t(l)];
        if (other) rmsnorm(x, c.dim, slots, c.dim, L.attn_norm, c.norm_eps, xb, stream);
        if (matmul) decode_plans_.qkv->run(xb, L.qkv, qkv_.data(), stream);
        if (other) rope_split(rope, stream);
        if (phases & kPhaseAppend) {
            args.layer = l;
            check_rkv(rkv_append(cache, &args, stream), "rkv_append (decode step)");
        }
        if (phases & kPhaseAttend) {
            attend.layer = l;
            check_rkv(rkv_attend(cache, &attend, stream), "rkv_attend (decode step)");
        }
        if (matmul) decode_plans_.o->run(att_.as<bf16>(), L.o, x, stream);
        if (other) rmsnorm(x, c.dim, slots, c.dim, L.ffn_norm, c.norm_eps, xb, stream);
        if (matmul) decode_plans_.gate_up->run(xb, L.gate_up, gate_up_.data(), stream);
        if (other) swiglu(gate_up_.as<bf16>(), slots, c.hidden_dim, h_.as<bf16>(), stream);
        if (matmul) decode_plans_.down->run(h_.as<bf16>(), L.down, x, stream);
    }
    if (other) rmsnorm(x, c.dim, slots, c.dim, weights_.out_norm, c.norm_eps, xb, stream);
    if (matmul) decode_logits_plan_->run(xb, weights_.output, logits_.data(), stream);
    if (other) {
        argmax(logits_.as<float>(), slots, c.vocab_size, step.decoding, slot_tokens(), stream);
        finish_step(slot_positions(), step.decoding, slot_tokens(), slots, history(), options_.history_rows,
                    step_counter(), stream);
        advance_counter(step_counter(), stream);
    }
    check_launch("decode step");
}

void GpuModel::prefill(rkv_cache *cache, int32_t slot, const int32_t *tokens, int32_t n, bool prompt,
                       cudaStream_t stream) {
    if (slot < 0 || slot >= options_.slots)
        throw Error("prefill: slot " + std::to_string(slot) + " is outside the " + std::to_string(options_.slots) +
                    " slots");
    if (n < 1) throw Error("prefill: no tokens");
    for (int32_t i = 0; i < n; ++i)
        if (tokens[i] < 0 || tokens[i] >= config().vocab_size)
            throw Error("prefill: token id " + std::to_string(tokens[i]) + " outside the vocabulary of " +
                        std::to_string(config().vocab_size));
    rkv_layer_view layer_view;
    std::memset(&layer_view, 0, sizeof layer_view);
    layer_view.struct_size = sizeof layer_view;
    check_rkv(rkv_view_layer(cache, 0, &layer_view), "rkv_view_layer");
    const int32_t capacity = layer_view.capacity;  // slots per (sequence, layer, head)
    for (int32_t done = 0; done < n;) {
        // A full sequence is compressed here, for every layer at once, so that
        // no piece needs a compression halfway (as the CPU engine does).
        int32_t due = 0;
        check_rkv(rkv_compress_due(cache, slot, RKV_ALL, &due), "rkv_compress_due");
        if (due) check_rkv(rkv_compress(cache, slot, RKV_ALL, stream), "rkv_compress (prefill)");
        int64_t logical = 0;
        int32_t held = 0;
        check_rkv(rkv_seq_length(cache, slot, 0, &logical, &held), "rkv_seq_length");
        const int32_t room = capacity - held;
        if (room <= 0)
            throw Error("the KV cache of slot " + std::to_string(slot) + " is full (" + std::to_string(capacity) +
                        " tokens, the FULL method's max_len): reserve more or use a compressing method");
        const int32_t piece = std::min({n - done, room, options_.prefill_rows});
        prefill_piece(cache, slot, tokens + done, piece, int32_t(logical), done + piece == n,
                      prompt ? uint32_t(RKV_APPEND_PROMPT) : 0u, stream);
        done += piece;
    }
}

void GpuModel::prefill_piece(rkv_cache *cache, int32_t slot, const int32_t *tokens, int32_t n,
                             int32_t first_position, bool last, uint32_t flags, cudaStream_t stream) {
    const Config &c = config();
    const int32_t hd = c.head_dim, q_width = c.n_heads * hd;
    int32_t rows = 0;  // n padded to the plans' row count; the padding rows are kept at zero
    const Plans &plans = prefill_plans(n, &rows);
    float *x = p_x_.as<float>();
    bf16 *xb = p_xb_.as<bf16>(), *att = p_att_.as<bf16>();
    // pageable source: the copy is staged before cudaMemcpyAsync returns, so `tokens` may change afterwards
    check_cuda(cudaMemcpyAsync(p_tokens_.data(), tokens, size_t(n) * 4, cudaMemcpyHostToDevice, stream),
               "upload of prompt tokens");
    embed(p_tokens_.as<int32_t>(), n, weights_.embedding, c.dim, c.vocab_size, x, stream);
    if (rows > n) {
        check_cuda(cudaMemsetAsync(x + size_t(n) * c.dim, 0, size_t(rows - n) * c.dim * 4, stream), "cudaMemsetAsync");
        check_cuda(cudaMemsetAsync(att + size_t(n) * q_width, 0, size_t(rows - n) * q_width * 2, stream),
                   "cudaMemsetAsync");
    }

    rkv_append_args args;
    std::memset(&args, 0, sizeof args);
    args.struct_size = sizeof args;
    args.num_seqs = 1;
    args.seq_ids = &slot;
    args.num_tokens = &n;
    args.k = row_tensor(p_k_.data(), RKV_DTYPE_F32, n, c.n_kv_heads, hd, true);
    args.v = row_tensor(p_v_.data(), RKV_DTYPE_F32, n, c.n_kv_heads, hd, true);
    args.q = row_tensor(p_q_.data(), RKV_DTYPE_F32, n, c.n_heads, hd, true);
    args.flags = flags;
    RopeArgs rope{p_qkv_.as<float>(), n, nullptr, first_position, c.n_heads, c.n_kv_heads, hd, weights_.rope_freq,
                  p_q_.as<float>(), p_k_.as<float>(), p_v_.as<float>()};

    for (int32_t l = 0; l < c.n_layers; ++l) {
        const LayerWeights &L = weights_.layers[size_t(l)];
        rmsnorm(x, c.dim, rows, c.dim, L.attn_norm, c.norm_eps, xb, stream);
        plans.qkv->run(xb, L.qkv, p_qkv_.data(), stream);
        rope_split(rope, stream);
        args.layer = l;
        check_rkv(rkv_append(cache, &args, stream), "rkv_append (prefill)");
        rkv_seq_view view;
        std::memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        check_rkv(rkv_view(cache, slot, l, &view), "rkv_view");
        if (view.dtype != RKV_DTYPE_BF16 || view.device_type != RKV_DEVICE_CUDA)
            throw Error("the CUDA engine needs a CUDA cache with bf16 storage (GpuModel::set_cache_shape)");
        PrefillAttentionArgs attention{p_q_.as<float>(), static_cast<const bf16 *>(view.k),
                                       static_cast<const bf16 *>(view.v), view.positions, view.stride_head,
                                       view.stride_token, view.positions_stride_head, view.length, n,
                                       first_position, c.n_heads, c.n_kv_heads, hd,
                                       1.0f / std::sqrt(float(hd)), att};
        prefill_attention(attention, stream);
        plans.o->run(att, L.o, x, stream);
        rmsnorm(x, c.dim, rows, c.dim, L.ffn_norm, c.norm_eps, xb, stream);
        plans.gate_up->run(xb, L.gate_up, p_gate_up_.data(), stream);
        swiglu(p_gate_up_.as<bf16>(), rows, c.hidden_dim, p_h_.as<bf16>(), stream);
        plans.down->run(p_h_.as<bf16>(), L.down, x, stream);
    }
    if (last) {
        rmsnorm(x + size_t(n - 1) * c.dim, c.dim, 1, c.dim, weights_.out_norm, c.norm_eps, xb, stream);
        prefill_logits_plan_->run(xb, weights_.output, prefill_logits_.data(), stream);
        engine::cuda::set_slot(slot_tokens(), slot_positions(), slot, 0, first_position + n, stream);
        argmax(prefill_logits_.as<float>(), 1, c.vocab_size, nullptr, slot_tokens() + slot, stream);
    }
    check_launch("prefill");
}

}  // namespace engine::cuda
