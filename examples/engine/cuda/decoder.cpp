#include "decoder.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

namespace engine::cuda {

namespace {

// Record one decode step (or some of its phases) on `stream` into a graph. On
// failure the capture is ended (the stream stays usable) and the error rethrown.
cudaGraph_t record_step(GpuModel &model, rkv_cache *cache, const Entries &entries, unsigned phases,
                        cudaStream_t stream) {
    check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
    try {
        model.decode_step(cache, entries, stream, phases);
    } catch (...) {
        cudaGraph_t broken = nullptr;
        cudaStreamEndCapture(stream, &broken);
        if (broken) cudaGraphDestroy(broken);
        cudaGetLastError();
        rkv_cache_sync_lengths(cache, stream);  // forget what the host recorded of the partial capture
        throw;
    }
    cudaGraph_t graph = nullptr;
    check_cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture (decode step)");
    return graph;
}

}  // namespace

Decoder::Decoder(GpuModel &model, rkv_cache *cache, bool use_graph)
    : model_(model),
      cache_(cache),
      use_graph_(use_graph),
      device_active_(size_t(model.slots()) * 4, "active slot table"),
      host_history_(size_t(model.options().history_rows) * size_t(model.slots()) * 4, "token history (host)") {
    rkv_cache_params params;
    std::memset(&params, 0, sizeof params);
    params.struct_size = sizeof params;
    check_rkv(rkv_cache_get_params(cache, &params), "rkv_cache_get_params");
    if (params.max_seqs != model.slots() || params.device_type != RKV_DEVICE_CUDA || params.dtype != RKV_DTYPE_BF16)
        throw Error("the cache does not match the model: it needs " + std::to_string(model.slots()) +
                    " slots, CUDA, bf16 storage (GpuModel::set_cache_shape)");
    if (params.auto_compress)
        throw Error("the cache compresses inside rkv_append (auto_compress = 1), which a captured decode step "
                    "must not do: create it with auto_compress = 0 (GpuModel::set_cache_shape)");
    rkv_layer_view view;
    std::memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    check_rkv(rkv_view_layer(cache, 0, &view), "rkv_view_layer");
    capacity_ = view.capacity;
}

Decoder::~Decoder() {
    if (graph_) cudaGraphExecDestroy(graph_);
}

void Decoder::set_active(const std::vector<int32_t> &slots, cudaStream_t stream) {
    if (slots == active_) return;
    std::vector<bool> seen(size_t(model_.slots()), false);
    for (int32_t s : slots) {
        if (s < 0 || s >= model_.slots())
            throw Error("set_active: slot " + std::to_string(s) + " is outside the " +
                        std::to_string(model_.slots()) + " slots of the table");
        if (seen[size_t(s)]) throw Error("set_active: slot " + std::to_string(s) + " listed twice");
        seen[size_t(s)] = true;
    }
    active_ = slots;
    if (!slots.empty())  // a pageable source is staged before the call returns; the copy runs in stream order
        check_cuda(cudaMemcpyAsync(device_active_.data(), slots.data(), slots.size() * 4, cudaMemcpyHostToDevice,
                                   stream),
                   "upload of the active slots");
    graph_stale_ = true;
}

int32_t Decoder::compress_due(cudaStream_t stream) {
    int32_t count = 0;
    for (int32_t s : active_) {
        int32_t due = 0;
        check_rkv(rkv_compress_due(cache_, s, RKV_ALL, &due), "rkv_compress_due");
        count += due;
    }
    if (count > 0) check_rkv(rkv_compress(cache_, RKV_ALL, RKV_ALL, stream), "rkv_compress (decode)");
    return count;
}

int32_t Decoder::room() const {
    int32_t room = INT_MAX;
    for (int32_t s : active_) {
        int32_t held = 0;
        check_rkv(rkv_seq_length(cache_, s, 0, nullptr, &held), "rkv_seq_length");
        room = std::min(room, capacity_ - held);
    }
    return active_.empty() ? 0 : room;
}

void Decoder::capture(cudaStream_t stream) {
    const Entries entries{active_.data(), device_active_.as<int32_t>(), int32_t(active_.size())};
    if (captures_ == 0) {
        // librkv's attention kernel may not have run yet: run it once outside the capture
        // (CUDA loads kernels at their first launch); it only reads the cache.
        const Config &c = model_.config();
        const rkv_tensor q{model_.scratch_queries(), RKV_DTYPE_F32, c.n_heads, c.head_dim,
                           int64_t(c.n_heads) * c.head_dim, 0, c.head_dim, 0};
        const rkv_tensor out{model_.scratch_attention(), RKV_DTYPE_BF16, c.n_heads, c.head_dim,
                             int64_t(c.n_heads) * c.head_dim, 0, c.head_dim, 0};
        rkv_attend_args attend{};
        attend.struct_size = sizeof attend;
        attend.num_seqs = entries.count;
        attend.seq_ids = entries.host;
        attend.q = q;
        attend.out = out;
        check_rkv(rkv_attend(cache_, &attend, stream), "rkv_attend (warm-up)");
    }
    cudaGraph_t graph = record_step(model_, cache_, entries, kPhaseAll, stream);
    // Capturing ran nothing, but librkv's host bookkeeping recorded a step: undo it.
    const rkv_status synced = rkv_cache_sync_lengths(cache_, stream);
    if (graph_) {
        // Same topology with other arguments (the usual case when only the slots change): update in place.
        cudaGraphExecUpdateResultInfo info;
        if (cudaGraphExecUpdate(graph_, graph, &info) != cudaSuccess) {
            cudaGetLastError();
            cudaGraphExecDestroy(graph_);
            graph_ = nullptr;
        }
    }
    cudaError_t error = cudaSuccess;
    if (!graph_) error = cudaGraphInstantiate(&graph_, graph, 0);
    cudaGraphDestroy(graph);
    check_cuda(error, "cudaGraphInstantiate (decode step)");
    check_rkv(synced, "rkv_cache_sync_lengths (after capture)");
    graph_stale_ = false;
    ++captures_;
}

cudaGraphExec_t Decoder::capture_phases(unsigned phases, cudaStream_t stream) {
    const Entries entries{active_.data(), device_active_.as<int32_t>(), int32_t(active_.size())};
    cudaGraph_t graph = record_step(model_, cache_, entries, phases, stream);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t error = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check_cuda(error, "cudaGraphInstantiate (decode phases)");
    if (phases & kPhaseAppend) check_rkv(rkv_cache_sync_lengths(cache_, stream), "rkv_cache_sync_lengths (after capture)");
    return exec;
}

void Decoder::enqueue_steps(int32_t steps, cudaStream_t stream) {
    if (active_.empty()) throw Error("decode: no active slot");
    // The history ring starts at row 0 and the host sees replays only after collect().
    if (pending_ > 0) throw Error("decode: collect() the steps enqueued before enqueueing more");
    if (steps < 1 || steps > model_.options().history_rows)
        throw Error("decode: " + std::to_string(steps) + " steps at once (1 to " +
                    std::to_string(model_.options().history_rows) + ", the history ring)");
    const int32_t room = this->room();
    if (steps > room)
        throw Error("decode: " + std::to_string(steps) + " steps, but an active sequence has room for " +
                    std::to_string(room) + " (call compress_due first; a FULL cache cannot grow past max_len)");
    check_cuda(cudaMemsetAsync(model_.step_counter(), 0, 4, stream), "cudaMemsetAsync (step counter)");
    if (use_graph_) {
        if (graph_stale_) capture(stream);
        for (int32_t i = 0; i < steps; ++i) check_cuda(cudaGraphLaunch(graph_, stream), "cudaGraphLaunch (decode step)");
    } else {
        const Entries entries{active_.data(), device_active_.as<int32_t>(), int32_t(active_.size())};
        for (int32_t i = 0; i < steps; ++i) model_.decode_step(cache_, entries, stream);
    }
    pending_ = steps;
}

int32_t Decoder::collect(std::vector<int32_t> &tokens, cudaStream_t stream) {
    const int32_t steps = pending_;
    const size_t count = size_t(steps) * size_t(model_.slots());
    int32_t *host = host_history_.as<int32_t>();
    check_cuda(cudaMemcpyAsync(host, model_.history(), count * 4, cudaMemcpyDeviceToHost, stream),
               "copy of the token history");
    check_cuda(cudaStreamSynchronize(stream), "decode steps (a kernel failed)");
    check_rkv(rkv_cache_sync_lengths(cache_, stream), "rkv_cache_sync_lengths (after decode steps)");
    pending_ = 0;
    tokens.assign(host, host + count);
    return steps;
}

}  // namespace engine::cuda
