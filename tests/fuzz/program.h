// A program of librkv calls decoded from fuzzer bytes and run against real
// CPU caches, each checked after every call against its model (model.h).
//
// Input format (every decision is one byte, so a mutated byte changes one
// choice; an exhausted input reads as zeros and ends the program):
//   byte          number of caches, 1 + b % 3
//   per cache     its params (decode_params in program.cpp)
//   byte, 4 bytes data pattern (values.h) and salt
//   then calls    a byte each: cache (b >> 5) and operation (b & 31), followed by
//                 the operation's own decisions; at most kMaxCalls calls.
// `rkv_fuzz_replay --print FILE` shows a file's program call by call.
// The order and meaning of the decisions is the format of every committed
// input (corpus/, regressions/): change them and those inputs run other
// programs; re-derive them then (README.md).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "byte_reader.h"
#include "model.h"
#include "rkv/rkv_experimental.h"
#include "values.h"

namespace fuzz {

constexpr int kMaxCaches = 3;
constexpr int kMaxCalls = 64;

// A host buffer of exactly the elements a tensor reaches, so that a read or
// write one past it is caught by AddressSanitizer.
struct TensorBuffer {
    std::unique_ptr<uint8_t[]> bytes;
    int64_t elements = 0;
    rkv_dtype dtype = RKV_DTYPE_F32;
    size_t size_bytes() const { return size_t(elements) * dtype_bytes(dtype); }
};

// What rkv_attend promises for one element of its output: the float64
// reference within `allowed`. No promise (allowed < 0) where the inputs are not
// finite, the logits too large for float32 to order, or f16 rounds to Inf.
struct AttendPromise {
    double want = 0;
    double allowed = -1;
    bool promised() const { return allowed >= 0; }
};

// A second backend run call by call with the CPU caches (the GPU replay).
// Each hook gets the call as the CPU cache got it and the CPU's status; it
// records its own disagreements (its statuses, lengths, kept sets, contents).
class Mirror {
 public:
    virtual ~Mirror() = default;
    virtual void create(int slot, const rkv_cache_params &params, rkv_status cpu_status) = 0;
    virtual void destroy(int slot) = 0;
    // Before a call that may compress (append, compress), with the CPU cache as it is.
    virtual void before_mutation(int slot, const rkv_cache *cpu) = 0;
    virtual void append(int slot, const rkv_append_args &args, const TensorBuffer *k, const TensorBuffer *v,
                        const TensorBuffer *q, rkv_status cpu_status) = 0;
    virtual void compress(int slot, int32_t seq, int32_t layer, rkv_status cpu_status) = 0;
    virtual void reset(int slot, int32_t seq, rkv_status cpu_status) = 0;
    virtual void set_param(int slot, rkv_param param, double value, rkv_status cpu_status) = 0;
    virtual void seq_copy(int slot, int32_t src, int32_t dst, rkv_status cpu_status) = 0;
    virtual void truncate(int slot, int32_t seq, int32_t tokens, rkv_status cpu_status) = 0;
    virtual void set_budget(int slot, int32_t seq, int32_t budget, rkv_status cpu_status) = 0;
    // args as the CPU got them (host pointers into q_buffer and cpu_out, which
    // holds the CPU's output now). promised: what the header promises for each
    // element of the output, the float64 reference the CPU was held to.
    virtual void attend(int slot, const rkv_attend_args &args, const TensorBuffer &q_buffer,
                        const TensorBuffer &cpu_out, const std::vector<AttendPromise> &promised,
                        rkv_status cpu_status) = 0;
    // After every call, with the CPU cache checked against the model.
    virtual void compare(int slot, const rkv_cache *cpu, const CacheModel &model) = 0;
};

struct RunOptions {
    bool trace = false;        // print each call and its status
    Mirror *mirror = nullptr;  // run every call on a second backend too
};

class Program {
 public:
    Program(const uint8_t *data, size_t size, RunOptions options);
    ~Program();
    Program(const Program &) = delete;
    Program &operator=(const Program &) = delete;

    // Runs the whole program; throws Failure at the first broken promise.
    void run();
    int calls() const { return calls_; }
    // The call running when a Failure was thrown, for the report.
    const std::string &current_call() const { return current_; }

 private:
    struct Slot {
        rkv_cache *cache = nullptr;
        rkv_cache_params params{};      // the last params decoded for this slot
        std::optional<CacheModel> model;  // present while the cache lives
        std::vector<uint32_t> epochs;   // [max_seqs] lives of each sequence (data streams)
    };

    rkv_cache_params decode_params();
    void create(int slot);
    void destroy(int slot);
    void check_all();
    void note(const char *format, ...) __attribute__((format(printf, 2, 3)));
    void expect_status(const char *call, rkv_status status, const Verdict &verdict);
    uint64_t stream_of(int slot, int32_t seq) const;

    void op_append(int slot);
    void op_compress(int slot);
    void op_compress_due(int slot);
    void op_reset(int slot);
    void op_seq_copy(int slot);
    void op_truncate(int slot);
    void op_budget(int slot);
    void op_view(int slot);
    void op_layer_view(int slot);
    void op_seq_length(int slot);
    void op_kept_positions(int slot);
    void op_stats(int slot);
    void op_attend(int slot);
    void op_set_param(int slot);
    void op_inspect_scores(int slot);
    void op_get_params(int slot);
    void op_params_api();
    void op_misc(int slot);
    void op_cache_size();

    // An index argument: usually valid, sometimes RKV_ALL (if allowed) or outside.
    int32_t pick_index(int32_t count, bool allow_all);

    ByteReader in_;
    RunOptions options_;
    std::vector<Slot> slots_;
    Pattern pattern_ = Pattern::Random;
    uint64_t salt_ = 0;
    int calls_ = 0;
    std::string current_;
};

}  // namespace fuzz
