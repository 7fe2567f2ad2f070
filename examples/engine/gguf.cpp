#include "gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace engine {

namespace {

// GGUF metadata value types (pinned by the format).
enum ValueType : uint32_t {
    U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
    STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};

size_t scalar_size(uint32_t type) {
    switch (type) {
        case U8: case I8: case BOOL: return 1;
        case U16: case I16: return 2;
        case U32: case I32: case F32: return 4;
        case U64: case I64: case F64: return 8;
        default: return 0;
    }
}

// A bounds-checked little-endian cursor over the mapped file.
struct Cursor {
    const uint8_t *begin, *at, *end;
    const std::string &path;

    void need(uint64_t n) const {
        if (n > uint64_t(end - at))
            throw std::runtime_error(path + ": truncated GGUF file (offset " +
                                     std::to_string(at - begin) + ")");
    }
    template <typename T> T read() {
        need(sizeof(T));
        T x;
        std::memcpy(&x, at, sizeof(T));
        at += sizeof(T);
        return x;
    }
    std::string read_string() {
        const uint64_t n = read<uint64_t>();
        need(n);
        std::string s(reinterpret_cast<const char *>(at), n);
        at += n;
        return s;
    }
    void skip_value(uint32_t type) {
        if (type == STRING) {
            const uint64_t n = read<uint64_t>();
            need(n);
            at += n;
        } else if (type == ARRAY) {
            const uint32_t element = read<uint32_t>();
            const uint64_t count = read<uint64_t>();
            for (uint64_t i = 0; i < count; ++i) skip_value(element);
        } else {
            const size_t n = scalar_size(type);
            if (n == 0) throw std::runtime_error(path + ": unknown GGUF value type " + std::to_string(type));
            need(n);
            at += n;
        }
    }
};

int64_t read_int(uint32_t type, const uint8_t *p) {
    switch (type) {
        case U8: return *p;
        case I8: return int8_t(*p);
        case BOOL: return *p != 0;
        case U16: { uint16_t x; std::memcpy(&x, p, 2); return x; }
        case I16: { int16_t x; std::memcpy(&x, p, 2); return x; }
        case U32: { uint32_t x; std::memcpy(&x, p, 4); return x; }
        case I32: { int32_t x; std::memcpy(&x, p, 4); return x; }
        case U64: { uint64_t x; std::memcpy(&x, p, 8); return int64_t(x); }
        case I64: { int64_t x; std::memcpy(&x, p, 8); return x; }
        default: throw std::runtime_error("GGUF value is not an integer");
    }
}

// Block layouts (32 elements a block):
//   Q4_0: f16 d, 16 bytes of nibbles      x = (q - 8) * d
//   Q4_1: f16 d, f16 m, 16 bytes of nibbles   x = q * d + m
//   Q8_0: f16 d, 32 int8                  x = q * d
// In the nibble formats byte j holds element j (low nibble) and element j+16 (high).
constexpr int kBlock = 32;

}  // namespace

float half_to_float(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);  // inf / nan
    } else if (exponent != 0) {
        bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
    } else if (mantissa == 0) {
        bits = sign;  // zero
    } else {
        // subnormal half: normalise it
        exponent = 113;
        while ((mantissa & 0x400u) == 0) {
            mantissa <<= 1;
            --exponent;
        }
        bits = sign | (exponent << 23) | ((mantissa & 0x3ffu) << 13);
    }
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

const char *ggml_type_name(uint32_t type) {
    switch (GgmlType(type)) {
        case GgmlType::F32: return "F32";
        case GgmlType::F16: return "F16";
        case GgmlType::Q4_0: return "Q4_0";
        case GgmlType::Q4_1: return "Q4_1";
        case GgmlType::Q8_0: return "Q8_0";
        case GgmlType::BF16: return "BF16";
    }
    return "unsupported";
}

size_t ggml_row_bytes(uint32_t type, int64_t n) {
    switch (GgmlType(type)) {
        case GgmlType::F32: return size_t(n) * 4;
        case GgmlType::F16:
        case GgmlType::BF16: return size_t(n) * 2;
        case GgmlType::Q4_0: return size_t(n / kBlock) * 18;
        case GgmlType::Q4_1: return size_t(n / kBlock) * 20;
        case GgmlType::Q8_0: return size_t(n / kBlock) * 34;
    }
    throw std::runtime_error(std::string("tensor type ") + std::to_string(type) +
                             " is not supported by this engine (F32, F16, BF16, Q4_0, Q4_1, Q8_0 are)");
}

void dequantize_row(uint32_t type, const uint8_t *src, float *dst, int64_t n) {
    auto f16 = [](const uint8_t *p) {
        uint16_t h;
        std::memcpy(&h, p, 2);
        return half_to_float(h);
    };
    switch (GgmlType(type)) {
        case GgmlType::F32:
            std::memcpy(dst, src, size_t(n) * 4);
            return;
        case GgmlType::F16:
            for (int64_t i = 0; i < n; ++i) dst[i] = f16(src + 2 * i);
            return;
        case GgmlType::BF16:
            for (int64_t i = 0; i < n; ++i) {
                const uint32_t bits = uint32_t(src[2 * i] | (src[2 * i + 1] << 8)) << 16;
                std::memcpy(dst + i, &bits, 4);
            }
            return;
        case GgmlType::Q4_0:
            for (int64_t b = 0; b < n / kBlock; ++b, src += 18, dst += kBlock) {
                const float d = f16(src);
                for (int j = 0; j < kBlock / 2; ++j) {
                    dst[j] = float((src[2 + j] & 0x0f) - 8) * d;
                    dst[j + kBlock / 2] = float((src[2 + j] >> 4) - 8) * d;
                }
            }
            return;
        case GgmlType::Q4_1:
            for (int64_t b = 0; b < n / kBlock; ++b, src += 20, dst += kBlock) {
                const float d = f16(src), m = f16(src + 2);
                for (int j = 0; j < kBlock / 2; ++j) {
                    dst[j] = float(src[4 + j] & 0x0f) * d + m;
                    dst[j + kBlock / 2] = float(src[4 + j] >> 4) * d + m;
                }
            }
            return;
        case GgmlType::Q8_0:
            for (int64_t b = 0; b < n / kBlock; ++b, src += 34, dst += kBlock) {
                const float d = f16(src);
                for (int j = 0; j < kBlock; ++j) dst[j] = float(int8_t(src[2 + j])) * d;
            }
            return;
    }
    ggml_row_bytes(type, n);  // throws the "not supported" message
}

int64_t GgufTensor::rows() const {
    int64_t r = 1;
    for (size_t i = 1; i < shape.size(); ++i) r *= shape[i];
    return r;
}

GgufFile::GgufFile(const std::string &path) : path_(path) {
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_size < 24) {
        ::close(fd);
        throw std::runtime_error(path + ": not a GGUF file (too small)");
    }
    size_ = size_t(st.st_size);
    void *map = mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    ::close(fd);
    if (map == MAP_FAILED) throw std::runtime_error(path + ": mmap failed: " + std::strerror(errno));
    map_ = static_cast<uint8_t *>(map);

    try {
        Cursor c{map_, map_, map_ + size_, path_};
        if (std::memcmp(map_, "GGUF", 4) != 0) throw std::runtime_error(path + ": not a GGUF file (bad magic)");
        c.at += 4;
        const uint32_t version = c.read<uint32_t>();
        if (version < 2 || version > 3)
            throw std::runtime_error(path + ": GGUF version " + std::to_string(version) + " (2 or 3 supported)");
        const uint64_t tensor_count = c.read<uint64_t>();
        const uint64_t kv_count = c.read<uint64_t>();

        for (uint64_t i = 0; i < kv_count; ++i) {
            std::string key = c.read_string();
            Value v;
            v.type = c.read<uint32_t>();
            if (v.type == ARRAY) {
                v.element_type = c.read<uint32_t>();
                v.count = c.read<uint64_t>();
                v.data = c.at;
                for (uint64_t j = 0; j < v.count; ++j) c.skip_value(v.element_type);
            } else {
                v.data = c.at;
                c.skip_value(v.type);
            }
            values_[key] = v;
        }

        std::vector<uint64_t> offsets;  // [tensor_count] from the start of the tensor data
        for (uint64_t i = 0; i < tensor_count; ++i) {
            GgufTensor t;
            t.name = c.read_string();
            const uint32_t dims = c.read<uint32_t>();
            if (dims == 0 || dims > 4) throw std::runtime_error(path + ": tensor " + t.name + " has " + std::to_string(dims) + " dims");
            for (uint32_t d = 0; d < dims; ++d) t.shape.push_back(int64_t(c.read<uint64_t>()));
            t.type = c.read<uint32_t>();
            offsets.push_back(c.read<uint64_t>());
            tensors_.push_back(std::move(t));
        }

        const uint64_t alignment = uint64_t(get_int("general.alignment", 32));
        const uint64_t header = uint64_t(c.at - map_);
        const uint64_t data_start = (header + alignment - 1) / alignment * alignment;
        for (size_t i = 0; i < tensors_.size(); ++i) {
            GgufTensor &t = tensors_[i];
            const uint64_t offset = offsets[i];
            if (data_start + offset > size_)
                throw std::runtime_error(path + ": tensor " + t.name + " starts past the end of the file");
            t.data = map_ + data_start + offset;
            // Only readable types get a size check; others fail when used.
            if (std::string(ggml_type_name(t.type)) == "unsupported") continue;
            const uint64_t bytes = ggml_row_bytes(t.type, t.row_length()) * uint64_t(t.rows());
            if (data_start + offset + bytes > size_)
                throw std::runtime_error(path + ": tensor " + t.name + " runs past the end of the file");
        }
    } catch (...) {
        munmap(map_, size_);
        throw;
    }
}

GgufFile::~GgufFile() { munmap(map_, size_); }

const GgufFile::Value &GgufFile::value(const std::string &key) const {
    auto it = values_.find(key);
    if (it == values_.end()) throw std::runtime_error(path_ + ": metadata key " + key + " is missing");
    return it->second;
}

int64_t GgufFile::get_int(const std::string &key) const {
    const Value &v = value(key);
    return read_int(v.type, v.data);
}

int64_t GgufFile::get_int(const std::string &key, int64_t fallback) const {
    return has(key) ? get_int(key) : fallback;
}

float GgufFile::get_float(const std::string &key) const {
    const Value &v = value(key);
    if (v.type == F32) {
        float x;
        std::memcpy(&x, v.data, 4);
        return x;
    }
    if (v.type == F64) {
        double x;
        std::memcpy(&x, v.data, 8);
        return float(x);
    }
    return float(read_int(v.type, v.data));
}

float GgufFile::get_float(const std::string &key, float fallback) const {
    return has(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(const std::string &key, bool fallback) const {
    return has(key) ? get_int(key) != 0 : fallback;
}

std::string GgufFile::get_string(const std::string &key) const {
    const Value &v = value(key);
    if (v.type != STRING) throw std::runtime_error(path_ + ": metadata key " + key + " is not a string");
    uint64_t n;
    std::memcpy(&n, v.data, 8);
    return std::string(reinterpret_cast<const char *>(v.data + 8), n);
}

std::vector<std::string> GgufFile::get_string_array(const std::string &key) const {
    const Value &v = value(key);
    if (v.type != ARRAY || v.element_type != STRING)
        throw std::runtime_error(path_ + ": metadata key " + key + " is not an array of strings");
    std::vector<std::string> out;
    out.reserve(v.count);
    Cursor c{map_, v.data, map_ + size_, path_};
    for (uint64_t i = 0; i < v.count; ++i) out.push_back(c.read_string());
    return out;
}

std::vector<int64_t> GgufFile::get_int_array(const std::string &key) const {
    const Value &v = value(key);
    const size_t size = scalar_size(v.element_type);
    if (v.type != ARRAY || size == 0 || v.element_type == F32 || v.element_type == F64)
        throw std::runtime_error(path_ + ": metadata key " + key + " is not an array of integers");
    std::vector<int64_t> out(v.count);
    for (uint64_t i = 0; i < v.count; ++i) out[i] = read_int(v.element_type, v.data + i * size);
    return out;
}

const GgufTensor *GgufFile::find_tensor(const std::string &name) const {
    for (const GgufTensor &t : tensors_)
        if (t.name == name) return &t;
    return nullptr;
}

const GgufTensor &GgufFile::tensor(const std::string &name) const {
    const GgufTensor *t = find_tensor(name);
    if (!t) throw std::runtime_error(path_ + ": tensor " + name + " is missing");
    return *t;
}

}  // namespace engine
