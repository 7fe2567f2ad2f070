// Cache parameters: defaults, per-parameter bounds, cross-parameter validation,
// and the memory plan derived from them (used by both the size query and create,
// so the two always agree).
#pragma once

#include <cstdint>

#include "rkv/rkv.h"

namespace rkv {

// Fills every field with its default; shape fields are 0 (must be set).
void params_fill_default(rkv_cache_params *params);

// Throws rkv::Error unless params describes a cache this build can create.
void params_validate(const rkv_cache_params &params, const char *function);

// Throws RKV_ERR_STRUCT_SIZE unless struct_size is the size this library knows.
void check_struct_size(size_t struct_size, size_t expected, const char *function,
                       const char *struct_name);

void param_bounds(rkv_param param, double *lower, double *upper, const char *function);
void param_set(rkv_cache_params *params, rkv_param param, double value, const char *function);
double param_get(const rkv_cache_params &params, rkv_param param, const char *function);

// Slots per (sequence, layer, head).
int32_t params_capacity(const rkv_cache_params &params);

// Element counts of every buffer a cache holds. Byte totals are computed with
// overflow checks by memory_plan_bytes.
struct MemoryPlan {
    int32_t capacity = 0;      // slots per (sequence, layer, head)
    uint64_t kv_elements = 0;  // K (and again V): layers * seqs * kv_heads * capacity * head_dim
    uint64_t slot_entries = 0; // positions / scorer state: layers * seqs * kv_heads * capacity
    uint64_t query_elements = 0;  // layers * seqs * q_heads * window * head_dim
    uint64_t length_entries = 0;  // layers * seqs
    uint64_t scratch_bytes = 0;   // backend scratch, set by the backend's planner
};

// Throws RKV_ERR_OVERFLOW when a product does not fit in 64 bits.
MemoryPlan memory_plan(const rkv_cache_params &params, const char *function);
uint64_t memory_plan_bytes(const MemoryPlan &plan, const rkv_cache_params &params,
                           const char *function);

uint64_t checked_mul(uint64_t a, uint64_t b, const char *function);
uint64_t checked_add(uint64_t a, uint64_t b, const char *function);

}  // namespace rkv
