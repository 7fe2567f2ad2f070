// The C entry points: validate what needs no cache state, call into the cache,
// and turn every exception into a status plus a thread-local message.
#include <new>

#include "cache.h"
#include "dtype.h"
#include "error.h"
#include "params.h"
#include "rkv/rkv.h"

struct rkv_cache final : rkv::Cache {
    using rkv::Cache::Cache;
};

namespace {

#define RKV_STRINGIFY2(x) #x
#define RKV_STRINGIFY(x) RKV_STRINGIFY2(x)

// Runs body; maps every exception to a status. `faultable` is the cache a
// mutating call works on: if the failure happened midway through device or
// backend work, the cache can no longer promise "unchanged" and is marked faulted.
template <typename Body>
rkv_status guarded(rkv::Cache *faultable, Body &&body) noexcept {
    try {
        body();
        return RKV_OK;
    } catch (const rkv::Error &e) {
        if (faultable && (e.status() == RKV_ERR_DEVICE || e.status() == RKV_ERR_INTERNAL))
            faultable->mark_faulted(e.what());
        rkv::set_last_error(e.what());
        return e.status();
    } catch (const std::bad_alloc &) {
        rkv::set_last_error("out of host memory");
        return RKV_ERR_OUT_OF_MEMORY;
    } catch (const std::exception &e) {
        if (faultable) faultable->mark_faulted(e.what());
        rkv::set_last_error(e.what());
        return RKV_ERR_INTERNAL;
    } catch (...) {
        if (faultable) faultable->mark_faulted("unknown exception");
        rkv::set_last_error("unknown internal error");
        return RKV_ERR_INTERNAL;
    }
}

rkv::Cache &usable(rkv_cache *cache, const char *function) {
    rkv::require_non_null(cache, function, "cache");
    cache->check_usable(function);
    return *cache;
}

const rkv::Cache &usable(const rkv_cache *cache, const char *function) {
    rkv::require_non_null(cache, function, "cache");
    cache->check_usable(function);
    return *cache;
}

}  // namespace

extern "C" {

unsigned rkv_version_number(void) { return RKV_VERSION_NUMBER; }

const char *rkv_version_string(void) {
    return RKV_STRINGIFY(RKV_VERSION_MAJOR) "." RKV_STRINGIFY(RKV_VERSION_MINOR) "." RKV_STRINGIFY(
        RKV_VERSION_PATCH);
}

rkv_status rkv_cache_params_default(rkv_cache_params *params, size_t struct_size) {
    return guarded(nullptr, [&] {
        rkv::require_non_null(params, "rkv_cache_params_default", "params");
        rkv::check_struct_size(struct_size, sizeof(rkv_cache_params), "rkv_cache_params_default",
                               "rkv_cache_params");
        rkv::params_fill_default(params);
    });
}

rkv_status rkv_param_bounds(rkv_param param, double *lower, double *upper) {
    return guarded(nullptr, [&] {
        rkv::require_non_null(lower, "rkv_param_bounds", "lower");
        rkv::require_non_null(upper, "rkv_param_bounds", "upper");
        double lo, hi;
        rkv::param_bounds(param, &lo, &hi, "rkv_param_bounds");
        *lower = lo;
        *upper = hi;
    });
}

rkv_status rkv_params_set(rkv_cache_params *params, rkv_param param, double value) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_params_set";
        rkv::require_non_null(params, fn, "params");
        rkv::check_struct_size(params->struct_size, sizeof(rkv_cache_params), fn, "rkv_cache_params");
        rkv::param_set(params, param, value, fn);
    });
}

rkv_status rkv_params_get(const rkv_cache_params *params, rkv_param param, double *value) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_params_get";
        rkv::require_non_null(params, fn, "params");
        rkv::require_non_null(value, fn, "value");
        rkv::check_struct_size(params->struct_size, sizeof(rkv_cache_params), fn, "rkv_cache_params");
        *value = rkv::param_get(*params, param, fn);
    });
}

rkv_status rkv_cache_size(const rkv_cache_params *params, uint64_t *bytes) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_size";
        rkv::require_non_null(params, fn, "params");
        rkv::require_non_null(bytes, fn, "bytes");
        const rkv::MemoryPlan plan = rkv::Cache::plan(*params, fn);
        *bytes = rkv::memory_plan_bytes(plan, *params, fn);
    });
}

rkv_status rkv_cache_create(const rkv_cache_params *params, rkv_cache **cache) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_create";
        rkv::require_non_null(params, fn, "params");
        rkv::require_non_null(cache, fn, "cache");
        const rkv::MemoryPlan plan = rkv::Cache::plan(*params, fn);
        const uint64_t bytes = rkv::memory_plan_bytes(plan, *params, fn);
        *cache = new rkv_cache(*params, plan, bytes);
    });
}

void rkv_cache_destroy(rkv_cache *cache) { delete cache; }

rkv_status rkv_cache_get_params(const rkv_cache *cache, rkv_cache_params *params) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_get_params";
        rkv::require_non_null(cache, fn, "cache");
        rkv::require_non_null(params, fn, "params");
        rkv::check_struct_size(params->struct_size, sizeof(rkv_cache_params), fn, "rkv_cache_params");
        *params = cache->params();
    });
}

rkv_status rkv_cache_set_param(rkv_cache *cache, rkv_param param, double value) {
    return guarded(nullptr, [&] { usable(cache, "rkv_cache_set_param").set_param(param, value); });
}

rkv_status rkv_seq_reset(rkv_cache *cache, int32_t seq, void *stream) {
    return guarded(cache, [&] {
        rkv::Cache &c = usable(cache, "rkv_seq_reset");
        c.check_seq(seq, true, "rkv_seq_reset");
        c.reset(seq, stream);
    });
}

rkv_status rkv_append(rkv_cache *cache, const rkv_append_args *args, void *stream) {
    return guarded(cache, [&] {
        rkv::Cache &c = usable(cache, "rkv_append");
        rkv::require_non_null(args, "rkv_append", "args");
        c.append(*args, stream);
    });
}

rkv_status rkv_compress(rkv_cache *cache, int32_t seq, int32_t layer, void *stream) {
    return guarded(cache, [&] { usable(cache, "rkv_compress").compress(seq, layer, stream); });
}

rkv_status rkv_compress_due(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t *due) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_compress_due";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(due, fn, "due");
        c.check_seq(seq, true, fn);
        c.check_layer(layer, true, fn);
        *due = c.compress_due(seq, layer);
    });
}

rkv_status rkv_view(const rkv_cache *cache, int32_t seq, int32_t layer, rkv_kv_view *view) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_view";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(view, fn, "view");
        rkv::check_struct_size(view->struct_size, sizeof(rkv_kv_view), fn, "rkv_kv_view");
        c.check_seq(seq, false, fn);
        c.check_layer(layer, false, fn);
        c.view(seq, layer, view);
    });
}

rkv_status rkv_view_layer(const rkv_cache *cache, int32_t layer, rkv_layer_view *view) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_view_layer";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(view, fn, "view");
        rkv::check_struct_size(view->struct_size, sizeof(rkv_layer_view), fn, "rkv_layer_view");
        c.check_layer(layer, false, fn);
        c.view_layer(layer, view);
    });
}

rkv_status rkv_seq_length(const rkv_cache *cache, int32_t seq, int32_t layer, int64_t *logical,
                          int32_t *physical) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_seq_length";
        rkv::require_non_null(cache, fn, "cache");
        if (!logical && !physical)
            rkv::fail(RKV_ERR_INVALID_ARGUMENT, "%s: logical and physical are both NULL", fn);
        cache->check_seq(seq, false, fn);
        cache->check_layer(layer, false, fn);
        cache->seq_length(seq, layer, logical, physical);
    });
}

rkv_status rkv_kept_positions(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head,
                              int32_t *out, int32_t out_len, int32_t *count) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_kept_positions";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(count, fn, "count");
        c.check_seq(seq, false, fn);
        c.check_layer(layer, false, fn);
        if (head < 0 || head >= c.params().num_kv_heads)
            rkv::fail(RKV_ERR_OUT_OF_RANGE, "%s: head %d is outside 0 .. %d", fn, head,
                      c.params().num_kv_heads - 1);
        c.kept_positions(seq, layer, head, out, out_len, count);
    });
}

rkv_status rkv_cache_stats(const rkv_cache *cache, int32_t seq, rkv_stats *stats) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_stats";
        rkv::require_non_null(cache, fn, "cache");
        rkv::require_non_null(stats, fn, "stats");
        rkv::check_struct_size(stats->struct_size, sizeof(rkv_stats), fn, "rkv_stats");
        cache->check_seq(seq, true, fn);
        cache->stats(seq, stats);
    });
}

rkv_status rkv_attend(rkv_cache *cache, int32_t layer, int32_t num_seqs, const int32_t *seq_ids,
                      const rkv_tensor *q, const rkv_tensor *out, float scale, void *stream) {
    return guarded(cache, [&] {
        static const char *fn = "rkv_attend";
        rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(q, fn, "q");
        rkv::require_non_null(out, fn, "out");
        c.attend(layer, num_seqs, seq_ids, *q, *out, scale, stream);
    });
}

rkv_status rkv_inspect_scores(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head,
                              rkv_score_kind kind, float *out, int32_t out_len, int32_t *count) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_inspect_scores";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(out, fn, "out");
        rkv::require_non_null(count, fn, "count");
        c.check_seq(seq, false, fn);
        c.check_layer(layer, false, fn);
        c.inspect_scores(seq, layer, head, int32_t(kind), out, out_len, count);
    });
}

rkv_status rkv_sync_lengths(rkv_cache *cache, void *stream) {
    return guarded(cache, [&] { usable(cache, "rkv_sync_lengths").sync_lengths(stream); });
}

rkv_status rkv_cache_set_matmul_path(rkv_cache *cache, rkv_matmul_path path) {
    return guarded(nullptr, [&] {
        usable(cache, "rkv_cache_set_matmul_path").set_matmul_path(int32_t(path));
    });
}

}  // extern "C"

namespace rkv {
// Test hook (static library only; not exported from librkv.so): puts a cache in
// the state a device fault leaves it in, so tests can check use-after-fault.
void testing_mark_faulted(rkv_cache *cache, const char *why) { cache->mark_faulted(why); }
}  // namespace rkv
