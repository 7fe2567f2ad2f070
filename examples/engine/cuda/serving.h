// Continuous batching on the GPU: a queue of requests served by the fixed
// slot table of one GpuModel and one librkv cache.
//
// run() loops until every request is done:
//   1. admit: each free slot takes the first waiting request (FIFO; a request
//      pinned to a slot waits for that slot), which is prefilled into it (the
//      slot was reset when its previous request ended) while the other slots'
//      state stays as it is: they resume decoding after the prefill;
//   2. compress: every active sequence that is due is compressed, outside the
//      captured decode step (Decoder::compress_due);
//   3. decode: k steps of the active slots, replayed from the one CUDA graph
//      of the decode step (a change of the active set only changes the
//      Decoder's batch), where k is the most no sequence can overrun (room
//      before the next compression, tokens left, steps_per_sync), then one
//      copy of their tokens to the host: the loop's only synchronisation;
//   4. retire: a request ends at a stop token or after max_new tokens (tokens a
//      slot decoded past its stop token in the same k steps are dropped); its
//      slot is reset (rkv_seq_reset) for the next request.
// All device memory belongs to the model, the cache and the decoder, made at
// start; the queue's capacity is fixed at start too.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "decoder.h"
#include "gpu_model.h"

namespace engine::cuda {

struct Request {
    std::vector<int32_t> prompt;
    int32_t max_new = 16;        // tokens to generate at most (the first comes from the prompt's logits)
    std::vector<int32_t> stop;   // tokens that end the request (not part of the output)
    int32_t slot = -1;           // run in this slot (-1: the first free one)
};

struct Result {
    std::vector<int32_t> tokens;  // generated, without the stop token
    int32_t slot = -1;            // the slot it ran in
    bool stopped = false;         // ended by a stop token (else by max_new)
    double admitted_s = 0, first_token_s = 0, finished_s = 0;  // since run() started
    rkv_stats cache{};            // its sequence's rkv_cache_stats as it finished (the slot is reset after)
};

struct ServerOptions {
    int32_t max_requests = 4096;  // the queue's capacity, fixed at start
    int32_t steps_per_sync = 16;  // decode steps between copies of tokens to the host
    bool use_graph = true;        // false: the same steps without a CUDA graph
};

// Why `request` cannot run on a cache with these params for a model of this
// shape, or "" if it can: an empty prompt, a token outside the vocabulary,
// max_new < 1, a slot outside the table, a prompt (plus its answer) longer
// than a FULL cache's max_len, a prompt longer than max_prompt_len under
// RKV_GUARD_PROMPT. Host-only (no GPU needed).
std::string request_problem(const rkv_cache_params &params, int32_t vocab_size, const Request &request);

class Server {
  public:
    Server(GpuModel &model, rkv_cache *cache, const ServerOptions &options, cudaStream_t stream);

    // Queue a request; returns its id. Throws std::invalid_argument with
    // request_problem's message, or when the queue is full.
    int32_t submit(const Request &request);
    // Serve every queued request. on_token (may be empty) sees each generated token.
    void run(const std::function<void(int32_t request, int32_t token)> &on_token = {});

    const Result &result(int32_t id) const { return results_.at(size_t(id)); }
    int32_t requests() const { return int32_t(requests_.size()); }

    struct Stats {
        int64_t decode_steps = 0;     // decode steps run (each for every active slot)
        int64_t decode_tokens = 0;    // tokens those steps produced for active requests
        int64_t prefills = 0, prompt_tokens = 0;
        int64_t compressions = 0;     // sequences compressed (all layers) during decode
        int64_t decode_chunks = 0;    // copies of tokens to the host (each waits for its chunk of steps)
        int32_t captures = 0;         // decode-step graphs captured (1 with use_graph)
        int32_t batch_changes = 0;    // changes of the set of active slots (rkv_batch_set, no capture)
        double prefill_s = 0, decode_s = 0;
    };
    const Stats &stats() const { return stats_; }

  private:
    void admit(int32_t id, int32_t slot, double now_s, const std::function<void(int32_t, int32_t)> &on_token);
    // Accept one generated token of request id; returns true when the request ends with it.
    bool accept(int32_t id, int32_t token, double now_s, const std::function<void(int32_t, int32_t)> &on_token);
    void retire(int32_t slot);

    GpuModel &model_;
    rkv_cache *cache_;
    ServerOptions options_;
    cudaStream_t stream_;
    rkv_cache_params params_;
    Decoder decoder_;
    std::vector<Request> requests_;
    std::vector<Result> results_;
    std::vector<int32_t> slot_request_;  // [slots] request id, or -1 when free
    size_t next_waiting_ = 0;            // requests before it have been admitted... or are pinned and waiting
    std::vector<bool> admitted_;
    Stats stats_;
};

}  // namespace engine::cuda
