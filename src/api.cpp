// The C entry points: validate what needs no cache state, call into the cache,
// and turn every exception into a status plus a thread-local message.
#include <cstddef>
#include <cstring>
#include <new>

#include "abi.h"
#include "cache.h"
#include "dtype.h"
#include "error.h"
#include "params.h"
#include "rkv/rkv.h"
#include "rkv/rkv_experimental.h"

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

rkv_status rkv_params_default(rkv_cache_params *params, size_t struct_size) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_params_default";
        rkv::require_non_null(params, fn, "params");
        rkv::check_params_size(struct_size, fn);
        rkv_cache_params defaults;
        rkv::params_fill_default(&defaults);
        rkv::write_params(defaults, params, struct_size, fn);
    });
}

rkv_status rkv_params_bounds(rkv_param param, double *lower, double *upper) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_params_bounds";
        rkv::require_non_null(lower, fn, "lower");
        rkv::require_non_null(upper, fn, "upper");
        double lo, hi;
        rkv::param_bounds(param, &lo, &hi, fn);
        *lower = lo;
        *upper = hi;
    });
}

namespace {
// A key of an earlier header's struct that lacks its field.
void check_field(const rkv_cache_params &params, rkv_param param, const char *fn) {
    if (!rkv::params_has_field(params.struct_size, param))
        rkv::fail(RKV_ERR_UNSUPPORTED, "%s: parameter %d is not in an rkv_cache_params of %zu bytes (an earlier "
                  "header's): set struct_size = sizeof(rkv_cache_params) of this header to use it", fn,
                  int(param), params.struct_size);
}
}  // namespace

rkv_status rkv_params_set(rkv_cache_params *params, rkv_param param, double value) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_params_set";
        rkv_cache_params full = rkv::read_params(params, fn);
        double lower, upper;
        rkv::param_bounds(param, &lower, &upper, fn);  // unknown keys first
        check_field(*params, param, fn);
        rkv::param_set(&full, param, value, fn);
        rkv::write_params(full, params, params->struct_size, fn);
    });
}

rkv_status rkv_params_get(const rkv_cache_params *params, rkv_param param, double *value) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_params_get";
        rkv::require_non_null(value, fn, "value");
        const rkv_cache_params full = rkv::read_params(params, fn);
        *value = rkv::param_get(full, param, fn);
    });
}

rkv_status rkv_cache_size(const rkv_cache_params *params, uint64_t *bytes) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_size";
        rkv::require_non_null(params, fn, "params");
        rkv::require_non_null(bytes, fn, "bytes");
        const rkv_cache_params full = rkv::read_params(params, fn);
        const rkv::MemoryPlan plan = rkv::Cache::plan(full, fn);
        *bytes = rkv::memory_plan_bytes(plan, full, fn);
    });
}

rkv_status rkv_cache_create(const rkv_cache_params *params, rkv_cache **cache) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_create";
        rkv::require_non_null(params, fn, "params");
        rkv::require_non_null(cache, fn, "cache");
        const rkv_cache_params full = rkv::read_params(params, fn);
        const rkv::MemoryPlan plan = rkv::Cache::plan(full, fn);
        const uint64_t bytes = rkv::memory_plan_bytes(plan, full, fn);
        *cache = new rkv_cache(full, plan, bytes);
    });
}

void rkv_cache_destroy(rkv_cache *cache) { delete cache; }

rkv_status rkv_cache_get_params(const rkv_cache *cache, rkv_cache_params *params) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_get_params";
        rkv::require_non_null(cache, fn, "cache");
        rkv::require_non_null(params, fn, "params");
        rkv::write_params(cache->params(), params, params->struct_size, fn);
    });
}

rkv_status rkv_cache_set(rkv_cache *cache, rkv_param param, double value) {
    return guarded(nullptr, [&] { usable(cache, "rkv_cache_set").set_param(param, value); });
}

rkv_status rkv_cache_get(const rkv_cache *cache, rkv_param param, double *value) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_get";
        rkv::require_non_null(cache, fn, "cache");
        rkv::require_non_null(value, fn, "value");
        *value = rkv::param_get(cache->params(), param, fn);
    });
}

rkv_status rkv_seq_reset(rkv_cache *cache, int32_t seq, void *stream) {
    return guarded(cache, [&] {
        rkv::Cache &c = usable(cache, "rkv_seq_reset");
        c.check_seq(seq, true, "rkv_seq_reset");
        c.reset(seq, stream);
    });
}

rkv_status rkv_seq_truncate(rkv_cache *cache, int32_t seq, int32_t tokens, void *stream) {
    return guarded(cache, [&] {
        static const char *fn = "rkv_seq_truncate";
        rkv::Cache &c = usable(cache, fn);
        c.check_seq(seq, false, fn);
        c.truncate(seq, tokens, stream);
    });
}

rkv_status rkv_seq_rollback_limit(const rkv_cache *cache, int32_t seq, int32_t *tokens) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_seq_rollback_limit";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(tokens, fn, "tokens");
        c.check_seq(seq, false, fn);
        *tokens = c.rollback_limit(seq);
    });
}

rkv_status rkv_seq_copy(rkv_cache *cache, int32_t src, int32_t dst, void *stream) {
    return guarded(cache, [&] {
        static const char *fn = "rkv_seq_copy";
        rkv::Cache &c = usable(cache, fn);
        c.check_seq(src, false, fn);
        c.check_seq(dst, false, fn);
        c.copy(src, dst, stream);
    });
}

rkv_status rkv_seq_set_budget(rkv_cache *cache, int32_t seq, int32_t budget) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_seq_set_budget";
        rkv::Cache &c = usable(cache, fn);
        c.check_seq(seq, false, fn);
        c.set_budget(seq, budget);
    });
}

rkv_status rkv_seq_get_budget(const rkv_cache *cache, int32_t seq, int32_t *budget) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_seq_get_budget";
        rkv::require_non_null(cache, fn, "cache");
        rkv::require_non_null(budget, fn, "budget");
        cache->check_seq(seq, false, fn);
        *budget = cache->budget(seq);
    });
}

rkv_status rkv_batch_create(rkv_cache *cache, int32_t max_entries, rkv_batch **batch) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_batch_create";
        rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(batch, fn, "batch");
        if (max_entries < 1 || max_entries > 65535)
            rkv::fail(RKV_ERR_OUT_OF_RANGE, "%s: max_entries is %d; it must be 1 .. 65535", fn, max_entries);
        *batch = new rkv_batch(c, max_entries);
    });
}

void rkv_batch_destroy(rkv_batch *batch) { delete batch; }

rkv_status rkv_batch_set(rkv_batch *batch, const int32_t *seq_ids, int32_t num_ids, void *stream) {
    rkv::Cache *cache = batch ? &batch->cache() : nullptr;
    return guarded(cache, [&] {
        static const char *fn = "rkv_batch_set";
        rkv::require_non_null(batch, fn, "batch");
        usable(static_cast<rkv_cache *>(cache), fn);
        batch->set(seq_ids, num_ids, stream);
    });
}

rkv_status rkv_batch_advance(rkv_batch *batch, int32_t steps) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_batch_advance";
        rkv::require_non_null(batch, fn, "batch");
        usable(static_cast<rkv_cache *>(&batch->cache()), fn);
        batch->advance(steps);
    });
}

rkv_status rkv_append(rkv_cache *cache, const rkv_append_args *args, void *stream) {
    return guarded(cache, [&] {
        rkv::Cache &c = usable(cache, "rkv_append");
        c.append(rkv::read_append_args(args, "rkv_append"), stream);
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

rkv_status rkv_view(const rkv_cache *cache, int32_t seq, int32_t layer, rkv_seq_view *view) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_view";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(view, fn, "view");
        rkv::check_view_size(view->struct_size, false, fn);
        c.check_seq(seq, false, fn);
        c.check_layer(layer, false, fn);
        rkv_seq_view full{};
        c.view(seq, layer, &full);
        rkv::write_view(full, view);
    });
}

rkv_status rkv_view_layer(const rkv_cache *cache, int32_t layer, rkv_layer_view *view) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_view_layer";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(view, fn, "view");
        rkv::check_view_size(view->struct_size, true, fn);
        c.check_layer(layer, false, fn);
        rkv_layer_view full{};
        c.view_layer(layer, &full);
        rkv::write_view(full, view);
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

rkv_status rkv_seq_positions(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head,
                             int32_t *out, int32_t out_len, int32_t *count) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_seq_positions";
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

rkv_status rkv_attend(rkv_cache *cache, const rkv_attend_args *args, void *stream) {
    return guarded(cache, [&] {
        static const char *fn = "rkv_attend";
        rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(args, fn, "args");
        c.attend(*args, stream);
    });
}

rkv_status rkv_seq_scores(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head,
                          rkv_score_kind kind, float *out, int32_t out_len, int32_t *count) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_seq_scores";
        const rkv::Cache &c = usable(cache, fn);
        rkv::require_non_null(out, fn, "out");
        rkv::require_non_null(count, fn, "count");
        c.check_seq(seq, false, fn);
        c.check_layer(layer, false, fn);
        c.inspect_scores(seq, layer, head, int32_t(kind), out, out_len, count);
    });
}

rkv_status rkv_cache_sync_lengths(rkv_cache *cache, void *stream) {
    return guarded(cache, [&] { usable(cache, "rkv_cache_sync_lengths").sync_lengths(stream); });
}

rkv_status rkv_cache_set_matmul_path(rkv_cache *cache, rkv_matmul_path path) {
    return guarded(nullptr, [&] {
        usable(cache, "rkv_cache_set_matmul_path").set_matmul_path(int32_t(path));
    });
}

rkv_status rkv_cache_set_attend_plan(rkv_cache *cache, int32_t splits, rkv_attend_variant variant) {
    return guarded(nullptr, [&] {
        static const char *fn = "rkv_cache_set_attend_plan";
        rkv::Cache &c = usable(cache, fn);
        if (splits < 0 || splits > 1024)
            rkv::fail(RKV_ERR_INVALID_ARGUMENT, "%s: splits is %d; use 0 (automatic) or 1 .. 1024", fn, splits);
        if (variant < RKV_ATTEND_AUTO || variant > RKV_ATTEND_TENSOR)
            rkv::fail(RKV_ERR_INVALID_ARGUMENT, "%s: variant %d is not an rkv_attend_variant (0 .. 3)", fn,
                      int(variant));
        c.set_attend_plan(splits, int32_t(variant));
    });
}

}  // extern "C"

namespace rkv {
// Test hook (static library only; not exported from librkv.so): puts a cache in
// the state a device fault leaves it in, so tests can check use-after-fault.
void testing_mark_faulted(rkv_cache *cache, const char *why) { cache->mark_faulted(why); }
}  // namespace rkv
