#include "serving.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace engine::cuda {

std::string request_problem(const rkv_cache_params &p, int32_t vocab_size, const Request &r) {
    if (r.prompt.empty()) return "the prompt is empty";
    for (int32_t token : r.prompt)
        if (token < 0 || token >= vocab_size)
            return "prompt token " + std::to_string(token) + " is outside the vocabulary (0 .. " +
                   std::to_string(vocab_size - 1) + ")";
    if (r.max_new < 1) return "max_new is " + std::to_string(r.max_new) + " (at least 1 token)";
    if (r.slot < -1 || r.slot >= p.max_seqs)
        return "slot " + std::to_string(r.slot) + " is outside the table of " + std::to_string(p.max_seqs) +
               " slots (-1: any)";
    const int64_t prompt = int64_t(r.prompt.size());
    // The cache holds the prompt and every generated token but the last (never fed back).
    const int64_t held = prompt + int64_t(r.max_new) - 1;
    if (p.method == RKV_METHOD_FULL && held > p.max_len)
        return "a prompt of " + std::to_string(prompt) + " tokens and " + std::to_string(r.max_new) +
               " new tokens need " + std::to_string(held) + " cache slots; the FULL cache holds max_len = " +
               std::to_string(p.max_len) + " per sequence (raise max_len or shorten the request)";
    if (p.method != RKV_METHOD_FULL && (p.guards & RKV_GUARD_PROMPT) && prompt > p.max_prompt_len)
        return "a prompt of " + std::to_string(prompt) + " tokens is longer than max_prompt_len = " +
               std::to_string(p.max_prompt_len) + ", which RKV_GUARD_PROMPT keeps whole";
    return "";
}

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

Server::Server(GpuModel &model, rkv_cache *cache, const ServerOptions &options, cudaStream_t stream)
    : model_(model), cache_(cache), options_(options), stream_(stream), decoder_(model, cache, options.use_graph, stream) {
    std::memset(&params_, 0, sizeof params_);
    params_.struct_size = sizeof params_;
    check_rkv(rkv_cache_get_params(cache, &params_), "rkv_cache_get_params");
    if (options.max_requests < 1) throw std::invalid_argument("the request queue needs room for at least 1 request");
    if (options.steps_per_sync < 1 || options.steps_per_sync > model.options().history_rows)
        throw std::invalid_argument("steps_per_sync must be 1 .. " + std::to_string(model.options().history_rows) +
                                    " (the model's history ring)");
    requests_.reserve(size_t(options.max_requests));
    results_.reserve(size_t(options.max_requests));
    admitted_.reserve(size_t(options.max_requests));
    slot_request_.assign(size_t(model.slots()), -1);
}

int32_t Server::submit(const Request &request) {
    if (requests_.size() >= size_t(options_.max_requests))
        throw std::invalid_argument("the request queue is full: it holds " + std::to_string(options_.max_requests) +
                                    " requests (set at start); submit fewer or raise max_requests");
    const std::string problem = request_problem(params_, model_.config().vocab_size, request);
    if (!problem.empty()) throw std::invalid_argument("request rejected: " + problem);
    requests_.push_back(request);
    results_.emplace_back();
    results_.back().tokens.reserve(size_t(request.max_new));
    admitted_.push_back(false);
    return int32_t(requests_.size() - 1);
}

bool Server::accept(int32_t id, int32_t token, double now_s, const std::function<void(int32_t, int32_t)> &on_token) {
    const Request &r = requests_[size_t(id)];
    Result &out = results_[size_t(id)];
    if (out.tokens.empty() && !out.stopped) out.first_token_s = now_s;
    if (std::find(r.stop.begin(), r.stop.end(), token) != r.stop.end()) {
        out.stopped = true;
        out.finished_s = now_s;
        return true;
    }
    out.tokens.push_back(token);
    if (on_token) on_token(id, token);
    if (int32_t(out.tokens.size()) >= r.max_new) {
        out.finished_s = now_s;
        return true;
    }
    return false;
}

void Server::retire(int32_t slot) {
    // The request's cache statistics first: the reset clears them (host bookkeeping, no sync).
    rkv_stats &stats = results_[size_t(slot_request_[size_t(slot)])].cache;
    stats.struct_size = sizeof stats;
    check_rkv(rkv_cache_stats(cache_, slot, &stats), "rkv_cache_stats");
    check_rkv(rkv_seq_reset(cache_, slot, stream_), "rkv_seq_reset");
    slot_request_[size_t(slot)] = -1;
}

void Server::admit(int32_t id, int32_t slot, double now_s, const std::function<void(int32_t, int32_t)> &on_token) {
    const Request &r = requests_[size_t(id)];
    Result &out = results_[size_t(id)];
    admitted_[size_t(id)] = true;
    out.slot = slot;
    out.admitted_s = now_s;
    slot_request_[size_t(slot)] = id;
    const auto start = std::chrono::steady_clock::now();
    model_.prefill(cache_, slot, r.prompt.data(), int32_t(r.prompt.size()), true, stream_);
    int32_t first = 0;
    check_cuda(cudaMemcpyAsync(&first, model_.slot_tokens() + slot, 4, cudaMemcpyDeviceToHost, stream_),
               "copy of the first token");
    check_cuda(cudaStreamSynchronize(stream_), "prefill (a kernel failed)");
    stats_.prefill_s += seconds_since(start);
    ++stats_.prefills;
    stats_.prompt_tokens += int64_t(r.prompt.size());
    if (accept(id, first, now_s + seconds_since(start), on_token)) retire(slot);
}

void Server::run(const std::function<void(int32_t request, int32_t token)> &on_token) {
    const auto start = std::chrono::steady_clock::now();
    const int32_t slots = model_.slots();
    std::vector<int32_t> active, tokens;
    active.reserve(size_t(slots));
    tokens.reserve(size_t(model_.options().history_rows) * size_t(slots));
    for (;;) {
        // 1. admit waiting requests into free slots (FIFO; pinned requests wait for their slot)
        for (int32_t slot = 0; slot < slots; ++slot) {
            while (slot_request_[size_t(slot)] < 0) {
                while (next_waiting_ < admitted_.size() && admitted_[next_waiting_]) ++next_waiting_;
                int32_t pick = -1;
                for (size_t id = next_waiting_; id < requests_.size() && pick < 0; ++id)
                    if (!admitted_[id] && (requests_[id].slot < 0 || requests_[id].slot == slot)) pick = int32_t(id);
                if (pick < 0) break;
                admit(pick, slot, seconds_since(start), on_token);  // may end at once and free the slot again
            }
        }
        active.clear();
        for (int32_t slot = 0; slot < slots; ++slot)
            if (slot_request_[size_t(slot)] >= 0) active.push_back(slot);
        if (active.empty()) {
            if (std::find(admitted_.begin(), admitted_.end(), false) == admitted_.end()) break;
            throw Error("internal: requests wait but no slot takes them");
        }

        // 2. compress what is due, 3. decode k steps
        const auto decode_start = std::chrono::steady_clock::now();
        decoder_.set_active(active, stream_);
        stats_.compressions += decoder_.compress_due(stream_);
        int32_t steps = std::min(decoder_.room(), options_.steps_per_sync);
        for (int32_t slot : active) {
            const int32_t id = slot_request_[size_t(slot)];
            steps = std::min(steps, requests_[size_t(id)].max_new - int32_t(results_[size_t(id)].tokens.size()));
        }
        if (steps < 1) throw Error("internal: an active sequence has no room to decode");
        decoder_.enqueue_steps(steps, stream_);
        decoder_.collect(tokens, stream_);
        stats_.decode_steps += steps;
        ++stats_.decode_chunks;
        stats_.decode_s += seconds_since(decode_start);
        stats_.captures = decoder_.captures();
        stats_.batch_changes = decoder_.batch_changes();

        // 4. hand out the tokens, retire finished requests
        const double now_s = seconds_since(start);
        for (int32_t slot : active) {
            const int32_t id = slot_request_[size_t(slot)];
            for (int32_t step = 0; step < steps; ++step) {
                ++stats_.decode_tokens;
                if (accept(id, tokens[size_t(step) * size_t(slots) + size_t(slot)], now_s, on_token)) {
                    retire(slot);
                    break;
                }
            }
        }
    }
    check_cuda(cudaStreamSynchronize(stream_), "serving");
}

}  // namespace engine::cuda
