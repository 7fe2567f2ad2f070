// Command-line values of the engine's programs, checked: an integer is an
// integer within its range, a method is one librkv knows. A bad value ends the
// program with status 2 and a message that names what is valid, so a typo
// never runs silently with a default.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "rkv/rkv.h"

namespace engine::cli {

// Prints "PROGRAM: MESSAGE" and "(PROGRAM --help lists the options)" on
// stderr, then exits with status 2.
[[noreturn]] void fail(const char *program, const std::string &message);

// The value of `option` as an integer in [min, max].
int32_t to_int(const char *program, const std::string &option, const std::string &text, int32_t min,
               int32_t max);
// The value of `option` for librkv parameter `param`, within the bounds
// rkv_params_bounds gives for it (integer or real).
int32_t to_param_int(const char *program, const std::string &option, const std::string &text, rkv_param param);
float to_param_float(const char *program, const std::string &option, const std::string &text, rkv_param param);
// The value of `option` as a finite number in [min, max].
float to_float(const char *program, const std::string &option, const std::string &text, float min, float max);
// A comma list of integers, each in [min, max]; at least one.
std::vector<int32_t> to_int_list(const char *program, const std::string &option, const std::string &text,
                                 int32_t min, int32_t max);
// A comma list of method names (full only where allow_full); at least one.
std::vector<rkv_method> to_methods(const char *program, const std::string &option, const std::string &text,
                                   bool allow_full);

}  // namespace engine::cli
