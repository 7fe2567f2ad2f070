#include "tokenizer.h"

#include <locale.h>
#include <wctype.h>

#include <algorithm>
#include <climits>
#include <stdexcept>

#include "gguf.h"

namespace engine {

namespace {

// ---- UTF-8 ----------------------------------------------------------------

struct CodePoint {
    uint32_t value;
    size_t offset, length;  // bytes in the source text
};

// Decode UTF-8; an invalid byte becomes a code point of its own (it then
// classifies as "other" and is still encoded byte by byte, so nothing is lost).
std::vector<CodePoint> decode_utf8(const std::string &s) {
    std::vector<CodePoint> out;
    out.reserve(s.size());
    size_t i = 0;
    while (i < s.size()) {
        const uint8_t b = uint8_t(s[i]);
        size_t n = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
        uint32_t cp = n == 1 ? b : n == 2 ? b & 0x1fu : n == 3 ? b & 0x0fu : b & 0x07u;
        bool valid = n != 0 && i + n <= s.size();
        for (size_t k = 1; valid && k < n; ++k) {
            const uint8_t c = uint8_t(s[i + k]);
            valid = (c >> 6) == 0x2;
            cp = (cp << 6) | (c & 0x3fu);
        }
        if (!valid) {
            n = 1;
            cp = 0xdc00u + b;  // a lone surrogate: not a letter, number or space
        }
        out.push_back({cp, i, n});
        i += n;
    }
    return out;
}

std::string encode_utf8(uint32_t cp) {
    std::string s;
    if (cp < 0x80) {
        s += char(cp);
    } else if (cp < 0x800) {
        s += char(0xc0 | (cp >> 6));
        s += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        s += char(0xe0 | (cp >> 12));
        s += char(0x80 | ((cp >> 6) & 0x3f));
        s += char(0x80 | (cp & 0x3f));
    } else {
        s += char(0xf0 | (cp >> 18));
        s += char(0x80 | ((cp >> 12) & 0x3f));
        s += char(0x80 | ((cp >> 6) & 0x3f));
        s += char(0x80 | (cp & 0x3f));
    }
    return s;
}

// ---- Character classes of the pre-tokenizer ---------------------------------
// ASCII is classified exactly. Beyond ASCII, letters come from the C library's
// Unicode tables (the C.UTF-8 locale) and numbers from the ranges below: close
// to Unicode's \p{L} / \p{N}, exact for the text this engine is tested on.

bool is_space(uint32_t c) {
    return c == ' ' || (c >= 0x09 && c <= 0x0d) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
           c == 0x205f || c == 0x3000;
}

bool is_number(uint32_t c) {
    if (c < 0x80) return c >= '0' && c <= '9';
    static const uint32_t ranges[][2] = {
        {0xb2, 0xb3}, {0xb9, 0xb9}, {0xbc, 0xbe}, {0x660, 0x669}, {0x6f0, 0x6f9},
        {0x966, 0x96f}, {0x2070, 0x2070}, {0x2074, 0x2079}, {0x2080, 0x2089},
        {0x2150, 0x2182}, {0x2185, 0x2189}, {0x2460, 0x249b}, {0x24ea, 0x24ff},
        {0x2776, 0x2793}, {0x3007, 0x3007}, {0x3021, 0x3029}, {0xff10, 0xff19},
    };
    for (const auto &r : ranges)
        if (c >= r[0] && c <= r[1]) return true;
    return false;
}

bool is_letter(uint32_t c) {
    if (c < 0x80) return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
    if (is_number(c) || is_space(c)) return false;
    static const locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", locale_t(0));
    if (utf8 == locale_t(0)) return c >= 0xc0;  // no Unicode tables: a rough guess
    return iswalpha_l(wint_t(c), utf8) != 0;
}

enum class Class { Letter, Number, Space, Other };
Class classify(uint32_t c) {
    if (is_space(c)) return Class::Space;
    if (is_number(c)) return Class::Number;
    if (is_letter(c)) return Class::Letter;
    return Class::Other;
}

// GPT-2's pattern on cps[begin, end), which has no digit run longer than one
// (digits were split off first), appending each match to out.
void gpt2_split(const std::string &text, const std::vector<CodePoint> &cps, size_t begin,
                size_t end, std::vector<std::string> &out) {
    auto cls = [&](size_t i) { return classify(cps[i].value); };
    auto emit = [&](size_t from, size_t to) {
        out.push_back(text.substr(cps[from].offset, cps[to - 1].offset + cps[to - 1].length - cps[from].offset));
    };
    size_t i = begin;
    while (i < end) {
        const uint32_t c = cps[i].value;
        // 's 't 're 've 'm 'll 'd
        if (c == '\'' && i + 1 < end) {
            const uint32_t a = cps[i + 1].value, b = i + 2 < end ? cps[i + 2].value : 0;
            size_t n = 0;
            if (a == 's' || a == 't' || a == 'm' || a == 'd') n = 2;
            else if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) n = 3;
            if (n) {
                emit(i, i + n);
                i += n;
                continue;
            }
        }
        // " ?X+" for X = letters, numbers, other: an optional leading space.
        const size_t first = (c == ' ' && i + 1 < end && cls(i + 1) != Class::Space) ? i + 1 : i;
        const Class run = cls(first);
        if (run != Class::Space) {
            size_t j = first + 1;
            while (j < end && cls(j) == run) ++j;
            emit(i, j);
            i = j;
            continue;
        }
        // Whitespace: \s+(?!\S) leaves the last space for the next word, \s+ takes a single one.
        size_t j = i + 1;
        while (j < end && cls(j) == Class::Space) ++j;
        if (j < end && j - i > 1) --j;
        emit(i, j);
        i = j;
    }
}

// GPT-2's reversible map of bytes to printable code points: printable Latin-1
// bytes map to themselves, the other 68 to U+0100 onwards in byte order.
void build_byte_symbols(std::string (&symbols)[256]) {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
        const bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae);
        symbols[b] = encode_utf8(printable ? b : next++);
    }
}

}  // namespace

std::vector<std::string> pretokenize(const std::string &text) {
    const std::vector<CodePoint> cps = decode_utf8(text);
    std::vector<std::string> out;
    size_t begin = 0;
    for (size_t i = 0; i <= cps.size(); ++i) {
        if (i < cps.size() && !is_number(cps[i].value)) continue;
        gpt2_split(text, cps, begin, i, out);                    // the text before the digit
        if (i < cps.size()) out.push_back(text.substr(cps[i].offset, cps[i].length));  // the digit
        begin = i + 1;
    }
    return out;
}

Tokenizer::Tokenizer(const GgufFile &file) {
    const std::string model = file.get_string("tokenizer.ggml.model");
    if (model != "gpt2")
        throw std::runtime_error(file.path() + ": tokenizer '" + model + "' is not byte-level BPE (gpt2)");
    const std::vector<std::string> pieces = file.get_string_array("tokenizer.ggml.tokens");
    const std::vector<std::string> merges = file.get_string_array("tokenizer.ggml.merges");
    std::vector<int64_t> types(pieces.size(), 1);
    if (file.has("tokenizer.ggml.token_type")) types = file.get_int_array("tokenizer.ggml.token_type");
    bos_id = int32_t(file.get_int("tokenizer.ggml.bos_token_id", -1));
    eos_id = int32_t(file.get_int("tokenizer.ggml.eos_token_id", -1));
    add_bos = file.get_bool("tokenizer.ggml.add_bos_token", false);

    build_byte_symbols(byte_symbol_);
    std::unordered_map<std::string, uint8_t> symbol_byte;
    for (int b = 0; b < 256; ++b) symbol_byte[byte_symbol_[b]] = uint8_t(b);

    bytes_.resize(pieces.size());
    control_.resize(pieces.size());
    for (size_t id = 0; id < pieces.size(); ++id) {
        ids_[pieces[id]] = int32_t(id);
        control_[id] = types[id] == 3;
        if (control_[id]) {
            bytes_[id] = pieces[id];
            specials_.push_back({pieces[id], int32_t(id)});
            continue;
        }
        // Map the piece's symbols back to bytes.
        for (const CodePoint &cp : decode_utf8(pieces[id])) {
            auto it = symbol_byte.find(pieces[id].substr(cp.offset, cp.length));
            if (it != symbol_byte.end()) bytes_[id] += char(it->second);
            else bytes_[id] += pieces[id].substr(cp.offset, cp.length);  // not byte-level: keep as is
        }
    }
    std::sort(specials_.begin(), specials_.end(),
              [](const auto &a, const auto &b) { return a.first.size() > b.first.size(); });
    for (size_t rank = 0; rank < merges.size(); ++rank) ranks_[merges[rank]] = int32_t(rank);
}

int32_t Tokenizer::token_id(const std::string &piece) const {
    auto it = ids_.find(piece);
    return it == ids_.end() ? -1 : it->second;
}

void Tokenizer::encode_piece(const std::string &piece, std::vector<int32_t> &out) const {
    // symbols: the piece in the byte-level alphabet, one symbol per byte to start
    std::vector<std::string> symbols;
    symbols.reserve(piece.size());
    for (unsigned char b : piece) symbols.push_back(byte_symbol_[b]);
    // Merge the adjacent pair of lowest rank (leftmost on a tie) until none is in the table.
    while (symbols.size() > 1) {
        int32_t best_rank = INT32_MAX;
        size_t best = 0;
        for (size_t i = 0; i + 1 < symbols.size(); ++i) {
            auto it = ranks_.find(symbols[i] + " " + symbols[i + 1]);
            if (it != ranks_.end() && it->second < best_rank) {
                best_rank = it->second;
                best = i;
            }
        }
        if (best_rank == INT32_MAX) break;
        symbols[best] += symbols[best + 1];
        symbols.erase(symbols.begin() + long(best) + 1);
    }
    for (const std::string &s : symbols) {
        const int32_t id = token_id(s);
        if (id < 0) throw std::runtime_error("tokenizer: symbol '" + s + "' is not in the vocabulary");
        out.push_back(id);
    }
}

std::vector<int32_t> Tokenizer::encode(const std::string &text) const {
    std::vector<int32_t> out;
    if (add_bos && bos_id >= 0) out.push_back(bos_id);
    size_t plain = 0;  // start of the text not yet encoded
    auto flush = [&](size_t end) {
        for (const std::string &piece : pretokenize(text.substr(plain, end - plain))) encode_piece(piece, out);
    };
    for (size_t i = 0; i < text.size(); ++i) {
        for (const auto &special : specials_) {
            if (text.compare(i, special.first.size(), special.first) != 0) continue;
            flush(i);
            out.push_back(special.second);
            i += special.first.size() - 1;
            plain = i + 1;
            break;
        }
    }
    flush(text.size());
    return out;
}

std::string Tokenizer::decode(const std::vector<int32_t> &tokens) const {
    std::string s;
    for (int32_t t : tokens) s += decode(t);
    return s;
}

std::vector<std::string> Tokenizer::decode_each(const std::vector<int32_t> &tokens) const {
    std::vector<std::string> texts;
    texts.reserve(tokens.size());
    for (int32_t t : tokens) texts.push_back(decode(t));
    return texts;
}

}  // namespace engine
