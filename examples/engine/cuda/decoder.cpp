#include "decoder.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <string>

#include "kernels.h"

namespace engine::cuda {

namespace {

// Record one decode step (or some of its phases) on `stream` into a graph. On
// failure the capture is ended (the stream stays usable) and the error
// rethrown; calls with a batch record nothing on the host, so nothing is undone.
cudaGraph_t record_step(GpuModel &model, rkv_cache *cache, const StepSlots &step, unsigned phases,
                        cudaStream_t stream) {
    check_cuda(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal), "cudaStreamBeginCapture");
    try {
        model.decode_step(cache, step, stream, phases);
    } catch (...) {
        cudaGraph_t broken = nullptr;
        cudaStreamEndCapture(stream, &broken);
        if (broken) cudaGraphDestroy(broken);
        cudaGetLastError();
        throw;
    }
    cudaGraph_t graph = nullptr;
    check_cuda(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture (decode step)");
    return graph;
}

}  // namespace

Decoder::Decoder(GpuModel &model, rkv_cache *cache, bool use_graph, cudaStream_t stream)
    : model_(model),
      cache_(cache),
      use_graph_(use_graph),
      decoding_(size_t(model.slots()) * 4, "decoding slots"),
      host_history_(size_t(model.options().history_rows) * size_t(model.slots()) * 4, "token history (host)") {
    rkv_cache_params params;
    std::memset(&params, 0, sizeof params);
    params.struct_size = sizeof params;
    check_rkv(rkv_cache_get_params(cache, &params), "rkv_cache_get_params");
    // The decode step hands librkv bf16 K/V/Q and reads bf16 attention out: the
    // cache may store them as bf16 or as FP8 E4M3 (librkv quantises at append
    // and dequantises in rkv_attend). Prefill reads bf16 views itself.
    const bool storage_ok = params.dtype == RKV_DTYPE_BF16 || params.dtype == RKV_DTYPE_FP8_E4M3;
    if (params.max_seqs != model.slots() || params.device_type != RKV_DEVICE_CUDA || !storage_ok)
        throw Error("the cache does not match the model: it needs " + std::to_string(model.slots()) +
                    " slots, CUDA, bf16 or FP8 E4M3 storage (GpuModel::set_cache_shape)");
    if (params.auto_compress)
        throw Error("the cache compresses inside rkv_append (auto_compress = 1), which a captured decode step "
                    "must not do: create it with auto_compress = 0 (GpuModel::set_cache_shape)");
    rkv_layer_view view;
    std::memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    check_rkv(rkv_view_layer(cache, 0, &view), "rkv_view_layer");
    capacity_ = view.capacity;
    active_.reserve(size_t(model.slots()));
    entry_ids_.assign(size_t(model.slots()), -1);
    mask_.assign(size_t(model.slots()), 0);
    check_rkv(rkv_batch_create(cache, model.slots(), &batch_), "rkv_batch_create");
    try {
        // Every entry is padding: librkv's batch kernels run (CUDA loads a kernel at its first
        // launch, better not inside the capture) and change nothing. On the caller's stream:
        // librkv's kernels of one cache share scratch, so they must not overlap other work on it.
        check_cuda(cudaMemsetAsync(decoding_.data(), 0, decoding_.bytes(), stream), "cudaMemsetAsync");
        model.decode_step(cache, step_slots(), stream, kPhaseAppend | kPhaseAttend);
        check_rkv(rkv_batch_advance(batch_, 1), "rkv_batch_advance (warm-up: no sequence)");
        if (use_graph) capture(stream);  // the one capture: the step reads its slots when it runs
    } catch (...) {
        rkv_batch_destroy(batch_);
        throw;
    }
}

Decoder::~Decoder() {
    if (graph_) cudaGraphExecDestroy(graph_);
    rkv_batch_destroy(batch_);
}

void Decoder::set_active(const std::vector<int32_t> &slots, cudaStream_t stream) {
    if (slots == active_) return;
    std::fill(mask_.begin(), mask_.end(), 0);
    for (int32_t s : slots) {
        if (s < 0 || s >= model_.slots())
            throw Error("set_active: slot " + std::to_string(s) + " is outside the " +
                        std::to_string(model_.slots()) + " slots of the table");
        if (mask_[size_t(s)]) throw Error("set_active: slot " + std::to_string(s) + " listed twice");
        mask_[size_t(s)] = 1;
    }
    for (size_t s = 0; s < mask_.size(); ++s) entry_ids_[s] = mask_[s] ? int32_t(s) : -1;
    // Both copies run in stream order: steps enqueued before still see the previous set.
    check_rkv(rkv_batch_set(batch_, entry_ids_.data(), model_.slots(), stream), "rkv_batch_set");
    upload_by_value(decoding_.as<int32_t>(), mask_.data(), model_.slots(), stream);
    check_launch("upload of the decoding slots");
    active_.assign(slots.begin(), slots.end());
    ++batch_changes_;
}

int32_t Decoder::compress_due(cudaStream_t stream) {
    int32_t count = 0;
    for (int32_t s : active_) {
        int32_t due = 0;
        check_rkv(rkv_compress_due(cache_, s, RKV_ALL, &due), "rkv_compress_due");
        count += due;
    }
    // One call for all of them (a sequence sitting out that is due is compressed with them).
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
    cudaGraph_t graph = record_step(model_, cache_, step_slots(), kPhaseAll, stream);
    const cudaError_t error = cudaGraphInstantiate(&graph_, graph, 0);
    cudaGraphDestroy(graph);
    if (error != cudaSuccess) graph_ = nullptr;
    check_cuda(error, "cudaGraphInstantiate (decode step)");
    ++captures_;
}

cudaGraphExec_t Decoder::capture_phases(unsigned phases, cudaStream_t stream) {
    cudaGraph_t graph = record_step(model_, cache_, step_slots(), phases, stream);
    cudaGraphExec_t exec = nullptr;
    const cudaError_t error = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check_cuda(error, "cudaGraphInstantiate (decode phases)");
    return exec;
}

void Decoder::advance(int32_t steps) { check_rkv(rkv_batch_advance(batch_, steps), "rkv_batch_advance"); }

void Decoder::enqueue_steps(int32_t steps, cudaStream_t stream) {
    if (active_.empty()) throw Error("decode: no active slot");
    // The history ring starts at row 0 for every collect().
    if (pending_ > 0) throw Error("decode: collect() the steps enqueued before enqueueing more");
    if (steps < 1 || steps > model_.options().history_rows)
        throw Error("decode: " + std::to_string(steps) + " steps at once (1 to " +
                    std::to_string(model_.options().history_rows) + ", the history ring)");
    const int32_t room = this->room();
    if (steps > room)
        throw Error("decode: " + std::to_string(steps) + " steps, but an active sequence has room for " +
                    std::to_string(room) + " (call compress_due first; a FULL cache cannot grow past max_len)");
    check_cuda(cudaMemsetAsync(model_.step_counter(), 0, 4, stream), "cudaMemsetAsync (step counter)");
    for (int32_t i = 0; i < steps; ++i) {
        if (use_graph_)
            check_cuda(cudaGraphLaunch(graph_, stream), "cudaGraphLaunch (decode step)");
        else
            model_.decode_step(cache_, step_slots(), stream);
        // The host learns what the step did (no sync): room(), compress_due() and prefill stay current.
        advance(1);
        ++pending_;
    }
}

int32_t Decoder::collect(std::vector<int32_t> &tokens, cudaStream_t stream) {
    const int32_t steps = pending_;
    const size_t count = size_t(steps) * size_t(model_.slots());
    int32_t *host = host_history_.as<int32_t>();
    check_cuda(cudaMemcpyAsync(host, model_.history(), count * 4, cudaMemcpyDeviceToHost, stream),
               "copy of the token history");
    check_cuda(cudaStreamSynchronize(stream), "decode steps (a kernel failed)");
    pending_ = 0;
    tokens.assign(host, host + count);
    return steps;
}

}  // namespace engine::cuda
