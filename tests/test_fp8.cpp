// FP8 E4M3 (core/fp8.h), the oracle of the GPU's conversion:
//   - float_to_fp8_e4m3 on every one of the 2^32 float32 bit patterns, against
//     an independent reference: the nearest E4M3 value found by walking the
//     midpoints between consecutive E4M3 values (computed in double, where they
//     are exact), ties to the even code, saturation above 448, NaN -> 0x7f;
//   - fp8_e4m3_to_float on all 256 codes against the format's definition, and
//     every finite code converts back to itself;
//   - the power-of-two scale: the smallest 2^e with amax <= 448 * 2^e, and a
//     quantised row dequantises exactly to fp8 * scale within one E4M3 rounding;
//   - an FP8 cache: the bytes and scales of every appended row (from f32, f16
//     and bf16 inputs) against the tests' own E4M3 reference, the views (and
//     librkv 0.1's view size), rkv_cache_size and the statistics with the
//     scales counted, and the devices FP8 storage needs.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/fp8.h"
#include "error.h"
#include "params.h"

extern "C" {
#include "test_util.h"
}

namespace {

float from_bits(uint32_t bits) {
    float x;
    std::memcpy(&x, &bits, 4);
    return x;
}

// The value of a code from the definition: (-1)^s * 2^(E-7) * (1 + m/8), or
// 2^-6 * m/8 for E = 0; 0x7f/0xff NaN.
double definition(int code) {
    const int s = code >> 7, e = (code >> 3) & 15, m = code & 7;
    if (e == 15 && m == 7) return NAN;
    const double magnitude = e == 0 ? std::ldexp(m / 8.0, -6) : std::ldexp(1.0 + m / 8.0, e - 7);
    return s ? -magnitude : magnitude;
}

void test_decode_every_code(void **) {
    for (int code = 0; code < 256; ++code) {
        const double want = definition(code);
        const float got = rkv::fp8_e4m3_to_float(uint8_t(code));
        if (std::isnan(want)) {
            assert_true(std::isnan(got));
            assert_int_equal(rkv::float_to_fp8_e4m3(got), 0x7f);
            continue;
        }
        if (double(got) != want || std::signbit(got) != bool(code & 0x80))
            fail_msg("code 0x%02x decodes to %.9g, the definition says %.9g", code, double(got), want);
        assert_int_equal(rkv::float_to_fp8_e4m3(got), code);
    }
    assert_true(rkv::fp8_e4m3_to_float(0x7e) == rkv::kFp8Max);
}

// Every float32: 2^31 magnitudes in ascending order, each checked with both signs.
void test_encode_every_float32(void **) {
    double value[0x7f];  // positive finite codes 0 .. 0x7e, ascending in value
    for (int c = 0; c <= 0x7e; ++c) value[c] = definition(c);
    uint64_t checked = 0;
    int code = 0;
    for (uint64_t bits = 0; bits <= 0x7fffffffu; ++bits) {
        const float x = from_bits(uint32_t(bits));
        int want;
        if (std::isnan(x)) {
            want = 0x7f;
        } else {
            const double magnitude = x;  // the walk only moves up
            while (code < 0x7e && magnitude > (value[code] + value[code + 1]) / 2) ++code;
            want = code;
            if (code < 0x7e && magnitude == (value[code] + value[code + 1]) / 2 && (code & 1)) want = code + 1;
        }
        const int got = rkv::float_to_fp8_e4m3(x);
        const int got_negative = rkv::float_to_fp8_e4m3(from_bits(uint32_t(bits) | 0x80000000u));
        const int want_negative = want == 0x7f ? 0x7f : want | 0x80;
        if (got != want || got_negative != want_negative)
            fail_msg("float bits 0x%08x (%.9g): got 0x%02x / 0x%02x for +/-, want 0x%02x / 0x%02x",
                     unsigned(bits), double(x), got, got_negative, want, want_negative);
        checked += 2;
    }
    print_message("float_to_fp8_e4m3 agrees with the reference on all %llu float32 bit patterns\n",
                  (unsigned long long)checked);
}

void test_scale_is_the_smallest_power_of_two(void **) {
    const float cases[] = {0.0f, 1e-45f, 1e-40f, 1.1754944e-38f, 1e-30f, 0.001f, 0.5f, 1.0f, 1.75f, 1.7500001f,
                           255.0f, 256.0f, 447.99997f, 448.0f, 448.00003f, 896.0f, 1e6f, 3.4e38f, INFINITY};
    for (float amax : cases) {
        const int32_t e = rkv::fp8_scale_exponent(amax);
        assert_true(e >= -126 && e <= 126);
        if (amax == 0.0f) {
            assert_int_equal(e, 0);
            continue;
        }
        if (std::isinf(amax)) {
            assert_int_equal(e, 126);
            continue;
        }
        const double limit = std::ldexp(448.0, e);
        if (!(double(amax) <= limit)) fail_msg("amax %.9g > 448 * 2^%d", double(amax), e);
        if (e > -126 && !(double(amax) > limit / 2))
            fail_msg("amax %.9g: 2^%d is not the smallest scale", double(amax), e);
        assert_true(rkv::fp8_pow2(e) * rkv::fp8_pow2(-e) == 1.0f);
    }
    // Random rows: fp8 * scale within half an E4M3 step of x, nothing saturates.
    uint64_t rng = 99;
    float row[128];
    for (int trial = 0; trial < 2000; ++trial) {
        const float magnitude = std::ldexp(1.0f, int(test_rng_next(&rng) % 60) - 30);
        float amax = 0.0f;
        for (float &x : row) {
            x = test_rng_normal(&rng) * magnitude;
            amax = std::fmax(amax, std::fabs(x));
        }
        const int32_t e = rkv::fp8_scale_exponent(amax);
        const float scale = rkv::fp8_pow2(e), inverse = rkv::fp8_pow2(-e);
        for (float x : row) {
            const uint8_t q = rkv::float_to_fp8_e4m3(x * inverse);
            const double back = double(rkv::fp8_e4m3_to_float(q)) * scale;
            assert_true(std::fabs(double(x) * inverse) <= 448.0);
            // half a step: 2^-4 relative in the normal range, 2^-10 * scale below it
            const double bound = std::fmax(std::fabs(double(x)) / 16.0, std::ldexp(1.0, -10) * scale);
            if (std::fabs(back - double(x)) > bound)
                fail_msg("x %.9g quantised to %.9g (scale 2^%d)", double(x), back, e);
        }
    }
}

// --- FP8 caches through the C API -------------------------------------------

constexpr int32_t kHeads = 2, kQHeads = 4, kDim = 24, kBudget = 12, kBuffer = 6, kWindow = 2;

rkv_cache_params fp8_params(rkv_method method) {
    rkv_cache_params p = test_params(2, 2, kHeads, kQHeads, kDim, method, kBudget, kBuffer, kWindow);
    p.dtype = RKV_DTYPE_FP8_E4M3;
    return p;
}

// Each appended row is stored as fp8(x / s) with s the power-of-two scale,
// whatever the input dtype; the view exposes bytes and scales.
void test_cache_stores_quantised_rows(void **) {
    const rkv_dtype inputs[] = {RKV_DTYPE_F32, RKV_DTYPE_F16, RKV_DTYPE_BF16};
    for (rkv_dtype input : inputs) {
        rkv_cache_params p = fp8_params(RKV_METHOD_FULL);
        p.max_len = 64;
        rkv_cache *cache = test_create(&p);
        uint64_t rng = 5 + uint64_t(input);
        const int32_t tokens = 9;
        std::vector<float> k(size_t(tokens) * kHeads * kDim), v(k.size());
        for (size_t i = 0; i < k.size(); ++i) {  // rows of very different ranges, zeros, a huge value
            const float range = std::ldexp(1.0f, int(i / kDim) * 7 - 30);
            k[i] = round_through(input, test_rng_normal(&rng) * range);
            v[i] = round_through(input, i % 5 == 0 ? 0.0f : test_rng_normal(&rng));
        }
        k[3] = round_through(input, 60000.0f);
        std::vector<uint8_t> k_in(k.size() * 4), v_in(v.size() * 4);
        convert_from_f32(k.data(), k.size(), input, k_in.data());
        convert_from_f32(v.data(), v.size(), input, v_in.data());
        rkv_append_args a;
        std::memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.layer = 1;
        a.num_seqs = 1;
        const int32_t seq = 1;
        a.seq_ids = &seq;
        a.num_tokens = &tokens;
        a.k = rkv_tensor{k_in.data(), input, kHeads, kDim, 0, kHeads * kDim, kDim, int64_t(k_in.size())};
        a.v = rkv_tensor{v_in.data(), input, kHeads, kDim, 0, kHeads * kDim, kDim, int64_t(v_in.size())};
        ASSERT_OK(rkv_append(cache, &a, nullptr));
        rkv_seq_view view;
        std::memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        ASSERT_OK(rkv_view(cache, 1, 1, &view));
        assert_int_equal(view.dtype, RKV_DTYPE_FP8_E4M3);
        assert_int_equal(view.length, tokens);
        assert_non_null(view.k_scale);
        assert_non_null(view.v_scale);
        assert_int_equal(view.scale_stride_head, p.max_len);
        float want[kDim];
        for (int32_t t = 0; t < tokens; ++t)
            for (int32_t h = 0; h < kHeads; ++h)
                for (int which = 0; which < 2; ++which) {
                    const float *row = (which ? v.data() : k.data()) + (size_t(t) * kHeads + h) * kDim;
                    const uint8_t *bytes = static_cast<const uint8_t *>(which ? view.v : view.k) +
                                           h * view.stride_head + t * view.stride_token;
                    const float scale = (which ? view.v_scale : view.k_scale)[h * view.scale_stride_head + t];
                    assert_true(fp8_reference_row(row, kDim, want) == scale);
                    for (int32_t e = 0; e < kDim; ++e)
                        if (element_as_float(bytes, RKV_DTYPE_FP8_E4M3, size_t(e)) * scale != want[e])
                            fail_msg("input %d token %d head %d %s[%d]: %g * %g, want %g", int(input), t, h,
                                     which ? "v" : "k", e, double(element_as_float(bytes, RKV_DTYPE_FP8_E4M3, size_t(e))),
                                     double(scale), double(want[e]));
                }
        rkv_cache_destroy(cache);
    }
}

// Views: the scales at the layer view's strides, and librkv 0.1's struct size
// (no scale fields) still accepted, with nothing written past it.
void test_views(void **) {
    rkv_cache_params p = fp8_params(RKV_METHOD_RKV);
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 3;
    test_append_random(cache, 0, 20, &rng);  // compresses once (capacity 18)
    test_append_random(cache, 1, 5, &rng);
    rkv_layer_view layer;
    std::memset(&layer, 0, sizeof layer);
    layer.struct_size = sizeof layer;
    ASSERT_OK(rkv_view_layer(cache, 1, &layer));
    const int32_t capacity = kBudget + kBuffer;
    assert_int_equal(layer.scale_stride_head, capacity);
    assert_int_equal(layer.scale_stride_seq, int64_t(kHeads) * capacity);
    rkv_seq_view view;
    std::memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    ASSERT_OK(rkv_view(cache, 1, 1, &view));
    assert_ptr_equal(view.k_scale, layer.k_scale + layer.scale_stride_seq);
    assert_ptr_equal(view.v_scale, layer.v_scale + layer.scale_stride_seq);
    for (int32_t t = 0; t < view.length; ++t) {  // powers of two
        int exponent = 0;
        assert_true(std::frexp(view.k_scale[t], &exponent) == 0.5f);
    }

    unsigned char old_view[sizeof(rkv_seq_view) + 8];
    std::memset(old_view, 0xab, sizeof old_view);
    const size_t old_size = offsetof(rkv_seq_view, k_scale);
    std::memcpy(old_view, &old_size, sizeof old_size);
    ASSERT_OK(rkv_view(cache, 1, 1, reinterpret_cast<rkv_seq_view *>(old_view)));
    assert_memory_equal(old_view + sizeof(size_t), reinterpret_cast<unsigned char *>(&view) + sizeof(size_t),
                        old_size - sizeof(size_t));
    for (size_t i = old_size; i < sizeof old_view; ++i) assert_int_equal(old_view[i], 0xab);
    unsigned char old_layer[sizeof(rkv_layer_view) + 8];
    std::memset(old_layer, 0xab, sizeof old_layer);
    const size_t old_layer_size = offsetof(rkv_layer_view, k_scale);
    std::memcpy(old_layer, &old_layer_size, sizeof old_layer_size);
    ASSERT_OK(rkv_view_layer(cache, 1, reinterpret_cast<rkv_layer_view *>(old_layer)));
    assert_memory_equal(old_layer + sizeof(size_t), reinterpret_cast<unsigned char *>(&layer) + sizeof(size_t),
                        old_layer_size - sizeof(size_t));
    for (size_t i = old_layer_size; i < sizeof old_layer; ++i) assert_int_equal(old_layer[i], 0xab);
    rkv_cache_destroy(cache);

    // Other dtypes: no scales.
    p.dtype = RKV_DTYPE_BF16;
    cache = test_create(&p);
    ASSERT_OK(rkv_view_layer(cache, 0, &layer));
    assert_null(layer.k_scale);
    assert_null(layer.v_scale);
    rkv_cache_destroy(cache);
}

// rkv_cache_size: an FP8 cache holds K and V at one byte per element plus
// two float scales per (token, head), and its query window in bf16.
void test_size_and_statistics(void **) {
    for (int m = RKV_METHOD_RKV; m <= RKV_METHOD_FULL; ++m) {
        rkv_cache_params p = fp8_params(rkv_method(m));
        uint64_t fp8 = 0, bf16 = 0;
        ASSERT_OK(rkv_cache_size(&p, &fp8));
        p.dtype = RKV_DTYPE_BF16;
        ASSERT_OK(rkv_cache_size(&p, &bf16));
        const uint64_t capacity = m == RKV_METHOD_FULL ? uint64_t(p.max_len) : uint64_t(kBudget + kBuffer);
        const uint64_t rows = uint64_t(p.num_layers) * p.max_seqs * kHeads * capacity;
        // K/V: 2 bytes -> 1 byte + 4/kDim; the CPU scratch gather buffer
        // [capacity, head_dim] shrinks with the element size too
        const uint64_t saved = 2 * rows * kDim - 2 * rows * 4 + capacity * kDim;
        if (bf16 - fp8 != saved)
            fail_msg("method %d: bf16 %llu bytes, fp8 %llu: saved %llu, expected %llu", m,
                     (unsigned long long)bf16, (unsigned long long)fp8, (unsigned long long)(bf16 - fp8),
                     (unsigned long long)saved);
    }
    rkv_cache_params p = fp8_params(RKV_METHOD_RKV);
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 8;
    test_append_random(cache, 0, 7, &rng);
    rkv_stats stats;
    std::memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(cache, 0, &stats));
    const uint64_t token_bytes = uint64_t(kHeads) * (kDim + 4) * 2;  // K and V, bytes and scales
    assert_int_equal(stats.bytes_kv_held, uint64_t(p.num_layers) * 7 * token_bytes);
    assert_int_equal(stats.bytes_kv_capacity, uint64_t(p.num_layers) * (kBudget + kBuffer) * token_bytes);
    rkv_cache_destroy(cache);
}

// FP8 storage needs the conversion instructions of compute capability 8.9.
void test_devices_without_fp8(void **) {
    const int without[][2] = {{7, 0}, {8, 0}, {8, 6}, {8, 7}};
    for (const auto &cc : without) {
        try {
            rkv::check_storage_on_device(RKV_DTYPE_FP8_E4M3, cc[0], cc[1], 0, "rkv_cache_create");
            fail_msg("FP8 storage accepted on compute capability %d.%d", cc[0], cc[1]);
        } catch (const rkv::Error &e) {
            assert_int_equal(e.status(), RKV_ERR_UNSUPPORTED);
            assert_non_null(std::strstr(e.what(), "compute capability 8.9"));
        }
        rkv::check_storage_on_device(RKV_DTYPE_BF16, cc[0], cc[1], 0, "rkv_cache_create");
    }
    rkv::check_storage_on_device(RKV_DTYPE_FP8_E4M3, 8, 9, 0, "rkv_cache_create");
    rkv::check_storage_on_device(RKV_DTYPE_FP8_E4M3, 9, 0, 0, "rkv_cache_create");
    rkv::check_storage_on_device(RKV_DTYPE_FP8_E4M3, 10, 0, 0, "rkv_cache_create");
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_every_code),
        cmocka_unit_test(test_scale_is_the_smallest_power_of_two),
        cmocka_unit_test(test_cache_stores_quantised_rows),
        cmocka_unit_test(test_views),
        cmocka_unit_test(test_size_and_statistics),
        cmocka_unit_test(test_devices_without_fp8),
        cmocka_unit_test(test_encode_every_float32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
