#include "answers.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdlib>

namespace engine {

namespace {

// The first number in s at or after `from` (digits with optional sign,
// thousands commas and a decimal part), normalised; "" if there is none.
// *end (if given) receives the index just past it.
std::string first_number(const std::string &s, size_t from = 0, size_t *end = nullptr) {
    for (size_t i = from; i < s.size(); ++i) {
        if (!std::isdigit(static_cast<unsigned char>(s[i]))) continue;
        const bool negative = i > 0 && s[i - 1] == '-';
        std::string digits;
        size_t j = i;
        while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) ||
                                (s[j] == ',' && j + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[j + 1]))) ||
                                (s[j] == '.' && j + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[j + 1]))))) {
            if (s[j] != ',') digits += s[j];
            ++j;
        }
        if (digits.find('.') != std::string::npos) {  // drop trailing zeros of a decimal part
            while (digits.back() == '0') digits.pop_back();
            if (digits.back() == '.') digits.pop_back();
        }
        if (end) *end = j;
        return (negative ? "-" : "") + digits;
    }
    return "";
}

}  // namespace

std::string extract_answer(const std::string &text) {
    const size_t hashes = text.rfind("####");
    if (hashes != std::string::npos) return first_number(text.substr(hashes + 4));
    const size_t boxed = text.rfind("\\boxed{");
    if (boxed == std::string::npos) return "";
    // the braces' content, nested braces included
    size_t i = boxed + 7, depth = 1;
    std::string content;
    for (; i < text.size() && depth > 0; ++i) {
        if (text[i] == '{') ++depth;
        if (text[i] == '}' && --depth == 0) break;
        content += text[i];
    }
    const std::string number = first_number(content);
    return number.empty() ? content : number;
}

std::string last_number(const std::string &text) {
    for (size_t end = text.size(); end > 0; --end) {
        if (!std::isdigit(static_cast<unsigned char>(text[end - 1]))) continue;
        size_t start = end;
        while (start > 0 && (std::isdigit(static_cast<unsigned char>(text[start - 1])) || text[start - 1] == ',' ||
                             text[start - 1] == '.'))
            --start;
        if (start > 0 && text[start - 1] == '-') --start;
        return first_number(text.substr(start, end - start));
    }
    return "";
}

std::vector<std::string> all_numbers(const std::string &text) {
    std::vector<std::string> numbers;
    size_t at = 0;
    for (std::string n = first_number(text, at, &at); !n.empty(); n = first_number(text, at, &at)) numbers.push_back(n);
    return numbers;
}

bool same_answer(const std::string &a, const std::string &b) {
    if (a.empty() || b.empty()) return false;
    char *end_a = nullptr, *end_b = nullptr;
    const double x = std::strtod(a.c_str(), &end_a), y = std::strtod(b.c_str(), &end_b);
    if (*end_a == '\0' && *end_b == '\0') return std::fabs(x - y) < 1e-6 * std::max(1.0, std::fabs(y));
    return a == b;
}

}  // namespace engine
