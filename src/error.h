// Errors inside librkv: C++ code throws rkv::Error; the C entry points (api.cpp)
// catch it, store the message in a thread-local string and return the status.
// No exception ever crosses the C boundary.
#pragma once

#include <exception>
#include <string>

#include "rkv/rkv.h"

namespace rkv {

class Error : public std::exception {
 public:
    Error(rkv_status status, std::string message)
        : status_(status), message_(std::move(message)) {}
    rkv_status status() const noexcept { return status_; }
    const char *what() const noexcept override { return message_.c_str(); }

 private:
    rkv_status status_;
    std::string message_;
};

// printf-style message, thrown as rkv::Error.
[[noreturn]] void fail(rkv_status status, const char *format, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

// Throws RKV_ERR_INVALID_ARGUMENT naming the parameter when pointer is NULL.
inline void require_non_null(const void *pointer, const char *function, const char *name) {
    if (pointer == nullptr) fail(RKV_ERR_INVALID_ARGUMENT, "%s: `%s` is NULL", function, name);
}

void set_last_error(const char *message);

}  // namespace rkv
