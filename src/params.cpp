#include "params.h"

#include <cmath>
#include <limits>

#include "abi.h"
#include "core/method.h"
#include "dtype.h"
#include "error.h"

namespace rkv {

namespace {

enum class Kind { Integer, Real, Enum };

struct ParamInfo {
    const char *name;
    double lower;
    double upper;
    Kind kind;
    bool live = false;  // rkv_cache_set may change it (LiveParams, or the schedule's auto_compress)
};

// Indexed by rkv_param. Bounds of each parameter on its own; rules that link
// parameters (window < budget, ...) live in params_validate.
constexpr ParamInfo kParams[] = {
    {"max_seqs", 1, 1 << 20, Kind::Integer},
    {"num_layers", 1, 1024, Kind::Integer},
    {"num_kv_heads", 1, 1024, Kind::Integer},
    {"num_q_heads", 1, 8192, Kind::Integer},
    {"head_dim", 1, 1024, Kind::Integer},
    {"dtype", RKV_DTYPE_F32, RKV_DTYPE_FP8_E4M3, Kind::Enum},
    {"device_type", RKV_DEVICE_CPU, RKV_DEVICE_CUDA, Kind::Enum},
    {"device_id", 0, 1023, Kind::Integer},
    {"method", 0, kNumMethods - 1, Kind::Enum},
    {"mode", RKV_MODE_POSITION, RKV_MODE_REFERENCE, Kind::Enum},
    {"budget", 2, 1 << 24, Kind::Integer},
    {"buffer", 1, 1 << 24, Kind::Integer},
    {"window", 1, 1024, Kind::Integer},
    {"kernel", 1, 255, Kind::Integer, true},
    {"lambda", 0.0, 1.0, Kind::Real, true},
    {"threshold", -1.0, 1.0, Kind::Real, true},
    {"pooling", RKV_POOLING_MAX, RKV_POOLING_MEAN, Kind::Enum, true},
    {"sink", 0, 1 << 16, Kind::Integer},
    {"guards", 0, RKV_GUARD_SINK | RKV_GUARD_PROMPT, Kind::Enum},  // flags: every value in range is valid
    {"max_prompt_len", 0, 1 << 24, Kind::Integer},
    {"max_len", 1, 1 << 26, Kind::Integer},
    {"seed", 0, 9007199254740992.0 /* 2^53: exact in a double */, Kind::Integer, true},
    {"auto_compress", 0, 1, Kind::Integer, true},
    {"max_rollback", 0, 1024, Kind::Integer},
};
constexpr int kNumParams = int(sizeof kParams / sizeof kParams[0]);

const ParamInfo &param_info(rkv_param param, const char *function) {
    if (int(param) < 0 || int(param) >= kNumParams)
        fail(RKV_ERR_UNSUPPORTED, "%s: unknown parameter key %d (valid: 0 .. %d)", function,
             int(param), kNumParams - 1);
    return kParams[param];
}

void check_value(const ParamInfo &info, double value, const char *function) {
    const bool outside = std::isnan(value) || value < info.lower || value > info.upper;
    if (info.kind == Kind::Enum && (outside || value != std::floor(value)))
        fail(RKV_ERR_UNSUPPORTED, "%s: %s = %g is not a known value (valid: %g .. %g)", function,
             info.name, value, info.lower, info.upper);
    if (outside)
        fail(RKV_ERR_OUT_OF_RANGE, "%s: %s = %g is outside [%g, %g]", function, info.name, value,
             info.lower, info.upper);
    if (info.kind != Kind::Real && value != std::floor(value))
        fail(RKV_ERR_OUT_OF_RANGE, "%s: %s must be an integer, got %g", function, info.name, value);
}

// Every field as a double, in rkv_param order (one place maps keys to fields).
template <typename Params, typename Visit>
void visit_field(Params &p, rkv_param param, Visit &&visit) {
    switch (param) {
        case RKV_PARAM_MAX_SEQS: visit(p.max_seqs); return;
        case RKV_PARAM_NUM_LAYERS: visit(p.num_layers); return;
        case RKV_PARAM_NUM_KV_HEADS: visit(p.num_kv_heads); return;
        case RKV_PARAM_NUM_Q_HEADS: visit(p.num_q_heads); return;
        case RKV_PARAM_HEAD_DIM: visit(p.head_dim); return;
        case RKV_PARAM_DTYPE: visit(p.dtype); return;
        case RKV_PARAM_DEVICE_TYPE: visit(p.device_type); return;
        case RKV_PARAM_DEVICE_ID: visit(p.device_id); return;
        case RKV_PARAM_METHOD: visit(p.method); return;
        case RKV_PARAM_MODE: visit(p.mode); return;
        case RKV_PARAM_BUDGET: visit(p.budget); return;
        case RKV_PARAM_BUFFER: visit(p.buffer); return;
        case RKV_PARAM_WINDOW: visit(p.window); return;
        case RKV_PARAM_KERNEL: visit(p.kernel); return;
        case RKV_PARAM_LAMBDA: visit(p.lambda); return;
        case RKV_PARAM_THRESHOLD: visit(p.threshold); return;
        case RKV_PARAM_POOLING: visit(p.pooling); return;
        case RKV_PARAM_SINK: visit(p.sink); return;
        case RKV_PARAM_GUARDS: visit(p.guards); return;
        case RKV_PARAM_MAX_PROMPT_LEN: visit(p.max_prompt_len); return;
        case RKV_PARAM_MAX_LEN: visit(p.max_len); return;
        case RKV_PARAM_SEED: visit(p.seed); return;
        case RKV_PARAM_AUTO_COMPRESS: visit(p.auto_compress); return;
        case RKV_PARAM_MAX_ROLLBACK: visit(p.max_rollback); return;
    }
}

template <typename T>
void assign_from_double(T &field, double value) {
    field = static_cast<T>(static_cast<int64_t>(value));
}
void assign_from_double(float &field, double value) { field = static_cast<float>(value); }
template <typename T>
double as_double(const T &field) {
    return static_cast<double>(field);
}

}  // namespace

void params_fill_default(rkv_cache_params *p) {
    *p = rkv_cache_params{};
    p->struct_size = sizeof(rkv_cache_params);
    p->dtype = RKV_DTYPE_F32;
    p->device_type = RKV_DEVICE_CPU;
    p->method = RKV_METHOD_RKV;
    p->mode = RKV_MODE_POSITION;
    p->budget = 1024;
    p->buffer = 128;
    p->window = 8;
    p->kernel = 7;
    p->lambda = 0.1f;
    p->threshold = 0.5f;
    p->pooling = RKV_POOLING_MAX;
    p->sink = 4;
    p->guards = 0;
    p->max_prompt_len = 0;
    p->max_len = 4096;
    p->seed = 0;
    p->auto_compress = 1;
    p->max_rollback = 0;
    p->reserved = 0;
}

void param_bounds(rkv_param param, double *lower, double *upper, const char *function) {
    const ParamInfo &info = param_info(param, function);
    *lower = info.lower;
    *upper = info.upper;
}

bool param_is_live(rkv_param param, const char *function) { return param_info(param, function).live; }

LiveParams live_params(const rkv_cache_params &p) {
    return LiveParams{p.lambda, p.threshold, p.kernel, p.pooling, p.seed};
}

void param_set(rkv_cache_params *params, rkv_param param, double value, const char *function) {
    const ParamInfo &info = param_info(param, function);
    check_value(info, value, function);
    if (param == RKV_PARAM_KERNEL && int(value) % 2 == 0)
        fail(RKV_ERR_OUT_OF_RANGE, "%s: kernel must be odd (max-pooling is centred), got %g",
             function, value);
    visit_field(*params, param, [&](auto &field) { assign_from_double(field, value); });
}

double param_get(const rkv_cache_params &params, rkv_param param, const char *function) {
    param_info(param, function);
    double value = 0;
    visit_field(params, param, [&](const auto &field) { value = as_double(field); });
    return value;
}

void params_validate(const rkv_cache_params &p, const char *function) {
    check_struct_size(p.struct_size, sizeof(rkv_cache_params), function, "rkv_cache_params");
    static const rkv_param shape[] = {RKV_PARAM_MAX_SEQS, RKV_PARAM_NUM_LAYERS,
                                      RKV_PARAM_NUM_KV_HEADS, RKV_PARAM_NUM_Q_HEADS,
                                      RKV_PARAM_HEAD_DIM};
    for (rkv_param key : shape) {
        if (param_get(p, key, function) == 0)
            fail(RKV_ERR_INVALID_ARGUMENT, "%s: params.%s is 0: set the model's shape first",
                 function, kParams[key].name);
    }
    for (int key = 0; key < kNumParams; ++key)
        if (key != RKV_PARAM_SEED)  // any uint64 is a valid seed; the setter's bound is a double's
            check_value(kParams[key], param_get(p, rkv_param(key), function), function);
    if (p.reserved != 0)
        fail(RKV_ERR_INVALID_ARGUMENT, "%s: params.reserved is %u; leave it 0 (rkv_params_default does)",
             function, unsigned(p.reserved));
    if (std::isnan(p.lambda) || std::isnan(p.threshold))
        fail(RKV_ERR_OUT_OF_RANGE, "%s: lambda and threshold must be numbers", function);
    if (p.num_q_heads % p.num_kv_heads != 0)
        fail(RKV_ERR_INVALID_ARGUMENT,
             "%s: num_q_heads (%d) must be a multiple of num_kv_heads (%d)", function,
             p.num_q_heads, p.num_kv_heads);
    if (p.kernel % 2 == 0)
        fail(RKV_ERR_OUT_OF_RANGE, "%s: kernel must be odd (max-pooling is centred), got %d",
             function, p.kernel);
    if (method_info(p.method).evicts()) {
        if (p.budget <= p.window)
            fail(RKV_ERR_INVALID_ARGUMENT,
                 "%s: budget (%d) must be larger than window (%d): the window is always kept "
                 "and the budget must leave room for scored tokens",
                 function, p.budget, p.window);
        if (keeps_sink(p) && p.sink + p.window > p.budget)
            fail(RKV_ERR_INVALID_ARGUMENT,
                 "%s: sink (%d) + window (%d) exceeds budget (%d): the budget must hold both",
                 function, p.sink, p.window, p.budget);
        if ((p.guards & RKV_GUARD_PROMPT) && p.max_prompt_len == 0)
            fail(RKV_ERR_INVALID_ARGUMENT,
                 "%s: RKV_GUARD_PROMPT needs max_prompt_len > 0 (the longest prompt to reserve)",
                 function);
    }
}

void check_storage_on_device(rkv_dtype dtype, int major, int minor, int device_id, const char *function) {
    if (is_fp8(dtype) && major * 10 + minor < 89)
        fail(RKV_ERR_UNSUPPORTED,
             "%s: FP8_E4M3 storage needs a GPU with FP8 conversions (compute capability 8.9 or newer); "
             "CUDA device %d has %d.%d: use BF16 storage there", function, device_id, major, minor);
}

int32_t params_capacity(const rkv_cache_params &p) {
    if (!method_info(p.method).evicts()) return p.max_len;
    int64_t capacity = int64_t(p.budget) + p.buffer;
    if (guards_prompt(p)) capacity += p.max_prompt_len;
    return int32_t(capacity);  // <= 3 * 2^24 by the bounds
}

int32_t query_history(const rkv_cache_params &p) {
    return method_info(p.method).keeps_queries() && p.max_rollback > 0 ? p.window + p.max_rollback : 0;
}

uint64_t checked_mul(uint64_t a, uint64_t b, const char *function) {
    if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a)
        fail(RKV_ERR_OVERFLOW, "%s: the cache size overflows 64 bits; use fewer sequences or a "
                               "smaller budget", function);
    return a * b;
}

uint64_t checked_add(uint64_t a, uint64_t b, const char *function) {
    if (b > std::numeric_limits<uint64_t>::max() - a)
        fail(RKV_ERR_OVERFLOW, "%s: the cache size overflows 64 bits", function);
    return a + b;
}

MemoryPlan memory_layout(const rkv_cache_params &p, const char *function) {
    MemoryPlan plan;
    plan.capacity = params_capacity(p);
    const uint64_t seq_layers = checked_mul(uint64_t(p.num_layers), uint64_t(p.max_seqs), function);
    plan.length_entries = seq_layers;
    plan.slot_entries = checked_mul(checked_mul(seq_layers, uint64_t(p.num_kv_heads), function),
                                    uint64_t(plan.capacity), function);
    plan.kv_elements = checked_mul(plan.slot_entries, uint64_t(p.head_dim), function);
    plan.scale_entries = is_fp8(p.dtype) ? plan.slot_entries : 0;
    const uint64_t query_rows = checked_mul(checked_mul(seq_layers, uint64_t(p.num_q_heads), function),
                                            uint64_t(p.head_dim), function);
    plan.query_elements = checked_mul(query_rows, uint64_t(p.window), function);
    plan.history = query_history(p);
    plan.history_elements = checked_mul(query_rows, uint64_t(plan.history), function);
    return plan;
}

uint64_t memory_plan_bytes(const MemoryPlan &plan, const rkv_cache_params &p,
                           const char *function) {
    const uint64_t elem = dtype_size(p.dtype);
    uint64_t total = checked_mul(checked_mul(plan.kv_elements, 2, function), elem, function);
    total = checked_add(total, checked_mul(plan.scale_entries, 8, function), function);  // K and V scales
    total = checked_add(total, checked_mul(plan.slot_entries, 8, function), function);  // positions + state
    const uint64_t query_size = dtype_size(query_dtype(p.dtype));  // FP8 storage keeps queries in bf16
    total = checked_add(total, checked_mul(plan.query_elements, query_size, function), function);
    total = checked_add(total, checked_mul(plan.history_elements, query_size, function), function);
    total = checked_add(total, checked_mul(plan.length_entries, 4, function), function);
    total = checked_add(total, plan.host_bytes, function);
    return checked_add(total, plan.scratch_bytes, function);
}

}  // namespace rkv
