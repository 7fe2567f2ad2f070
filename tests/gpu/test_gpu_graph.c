/* CUDA graphs (the rules of the experimental section of rkv.h):
 *   - a decode step (rkv_append of one token per sequence for every layer, and
 *     rkv_attend) captured once and replayed step after step, and a
 *     compression captured once and replayed whenever the sequences are full
 *     again, give bit-identical attention outputs, kept positions and K/V to
 *     the same calls made eagerly on a twin cache; rkv_cache_sync_lengths brings the
 *     host bookkeeping up to date (for R-KV on both matrix paths, H2O, Random);
 *   - a replay that finds a sequence full drops its token instead of writing
 *     past the capacity, and rkv_cache_sync_lengths reports it (CAPACITY, faulted);
 *   - rkv_cache_sync_lengths on a CPU cache changes nothing. */
#include <cuda_runtime_api.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"

enum { SEQS = 4, LAYERS = 2, KV = 2, QH = 8, DIM = 128, BUDGET = 32, BUFFER = 16, WINDOW = 4 };

/* Device inputs and outputs of one decode step, shared by the eager and the
 * captured calls (a graph reads the data behind its pointers at replay). */
typedef struct step_buffers {
    rkv_dtype io;
    void *k, *v, *q;            /* [SEQS, heads, DIM] */
    void *out_eager, *out_graph; /* [LAYERS, SEQS, QH, DIM] */
    size_t kv_bytes, q_bytes;
} step_buffers;

static step_buffers buffers_create(rkv_dtype io) {
    step_buffers b;
    b.io = io;
    b.kv_bytes = (size_t)SEQS * KV * DIM * dtype_bytes(io);
    b.q_bytes = (size_t)SEQS * QH * DIM * dtype_bytes(io);
    b.k = gpu_alloc(b.kv_bytes);
    b.v = gpu_alloc(b.kv_bytes);
    b.q = gpu_alloc(b.q_bytes);
    b.out_eager = gpu_alloc(b.q_bytes * LAYERS);
    b.out_graph = gpu_alloc(b.q_bytes * LAYERS);
    return b;
}

static void buffers_destroy(step_buffers *b) {
    gpu_free(b->k);
    gpu_free(b->v);
    gpu_free(b->q);
    gpu_free(b->out_eager);
    gpu_free(b->out_graph);
}

/* New random token data in the shared input buffers. */
static void fill_inputs(step_buffers *b, uint64_t *rng) {
    const size_t kv = (size_t)SEQS * KV * DIM, qn = (size_t)SEQS * QH * DIM;
    float *x = malloc(qn * 4);
    void *raw = malloc(qn * 4);
    void *targets[3] = {b->k, b->v, b->q};
    const size_t counts[3] = {kv, kv, qn};
    for (int i = 0; i < 3; ++i) {
        test_fill_normal(x, counts[i], rng);
        convert_from_f32(x, counts[i], b->io, raw);
        CUDA_OK(cudaMemcpy(targets[i], raw, counts[i] * dtype_bytes(b->io), cudaMemcpyHostToDevice));
    }
    free(x);
    free(raw);
}

/* One decode step: append to every layer, attend at every layer. */
static void decode_step(rkv_cache *cache, const step_buffers *b, void *out, cudaStream_t stream) {
    int32_t ids[SEQS];
    for (int32_t s = 0; s < SEQS; ++s) ids[s] = s;
    for (int32_t layer = 0; layer < LAYERS; ++layer) {
        rkv_append_args a;
        memset(&a, 0, sizeof a);
        a.struct_size = sizeof a;
        a.layer = layer;
        a.num_seqs = SEQS;
        a.seq_ids = ids;
        const rkv_tensor kt = {b->k, b->io, KV, DIM, KV * DIM, 0, DIM, 0};
        const rkv_tensor qt = {b->q, b->io, QH, DIM, QH * DIM, 0, DIM, 0};
        a.k = kt;
        a.v = kt;
        a.v.data = b->v;
        a.q = qt;
        ASSERT_OK(rkv_append(cache, &a, stream));
        rkv_tensor ot = qt;
        ot.data = (char *)out + (size_t)layer * b->q_bytes;
        ASSERT_OK(test_attend(cache, layer, SEQS, ids, &qt, &ot, 0.0f, stream));
    }
}

static cudaGraphExec_t capture(cudaStream_t stream, void (*record)(void *), void *context) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    record(context);
    CUDA_OK(cudaStreamEndCapture(stream, &graph));
    CUDA_OK(cudaGraphInstantiate(&exec, graph, 0));
    CUDA_OK(cudaGraphDestroy(graph));
    return exec;
}

typedef struct capture_context {
    rkv_cache *cache;
    const step_buffers *buffers;
    cudaStream_t stream;
} capture_context;

static void record_decode(void *context) {
    capture_context *c = context;
    decode_step(c->cache, c->buffers, c->buffers->out_graph, c->stream);
}

static void record_compress(void *context) {
    capture_context *c = context;
    ASSERT_OK(rkv_compress(c->cache, RKV_ALL, RKV_ALL, c->stream));
}

/* The two CUDA caches hold the same tokens in the same slots, and agree on lengths. */
static void assert_same_caches(rkv_cache *a, rkv_cache *b, rkv_dtype storage, const char *when) {
    for (int32_t layer = 0; layer < LAYERS; ++layer) {
        rkv_layer_view va, vb;
        memset(&va, 0, sizeof va);
        memset(&vb, 0, sizeof vb);
        va.struct_size = vb.struct_size = sizeof va;
        ASSERT_OK(rkv_view_layer(a, layer, &va));
        ASSERT_OK(rkv_view_layer(b, layer, &vb));
        int32_t la[SEQS], lb[SEQS];
        gpu_download(la, va.lengths, sizeof la);
        gpu_download(lb, vb.lengths, sizeof lb);
        assert_memory_equal(la, lb, sizeof la);
        for (int32_t s = 0; s < SEQS; ++s) {
            int64_t logical_a = 0, logical_b = 0;
            int32_t held_a = 0, held_b = 0;
            ASSERT_OK(rkv_seq_length(a, s, layer, &logical_a, &held_a));
            ASSERT_OK(rkv_seq_length(b, s, layer, &logical_b, &held_b));
            if (held_a != held_b || logical_a != logical_b || held_b != lb[s])
                fail_msg("%s: seq %d layer %d: eager holds %d (logical %lld), graph %d (logical %lld, device %d)",
                         when, s, layer, held_a, (long long)logical_a, held_b, (long long)logical_b, lb[s]);
            for (int32_t h = 0; h < KV; ++h) {
                int32_t pa[BUDGET + BUFFER], pb[BUDGET + BUFFER];
                const int32_t n = kept_positions(a, s, layer, h, pa, BUDGET + BUFFER);
                assert_int_equal(kept_positions(b, s, layer, h, pb, BUDGET + BUFFER), n);
                if (memcmp(pa, pb, sizeof(int32_t) * (size_t)n) != 0)
                    fail_msg("%s: seq %d layer %d head %d: kept positions differ", when, s, layer, h);
            }
        }
        const size_t bytes = (size_t)SEQS * (size_t)va.stride_seq * dtype_bytes(storage);
        unsigned char *ka = malloc(bytes), *kb = malloc(bytes);
        for (int kv = 0; kv < 2; ++kv) {
            gpu_download(ka, kv ? va.v : va.k, bytes);
            gpu_download(kb, kv ? vb.v : vb.k, bytes);
            const size_t row = (size_t)DIM * dtype_bytes(storage);
            for (int32_t s = 0; s < SEQS; ++s)
                for (int32_t h = 0; h < KV; ++h) {
                    const size_t at = ((size_t)s * KV + h) * (size_t)va.capacity * row;
                    if (memcmp(ka + at, kb + at, (size_t)la[s] * row) != 0)
                        fail_msg("%s: seq %d layer %d head %d: %s bytes differ", when, s, layer, h, kv ? "V" : "K");
                }
        }
        free(ka);
        free(kb);
        if (va.k_scale) { /* FP8: the scales too */
            const size_t scale_bytes = (size_t)SEQS * (size_t)va.scale_stride_seq * 4;
            float *sa = malloc(scale_bytes), *sb = malloc(scale_bytes);
            for (int kv = 0; kv < 2; ++kv) {
                gpu_download(sa, kv ? va.v_scale : va.k_scale, scale_bytes);
                gpu_download(sb, kv ? vb.v_scale : vb.k_scale, scale_bytes);
                for (int32_t s = 0; s < SEQS; ++s)
                    for (int32_t h = 0; h < KV; ++h) {
                        const size_t at = (size_t)(s * va.scale_stride_seq + h * va.scale_stride_head);
                        if (memcmp(sa + at, sb + at, (size_t)la[s] * 4) != 0)
                            fail_msg("%s: seq %d layer %d head %d: %s scales differ", when, s, layer, h, kv ? "V" : "K");
                    }
            }
            free(sa);
            free(sb);
        }
    }
}

static void assert_same_outputs(const step_buffers *b, const char *when) {
    unsigned char *x = malloc(b->q_bytes * LAYERS), *y = malloc(b->q_bytes * LAYERS);
    gpu_download(x, b->out_eager, b->q_bytes * LAYERS);
    gpu_download(y, b->out_graph, b->q_bytes * LAYERS);
    if (memcmp(x, y, b->q_bytes * LAYERS) != 0) fail_msg("%s: attention outputs differ", when);
    free(x);
    free(y);
}

static void graph_matches_eager(rkv_method method, rkv_dtype storage, rkv_matmul_path path) {
    rkv_cache_params p = test_params(SEQS, LAYERS, KV, QH, DIM, method, BUDGET, BUFFER, WINDOW);
    p.dtype = storage;
    p.device_type = RKV_DEVICE_CUDA;
    p.seed = 11;
    rkv_cache *eager = test_create(&p), *graphed = test_create(&p);
    if (path != RKV_MATMUL_AUTO) {
        ASSERT_OK(rkv_cache_set_matmul_path(eager, path));
        ASSERT_OK(rkv_cache_set_matmul_path(graphed, path));
    }
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const rkv_dtype io = storage == RKV_DTYPE_FP8_E4M3 ? RKV_DTYPE_BF16 : storage; /* FP8 is a storage dtype only */
    step_buffers b = buffers_create(io);
    uint64_t rng = 99;
    /* Prompts of different lengths (one compresses chunk by chunk), eagerly,
     * into both; then every sequence is compressed to the budget, so that all
     * fill up together: a captured compression covers the sequences that are
     * full when it is captured, and is replayed when they are full again. */
    int32_t ids[SEQS], prompt[SEQS] = {BUDGET + 3, BUDGET + 10, BUDGET + BUFFER - 1, 2 * (BUDGET + BUFFER) + 5};
    for (int32_t s = 0; s < SEQS; ++s) ids[s] = s;
    uint64_t prompt_rng = rng;
    for (int32_t layer = 0; layer < LAYERS; ++layer) {
        int64_t total = 0;
        for (int32_t s = 0; s < SEQS; ++s) total += prompt[s];
        float *k = malloc(sizeof(float) * (size_t)total * KV * DIM), *v = malloc(sizeof(float) * (size_t)total * KV * DIM);
        float *q = malloc(sizeof(float) * (size_t)total * QH * DIM);
        test_fill_normal(k, (size_t)total * KV * DIM, &prompt_rng);
        test_fill_normal(v, (size_t)total * KV * DIM, &prompt_rng);
        test_fill_normal(q, (size_t)total * QH * DIM, &prompt_rng);
        ASSERT_OK(gpu_test_append(eager, layer, SEQS, ids, prompt, k, v, q, io, 0));
        ASSERT_OK(gpu_test_append(graphed, layer, SEQS, ids, prompt, k, v, q, io, 0));
        free(k);
        free(v);
        free(q);
    }
    for (int32_t s = 0; s < SEQS; ++s) {
        ASSERT_OK(rkv_compress(eager, s, RKV_ALL, NULL));
        ASSERT_OK(rkv_compress(graphed, s, RKV_ALL, NULL));
    }
    gpu_sync();
    assert_same_caches(eager, graphed, storage, "after the prompts");

    /* Capture one decode step. Capturing records it in the host bookkeeping
     * without running it: rkv_cache_sync_lengths undoes that. */
    int32_t due = 1;
    ASSERT_OK(rkv_compress_due(graphed, RKV_ALL, RKV_ALL, &due));
    assert_int_equal(due, 0);
    capture_context context = {graphed, &b, stream};
    cudaGraphExec_t decode = capture(stream, record_decode, &context);
    ASSERT_OK(rkv_cache_sync_lengths(graphed, stream));
    cudaGraphExec_t compress = NULL;

    int replays = 0, compressions = 0;
    for (int round = 0; round < 3; ++round) {
        /* Decode until some sequence is full: the graph is replayed at every step. */
        for (;;) {
            int32_t full = 0;
            ASSERT_OK(rkv_compress_due(eager, RKV_ALL, RKV_ALL, &full));
            if (full) break;
            fill_inputs(&b, &rng);
            decode_step(eager, &b, b.out_eager, stream);
            CUDA_OK(cudaGraphLaunch(decode, stream));
            CUDA_OK(cudaStreamSynchronize(stream));
            ++replays;
            assert_same_outputs(&b, "decode replay");
            ASSERT_OK(rkv_cache_sync_lengths(graphed, stream));
        }
        char when[64];
        snprintf(when, sizeof when, "after %d decode replays", replays);
        assert_same_caches(eager, graphed, storage, when);
        /* Compress: eagerly on one, a captured compression on the other. The
         * graph is captured once, when the sequences first fill up, and replayed
         * in the later rounds (the same sequences are full in the same way). */
        ASSERT_OK(rkv_compress(eager, RKV_ALL, RKV_ALL, stream));
        if (!compress) {
            context.cache = graphed;
            compress = capture(stream, record_compress, &context);
            ASSERT_OK(rkv_cache_sync_lengths(graphed, stream)); /* capture ran nothing */
        }
        CUDA_OK(cudaGraphLaunch(compress, stream));
        ASSERT_OK(rkv_cache_sync_lengths(graphed, stream));
        ++compressions;
        snprintf(when, sizeof when, "after compression replay %d", compressions);
        assert_same_caches(eager, graphed, storage, when);
    }
    rkv_stats se, sg;
    memset(&se, 0, sizeof se);
    memset(&sg, 0, sizeof sg);
    se.struct_size = sg.struct_size = sizeof se;
    ASSERT_OK(rkv_cache_stats(eager, RKV_ALL, &se));
    ASSERT_OK(rkv_cache_stats(graphed, RKV_ALL, &sg));
    assert_int_equal(se.compressions, sg.compressions);
    assert_int_equal(se.tokens_appended, sg.tokens_appended);
    assert_int_equal(se.tokens_evicted, sg.tokens_evicted);
    print_message("method %d dtype %d path %d: %d decode-step replays and %d compression replays match the "
                  "eager calls bit for bit\n", method, storage, path, replays, compressions);
    assert_true(replays >= 2 * (BUFFER - 2));
    CUDA_OK(cudaGraphExecDestroy(decode));
    CUDA_OK(cudaGraphExecDestroy(compress));
    CUDA_OK(cudaStreamDestroy(stream));
    buffers_destroy(&b);
    rkv_cache_destroy(eager);
    rkv_cache_destroy(graphed);
}

static void test_graphs_match_eager(void **state) {
    (void)state;
    graph_matches_eager(RKV_METHOD_RKV, RKV_DTYPE_BF16, RKV_MATMUL_AUTO);
    graph_matches_eager(RKV_METHOD_RKV, RKV_DTYPE_BF16, RKV_MATMUL_CUBLASLT);
    graph_matches_eager(RKV_METHOD_RKV, RKV_DTYPE_BF16, RKV_MATMUL_FUSED);
    if (gpu_wgmma()) graph_matches_eager(RKV_METHOD_RKV, RKV_DTYPE_BF16, RKV_MATMUL_WGMMA);
    if (gpu_wgmma()) graph_matches_eager(RKV_METHOD_RKV, RKV_DTYPE_BF16, RKV_MATMUL_WGMMA_INT8);
    graph_matches_eager(RKV_METHOD_RKV, RKV_DTYPE_FP8_E4M3, RKV_MATMUL_AUTO);
    if (gpu_small()) return;
    if (gpu_wgmma()) graph_matches_eager(RKV_METHOD_SNAPKV, RKV_DTYPE_F16, RKV_MATMUL_WGMMA);
    graph_matches_eager(RKV_METHOD_H2O, RKV_DTYPE_F32, RKV_MATMUL_AUTO);
    graph_matches_eager(RKV_METHOD_RANDOM, RKV_DTYPE_F16, RKV_MATMUL_AUTO);
}

/* Replaying past the capacity drops tokens; rkv_cache_sync_lengths says so. */
static void test_replay_past_capacity(void **state) {
    (void)state;
    rkv_cache_params p = test_params(SEQS, LAYERS, KV, QH, DIM, RKV_METHOD_RKV, BUDGET, BUFFER, WINDOW);
    p.dtype = RKV_DTYPE_BF16;
    p.device_type = RKV_DEVICE_CUDA;
    rkv_cache *cache = test_create(&p);
    int32_t ids[SEQS], prompt[SEQS];
    for (int32_t s = 0; s < SEQS; ++s) {
        ids[s] = s;
        prompt[s] = BUDGET + BUFFER - 1; /* one slot left */
    }
    uint64_t rng = 5;
    for (int32_t layer = 0; layer < LAYERS; ++layer) {
        const size_t total = (size_t)SEQS * prompt[0];
        float *k = malloc(total * KV * DIM * 4), *q = malloc(total * QH * DIM * 4);
        test_fill_normal(k, total * KV * DIM, &rng);
        test_fill_normal(q, total * QH * DIM, &rng);
        ASSERT_OK(gpu_test_append(cache, layer, SEQS, ids, prompt, k, k, q, RKV_DTYPE_F32, 0));
        free(k);
        free(q);
    }
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    step_buffers b = buffers_create(RKV_DTYPE_BF16);
    fill_inputs(&b, &rng);
    capture_context context = {cache, &b, stream};
    cudaGraphExec_t decode = capture(stream, record_decode, &context);
    ASSERT_OK(rkv_cache_sync_lengths(cache, stream));
    CUDA_OK(cudaGraphLaunch(decode, stream)); /* fills the last slot */
    ASSERT_OK(rkv_cache_sync_lengths(cache, stream));
    int32_t held = 0;
    ASSERT_OK(rkv_seq_length(cache, 0, 0, NULL, &held));
    assert_int_equal(held, BUDGET + BUFFER);
    CUDA_OK(cudaGraphLaunch(decode, stream)); /* no room: dropped, nothing written out of bounds */
    ASSERT_STATUS(rkv_cache_sync_lengths(cache, stream), RKV_ERR_CAPACITY);
    assert_non_null(strstr(rkv_error_message(), "dropped"));
    int32_t due = 0;
    ASSERT_STATUS(rkv_compress_due(cache, 0, 0, &due), RKV_ERR_FAULTED);
    CUDA_OK(cudaGraphExecDestroy(decode));
    CUDA_OK(cudaStreamDestroy(stream));
    buffers_destroy(&b);
    rkv_cache_destroy(cache);
}

static void test_sync_lengths_on_cpu_cache(void **state) {
    (void)state;
    rkv_cache_params p = test_params(2, 1, 2, 4, 16, RKV_METHOD_RKV, 16, 8, 4);
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 3;
    test_append_random(cache, 1, 5, &rng);
    test_snapshot before = test_take_snapshot(cache);
    ASSERT_OK(rkv_cache_sync_lengths(cache, NULL));
    test_snapshot after = test_take_snapshot(cache);
    assert_true(test_snapshot_equal(&before, &after));
    test_snapshot_free(&before);
    test_snapshot_free(&after);
    rkv_cache_destroy(cache);
}

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sync_lengths_on_cpu_cache),
        cmocka_unit_test(test_graphs_match_eager),
        cmocka_unit_test(test_replay_past_capacity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
