#include "cli.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "session.h"

namespace engine::cli {

namespace {

std::vector<std::string> split(const std::string &text) {
    std::vector<std::string> items;
    std::stringstream list(text);
    for (std::string item; std::getline(list, item, ',');) items.push_back(item);
    return items;
}

std::string method_names(bool allow_full) {
    std::string names;
    for (int i = 0; i < 7; ++i)
        if (allow_full || rkv_method(i) != RKV_METHOD_FULL) names += (names.empty() ? "" : " ") + std::string(kMethodNames[i]);
    return names;
}

}  // namespace

void fail(const char *program, const std::string &message) {
    std::fprintf(stderr, "%s: %s\n(%s --help lists the options)\n", program, message.c_str(), program);
    std::exit(2);
}

int32_t to_int(const char *program, const std::string &option, const std::string &text, int32_t min,
               int32_t max) {
    char *end = nullptr;
    errno = 0;
    const long value = std::strtol(text.c_str(), &end, 10);
    if (text.empty() || *end != '\0' || errno == ERANGE || value < min || value > max)
        fail(program, option + " takes an integer from " + std::to_string(min) + " to " + std::to_string(max) +
                          ", not '" + text + "'");
    return int32_t(value);
}

float to_float(const char *program, const std::string &option, const std::string &text, float min, float max) {
    char *end = nullptr;
    const float value = std::strtof(text.c_str(), &end);
    if (text.empty() || *end != '\0' || !std::isfinite(value) || value < min || value > max) {
        char range[64];
        std::snprintf(range, sizeof range, "%g to %g", double(min), double(max));
        fail(program, option + " takes a number from " + range + ", not '" + text + "'");
    }
    return value;
}

int32_t to_param_int(const char *program, const std::string &option, const std::string &text, rkv_param param) {
    double lower = 0, upper = 0;
    rkv_params_bounds(param, &lower, &upper);
    return to_int(program, option, text, int32_t(lower), int32_t(std::min(upper, 2147483647.0)));
}

float to_param_float(const char *program, const std::string &option, const std::string &text, rkv_param param) {
    double lower = 0, upper = 0;
    rkv_params_bounds(param, &lower, &upper);
    return to_float(program, option, text, float(lower), float(upper));
}

std::vector<int32_t> to_int_list(const char *program, const std::string &option, const std::string &text,
                                 int32_t min, int32_t max) {
    std::vector<int32_t> values;
    for (const std::string &item : split(text)) values.push_back(to_int(program, option, item, min, max));
    if (values.empty()) fail(program, option + " takes a comma list of integers, not '" + text + "'");
    return values;
}

std::vector<rkv_method> to_methods(const char *program, const std::string &option, const std::string &text,
                                   bool allow_full) {
    std::vector<rkv_method> methods;
    for (const std::string &name : split(text)) {
        rkv_method method;
        if (!parse_method(name, &method) || (!allow_full && method == RKV_METHOD_FULL))
            fail(program, "unknown method '" + name + "' for " + option + " (valid: " + method_names(allow_full) +
                              ")");
        methods.push_back(method);
    }
    if (methods.empty()) fail(program, option + " takes a comma list of methods: " + method_names(allow_full));
    return methods;
}

}  // namespace engine::cli
