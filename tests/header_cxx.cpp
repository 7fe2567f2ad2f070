// The public header compiles as C++11 (-std=c++11 -pedantic -Werror -Wall
// -Wextra), without the experimental API, with it through
// rkv/rkv_experimental.h and through 0.1's RKV_EXPERIMENTAL_API, its declarations have C
// linkage, and a program built from it against librkv.so agrees with the
// library: same version, same struct sizes.
//
// Every function is assigned to a pointer of its exact documented type (with C
// language linkage implied by the header's extern "C"), so a changed signature
// fails the build; the experimental API must be invisible unless requested.
#include "rkv/rkv.h"
#if defined(RKV_TEST_INCLUDE_EXPERIMENTAL)
#include "rkv/rkv_experimental.h" /* the opt-in of 0.2 */
#endif
#if defined(RKV_EXPERIMENTAL_API) || defined(RKV_TEST_INCLUDE_EXPERIMENTAL)
#define RKV_TEST_EXPERIMENTAL 1
#endif

#include <cstddef>
#include <cstdio>
#include <cstring>
#include <type_traits>

#ifndef RKV_TEST_EXPERIMENTAL
// These collide with the experimental declarations if the header leaks them.
typedef double rkv_score_kind;
static int rkv_seq_scores = 0;
enum { RKV_SCORE_FINAL = 1000 };
#endif

namespace {

int failures = 0;

#define CHECK(condition)                                                                       \
    do {                                                                                       \
        if (!(condition)) {                                                                    \
            std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #condition); \
            ++failures;                                                                        \
        }                                                                                      \
    } while (0)

// Enumerations keep their pinned values and struct_size comes first.
static_assert(RKV_OK == 0 && RKV_ERR_OVERFLOW == 9 && RKV_ERR_OUT_OF_MEMORY == 20 &&
                  RKV_ERR_FAULTED == 31 && RKV_ERR_INTERNAL == 99,
              "status values are pinned");
static_assert(RKV_PARAM_AUTO_COMPRESS == 22 && RKV_PARAM_MAX_ROLLBACK == 23, "parameter keys are pinned");
static_assert(offsetof(rkv_cache_params, struct_size) == 0, "struct_size comes first");
static_assert(offsetof(rkv_append_args, struct_size) == 0, "struct_size comes first");
static_assert(offsetof(rkv_seq_view, struct_size) == 0, "struct_size comes first");
static_assert(offsetof(rkv_layer_view, struct_size) == 0, "struct_size comes first");
static_assert(offsetof(rkv_stats, struct_size) == 0, "struct_size comes first");
static_assert(offsetof(rkv_attend_args, struct_size) == 0, "struct_size comes first");
static_assert(sizeof(rkv_cache_params) % 8 == 0 && sizeof(rkv_attend_args) % 8 == 0, "additions padded to 8");
static_assert(std::is_standard_layout<rkv_cache_params>::value, "C layout");
static_assert(std::is_trivial<rkv_append_args>::value, "C struct");

void check_signatures() {
    unsigned (*version_number)(void) = rkv_version_number;
    const char *(*version_string)(void) = rkv_version_string;
    const char *(*status_name)(rkv_status) = rkv_status_name;
    const char *(*error_message)(void) = rkv_error_message;
    rkv_status (*params_default)(rkv_cache_params *, size_t) = rkv_params_default;
    rkv_status (*params_bounds)(rkv_param, double *, double *) = rkv_params_bounds;
    rkv_status (*params_set)(rkv_cache_params *, rkv_param, double) = rkv_params_set;
    rkv_status (*params_get)(const rkv_cache_params *, rkv_param, double *) = rkv_params_get;
    rkv_status (*cache_size)(const rkv_cache_params *, uint64_t *) = rkv_cache_size;
    rkv_status (*cache_create)(const rkv_cache_params *, rkv_cache **) = rkv_cache_create;
    void (*cache_destroy)(rkv_cache *) = rkv_cache_destroy;
    rkv_status (*get_params)(const rkv_cache *, rkv_cache_params *) = rkv_cache_get_params;
    rkv_status (*cache_set)(rkv_cache *, rkv_param, double) = rkv_cache_set;
    rkv_status (*cache_get)(const rkv_cache *, rkv_param, double *) = rkv_cache_get;
    rkv_status (*seq_reset)(rkv_cache *, int32_t, void *) = rkv_seq_reset;
    rkv_status (*seq_truncate)(rkv_cache *, int32_t, int32_t, void *) = rkv_seq_truncate;
    rkv_status (*seq_rollback_limit)(const rkv_cache *, int32_t, int32_t *) = rkv_seq_rollback_limit;
    rkv_status (*seq_copy)(rkv_cache *, int32_t, int32_t, void *) = rkv_seq_copy;
    rkv_status (*seq_set_budget)(rkv_cache *, int32_t, int32_t) = rkv_seq_set_budget;
    rkv_status (*seq_get_budget)(const rkv_cache *, int32_t, int32_t *) = rkv_seq_get_budget;
    rkv_status (*seq_length)(const rkv_cache *, int32_t, int32_t, int64_t *, int32_t *) =
        rkv_seq_length;
    rkv_status (*seq_positions)(const rkv_cache *, int32_t, int32_t, int32_t, int32_t *, int32_t,
                                int32_t *) = rkv_seq_positions;
    rkv_status (*batch_create)(rkv_cache *, int32_t, rkv_batch **) = rkv_batch_create;
    void (*batch_destroy)(rkv_batch *) = rkv_batch_destroy;
    rkv_status (*batch_set)(rkv_batch *, const int32_t *, int32_t, void *) = rkv_batch_set;
    rkv_status (*batch_advance)(rkv_batch *, int32_t) = rkv_batch_advance;
    rkv_status (*append)(rkv_cache *, const rkv_append_args *, void *) = rkv_append;
    rkv_status (*compress)(rkv_cache *, int32_t, int32_t, void *) = rkv_compress;
    rkv_status (*compress_due)(const rkv_cache *, int32_t, int32_t, int32_t *) = rkv_compress_due;
    rkv_status (*view)(const rkv_cache *, int32_t, int32_t, rkv_seq_view *) = rkv_view;
    rkv_status (*view_layer)(const rkv_cache *, int32_t, rkv_layer_view *) = rkv_view_layer;
    rkv_status (*cache_stats)(const rkv_cache *, int32_t, rkv_stats *) = rkv_cache_stats;
    rkv_status (*attend)(rkv_cache *, const rkv_attend_args *, void *) = rkv_attend;
    CHECK(version_number && version_string && status_name && error_message);
    CHECK(params_default && params_bounds && params_set && params_get && cache_size);
    CHECK(cache_create && cache_destroy && get_params && cache_set && cache_get && seq_reset);
    CHECK(seq_truncate && seq_rollback_limit && seq_copy && seq_set_budget && seq_get_budget);
    CHECK(seq_length && seq_positions && batch_create && batch_destroy && batch_set && batch_advance);
    CHECK(append && compress && compress_due && view && view_layer && cache_stats && attend);
#ifdef RKV_TEST_EXPERIMENTAL
    rkv_status (*seq_scores)(const rkv_cache *, int32_t, int32_t, int32_t, rkv_score_kind,
                             float *, int32_t, int32_t *) = rkv_seq_scores;
    rkv_status (*sync_lengths)(rkv_cache *, void *) = rkv_cache_sync_lengths;
    rkv_status (*set_matmul_path)(rkv_cache *, rkv_matmul_path) = rkv_cache_set_matmul_path;
    CHECK(seq_scores && sync_lengths && set_matmul_path);
    CHECK(RKV_SCORE_IMPORTANCE == 0 && RKV_SCORE_REDUNDANCY == 1 && RKV_SCORE_FINAL == 2);
    CHECK(RKV_MATMUL_AUTO == 0 && RKV_MATMUL_CUBLASLT == 1 && RKV_MATMUL_FUSED == 2 && RKV_MATMUL_WGMMA == 3 &&
              RKV_MATMUL_WGMMA_INT8 == 4);
#else
    CHECK(rkv_seq_scores == 0 && RKV_SCORE_FINAL == 1000 &&
          sizeof(rkv_score_kind) == sizeof(double));
#endif
}

// The library accepts this compilation's struct sizes.
void check_struct_sizes() {
    rkv_cache_params params;
    CHECK(rkv_params_default(&params, sizeof params) == RKV_OK);
    params.max_seqs = 1;
    params.num_layers = 1;
    params.num_kv_heads = 1;
    params.num_q_heads = 1;
    params.head_dim = 4;
    params.budget = 8;
    params.buffer = 4;
    params.window = 2;
    params.kernel = 3;
    rkv_cache *cache = nullptr;
    if (rkv_cache_create(&params, &cache) != RKV_OK) {
        std::fprintf(stderr, "rkv_cache_create: %s\n", rkv_error_message());
        ++failures;
        return;
    }
    rkv_seq_view view = rkv_seq_view();
    view.struct_size = sizeof view;
    CHECK(rkv_view(cache, 0, 0, &view) == RKV_OK);
    rkv_layer_view layer_view = rkv_layer_view();
    layer_view.struct_size = sizeof layer_view;
    CHECK(rkv_view_layer(cache, 0, &layer_view) == RKV_OK);
    rkv_stats stats = rkv_stats();
    stats.struct_size = sizeof stats;
    CHECK(rkv_cache_stats(cache, RKV_ALL, &stats) == RKV_OK);
    float data[4] = {1.0f, 2.0f, 3.0f, 4.0f}, out[4] = {0, 0, 0, 0};
    int32_t seq = 0;
    rkv_append_args args = rkv_append_args();
    args.struct_size = sizeof args;
    args.num_seqs = 1;
    args.seq_ids = &seq;
    args.k.data = data;
    args.k.dtype = RKV_DTYPE_F32;
    args.k.num_heads = 1;
    args.k.head_dim = 4;
    args.v = args.k;
    CHECK(rkv_append(cache, &args, nullptr) == RKV_OK);
    rkv_batch *batch = nullptr;
    CHECK(rkv_batch_create(cache, 2, &batch) == RKV_OK);
    CHECK(rkv_batch_set(batch, &seq, 1, nullptr) == RKV_OK);
    CHECK(rkv_batch_advance(batch, 0) == RKV_OK);
    rkv_attend_args attend = rkv_attend_args();
    attend.struct_size = sizeof attend;
    attend.num_seqs = 1;
    attend.seq_ids = &seq;
    attend.q = args.k;
    attend.out = args.v;
    attend.out.data = out;
    CHECK(rkv_attend(cache, &attend, nullptr) == RKV_OK);
    rkv_batch_destroy(batch);
    rkv_cache_destroy(cache);
}

}  // namespace

int main() {
    // Header/library skew: the loaded library must be the header's version.
    if (rkv_version_number() != RKV_VERSION_NUMBER) {
        std::fprintf(stderr, "librkv is version %u (%s) but the header is %d\n",
                     rkv_version_number(), rkv_version_string(), RKV_VERSION_NUMBER);
        return 1;
    }
    char version[32];
    std::snprintf(version, sizeof version, "%d.%d.%d", RKV_VERSION_MAJOR, RKV_VERSION_MINOR,
                  RKV_VERSION_PATCH);
    CHECK(std::strcmp(rkv_version_string(), version) == 0);
    CHECK(std::strcmp(rkv_status_name(RKV_ERR_CAPACITY), "RKV_ERR_CAPACITY") == 0);
    check_signatures();
    check_struct_sizes();
    return failures == 0 ? 0 : 1;
}
