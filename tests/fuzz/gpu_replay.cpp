// The fuzzer's programs on the GPU: every call runs on the CPU cache (checked
// against the model, as rkv_fuzz_replay does) and on a CUDA cache with the
// same params, fed the same bytes from device memory of exactly the same
// extent; after each call the CUDA cache is compared with the model and the
// CPU cache: statuses, lengths, kept positions per head, the K/V bits of every
// held token, attention outputs.
//
//   rkv_fuzz_gpu_replay [--random N] [--seed S] [PATH...]
//
// PATH: inputs or folders of inputs (the corpus); --random N adds N random
// programs (random bytes decode to valid programs). Exits 77 without a CUDA
// device, 1 on any mismatch, 0 otherwise. Run it under compute-sanitizer to
// check the kernels' memory accesses.
//
// Kept sets: position order must match exactly. Where the sets differ, the
// difference is a near tie (allowed by kernels/README.md) if every differing
// token's CPU score lies within 1e-5 of the head's largest score of the
// others; scores come from the CPU cache just before the call, so a
// difference made by a compression in the middle of a multi-chunk append is
// counted as unclassified. A (sequence, layer) whose kept sets differed is
// compared for lengths only until it is reset.
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "failure.h"
#include "program.h"
#include "tensors.h"

namespace {

using fuzz::CacheModel;
using fuzz::AttendPromise;
using fuzz::TensorBuffer;

struct Counts {
    long programs = 0, calls = 0, cpu_failures = 0, unsupported = 0;
    long status = 0, lengths = 0, contents = 0, attend = 0;
    long attend_checked = 0;       // output elements compared with the float64 reference
    long attend_other_tokens = 0;  // not compared: CUDA kept other tokens (near ties)
    long kept_same = 0, kept_near_tie = 0, kept_unclassified = 0, kept_different = 0, order_only = 0;
    long hard() const { return cpu_failures + status + lengths + contents + attend + kept_different; }
};

// Device memory freed when it goes out of scope.
class DeviceBuffer {
 public:
    DeviceBuffer() = default;
    explicit DeviceBuffer(size_t bytes) {
        if (cudaMalloc(&data_, std::max<size_t>(bytes, 1)) != cudaSuccess) fuzz::fail("cudaMalloc(%zu) failed", bytes);
    }
    DeviceBuffer(const void *host, size_t bytes) : DeviceBuffer(bytes) {
        if (cudaMemcpy(data_, host, bytes, cudaMemcpyHostToDevice) != cudaSuccess) fuzz::fail("cudaMemcpy to device failed");
    }
    ~DeviceBuffer() { cudaFree(data_); }
    DeviceBuffer(DeviceBuffer &&other) noexcept : data_(other.data_) { other.data_ = nullptr; }
    DeviceBuffer(const DeviceBuffer &) = delete;
    void *get() const { return data_; }

 private:
    void *data_ = nullptr;
};

void download(void *host, const void *device, size_t bytes) {
    if (cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
        fuzz::fail("cudaMemcpy to host failed: %s", cudaGetErrorString(cudaGetLastError()));
}

class CudaMirror final : public fuzz::Mirror {
 public:
    explicit CudaMirror(Counts *counts) : counts_(counts) {}
    ~CudaMirror() override {
        for (int slot = 0; slot < fuzz::kMaxCaches; ++slot) destroy(slot);
    }

    std::vector<std::string> reports;  // the first mismatches, described

    void create(int slot, const rkv_cache_params &params, rkv_status cpu_status) override {
        Twin &t = twins_[slot];
        destroy(slot);
        if (cpu_status != RKV_OK) return;
        rkv_cache_params p = params;
        p.device_type = RKV_DEVICE_CUDA;
        p.device_id = 0;
        const rkv_status status = rkv_cache_create(&p, &t.gpu);
        if (status == RKV_ERR_UNSUPPORTED) {  // a shape the CUDA backend does not take (its message says which)
            ++counts_->unsupported;
            t.gpu = nullptr;
            return;
        }
        if (status != RKV_OK) {
            mismatch(&counts_->status, "create: CPU OK, CUDA %s: %s", rkv_status_name(status), rkv_error_message());
            t.gpu = nullptr;
            return;
        }
        t.params = p;
        t.diverged.assign(size_t(p.num_layers) * p.max_seqs, 0);
    }

    void destroy(int slot) override {
        rkv_cache_destroy(twins_[slot].gpu);
        twins_[slot] = Twin{};
    }

    void before_mutation(int slot, const rkv_cache *cpu) override {
        Twin &t = twins_[slot];
        t.scores.clear();
        if (!t.gpu) return;
        const rkv_cache_params &p = t.params;
        std::vector<float> out(4096);
        std::vector<int32_t> positions(4096);
        for (int32_t layer = 0; layer < p.num_layers; ++layer)
            for (int32_t seq = 0; seq < p.max_seqs; ++seq)
                for (int32_t head = 0; head < p.num_kv_heads; ++head) {
                    int32_t count = 0, held = 0;
                    if (rkv_seq_scores(cpu, seq, layer, head, RKV_SCORE_FINAL, out.data(), int32_t(out.size()),
                                           &count) != RKV_OK ||
                        rkv_seq_positions(cpu, seq, layer, head, positions.data(), int32_t(positions.size()),
                                           &held) != RKV_OK)
                        continue;
                    std::map<int32_t, float> &scores = t.scores[key(seq, layer, head)];
                    for (int32_t j = 0; j < count; ++j) scores[positions[size_t(j)]] = out[size_t(j)];
                }
    }

    void append(int slot, const rkv_append_args &args, const TensorBuffer *k, const TensorBuffer *v,
                const TensorBuffer *q, rkv_status cpu_status) override {
        Twin &t = twins_[slot];
        if (!t.gpu) return;
        rkv_append_args a = args;
        std::vector<DeviceBuffer> held;
        const auto upload = [&](rkv_tensor *tensor, const TensorBuffer *buffer) {
            if (!tensor->data || !buffer) return;
            held.emplace_back(buffer->bytes.get(), buffer->size_bytes());
            tensor->data = held.back().get();
        };
        upload(&a.k, k);
        upload(&a.v, v);
        upload(&a.q, q);
        const rkv_status status = rkv_append(t.gpu, &a, nullptr);
        sync();
        same_status("rkv_append", cpu_status, status);
    }

    void compress(int slot, int32_t seq, int32_t layer, rkv_status cpu_status) override {
        if (!twins_[slot].gpu) return;
        const rkv_status status = rkv_compress(twins_[slot].gpu, seq, layer, nullptr);
        sync();
        same_status("rkv_compress", cpu_status, status);
    }

    void reset(int slot, int32_t seq, rkv_status cpu_status) override {
        Twin &t = twins_[slot];
        if (!t.gpu) return;
        const rkv_status status = rkv_seq_reset(t.gpu, seq, nullptr);
        sync();
        same_status("rkv_seq_reset", cpu_status, status);
        if (status == RKV_OK)
            for (int32_t layer = 0; layer < t.params.num_layers; ++layer)
                for (int32_t s = 0; s < t.params.max_seqs; ++s)
                    if (seq == RKV_ALL || s == seq) t.diverged[size_t(layer) * t.params.max_seqs + s] = 0;
    }

    void set_param(int slot, rkv_param param, double value, rkv_status cpu_status) override {
        if (!twins_[slot].gpu) return;
        same_status("rkv_cache_set", cpu_status, rkv_cache_set(twins_[slot].gpu, param, value));
    }

    void seq_copy(int slot, int32_t src, int32_t dst, rkv_status cpu_status) override {
        Twin &t = twins_[slot];
        if (!t.gpu) return;
        const rkv_status status = rkv_seq_copy(t.gpu, src, dst, nullptr);
        sync();
        same_status("rkv_seq_copy", cpu_status, status);
        if (status == RKV_OK)  // the copy diverged where its source did
            for (int32_t layer = 0; layer < t.params.num_layers; ++layer)
                t.diverged[size_t(layer) * t.params.max_seqs + dst] = t.diverged[size_t(layer) * t.params.max_seqs + src];
    }

    void truncate(int slot, int32_t seq, int32_t tokens, rkv_status cpu_status) override {
        if (!twins_[slot].gpu) return;
        const rkv_status status = rkv_seq_truncate(twins_[slot].gpu, seq, tokens, nullptr);
        sync();
        same_status("rkv_seq_truncate", cpu_status, status);
    }

    void set_budget(int slot, int32_t seq, int32_t budget, rkv_status cpu_status) override {
        if (!twins_[slot].gpu) return;
        same_status("rkv_seq_set_budget", cpu_status, rkv_seq_set_budget(twins_[slot].gpu, seq, budget));
    }

    void attend(int slot, const rkv_attend_args &args, const TensorBuffer &q_buffer, const TensorBuffer &cpu_out,
                const std::vector<AttendPromise> &promised, rkv_status cpu_status) override {
        Twin &t = twins_[slot];
        if (!t.gpu) return;
        rkv_attend_args a = args;
        DeviceBuffer q_device(q_buffer.bytes.get(), q_buffer.size_bytes());
        // The output starts as the CPU's did: poison everywhere.
        std::vector<uint8_t> poison(cpu_out.size_bytes());
        for (int64_t i = 0; i < cpu_out.elements; ++i)
            fuzz::store_bits(poison.data(), i, cpu_out.dtype, fuzz::poison_bits(cpu_out.dtype));
        DeviceBuffer out_device(poison.data(), poison.size());
        if (a.q.data) a.q.data = q_device.get();
        if (a.out.data) a.out.data = out_device.get();
        const rkv_status status = rkv_attend(t.gpu, &a, nullptr);
        sync();
        same_status("rkv_attend", cpu_status, status);
        if (status != RKV_OK || cpu_status != RKV_OK || !args.out.data) return;
        std::vector<uint8_t> gpu_out(cpu_out.size_bytes());
        download(gpu_out.data(), out_device.get(), gpu_out.size());
        // Rows of a (sequence, layer) whose CUDA kept set went another way
        // (near ties, ties inside a multi-chunk append) attend over other
        // tokens than the CPU's: the float64 reference does not apply to them.
        std::vector<uint8_t> other_tokens(size_t(cpu_out.elements), 0);
        const rkv_cache_params &p = t.params;
        for (int32_t i = 0; i < args.num_seqs; ++i) {
            const int32_t seq = args.seq_ids[i];
            if (seq < 0 || seq >= p.max_seqs || !t.diverged[size_t(args.layer) * p.max_seqs + seq]) continue;
            for (int32_t h = 0; h < args.out.num_heads; ++h)
                for (int32_t e = 0; e < args.out.head_dim; ++e)
                    other_tokens[size_t(fuzz::tensor_index(args.out, i, 0, h) + e)] = 1;
        }
        // CUDA is held to the promise the CPU was held to (the float64
        // reference within the tolerance the inputs allow), not to the CPU's
        // bits: where the logits are large (2^30 magnitudes) or the inputs not
        // finite, two correct float32 orders of summation differ by more than
        // any fixed tolerance, and the header promises nothing there.
        for (int64_t i = 0; i < cpu_out.elements; ++i) {
            const uint32_t cpu_bits = fuzz::load_bits(cpu_out.bytes.get(), i, cpu_out.dtype);
            const uint32_t gpu_bits = fuzz::load_bits(gpu_out.data(), i, cpu_out.dtype);
            const bool cpu_wrote = cpu_bits != fuzz::poison_bits(cpu_out.dtype);
            const bool gpu_wrote = gpu_bits != fuzz::poison_bits(cpu_out.dtype);
            if (cpu_wrote != gpu_wrote) {
                mismatch(&counts_->attend, "rkv_attend: element %lld written by %s only", (long long)i,
                         cpu_wrote ? "the CPU" : "CUDA");
                return;
            }
            const AttendPromise &promise = promised[size_t(i)];
            if (!promise.promised()) continue;
            if (other_tokens[size_t(i)]) {
                ++counts_->attend_other_tokens;
                continue;
            }
            ++counts_->attend_checked;
            const double on_gpu = fuzz::from_bits(gpu_bits, cpu_out.dtype);
            if (!(std::fabs(on_gpu - promise.want) <= promise.allowed)) {
                mismatch(&counts_->attend,
                         "rkv_attend: element %lld is %.8g on CUDA, float64 reference %.8g (allowed %.3g; the CPU %.8g)",
                         (long long)i, on_gpu, promise.want, promise.allowed,
                         fuzz::from_bits(cpu_bits, cpu_out.dtype));
                return;
            }
        }
    }

    void compare(int slot, const rkv_cache *, const CacheModel &model) override {
        Twin &t = twins_[slot];
        if (!t.gpu) return;
        const rkv_cache_params &p = t.params;
        const size_t elem = fuzz::dtype_bytes(p.dtype);
        const size_t row = size_t(p.num_kv_heads) * p.head_dim;
        for (int32_t layer = 0; layer < p.num_layers; ++layer)
            for (int32_t seq = 0; seq < p.max_seqs; ++seq) {
                const fuzz::SeqLayerModel &m = model.at(seq, layer);
                int64_t logical = -1;
                int32_t held = -1;
                rkv_seq_length(t.gpu, seq, layer, &logical, &held);
                if (logical != m.logical || held != m.held) {
                    mismatch(&counts_->lengths, "seq %d layer %d: CUDA holds %d of %lld, the CPU %d of %lld", seq, layer,
                             held, (long long)logical, m.held, (long long)m.logical);
                    continue;
                }
                uint8_t &diverged = t.diverged[size_t(layer) * p.max_seqs + seq];
                if (diverged || held == 0) continue;
                rkv_seq_view view;
                std::memset(&view, 0, sizeof view);
                view.struct_size = sizeof view;
                if (rkv_view(t.gpu, seq, layer, &view) != RKV_OK) {
                    mismatch(&counts_->status, "rkv_view on CUDA failed: %s", rkv_error_message());
                    continue;
                }
                for (int32_t head = 0; head < p.num_kv_heads && !diverged; ++head) {
                    std::vector<int32_t> gpu(static_cast<size_t>(held));
                    int32_t count = 0;
                    rkv_seq_positions(t.gpu, seq, layer, head, gpu.data(), held, &count);
                    const std::vector<int32_t> &cpu = m.kept[size_t(head)];
                    if (gpu == cpu) {
                        ++counts_->kept_same;
                    } else if (std::set<int32_t>(gpu.begin(), gpu.end()) == std::set<int32_t>(cpu.begin(), cpu.end())) {
                        ++counts_->order_only;  // reference order between equal scores
                        diverged = 1;
                        continue;
                    } else {
                        classify(t, seq, layer, head, cpu, gpu);
                        diverged = 1;
                        continue;
                    }
                    // Every held token's K and V as appended (the model's bits; FP8:
                    // each byte's value times its row's scale, and the scales).
                    const bool fp8 = p.dtype == RKV_DTYPE_FP8_E4M3;
                    const rkv_dtype bits_dtype = fuzz::model_dtype(p.dtype);
                    const size_t bytes = size_t(held) * p.head_dim * elem;
                    std::vector<uint8_t> k(bytes), v(bytes);
                    std::vector<float> k_scale(fp8 ? size_t(held) : 0), v_scale(fp8 ? size_t(held) : 0);
                    const size_t head_offset = size_t(head) * size_t(view.stride_head) * elem;
                    download(k.data(), static_cast<char *>(view.k) + head_offset, bytes);
                    download(v.data(), static_cast<char *>(view.v) + head_offset, bytes);
                    if (fp8) {
                        download(k_scale.data(), view.k_scale + head * view.scale_stride_head, size_t(held) * 4);
                        download(v_scale.data(), view.v_scale + head * view.scale_stride_head, size_t(held) * 4);
                    }
                    const auto held_bits = [&](const std::vector<uint8_t> &data, const std::vector<float> &scales,
                                               int32_t j, int64_t at) {
                        return fp8 ? fuzz::fp8_value_bits(data[size_t(at)], scales[size_t(j)])
                                   : fuzz::load_bits(data.data(), at, p.dtype);
                    };
                    for (int32_t j = 0; j < held; ++j)
                        for (int32_t e = 0; e < p.head_dim; ++e) {
                            const size_t expected = size_t(gpu[size_t(j)]) * row + size_t(head) * p.head_dim + e;
                            const int64_t at = int64_t(j) * p.head_dim + e;
                            const size_t scale_at = size_t(gpu[size_t(j)]) * p.num_kv_heads + size_t(head);
                            const bool scales_differ =
                                fp8 && (k_scale[size_t(j)] != m.k_scale[scale_at] || v_scale[size_t(j)] != m.v_scale[scale_at]);
                            if (scales_differ ||
                                !fuzz::same_bits(held_bits(k, k_scale, j, at), m.k_bits[expected], bits_dtype) ||
                                !fuzz::same_bits(held_bits(v, v_scale, j, at), m.v_bits[expected], bits_dtype)) {
                                mismatch(&counts_->contents, "seq %d layer %d head %d: CUDA holds other K/V for position %d",
                                         seq, layer, head, gpu[size_t(j)]);
                                j = held;
                                break;
                            }
                        }
                }
            }
    }

 private:
    struct Twin {
        rkv_cache *gpu = nullptr;
        rkv_cache_params params{};
        std::vector<uint8_t> diverged;                     // [layer, seq]
        std::map<int64_t, std::map<int32_t, float>> scores;  // CPU scores before the call, by position
    };

    static int64_t key(int32_t seq, int32_t layer, int32_t head) {
        return (int64_t(seq) << 40) | (int64_t(layer) << 20) | head;
    }

    void sync() {
        const cudaError_t error = cudaDeviceSynchronize();
        if (error != cudaSuccess) fuzz::fail("CUDA error after a call: %s", cudaGetErrorString(error));
    }

    void same_status(const char *call, rkv_status cpu, rkv_status gpu) {
        if (cpu != gpu)
            mismatch(&counts_->status, "%s: CPU %s, CUDA %s (%s)", call, rkv_status_name(cpu), rkv_status_name(gpu),
                     gpu == RKV_OK ? "" : rkv_error_message());
    }

    void classify(const Twin &t, int32_t seq, int32_t layer, int32_t head, const std::vector<int32_t> &cpu,
                  const std::vector<int32_t> &gpu) {
        const std::set<int32_t> a(cpu.begin(), cpu.end()), b(gpu.begin(), gpu.end());
        std::vector<int32_t> differing;
        for (int32_t pos : a)
            if (!b.count(pos)) differing.push_back(pos);
        for (int32_t pos : b)
            if (!a.count(pos)) differing.push_back(pos);
        const auto found = t.scores.find(key(seq, layer, head));
        if (found == t.scores.end()) {
            ++counts_->kept_unclassified;
            return;
        }
        const std::map<int32_t, float> &scores = found->second;
        float largest = 0, lo = INFINITY, hi = -INFINITY;
        for (const auto &entry : scores) largest = std::max(largest, std::fabs(entry.second));
        for (int32_t pos : differing) {
            const auto s = scores.find(pos);
            if (s == scores.end()) {  // a token appended during the call: no score from before it
                ++counts_->kept_unclassified;
                return;
            }
            lo = std::min(lo, s->second);
            hi = std::max(hi, s->second);
        }
        if (hi - lo <= 1e-5f * largest || (std::isnan(lo) && std::isnan(hi))) {
            ++counts_->kept_near_tie;
        } else {
            mismatch(&counts_->kept_different, "seq %d layer %d head %d: kept sets differ beyond a near tie "
                     "(CPU scores of the differing tokens span %g .. %g)", seq, layer, head, double(lo), double(hi));
        }
    }

    __attribute__((format(printf, 3, 4))) void mismatch(long *counter, const char *format, ...) {
        ++*counter;
        if (reports.size() >= 20) return;
        char text[512];
        va_list args;
        va_start(args, format);
        std::vsnprintf(text, sizeof text, format, args);
        va_end(args);
        std::string where = program_;
        if (running_) where += " at call " + std::to_string(running_->calls()) + " (" + running_->current_call() + ")";
        reports.push_back(where + ": " + text);
    }

 public:
    std::string program_;
    const fuzz::Program *running_ = nullptr;  // for the call a mismatch names

 private:
    Counts *counts_;
    Twin twins_[fuzz::kMaxCaches];
};

std::vector<std::string> input_files(const std::vector<std::string> &paths) {
    std::vector<std::string> files;
    for (const std::string &path : paths) {
        if (std::filesystem::is_directory(path)) {
            std::vector<std::string> found;
            for (const auto &entry : std::filesystem::directory_iterator(path))
                if (entry.is_regular_file() && entry.path().filename().string()[0] != '.') found.push_back(entry.path().string());
            std::sort(found.begin(), found.end());
            files.insert(files.end(), found.begin(), found.end());
        } else {
            files.push_back(path);
        }
    }
    return files;
}

}  // namespace

int main(int argc, char **argv) {
    int devices = 0;
    if (cudaGetDeviceCount(&devices) != cudaSuccess || devices < 1) {
        std::printf("SKIP: no CUDA device (run on an H100/H200: tests/fuzz/README.md, \"On a GPU machine\")\n");
        return 77;
    }
    long random_programs = 0;
    uint64_t seed = 1;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--random") == 0 && i + 1 < argc) random_programs = std::atol(argv[++i]);
        else if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) seed = std::strtoull(argv[++i], nullptr, 10);
        else paths.push_back(argv[i]);
    }
    std::vector<std::pair<std::string, std::vector<uint8_t>>> inputs;
    for (const std::string &file : input_files(paths)) {
        std::ifstream stream(file, std::ios::binary);
        inputs.emplace_back(file, std::vector<uint8_t>((std::istreambuf_iterator<char>(stream)), std::istreambuf_iterator<char>()));
    }
    uint64_t state = seed;
    for (long r = 0; r < random_programs; ++r) {
        state = fuzz::mix64(state);
        std::vector<uint8_t> bytes(200 + state % 1300);
        for (uint8_t &b : bytes) b = uint8_t((state = fuzz::mix64(state)) >> 56);
        inputs.emplace_back("random-" + std::to_string(seed) + "-" + std::to_string(r), std::move(bytes));
    }

    Counts counts;
    const auto start = std::chrono::steady_clock::now();
    for (const auto &input : inputs) {
        CudaMirror mirror(&counts);
        mirror.program_ = input.first;
        fuzz::RunOptions options;
        options.mirror = &mirror;
        fuzz::Program program(input.second.data(), input.second.size(), options);
        mirror.running_ = &program;
        try {
            program.run();
        } catch (const fuzz::Failure &failure) {
            ++counts.cpu_failures;
            std::printf("FAILED %s at call %d (%s):\n  %s\n", input.first.c_str(), program.calls(),
                        program.current_call().c_str(), failure.what());
        }
        ++counts.programs;
        counts.calls += program.calls();
        for (const std::string &report : mirror.reports) std::printf("MISMATCH %s\n", report.c_str());
        mirror.running_ = nullptr;
        std::fflush(stdout);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("\nrkv_fuzz_gpu_replay: CUDA against the CPU, call by call (%.1f s)\n", seconds);
    std::printf("| programs | calls | CUDA caches unsupported | failed programs (CPU model, CUDA errors) | status | lengths | K/V contents | attend |\n");
    std::printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    std::printf("| %ld | %ld | %ld | %ld | %ld | %ld | %ld | %ld |\n\n", counts.programs, counts.calls, counts.unsupported,
                counts.cpu_failures, counts.status, counts.lengths, counts.contents, counts.attend);
    std::printf("attention: %ld output elements within the float64 reference's tolerance on CUDA (where the header "
                "promises a value); %ld not compared (rows over a kept set that went another way at a tie)\n",
                counts.attend_checked - counts.attend, counts.attend_other_tokens);
    std::printf("kept sets per head: %ld identical, %ld same set in another order, %ld near ties, %ld unclassified, "
                "%ld different\n", counts.kept_same, counts.order_only, counts.kept_near_tie, counts.kept_unclassified,
                counts.kept_different);
    std::printf("%s\n", counts.hard() ? "MISMATCHES: see above" : "no mismatches");
    return counts.hard() ? 1 : 0;
}
