// Cache parameters: defaults, per-parameter bounds, cross-parameter validation,
// and the memory layout derived from them. Pure: nothing here asks a device or
// a backend (those checks and the scratch sizes live behind the backend
// factory, backend.h; Cache::plan puts the parts together for both the size
// query and create, so the two always agree).
#pragma once

#include <cstdint>

#include "rkv/rkv.h"

namespace rkv {

// Fills every field with its default; shape fields are 0 (must be set).
void params_fill_default(rkv_cache_params *params);

// Throws rkv::Error unless params are consistent on their own (bounds and the
// rules that link parameters). Whether this build and machine can create the
// cache is the backend factory's to say (backend_check_device).
void params_validate(const rkv_cache_params &params, const char *function);

void param_bounds(rkv_param param, double *lower, double *upper, const char *function);
// True for the parameters rkv_cache_set may change on a live cache.
bool param_is_live(rkv_param param, const char *function);
void param_set(rkv_cache_params *params, rkv_param param, double value, const char *function);
double param_get(const rkv_cache_params &params, rkv_param param, const char *function);

// Throws RKV_ERR_UNSUPPORTED if a GPU of compute capability major.minor cannot
// hold this storage dtype (FP8 needs 8.9: its conversion instructions).
void check_storage_on_device(rkv_dtype dtype, int major, int minor, int device_id, const char *function);

// Slots per (sequence, layer, head).
int32_t params_capacity(const rkv_cache_params &params);
// Queries the history keeps per (sequence, layer, query head) so that a
// rollback restores the observation window and H2O's deferred queries:
// window + max_rollback for a method that keeps queries and max_rollback > 0,
// else 0 (no history).
int32_t query_history(const rkv_cache_params &params);

// The live parameters a backend reads (rkv_cache_set may change them):
// the cache hands their current values to every call that appends or scores,
// so a change takes effect at the next call and a backend never holds them.
struct LiveParams {
    float lambda;
    float threshold;
    int32_t kernel;
    rkv_pooling pooling;
    uint64_t seed;
};
LiveParams live_params(const rkv_cache_params &params);

// Element counts of every buffer a cache holds, and the bytes of the rest.
// Byte totals are computed with overflow checks by memory_plan_bytes.
struct MemoryPlan {
    int32_t capacity = 0;      // slots per (sequence, layer, head)
    uint64_t kv_elements = 0;  // K (and again V): layers * seqs * kv_heads * capacity * head_dim
    uint64_t slot_entries = 0; // positions / scorer state: layers * seqs * kv_heads * capacity
    uint64_t scale_entries = 0;   // FP8 storage: K (and again V) scales, = slot_entries; else 0
    uint64_t query_elements = 0;  // layers * seqs * q_heads * window * head_dim (query_dtype)
    int32_t history = 0;          // query_history(params)
    uint64_t history_elements = 0;  // layers * seqs * q_heads * history * head_dim (query_dtype)
    uint64_t length_entries = 0;  // layers * seqs
    uint64_t scratch_bytes = 0;   // the backend's scratch and its own objects (backend_scratch_bytes)
    uint64_t host_bytes = 0;      // the cache's host bookkeeping (Cache::host_bytes)
};

// The layout of the buffers every backend holds (scratch_bytes and host_bytes
// stay 0). Throws RKV_ERR_OVERFLOW when a product does not fit in 64 bits.
MemoryPlan memory_layout(const rkv_cache_params &params, const char *function);
uint64_t memory_plan_bytes(const MemoryPlan &plan, const rkv_cache_params &params,
                           const char *function);

uint64_t checked_mul(uint64_t a, uint64_t b, const char *function);
uint64_t checked_add(uint64_t a, uint64_t b, const char *function);

}  // namespace rkv
