// Decisions drawn from a fuzzer's input bytes, one byte per decision, so that a
// mutated byte changes one choice. An exhausted input reads as zeros; the
// program stops at the next call boundary (Program::run checks `exhausted`).
#pragma once

#include <cstddef>
#include <cstdint>

namespace fuzz {

class ByteReader {
 public:
    ByteReader(const uint8_t *data, size_t size) : data_(data), size_(size) {}

    bool exhausted() const { return pos_ >= size_; }
    size_t position() const { return pos_; }

    uint8_t byte() { return pos_ < size_ ? data_[pos_++] : 0; }

    // lo .. hi inclusive (hi - lo < 65536).
    int32_t range(int32_t lo, int32_t hi) {
        const uint32_t span = uint32_t(hi - lo) + 1u;
        const uint32_t raw = span > 256 ? uint32_t(byte()) | uint32_t(byte()) << 8 : byte();
        return lo + int32_t(raw % span);
    }

    // True with probability about `percent` / 100.
    bool chance(int percent) { return byte() * 100 < percent * 256; }

    uint32_t u32() {
        uint32_t x = 0;
        for (int i = 0; i < 4; ++i) x |= uint32_t(byte()) << (8 * i);
        return x;
    }

    template <typename T, size_t N>
    T pick(const T (&options)[N]) {
        return options[byte() % N];
    }

 private:
    const uint8_t *data_;
    size_t size_;
    size_t pos_ = 0;
};

}  // namespace fuzz
