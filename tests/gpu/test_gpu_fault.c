/* A kernel fault surfaces at the next call as RKV_ERR_DEVICE naming the CUDA
 * error, and leaves the cache FAULTED (every later call says so); destroying
 * it is still safe. Its own program: a fault ends the process's CUDA context. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <string.h>

#include "gpu_util.h"

static void test_fault_surfaces_and_faults_the_cache(void **state) {
    (void)state;
    rkv_cache_params p = test_params(2, 1, 2, 4, 64, RKV_METHOD_RKV, 16, 8, 4);
    p.device_type = RKV_DEVICE_CUDA;
    rkv_cache *cache = test_create(&p);
    /* A valid device pointer whose strides lead far outside any allocation:
     * no check on the host can know, the append kernel faults. */
    void *device = gpu_alloc(4096);
    int32_t seqs[2] = {0, 1};
    rkv_append_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.num_seqs = 2;
    a.seq_ids = seqs;
    const rkv_tensor t = {device, RKV_DTYPE_F32, 2, 64, (int64_t)1 << 40, 0, 64, 0};
    a.k = t;
    a.v = t;
    ASSERT_OK(rkv_append(cache, &a, NULL)); /* enqueued; the fault comes later */
    const cudaError_t error = cudaDeviceSynchronize();
    assert_int_not_equal(error, cudaSuccess);
    print_message("the kernel faulted as planned: %s\n", cudaGetErrorName(error));
    ASSERT_STATUS(rkv_compress(cache, RKV_ALL, RKV_ALL, NULL), RKV_OK); /* nothing due: no device work */
    int32_t seq = 0;
    const rkv_tensor q = {device, RKV_DTYPE_F32, 4, 64, 256, 0, 64, 0};
    ASSERT_STATUS(test_attend(cache, 0, 1, &seq, &q, &q, 0.0f, NULL), RKV_ERR_DEVICE);
    assert_non_null(strstr(rkv_error_message(), "cuda"));
    print_message("rkv_attend after the fault: %s\n", rkv_error_message());
    ASSERT_STATUS(test_attend(cache, 0, 1, &seq, &q, &q, 0.0f, NULL), RKV_ERR_FAULTED);
    int32_t due = 0;
    ASSERT_STATUS(rkv_compress_due(cache, RKV_ALL, RKV_ALL, &due), RKV_ERR_FAULTED);
    rkv_cache_destroy(cache);
}

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fault_surfaces_and_faults_the_cache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
