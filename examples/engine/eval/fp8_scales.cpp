#include "fp8_scales.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "model.h"
#include "session.h"

namespace engine {

namespace {

// E4M3 from its definition: the 127 positive finite values, ascending.
struct E4m3 {
    float value[127];
    E4m3() {
        for (int c = 0; c < 127; ++c) {
            const int e = c >> 3, m = c & 7;
            value[c] = e == 0 ? std::ldexp(float(m), -9) : std::ldexp(float(8 + m), e - 10);
        }
    }
    // Nearest value to x (ties to the even code), saturating at 448.
    float round(float x) const {
        const float a = std::fabs(x);
        const float *upper = std::upper_bound(value, value + 127, a);  // first value > a
        int c = int(upper - value) - 1;                                 // last value <= a
        if (c < 126) {
            const float below = a - value[c], above = value[c + 1] - a;
            if (above < below || (above == below && (c & 1))) ++c;
        }
        return std::copysign(value[c], x);
    }
};

// One way of choosing scales: rows of `block` tokens share a scale (1: per
// token and head); the scale is amax / 448, or the smallest power of two that
// holds amax (what librkv stores).
struct Scheme {
    const char *name;
    int32_t block;
    bool power_of_two;
};

const Scheme kSchemes[] = {
    {"per (token, head), power of two (librkv)", 1, true},
    {"per (token, head), amax / 448", 1, false},
    {"per (head, 16 tokens), power of two", 16, true},
    {"per (head, 16 tokens), amax / 448", 16, false},
    {"per (head, 64 tokens), power of two", 64, true},
    {"per (head, 64 tokens), amax / 448", 64, false},
    {"per (head, 256 tokens), amax / 448", 256, false},
};
constexpr int kNumSchemes = int(sizeof kSchemes / sizeof kSchemes[0]);

struct Error {
    double squared = 0, norm = 0;
    int64_t zeros = 0, nonzero = 0;  // nonzero inputs stored as 0
};

// Quantise rows [held, d] of one head (row stride `stride`) under a scheme.
void quantise(const E4m3 &fp8, const float *rows, int32_t held, int32_t d, int64_t stride, const Scheme &scheme,
              Error *error) {
    for (int32_t t0 = 0; t0 < held; t0 += scheme.block) {
        const int32_t t1 = std::min(held, t0 + scheme.block);
        float amax = 0.0f;
        for (int32_t t = t0; t < t1; ++t)
            for (int32_t e = 0; e < d; ++e) amax = std::fmax(amax, std::fabs(rows[t * stride + e]));
        float scale = amax > 0.0f ? amax / 448.0f : 1.0f;
        if (scheme.power_of_two && amax > 0.0f) scale = std::ldexp(1.0f, int(std::ceil(std::log2(double(amax) / 448.0))));
        for (int32_t t = t0; t < t1; ++t)
            for (int32_t e = 0; e < d; ++e) {
                const float x = rows[t * stride + e], q = fp8.round(x / scale) * scale;
                error->squared += double(q - x) * double(q - x);
                error->norm += double(x) * double(x);
                error->nonzero += x != 0.0f;
                error->zeros += x != 0.0f && q == 0.0f;
            }
    }
}

}  // namespace

void fp8_scale_study(Model &model, const std::vector<std::vector<int32_t>> &traces, std::ostream &md) {
    const E4m3 fp8;
    Error k_error[kNumSchemes], v_error[kNumSchemes];
    int64_t rows = 0;
    for (size_t i = 0; i < traces.size(); ++i) {
        const std::vector<int32_t> &tokens = traces[i];
        CacheOptions options;
        options.method = RKV_METHOD_FULL;
        options.max_len = int32_t(tokens.size());
        rkv_cache *cache = create_cache(model, options);
        model.prefill(cache, 0, tokens.data(), int32_t(tokens.size()), nullptr, false, false);
        std::fprintf(stderr, "fp8 scales: trace %zu/%zu, %zu tokens\n", i + 1, traces.size(), tokens.size());
        for (int32_t layer = 0; layer < model.config().n_layers; ++layer) {
            rkv_seq_view view;
            std::memset(&view, 0, sizeof view);
            view.struct_size = sizeof view;
            if (rkv_view(cache, 0, layer, &view) != RKV_OK) throw std::runtime_error(rkv_error_message());
            for (int32_t h = 0; h < view.num_kv_heads; ++h) {
                const float *k = static_cast<const float *>(view.k) + h * view.stride_head;
                const float *v = static_cast<const float *>(view.v) + h * view.stride_head;
                for (int s = 0; s < kNumSchemes; ++s) {
                    quantise(fp8, k, view.length, view.head_dim, view.stride_token, kSchemes[s], &k_error[s]);
                    quantise(fp8, v, view.length, view.head_dim, view.stride_token, kSchemes[s], &v_error[s]);
                }
                rows += view.length;
            }
        }
        rkv_cache_destroy(cache);
    }
    md << "## FP8 E4M3: how fine the scales are\n\n"
       << "The post-RoPE K and V SmolLM2-135M computes on " << traces.size() << " traces (" << rows
       << " rows of (token, KV head) per tensor, every layer), quantised to E4M3 under each choice of scales and "
          "dequantised: relative error ||x' - x|| / ||x||, and the share of nonzero values stored as 0.\n\n"
       << "| scales | K error | V error | K zeros | V zeros |\n| --- | ---: | ---: | ---: | ---: |\n";
    for (int s = 0; s < kNumSchemes; ++s) {
        char line[256];
        std::snprintf(line, sizeof line, "| %s | %.4f | %.4f | %.2e | %.2e |\n", kSchemes[s].name,
                      std::sqrt(k_error[s].squared / k_error[s].norm), std::sqrt(v_error[s].squared / v_error[s].norm),
                      double(k_error[s].zeros) / double(std::max<int64_t>(k_error[s].nonzero, 1)),
                      double(v_error[s].zeros) / double(std::max<int64_t>(v_error[s].nonzero, 1)));
        md << line;
    }
    md << "\n";
}

}  // namespace engine
