// A GGUF reader: just enough of the format (version 2 and 3) to load a Llama
// model: the typed key/value metadata and the tensors, with dequantization of
// the tensor types small Llama checkpoints use (F32, F16, BF16, Q4_0, Q4_1, Q8_0).
//
// Layout of a file (little endian):
//   "GGUF" | u32 version | u64 tensor_count | u64 kv_count
//   kv_count x  (string key | u32 value_type | value)
//   tensor_count x (string name | u32 n_dims | u64 ne[n_dims] | u32 ggml_type | u64 offset)
//   padding to `general.alignment` (default 32) | tensor data
// A string is u64 length + bytes (no terminator). ne[0] is the innermost,
// contiguous axis: a weight matrix [out, in] is stored as ne = {in, out}.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace engine {

// ggml tensor types (values pinned by the format).
enum class GgmlType : uint32_t {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q8_0 = 8,
    BF16 = 30,
};
const char *ggml_type_name(uint32_t type);

struct GgufTensor {
    std::string name;
    uint32_t type = 0;            // a GgmlType value (others are listed but not readable)
    std::vector<int64_t> shape;   // ne[0] innermost
    const uint8_t *data = nullptr; // inside the mapped file
    int64_t rows() const;         // product of ne[1..]
    int64_t row_length() const { return shape.empty() ? 1 : shape[0]; }
};

// A mapped GGUF file. Throws std::runtime_error with a readable message on a
// file that is missing, truncated or not GGUF. Tensor data stays mapped for
// the object's lifetime.
class GgufFile {
  public:
    explicit GgufFile(const std::string &path);
    ~GgufFile();
    GgufFile(const GgufFile &) = delete;
    GgufFile &operator=(const GgufFile &) = delete;

    bool has(const std::string &key) const { return values_.count(key) != 0; }
    // Scalars convert between integer widths; a missing key or another type throws.
    int64_t get_int(const std::string &key) const;
    int64_t get_int(const std::string &key, int64_t fallback) const;
    float get_float(const std::string &key) const;
    float get_float(const std::string &key, float fallback) const;
    bool get_bool(const std::string &key, bool fallback) const;
    std::string get_string(const std::string &key) const;
    std::vector<std::string> get_string_array(const std::string &key) const;
    std::vector<int64_t> get_int_array(const std::string &key) const;

    const GgufTensor *find_tensor(const std::string &name) const;  // nullptr if absent
    const GgufTensor &tensor(const std::string &name) const;       // throws if absent
    const std::vector<GgufTensor> &tensors() const { return tensors_; }
    const std::string &path() const { return path_; }

  private:
    struct Value {
        uint32_t type = 0;        // GGUF value type
        uint32_t element_type = 0; // for arrays
        uint64_t count = 0;       // for arrays
        const uint8_t *data = nullptr; // first byte of the value (array: of its first element)
    };
    const Value &value(const std::string &key) const;

    std::string path_;
    uint8_t *map_ = nullptr;
    size_t size_ = 0;
    std::map<std::string, Value> values_;
    std::vector<GgufTensor> tensors_;
};

// Bytes of a row of n elements of `type` (n a multiple of the block size).
size_t ggml_row_bytes(uint32_t type, int64_t n);
// Convert one row of n elements to float32. Throws for a type it cannot read.
void dequantize_row(uint32_t type, const uint8_t *src, float *dst, int64_t n);
// IEEE half to float (no hardware conversion needed).
float half_to_float(uint16_t h);

}  // namespace engine
