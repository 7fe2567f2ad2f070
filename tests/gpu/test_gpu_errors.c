/* Errors of the CUDA backend are statuses with messages:
 *   - host memory (or NULL-adjacent garbage) where device memory is needed:
 *     INVALID_ARGUMENT, nothing changed;
 *   - out of device memory at create: OUT_OF_MEMORY naming the buffer and sizes;
 *   - shapes the kernels do not serve, a device that does not exist: statuses
 *     at create (and from the size query);
 *   - FULL on CUDA stops at max_len with CAPACITY;
 *   - the bytes a CUDA cache reports are the bytes rkv_cache_size predicted
 *     (every storage dtype, FP8 with its scales);
 *   - FP8 storage: an FP8 input tensor is rejected at append and attend, every
 *     method creates (this GPU has FP8; a GPU without it is refused at create,
 *     tests/test_fp8.cpp);
 *   - attention plans the kernels do not serve: statuses, nothing changed. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"

static rkv_cache_params cuda_params(rkv_method method) {
    rkv_cache_params p = test_params(2, 2, 2, 4, 64, method, 16, 8, 4);
    p.device_type = RKV_DEVICE_CUDA;
    p.dtype = RKV_DTYPE_BF16;
    return p;
}

static void assert_length(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t expected) {
    int32_t held = -1;
    ASSERT_OK(rkv_seq_length(cache, seq, layer, NULL, &held));
    assert_int_equal(held, expected);
}

static void test_host_memory_is_rejected(void **state) {
    (void)state;
    rkv_cache_params p = cuda_params(RKV_METHOD_RKV);
    rkv_cache *cache = test_create(&p);
    float host[8 * 64] = {0};
    int32_t seq = 0, tokens = 1;
    /* from host memory: rejected before anything runs */
    ASSERT_STATUS(gpu_test_append(cache, 0, 1, &seq, &tokens, host, host, host, RKV_DTYPE_F32, 0), RKV_OK);
    assert_length(cache, 0, 0, 1);
    rkv_append_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.num_seqs = 1;
    a.seq_ids = &seq;
    const rkv_tensor t = {host, RKV_DTYPE_F32, 2, 64, 0, 128, 64, 0};
    a.k = t;
    a.v = t;
    ASSERT_STATUS(rkv_append(cache, &a, NULL), RKV_ERR_INVALID_ARGUMENT);
    assert_non_null(strstr(rkv_error_message(), "host memory"));
    assert_length(cache, 0, 0, 1);
    void *device = gpu_alloc(sizeof host);
    a.k.data = device;
    ASSERT_STATUS(rkv_append(cache, &a, NULL), RKV_ERR_INVALID_ARGUMENT); /* v still on the host */
    a.v.data = device;
    ASSERT_OK(rkv_append(cache, &a, NULL));
    assert_length(cache, 0, 0, 2);
    /* attend: q or out on the host */
    const rkv_tensor q_host = {host, RKV_DTYPE_F32, 4, 64, 256, 0, 64, 0};
    rkv_tensor q_device = q_host;
    q_device.data = device;
    ASSERT_STATUS(test_attend(cache, 0, 1, &seq, &q_host, &q_device, 0.0f, NULL), RKV_ERR_INVALID_ARGUMENT);
    ASSERT_STATUS(test_attend(cache, 0, 1, &seq, &q_device, &q_host, 0.0f, NULL), RKV_ERR_INVALID_ARGUMENT);
    void *out = gpu_alloc(4 * 64 * 4);
    q_device.data = out;
    rkv_tensor q_in = q_host;
    q_in.data = device;
    ASSERT_OK(test_attend(cache, 0, 1, &seq, &q_in, &q_device, 0.0f, NULL));
    gpu_sync();
    gpu_free(out);
    gpu_free(device);
    rkv_cache_destroy(cache);
}

static void test_out_of_device_memory(void **state) {
    (void)state;
    rkv_cache_params p = cuda_params(RKV_METHOD_RKV);
    p.max_seqs = 1 << 20;
    p.num_layers = 64;
    p.num_kv_heads = 8;
    p.num_q_heads = 32;
    p.head_dim = 128;
    p.budget = 4096;
    uint64_t bytes = 0;
    ASSERT_OK(rkv_cache_size(&p, &bytes)); /* petabytes: computable, not allocatable */
    assert_true(bytes > (1ull << 50));
    rkv_cache *cache = (rkv_cache *)&p; /* sentinel: must stay untouched */
    ASSERT_STATUS(rkv_cache_create(&p, &cache), RKV_ERR_OUT_OF_MEMORY);
    assert_ptr_equal(cache, (rkv_cache *)&p);
    const char *message = rkv_error_message();
    assert_non_null(strstr(message, "cudaMalloc"));
    assert_non_null(strstr(message, "GiB"));
    print_message("out of memory says: %s\n", message);
    /* the device is still usable afterwards */
    rkv_cache_params small = cuda_params(RKV_METHOD_RKV);
    rkv_cache *fine = test_create(&small);
    rkv_cache_destroy(fine);
}

static void test_unsupported_shapes_and_devices(void **state) {
    (void)state;
    uint64_t bytes = 0;
    rkv_cache *cache = NULL;
    rkv_cache_params p = cuda_params(RKV_METHOD_RKV);
    p.head_dim = 512;
    ASSERT_STATUS(rkv_cache_size(&p, &bytes), RKV_ERR_UNSUPPORTED);
    ASSERT_STATUS(rkv_cache_create(&p, &cache), RKV_ERR_UNSUPPORTED);
    p = cuda_params(RKV_METHOD_RKV);
    p.budget = 20000;
    ASSERT_STATUS(rkv_cache_create(&p, &cache), RKV_ERR_UNSUPPORTED);
    p.method = RKV_METHOD_FULL; /* FULL never selects: any capacity */
    p.max_len = 20000;
    ASSERT_OK(rkv_cache_size(&p, &bytes));
    p = cuda_params(RKV_METHOD_RKV);
    p.device_id = gpu_device_count();
    ASSERT_STATUS(rkv_cache_create(&p, &cache), RKV_ERR_OUT_OF_RANGE);
    assert_null(cache);
}

static void test_full_stops_at_max_len(void **state) {
    (void)state;
    rkv_cache_params p = cuda_params(RKV_METHOD_FULL);
    p.max_len = 40;
    p.dtype = RKV_DTYPE_F32;
    rkv_cache *cache = test_create(&p);
    int32_t seq = 1, tokens = 40;
    float *x = calloc((size_t)40 * 4 * 64, 4);
    for (int32_t layer = 0; layer < 2; ++layer)
        ASSERT_OK(gpu_test_append(cache, layer, 1, &seq, &tokens, x, x, x, RKV_DTYPE_F32, 0));
    tokens = 1;
    ASSERT_STATUS(gpu_test_append(cache, 0, 1, &seq, &tokens, x, x, x, RKV_DTYPE_F32, 0), RKV_ERR_CAPACITY);
    assert_length(cache, 1, 0, 40);
    assert_length(cache, 1, 1, 40);
    int32_t due = 1;
    ASSERT_OK(rkv_compress_due(cache, RKV_ALL, RKV_ALL, &due));
    assert_int_equal(due, 0);
    free(x);
    rkv_cache_destroy(cache);
}

static void test_bytes_allocated_match_the_size_query(void **state) {
    (void)state;
    for (int dtype = RKV_DTYPE_F32; dtype <= RKV_DTYPE_FP8_E4M3; ++dtype)
    for (int m = RKV_METHOD_RKV; m <= RKV_METHOD_FULL; ++m)
        for (int mode = 0; mode < 2; ++mode) {
            rkv_cache_params p = cuda_params((rkv_method)m);
            p.mode = (rkv_mode)mode;
            p.dtype = (rkv_dtype)dtype;
            uint64_t predicted = 0;
            ASSERT_OK(rkv_cache_size(&p, &predicted));
            size_t free_before = 0, free_after = 0, total = 0;
            assert_int_equal(cudaMemGetInfo(&free_before, &total), cudaSuccess);
            rkv_cache *cache = test_create(&p);
            assert_int_equal(cudaMemGetInfo(&free_after, &total), cudaSuccess);
            rkv_stats stats;
            memset(&stats, 0, sizeof stats);
            stats.struct_size = sizeof stats;
            ASSERT_OK(rkv_cache_stats(cache, RKV_ALL, &stats));
            assert_int_equal(stats.bytes_allocated, predicted);
            /* device memory taken at create is at most the prediction plus the
             * allocator's rounding and the cuBLASLt handle (a few MiB) */
            assert_true(free_before - free_after <= predicted + (64u << 20));
            rkv_cache_destroy(cache);
        }
}

/* FP8 caches: inputs must be F32, F16 or BF16; the views expose the scales. */
static void test_fp8_inputs_and_views(void **state) {
    (void)state;
    rkv_cache_params p = cuda_params(RKV_METHOD_RKV);
    p.dtype = RKV_DTYPE_FP8_E4M3;
    rkv_cache *cache = test_create(&p);
    int32_t seq = 0, tokens = 3;
    float x[3 * 4 * 64];
    for (size_t i = 0; i < sizeof x / sizeof x[0]; ++i) x[i] = (float)(i % 13) - 6.0f;
    ASSERT_OK(gpu_test_append(cache, 0, 1, &seq, &tokens, x, x, x, RKV_DTYPE_BF16, 0));
    void *bytes = gpu_alloc(sizeof x);
    rkv_append_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.num_seqs = 1;
    a.seq_ids = &seq;
    const rkv_tensor t8 = {bytes, RKV_DTYPE_FP8_E4M3, 2, 64, 2 * 64, 0, 64, 0};
    a.k = t8;
    a.v = t8;
    a.v.dtype = RKV_DTYPE_BF16;
    ASSERT_STATUS(rkv_append(cache, &a, NULL), RKV_ERR_UNSUPPORTED);
    assert_non_null(strstr(rkv_error_message(), "storage dtype only"));
    assert_length(cache, 0, 0, 3);
    const rkv_tensor q8 = {bytes, RKV_DTYPE_FP8_E4M3, 4, 64, 4 * 64, 0, 64, 0};
    rkv_tensor out = q8;
    out.dtype = RKV_DTYPE_BF16;
    ASSERT_STATUS(test_attend(cache, 0, 1, &seq, &q8, &out, 0.0f, NULL), RKV_ERR_UNSUPPORTED);
    rkv_seq_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    ASSERT_OK(rkv_view(cache, 0, 0, &view));
    assert_int_equal(view.dtype, RKV_DTYPE_FP8_E4M3);
    assert_non_null(view.k_scale);
    assert_non_null(view.v_scale);
    float scales[3];
    gpu_download(scales, view.k_scale, sizeof scales);
    for (int i = 0; i < 3; ++i) assert_true(scales[i] == 1.0f / 64.0f); /* max |x| 6: 6 <= 448 / 64 */
    gpu_free(bytes);
    rkv_cache_destroy(cache);
    for (int m = RKV_METHOD_RKV; m <= RKV_METHOD_FULL; ++m) {
        p = cuda_params((rkv_method)m);
        p.dtype = RKV_DTYPE_FP8_E4M3;
        cache = test_create(&p);
        rkv_cache_destroy(cache);
    }
}

/* rkv_cache_set_attend_plan: values out of range, and plans the kernels do
 * not serve (the narrow shape above 4 query heads per KV head or for head_dim
 * 32; the tensor-core kernel for float32 storage or head_dim 32; splits for
 * head_dim 32); the plan in force stays. */
static void test_attend_plan_errors(void **state) {
    (void)state;
    rkv_cache_params p = cuda_params(RKV_METHOD_FULL);
    rkv_cache *cache = test_create(&p);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, -1, RKV_ATTEND_AUTO), RKV_ERR_INVALID_ARGUMENT);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, 1025, RKV_ATTEND_AUTO), RKV_ERR_INVALID_ARGUMENT);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, 0, (rkv_attend_variant)4), RKV_ERR_INVALID_ARGUMENT);
    ASSERT_OK(rkv_cache_set_attend_plan(cache, 1024, RKV_ATTEND_NARROW));
    ASSERT_OK(rkv_cache_set_attend_plan(cache, 7, RKV_ATTEND_TENSOR));
    ASSERT_OK(rkv_cache_set_attend_plan(cache, 0, RKV_ATTEND_AUTO));
    rkv_cache_destroy(cache);
    p.num_q_heads = 2 * 8; /* 8 query heads per KV head */
    cache = test_create(&p);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, 0, RKV_ATTEND_NARROW), RKV_ERR_UNSUPPORTED);
    ASSERT_OK(rkv_cache_set_attend_plan(cache, 5, RKV_ATTEND_WIDE));
    ASSERT_OK(rkv_cache_set_attend_plan(cache, 5, RKV_ATTEND_TENSOR));
    rkv_cache_destroy(cache);
    p = cuda_params(RKV_METHOD_FULL);
    p.dtype = RKV_DTYPE_F32;
    cache = test_create(&p);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, 0, RKV_ATTEND_TENSOR), RKV_ERR_UNSUPPORTED);
    ASSERT_OK(rkv_cache_set_attend_plan(cache, 3, RKV_ATTEND_NARROW));
    rkv_cache_destroy(cache);
    p = cuda_params(RKV_METHOD_FULL);
    p.head_dim = 32;
    cache = test_create(&p);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, 2, RKV_ATTEND_AUTO), RKV_ERR_UNSUPPORTED);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, 0, RKV_ATTEND_NARROW), RKV_ERR_UNSUPPORTED);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, 1, RKV_ATTEND_TENSOR), RKV_ERR_UNSUPPORTED);
    ASSERT_OK(rkv_cache_set_attend_plan(cache, 1, RKV_ATTEND_AUTO));
    rkv_cache_destroy(cache);
    p.device_type = RKV_DEVICE_CPU;
    cache = test_create(&p);
    ASSERT_STATUS(rkv_cache_set_attend_plan(cache, 2, RKV_ATTEND_AUTO), RKV_ERR_UNSUPPORTED);
    ASSERT_OK(rkv_cache_set_attend_plan(cache, 0, RKV_ATTEND_AUTO));
    rkv_cache_destroy(cache);
}

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_host_memory_is_rejected),
        cmocka_unit_test(test_out_of_device_memory),
        cmocka_unit_test(test_unsupported_shapes_and_devices),
        cmocka_unit_test(test_full_stops_at_max_len),
        cmocka_unit_test(test_bytes_allocated_match_the_size_query),
        cmocka_unit_test(test_fp8_inputs_and_views),
        cmocka_unit_test(test_attend_plan_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
