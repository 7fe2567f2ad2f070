// Reading the data sets: JSON Lines whose records are flat objects of strings,
// numbers and booleans (the files of examples/engine/eval/data). Each record becomes a
// map from key to value; strings are unescaped (\uXXXX and surrogate pairs to
// UTF-8), other values keep their JSON text.
#pragma once

#include <fstream>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace engine {

using Record = std::map<std::string, std::string>;

namespace detail {

inline void append_utf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
        out += char(cp);
    } else if (cp < 0x800) {
        out += char(0xc0 | (cp >> 6));
        out += char(0x80 | (cp & 0x3f));
    } else if (cp < 0x10000) {
        out += char(0xe0 | (cp >> 12));
        out += char(0x80 | ((cp >> 6) & 0x3f));
        out += char(0x80 | (cp & 0x3f));
    } else {
        out += char(0xf0 | (cp >> 18));
        out += char(0x80 | ((cp >> 12) & 0x3f));
        out += char(0x80 | ((cp >> 6) & 0x3f));
        out += char(0x80 | (cp & 0x3f));
    }
}

// The string literal starting at s[i] == '"'; leaves i after its closing quote.
inline std::string parse_string(const std::string &s, size_t &i) {
    std::string out;
    auto hex4 = [&](size_t at) { return uint32_t(std::stoul(s.substr(at, 4), nullptr, 16)); };
    for (++i; i < s.size() && s[i] != '"'; ++i) {
        if (s[i] != '\\') {
            out += s[i];
            continue;
        }
        const char e = s.at(++i);
        switch (e) {
            case 'n': out += '\n'; break;
            case 't': out += '\t'; break;
            case 'r': out += '\r'; break;
            case 'b': out += '\b'; break;
            case 'f': out += '\f'; break;
            case 'u': {
                uint32_t cp = hex4(i + 1);
                i += 4;
                if (cp >= 0xd800 && cp < 0xdc00 && s.compare(i + 1, 2, "\\u") == 0) {  // surrogate pair
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (hex4(i + 3) - 0xdc00);
                    i += 6;
                }
                append_utf8(out, cp);
                break;
            }
            default: out += e;  // \" \\ \/
        }
    }
    if (i >= s.size()) throw std::runtime_error("unterminated JSON string");
    ++i;
    return out;
}

inline void skip_space(const std::string &s, size_t &i) {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n')) ++i;
}

}  // namespace detail

inline Record parse_record(const std::string &line) {
    Record r;
    size_t i = 0;
    detail::skip_space(line, i);
    if (i >= line.size() || line[i] != '{') throw std::runtime_error("a JSON record must be an object");
    ++i;
    for (;;) {
        detail::skip_space(line, i);
        if (i < line.size() && line[i] == '}') break;
        if (i >= line.size() || line[i] != '"') throw std::runtime_error("bad JSON key");
        const std::string key = detail::parse_string(line, i);
        detail::skip_space(line, i);
        if (i >= line.size() || line[i] != ':') throw std::runtime_error("bad JSON record");
        ++i;
        detail::skip_space(line, i);
        if (i < line.size() && line[i] == '"') {
            r[key] = detail::parse_string(line, i);
        } else {  // number, true, false, null: kept as text
            const size_t start = i;
            while (i < line.size() && line[i] != ',' && line[i] != '}') ++i;
            std::string value = line.substr(start, i - start);
            while (!value.empty() && value.back() == ' ') value.pop_back();
            r[key] = value;
        }
        detail::skip_space(line, i);
        if (i < line.size() && line[i] == ',') ++i;
    }
    return r;
}

inline std::vector<Record> read_jsonl(const std::string &path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::vector<Record> records;
    for (std::string line; std::getline(in, line);)
        if (line.find_first_not_of(" \t\r") != std::string::npos) records.push_back(parse_record(line));
    return records;
}

}  // namespace engine
