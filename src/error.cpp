#include "error.h"

#include <cstdarg>
#include <cstdio>

namespace rkv {

namespace {
thread_local std::string last_error_message;
}

void fail(rkv_status status, const char *format, ...) {
    char buffer[1024];
    va_list args;
    va_start(args, format);
    std::vsnprintf(buffer, sizeof buffer, format, args);
    va_end(args);
    throw Error(status, buffer);
}

void set_last_error(const char *message) {
    try {
        last_error_message = message;
    } catch (...) {
        // Out of memory while storing the message: keep the old one rather than throw.
    }
}

}  // namespace rkv

extern "C" const char *rkv_error_message(void) {
    return rkv::last_error_message.c_str();
}

extern "C" const char *rkv_status_name(rkv_status status) {
    switch (status) {
        case RKV_OK: return "RKV_OK";
        case RKV_ERR_INVALID_ARGUMENT: return "RKV_ERR_INVALID_ARGUMENT";
        case RKV_ERR_OUT_OF_RANGE: return "RKV_ERR_OUT_OF_RANGE";
        case RKV_ERR_UNSUPPORTED: return "RKV_ERR_UNSUPPORTED";
        case RKV_ERR_SHAPE_MISMATCH: return "RKV_ERR_SHAPE_MISMATCH";
        case RKV_ERR_STRUCT_SIZE: return "RKV_ERR_STRUCT_SIZE";
        case RKV_ERR_CAPACITY: return "RKV_ERR_CAPACITY";
        case RKV_ERR_MISSING_QUERIES: return "RKV_ERR_MISSING_QUERIES";
        case RKV_ERR_BAD_STATE: return "RKV_ERR_BAD_STATE";
        case RKV_ERR_OVERFLOW: return "RKV_ERR_OVERFLOW";
        case RKV_ERR_OUT_OF_MEMORY: return "RKV_ERR_OUT_OF_MEMORY";
        case RKV_ERR_DEVICE: return "RKV_ERR_DEVICE";
        case RKV_ERR_FAULTED: return "RKV_ERR_FAULTED";
        case RKV_ERR_INTERNAL: return "RKV_ERR_INTERNAL";
    }
    return "RKV_UNKNOWN_STATUS";
}
