// The parameter struct as the header describes it: each rkv_param key's field,
// read and written as a double, and the keys a live cache may change.
#pragma once

#include <cstdint>

#include "rkv/rkv.h"

namespace fuzz {

constexpr int kNumParams = 24;  // RKV_PARAM_MAX_SEQS .. RKV_PARAM_MAX_ROLLBACK

double param_value(const rkv_cache_params &p, int key);
// Stores value as the field's type (integers truncated, floats rounded to float).
void set_param_value(rkv_cache_params *p, int key, double value);
// Real-valued keys (lambda, threshold); all others take integers.
bool param_is_real(int key);
// Keys rkv_cache_set may change on a live cache.
bool param_is_live(int key);

// rkv_params_bounds of every key, read once (the header's declared source of
// each parameter's range).
struct Bounds {
    double lower, upper;
};
const Bounds &param_bounds(int key);

}  // namespace fuzz
