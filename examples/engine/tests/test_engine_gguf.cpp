// The GGUF reader on a small file this test writes itself (no model needed):
// metadata of each kind, tensor shapes and offsets after alignment padding,
// dequantization of every supported type against values worked out by hand
// from the block layouts, and readable errors for broken files.
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "gguf.h"
#include "model.h"
#include "test_util.h"

using namespace engine;

namespace {

struct Writer {
    std::string bytes;
    template <typename T> void put(T x) { bytes.append(reinterpret_cast<const char *>(&x), sizeof x); }
    void str(const std::string &s) {
        put<uint64_t>(s.size());
        bytes += s;
    }
};

struct TensorSpec {
    std::string name;
    std::vector<uint64_t> shape;
    uint32_t type;
    std::string data;  // raw bytes
};

std::string block_q4_1() {  // d = 0.5, m = -1: x[j] = (j & 15) * 0.5 - 1, x[j + 16] = (15 - j) * 0.5 - 1
    Writer w;
    w.put<uint16_t>(0x3800);
    w.put<uint16_t>(0xbc00);
    for (int j = 0; j < 16; ++j) w.put<uint8_t>(uint8_t(j | ((15 - j) << 4)));
    return w.bytes;
}
std::string block_q8_0(int shift) {  // d = 0.25: x[j] = (j - 16 + shift) * 0.25
    Writer w;
    w.put<uint16_t>(0x3400);
    for (int j = 0; j < 32; ++j) w.put<int8_t>(int8_t(j - 16 + shift));
    return w.bytes;
}
std::string block_q4_0() {  // d = 2: x[j] = x[j + 16] = (j - 8) * 2
    Writer w;
    w.put<uint16_t>(0x4000);
    for (int j = 0; j < 16; ++j) w.put<uint8_t>(uint8_t(j | (j << 4)));
    return w.bytes;
}

std::string make_file(const std::vector<TensorSpec> &tensors) {
    Writer w;
    w.bytes = "GGUF";
    w.put<uint32_t>(3);
    w.put<uint64_t>(tensors.size());
    w.put<uint64_t>(5);  // metadata entries
    w.str("general.architecture");
    w.put<uint32_t>(8);  // string
    w.str("llama");
    w.str("test.u32");
    w.put<uint32_t>(4);
    w.put<uint32_t>(7);
    w.str("test.f32");
    w.put<uint32_t>(6);
    w.put<float>(1.5f);
    w.str("test.strings");
    w.put<uint32_t>(9);  // array
    w.put<uint32_t>(8);  // of strings
    w.put<uint64_t>(2);
    w.str("a");
    w.str("bc");
    w.str("test.ints");
    w.put<uint32_t>(9);
    w.put<uint32_t>(5);  // of int32
    w.put<uint64_t>(3);
    for (int32_t i : {1, -2, 3}) w.put<int32_t>(i);

    std::string data;
    for (const TensorSpec &t : tensors) {
        w.str(t.name);
        w.put<uint32_t>(uint32_t(t.shape.size()));
        for (uint64_t d : t.shape) w.put<uint64_t>(d);
        w.put<uint32_t>(t.type);
        while (data.size() % 32) data += '\0';  // each tensor at an aligned offset
        w.put<uint64_t>(data.size());
        data += t.data;
    }
    while (w.bytes.size() % 32) w.bytes += '\0';  // the data starts aligned
    return w.bytes + data;
}

std::string write_temp(const std::string &bytes, const char *name) {
    const std::string path = "/tmp/rkv_test_gguf_" + std::to_string(getpid()) + "_" + name;
    std::ofstream(path, std::ios::binary) << bytes;
    return path;
}

template <typename F> std::string error_of(F f) {
    try {
        f();
    } catch (const std::runtime_error &e) {
        return e.what();
    }
    return "";
}

}  // namespace

int main() {
    Writer f32, f16, bf16;
    for (float x : {1.0f, -2.0f, 0.5f, 3.0f}) f32.put<float>(x);
    for (uint16_t h : {0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001}) f16.put<uint16_t>(h);  // 1 -2 0.5 65504 2^-24
    for (uint16_t b : {0x3f80, 0xc040}) bf16.put<uint16_t>(b);                        // 1 -3
    const std::vector<TensorSpec> tensors = {
        {"f32", {4}, 0, f32.bytes},
        {"f16", {5}, 1, f16.bytes},
        {"q4_0", {32}, 2, block_q4_0()},
        {"q4_1", {32}, 3, block_q4_1()},
        {"q8_0.matrix", {32, 2}, 8, block_q8_0(0) + block_q8_0(1)},
        {"bf16", {2}, 30, bf16.bytes},
    };
    const std::string bytes = make_file(tensors);
    const std::string path = write_temp(bytes, "ok.gguf");
    {
        GgufFile file(path);
        EXPECT(file.get_string("general.architecture") == "llama", "string");
        EXPECT(file.get_int("test.u32") == 7 && file.get_int("missing", 9) == 9, "int");
        EXPECT(file.get_float("test.f32") == 1.5f, "float");
        EXPECT((file.get_string_array("test.strings") == std::vector<std::string>{"a", "bc"}), "string array");
        EXPECT((file.get_int_array("test.ints") == std::vector<int64_t>{1, -2, 3}), "int array");
        EXPECT(error_of([&] { file.get_int("no.such.key"); }).find("no.such.key") != std::string::npos,
               "a missing key is named");
        EXPECT(file.tensors().size() == 6 && file.find_tensor("nope") == nullptr, "tensor list");

        auto values = [&](const char *name) {
            const GgufTensor &t = file.tensor(name);
            std::vector<float> out(static_cast<size_t>(t.row_length() * t.rows()));
            dequantize_row(t.type, t.data, out.data(), int64_t(out.size()));
            return out;
        };
        EXPECT((values("f32") == std::vector<float>{1, -2, 0.5f, 3}), "F32");
        EXPECT((values("f16") == std::vector<float>{1, -2, 0.5f, 65504, 1.0f / 16777216}), "F16 incl. subnormal");
        EXPECT((values("bf16") == std::vector<float>{1, -3}), "BF16");
        std::vector<float> q40 = values("q4_0"), q41 = values("q4_1");
        bool q40_ok = true, q41_ok = true;
        for (int j = 0; j < 16; ++j) {
            q40_ok = q40_ok && q40[size_t(j)] == float(j - 8) * 2 && q40[size_t(j) + 16] == float(j - 8) * 2;
            q41_ok = q41_ok && q41[size_t(j)] == float(j) * 0.5f - 1 && q41[size_t(j) + 16] == float(15 - j) * 0.5f - 1;
        }
        EXPECT(q40_ok, "Q4_0 nibbles: low = element j, high = element j + 16, minus 8, times d");
        EXPECT(q41_ok, "Q4_1 nibbles times d plus m");

        const Matrix m = load_matrix(file, "q8_0.matrix");
        bool q80_ok = m.rows == 2 && m.cols == 32;
        for (int r = 0; q80_ok && r < 2; ++r)
            for (int j = 0; j < 32; ++j) q80_ok = q80_ok && m.data[size_t(r * 32 + j)] == float(j - 16 + r) * 0.25f;
        EXPECT(q80_ok, "Q8_0 matrix [2, 32]: rows are ne[1], columns ne[0]");
    }

    // Broken files fail with a message, not a crash.
    const std::string truncated = write_temp(bytes.substr(0, bytes.size() - 40), "truncated.gguf");
    EXPECT(error_of([&] { GgufFile file(truncated); }).find("past the end") != std::string::npos, "truncated data");
    const std::string header_only = write_temp(bytes.substr(0, 60), "header.gguf");
    EXPECT(error_of([&] { GgufFile file(header_only); }).find("truncated") != std::string::npos, "truncated header");
    const std::string not_gguf = write_temp("GGML" + bytes.substr(4), "magic.gguf");
    EXPECT(error_of([&] { GgufFile file(not_gguf); }).find("bad magic") != std::string::npos, "bad magic");
    EXPECT(error_of([] { GgufFile file("/nonexistent.gguf"); }).find("cannot open") != std::string::npos, "missing");
    for (const std::string &p : {path, truncated, header_only, not_gguf}) unlink(p.c_str());
    return finish();
}
