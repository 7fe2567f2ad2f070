// rkv_append: entries, token counts and offsets (left padding, packed varlen),
// K/V/Q in any dtype and layout, prompt flags, and one deliberate mistake now
// and then; checked against the model's verdict, the inputs never written, and
// a failed call changing nothing.
#include <algorithm>
#include <cstring>
#include <string>

#include "checks.h"
#include "failure.h"
#include "program.h"
#include "tensors.h"

namespace fuzz {

namespace {

enum Mistake {
    kNoMistake,
    kStructSize,
    kNullSeqIds,
    kNullData,
    kHeads,
    kHeadDim,
    kNegativeStride,
    kUnknownFlag,
    kBadCount,
    kNegativeOffset,
    kDuplicateSeq,
    kSeqOutside,
    kBadDtype,
    kBadNumSeqs,
    kOverflowStride,
    kNullCache,
    kNullArgs,
    kShortExtent,
    kMistakes
};

const char *mistake_name(int m) {
    static const char *names[] = {"",           "struct_size",     "NULL seq_ids", "NULL data",   "num_heads",
                                  "head_dim",   "negative stride", "unknown flag", "bad count",   "bad offset",
                                  "duplicate seq", "seq outside",  "bad dtype",    "bad num_seqs", "overflowing stride",
                                  "NULL cache", "NULL args", "extent too small"};
    return m >= 0 && m < kMistakes ? names[m] : "?";
}

std::string list(const int32_t *values, int32_t count) {
    std::string out = "[";
    for (int32_t i = 0; i < count && i < 8; ++i) out += (i ? "," : "") + std::to_string(values[i]);
    return out + (count > 8 ? ",...]" : "]");
}

std::string list(const int64_t *values, int32_t count) {
    std::string out = "[";
    for (int32_t i = 0; i < count && i < 8; ++i) out += (i ? "," : "") + std::to_string(values[i]);
    return out + (count > 8 ? ",...]" : "]");
}

}  // namespace

void Program::op_append(int slot) {
    Slot &s = slots_[size_t(slot)];
    const rkv_cache_params &p = s.params;
    const int32_t seqs_n = std::max(p.max_seqs, 1), layers = std::max(p.num_layers, 1);
    const int32_t capacity = s.model ? s.model->capacity() : 8;

    const int32_t layer = pick_index(layers, false);
    const int32_t n = in_.range(1, seqs_n);
    const int32_t first = in_.range(0, seqs_n - 1);
    const bool reversed = in_.chance(50);
    std::vector<int32_t> seqs(static_cast<size_t>(n));  // distinct slots
    for (int32_t i = 0; i < n; ++i) seqs[size_t(i)] = (first + (reversed ? n - 1 - i : i)) % seqs_n;

    const bool decode_step = in_.chance(35);
    std::vector<int32_t> counts(size_t(n), 1);
    if (!decode_step) {
        for (int32_t &count : counts) {
            const uint8_t b = in_.byte();
            count = b < 150 ? 1 + b % 4 : b < 230 ? 1 + b % (capacity + 2) : capacity + b % (2 * capacity + 1);
        }
    }
    const bool pass_counts = !decode_step || in_.chance(20);
    const bool packed = in_.chance(20);
    std::vector<int64_t> offsets(size_t(n), 0);
    const bool pass_offsets = packed || in_.chance(25);
    if (packed) {  // varlen: each entry's tokens start where the last one's end (gaps, overlaps now and then)
        int64_t start = 0;
        for (int32_t i = 0; i < n; ++i) {
            offsets[size_t(i)] = start + in_.range(0, 2);
            start = in_.chance(10) ? offsets[size_t(i)] : offsets[size_t(i)] + counts[size_t(i)];
        }
    } else if (pass_offsets) {
        for (int64_t &offset : offsets) offset = in_.range(0, 4);
    }
    int64_t token_extent = 1;
    for (int32_t i = 0; i < n; ++i) token_extent = std::max(token_extent, offsets[size_t(i)] + counts[size_t(i)]);
    const bool prompt = in_.chance(20);
    const bool with_q = p.method == RKV_METHOD_H2O ? !in_.chance(5) : in_.chance(80);

    rkv_append_args a;
    std::memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = layer;
    a.num_seqs = n;
    a.seq_ids = seqs.data();
    a.num_tokens = pass_counts ? counts.data() : nullptr;
    a.token_offsets = pass_offsets ? offsets.data() : nullptr;
    a.flags = prompt ? RKV_APPEND_PROMPT : 0;

    // K, V and Q, each in its own dtype and layout, with data from the pattern.
    struct Arg {
        rkv_tensor *tensor;
        int32_t heads;
        Tensor kind;
        bool present;
        TensorBuffer buffer;
        std::vector<uint8_t> copy;  // the input as passed: the library must not write it
    };
    Arg args[3] = {{&a.k, p.num_kv_heads, Tensor::K, true, {}, {}},
                   {&a.v, p.num_kv_heads, Tensor::V, true, {}, {}},
                   {&a.q, p.num_q_heads, Tensor::Q, with_q, {}, {}}};
    for (Arg &arg : args) {
        if (!arg.present) continue;
        rkv_tensor &t = *arg.tensor;
        t.dtype = rkv_dtype(in_.byte() % 3);
        t.num_heads = arg.heads;
        t.head_dim = p.head_dim;
        LayoutChoice layout = decode_layout(in_);
        layout.packed = packed != layout.packed;  // mostly packed in a varlen call, now and then otherwise
        apply_layout(layout, &t, n, token_extent, token_extent > 1);
        arg.buffer = allocate_for(t, n, a.num_tokens, a.token_offsets, true);
        t.data = arg.buffer.bytes.get();
        t.extent = extent_for(layout, arg.buffer);
        for (int32_t i = 0; i < n; ++i) {
            const int32_t seq = seqs[size_t(i)];
            const int64_t next = s.model && layer >= 0 && layer < p.num_layers ? s.model->at(seq, layer).logical : 0;
            const uint64_t stream = stream_of(slot, seq);
            for (int32_t token = 0; token < counts[size_t(i)]; ++token)
                for (int32_t h = 0; h < t.num_heads; ++h) {
                    const DataRow row(pattern_, salt_, stream, layer, arg.kind, h, next + token);
                    const int64_t at = tensor_index(t, i, offsets[size_t(i)] + token, h);
                    for (int32_t e = 0; e < t.head_dim; ++e) store_bits(t.data, at + e, t.dtype, to_bits(row(e), t.dtype));
                }
        }
    }

    // One deliberate mistake now and then; the model says what the call must return.
    int mistake = in_.chance(14) ? in_.range(1, kMistakes - 1) : kNoMistake;
    rkv_cache *cache = s.cache;
    const rkv_append_args *passed = &a;
    Arg &victim = args[with_q ? in_.range(0, 2) : in_.range(0, 1)];
    switch (mistake) {
        case kStructSize: a.struct_size = in_.chance(50) ? 0 : sizeof a + 8; break;
        case kNullSeqIds: a.seq_ids = nullptr; break;
        case kNullData: args[in_.range(0, 1)].tensor->data = nullptr; break;
        case kHeads: victim.tensor->num_heads = in_.chance(50) ? 0 : victim.heads + 1; break;
        case kHeadDim: victim.tensor->head_dim = in_.chance(50) ? 0 : p.head_dim + 1; break;
        case kNegativeStride: {
            rkv_tensor &t = *victim.tensor;
            const uint8_t which = in_.byte() % 3;
            int64_t &stride = which == 0 ? t.stride_seq : which == 1 ? t.stride_token : t.stride_head;
            stride = stride > 0 ? -stride : -1;
            break;
        }
        case kUnknownFlag: a.flags |= 1u << in_.range(1, 31); break;
        case kBadCount:
            counts[size_t(in_.range(0, n - 1))] = in_.chance(50) ? 0 : -3;
            a.num_tokens = counts.data();
            break;
        case kNegativeOffset:  // or one so large that offset + count overflows
            offsets[size_t(in_.range(0, n - 1))] = in_.chance(50) ? -1 : INT64_MAX - 1;
            a.token_offsets = offsets.data();
            break;
        case kDuplicateSeq:
            if (n >= 2) seqs[1] = seqs[0];
            else seqs[0] = seqs_n;
            break;
        case kSeqOutside: {
            const int32_t outside[] = {seqs_n, -1, INT32_MIN, INT32_MAX};
            seqs[size_t(in_.range(0, n - 1))] = in_.pick(outside);
            break;
        }
        case kBadDtype: victim.tensor->dtype = rkv_dtype(in_.chance(50) ? 3 : -1); break;
        case kBadNumSeqs: {
            const uint8_t b = in_.byte() % 3;
            a.num_seqs = b == 0 ? 0 : b == 1 ? -1 : seqs_n + 1;
            if (a.num_seqs > n) {  // index arrays as long as num_seqs says; tensors stay n entries
                seqs.resize(size_t(a.num_seqs), 0);
                counts.resize(size_t(a.num_seqs), 1);
                offsets.resize(size_t(a.num_seqs), 0);
                a.seq_ids = seqs.data();
                if (a.num_tokens) a.num_tokens = counts.data();
                if (a.token_offsets) a.token_offsets = offsets.data();
            }
            break;
        }
        case kOverflowStride: {
            rkv_tensor &t = a.k;
            if (t.num_heads > 1) t.stride_head = int64_t(1) << 62;
            else if (n > 1 && t.stride_seq != 0) t.stride_seq = int64_t(1) << 62;
            else if (token_extent > 1) t.stride_token = int64_t(1) << 62;
            else mistake = kNoMistake;
            break;
        }
        case kNullCache: cache = nullptr; break;
        case kNullArgs: passed = nullptr; break;
        case kShortExtent:  // one element short of what the call reads (or negative)
            victim.tensor->extent = in_.chance(80) ? std::max<int64_t>(victim.buffer.elements - 1, 1) : -1;
            break;
        default: break;
    }
    for (Arg &arg : args)
        if (arg.present) arg.copy.assign(arg.buffer.bytes.get(), arg.buffer.bytes.get() + arg.buffer.size_bytes());

    note("cache%d append layer %d seqs %s counts %s offsets %s%s%s k{%s} v{%s} q{%s}%s%s", slot, a.layer,
         list(seqs.data(), n).c_str(), a.num_tokens ? list(counts.data(), n).c_str() : "NULL",
         a.token_offsets ? list(offsets.data(), n).c_str() : "NULL", prompt ? " prompt" : "",
         a.num_seqs != n ? (" num_seqs " + std::to_string(a.num_seqs)).c_str() : "",
         describe_tensor(a.k).c_str(), describe_tensor(a.v).c_str(), with_q ? describe_tensor(a.q).c_str() : "none",
         mistake ? " mistake: " : "", mistake_name(mistake));

    Verdict verdict;
    if (s.model) verdict = s.model->append_verdict(passed, cache == nullptr);
    else verdict.error(RKV_ERR_INVALID_ARGUMENT);
    ScoreSnapshot before;
    if (s.model && verdict.allows_error()) before = take_scores(s.cache, *s.model);
    if (options_.mirror && s.cache) options_.mirror->before_mutation(slot, s.cache);

    const rkv_status status = rkv_append(cache, passed, nullptr);
    expect_status("rkv_append", status, verdict);
    for (const Arg &arg : args)
        if (arg.present)
            FUZZ_EXPECT(std::memcmp(arg.copy.data(), arg.buffer.bytes.get(), arg.copy.size()) == 0,
                        "rkv_append wrote into its input tensors");
    if (status == RKV_OK) s.model->apply_append(a);
    else if (s.model && verdict.allows_error()) expect_same_scores(before, take_scores(s.cache, *s.model));
    if (options_.mirror && s.cache && cache && passed)
        options_.mirror->append(slot, a, &args[0].buffer, &args[1].buffer, with_q ? &args[2].buffer : nullptr, status);
}

}  // namespace fuzz
