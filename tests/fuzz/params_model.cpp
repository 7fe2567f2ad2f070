#include "params_model.h"

#include <cstdio>
#include <cstdlib>

namespace fuzz {

namespace {

template <typename Visit>
void visit(rkv_cache_params &p, int key, Visit &&visit_field) {
    switch (key) {
        case RKV_PARAM_MAX_SEQS: visit_field(p.max_seqs); return;
        case RKV_PARAM_NUM_LAYERS: visit_field(p.num_layers); return;
        case RKV_PARAM_NUM_KV_HEADS: visit_field(p.num_kv_heads); return;
        case RKV_PARAM_NUM_Q_HEADS: visit_field(p.num_q_heads); return;
        case RKV_PARAM_HEAD_DIM: visit_field(p.head_dim); return;
        case RKV_PARAM_DTYPE: visit_field(p.dtype); return;
        case RKV_PARAM_DEVICE_TYPE: visit_field(p.device_type); return;
        case RKV_PARAM_DEVICE_ID: visit_field(p.device_id); return;
        case RKV_PARAM_METHOD: visit_field(p.method); return;
        case RKV_PARAM_MODE: visit_field(p.mode); return;
        case RKV_PARAM_BUDGET: visit_field(p.budget); return;
        case RKV_PARAM_BUFFER: visit_field(p.buffer); return;
        case RKV_PARAM_WINDOW: visit_field(p.window); return;
        case RKV_PARAM_KERNEL: visit_field(p.kernel); return;
        case RKV_PARAM_LAMBDA: visit_field(p.lambda); return;
        case RKV_PARAM_THRESHOLD: visit_field(p.threshold); return;
        case RKV_PARAM_POOLING: visit_field(p.pooling); return;
        case RKV_PARAM_SINK: visit_field(p.sink); return;
        case RKV_PARAM_GUARDS: visit_field(p.guards); return;
        case RKV_PARAM_MAX_PROMPT_LEN: visit_field(p.max_prompt_len); return;
        case RKV_PARAM_MAX_LEN: visit_field(p.max_len); return;
        case RKV_PARAM_SEED: visit_field(p.seed); return;
        case RKV_PARAM_AUTO_COMPRESS: visit_field(p.auto_compress); return;
        case RKV_PARAM_MAX_ROLLBACK: visit_field(p.max_rollback); return;
        default: break;
    }
    std::fprintf(stderr, "fuzz: no parameter key %d\n", key);
    std::abort();
}

template <typename T>
void assign(T &field, double value) {
    field = static_cast<T>(static_cast<int64_t>(value));
}
void assign(float &field, double value) { field = static_cast<float>(value); }
void assign(uint64_t &field, double value) { field = static_cast<uint64_t>(value); }

}  // namespace

double param_value(const rkv_cache_params &p, int key) {
    double value = 0;
    visit(const_cast<rkv_cache_params &>(p), key, [&](auto &field) { value = static_cast<double>(field); });
    return value;
}

void set_param_value(rkv_cache_params *p, int key, double value) {
    visit(*p, key, [&](auto &field) { assign(field, value); });
}

bool param_is_real(int key) { return key == RKV_PARAM_LAMBDA || key == RKV_PARAM_THRESHOLD; }

bool param_is_live(int key) {
    return key == RKV_PARAM_LAMBDA || key == RKV_PARAM_THRESHOLD || key == RKV_PARAM_KERNEL ||
           key == RKV_PARAM_POOLING || key == RKV_PARAM_SEED || key == RKV_PARAM_AUTO_COMPRESS;
}

const Bounds &param_bounds(int key) {
    static const struct Table {
        Bounds bounds[kNumParams];
        Table() {
            for (int key = 0; key < kNumParams; ++key) {
                if (rkv_params_bounds(rkv_param(key), &bounds[key].lower, &bounds[key].upper) != RKV_OK) {
                    std::fprintf(stderr, "fuzz: rkv_params_bounds(%d) failed: %s\n", key, rkv_error_message());
                    std::abort();
                }
            }
        }
    } table;
    return table.bounds[key];
}

}  // namespace fuzz
