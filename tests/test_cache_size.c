/* rkv_cache_size is what rkv_cache_create allocates (issue 11, finding 5: the
 * host bookkeeping of each (sequence, layer) was left out, and the heap grew
 * 2.1x the reported size at 65,536 sequences x 64 layers). For CPU caches of a
 * few shapes, including one of a million (sequence, layer) pairs, the heap
 * growth glibc reports (mallinfo2: arena bytes in use plus mmapped bytes) over
 * rkv_cache_create must be the reported size, up to the allocator's own cost:
 * a header per allocation and whole pages for mmapped ones, at most
 * kSlackBytes for the ~40 allocations of a cache. glibc's thread cache keeps
 * freed chunks "in use" and its mmap threshold moves with earlier frees, so
 * the test runs with the thread cache off (it re-executes itself with
 * GLIBC_TUNABLES) and a fixed mmap threshold. Skipped under AddressSanitizer,
 * whose allocator glibc cannot see. */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test_util.h"

#if defined(__SANITIZE_ADDRESS__)
#define RKV_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RKV_TEST_ASAN 1
#endif
#endif

enum { kSlackBytes = 64 * 4096 };

static uint64_t heap_in_use(void) {
    const struct mallinfo2 info = mallinfo2();
    return (uint64_t)info.uordblks + (uint64_t)info.hblkhd;
}

static void check_shape(int32_t seqs, int32_t layers, int32_t kv_heads, int32_t head_dim, rkv_method method,
                        int32_t budget, int32_t buffer) {
    rkv_cache_params p = test_params(seqs, layers, kv_heads, 4 * kv_heads, head_dim, method, budget, buffer, 2);
    p.max_len = budget + buffer;
    uint64_t reported = 0;
    ASSERT_OK(rkv_cache_size(&p, &reported));
    const uint64_t before = heap_in_use();
    rkv_cache *cache = NULL;
    ASSERT_OK(rkv_cache_create(&p, &cache));
    const uint64_t grown = heap_in_use() - before;
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    ASSERT_OK(rkv_cache_stats(cache, RKV_ALL, &stats));
    rkv_cache_destroy(cache);
    printf("%7d seqs x %3d layers, %d KV heads x %3d: reported %12llu, heap grew %12llu (%+.4f%%)\n", seqs,
           layers, kv_heads, head_dim, (unsigned long long)reported, (unsigned long long)grown,
           100.0 * ((double)grown - (double)reported) / (double)reported);
    assert_true(stats.bytes_allocated == reported);
    if (grown < reported || grown > reported + kSlackBytes)
        fail_msg("rkv_cache_size says %llu bytes, create allocated %llu", (unsigned long long)reported,
                 (unsigned long long)grown);
}

static void test_size_is_the_allocation(void **state) {
    (void)state;
#if defined(RKV_TEST_ASAN)
    skip();
#endif
    /* The first create sets up what a process allocates once (error message
     * buffers, OpenBLAS): not part of any cache. */
    check_shape(1, 1, 1, 8, RKV_METHOD_RKV, 8, 4);
    check_shape(3, 5, 2, 32, RKV_METHOD_FULL, 48, 16);
    check_shape(4, 2, 2, 64, RKV_METHOD_RKV, 64, 16);
    check_shape(8, 32, 8, 128, RKV_METHOD_H2O, 128, 32);
    check_shape(3, 5, 2, 32, RKV_METHOD_FULL, 48, 16);
    /* Bookkeeping-heavy: a million (sequence, layer) pairs of tiny heads. */
    check_shape(16384, 64, 1, 4, RKV_METHOD_SNAPKV, 4, 1);
}

int main(int argc, char **argv) {
    (void)argc;
    static const char tunable[] = "glibc.malloc.tcache_count=0";
    const char *tunables = getenv("GLIBC_TUNABLES");
    if (!tunables || !strstr(tunables, tunable)) {
        setenv("GLIBC_TUNABLES", tunable, 1);
        execv("/proc/self/exe", argv);
        perror("test_cache_size: re-executing with GLIBC_TUNABLES");
        return 1;
    }
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);  /* fixed: no longer raised by frees */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_size_is_the_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
