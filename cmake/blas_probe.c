/* Configure-time probe (cmake/RkvBlas.cmake): which library and kernel set
 * this BLAS picks on this machine, and whether those kernels use the vector
 * instructions this CPU has. Prints "fits|<what>" or "old|<what>". */
#include <cblas.h>
#include <stdio.h>
#include <string.h>
#ifdef RKV_BLAS_BLIS
#include <blis.h>
#endif

/* Widest x86 vector extension a kernel set is written for: 1 SSE, 2 AVX,
 * 3 AVX2/FMA, 4 AVX-512; 0 when the name is not known here (then it fits). */
static int kernel_level(const char *name) {
    static const char *const sse[] = {"katmai", "coppermine", "northwood", "prescott", "banias",
                                      "atom", "core2", "penryn", "dunnington", "nehalem", "athlon",
                                      "opteron", "opteron_sse3", "barcelona", "nano", "bobcat",
                                      "generic"};
    static const char *const avx[] = {"sandybridge", "bulldozer", "piledriver", "steamroller"};
    static const char *const avx2[] = {"haswell", "zen", "zen2", "zen3", "excavator"};
    char lower[32] = {0};
    for (size_t i = 0; name[i] && i + 1 < sizeof lower; ++i)
        lower[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
    for (size_t i = 0; i < sizeof sse / sizeof *sse; ++i)
        if (!strcmp(lower, sse[i])) return 1;
    for (size_t i = 0; i < sizeof avx / sizeof *avx; ++i)
        if (!strcmp(lower, avx[i])) return 2;
    for (size_t i = 0; i < sizeof avx2 / sizeof *avx2; ++i)
        if (!strcmp(lower, avx2[i])) return 3;
    return 0;
}

static int cpu_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 3;
    if (__builtin_cpu_supports("avx")) return 2;
    return 1;
#else
    return 0;
#endif
}

int main(void) {
    char what[160];
    const char *kernels;
#ifdef RKV_BLAS_BLIS
    kernels = bli_arch_string(bli_arch_query_id());
    snprintf(what, sizeof what, "BLIS %s, %s kernels, %d thread(s) unless BLIS_NUM_THREADS is set",
             bli_info_get_version_str(), kernels,
             bli_thread_get_num_threads() > 0 ? (int)bli_thread_get_num_threads() : 1);
#else
    char version[32] = "?";
    sscanf(openblas_get_config(), "OpenBLAS %31s", version);
    kernels = openblas_get_corename();
    snprintf(what, sizeof what, "OpenBLAS %s, %s kernels", version, kernels);
#endif
    const int have = cpu_level(), used = kernel_level(kernels);
    printf("%s|%s\n", used == 0 || have == 0 || used >= have ? "fits" : "old", what);
    return 0;
}
