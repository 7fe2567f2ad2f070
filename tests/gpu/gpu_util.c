#include "gpu_util.h"

#include <cuda_runtime_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int gpu_device_count(void) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return count;
}

int gpu_small(void) {
    const char *small = getenv("RKV_GPU_TEST_SMALL");
    return small && *small ? atoi(small) : 0;
}

int gpu_wgmma(void) {
    int major = 0, minor = 0;
    CUDA_OK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, 0));
    CUDA_OK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, 0));
    return major == 9 && minor == 0;
}

void *gpu_alloc(size_t bytes) {
    void *device = NULL;
    CUDA_OK(cudaMalloc(&device, bytes ? bytes : 1));
    return device;
}

void *gpu_upload(const void *host, size_t bytes) {
    void *device = gpu_alloc(bytes);
    CUDA_OK(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice));
    return device;
}

void gpu_download(void *host, const void *device, size_t bytes) {
    CUDA_OK(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost));
}

void gpu_fill(void *device, int byte, size_t bytes) {
    CUDA_OK(cudaMemset(device, byte, bytes));
    CUDA_OK(cudaDeviceSynchronize());
}

void gpu_free(void *device) { CUDA_OK(cudaFree(device)); }

void gpu_sync(void) { CUDA_OK(cudaDeviceSynchronize()); }

size_t dtype_bytes(rkv_dtype dtype) { return test_dtype_bytes(dtype); }


static rkv_cache_params params_of(const rkv_cache *cache) {
    rkv_cache_params p;
    p.struct_size = sizeof p;
    ASSERT_OK(rkv_cache_get_params(cache, &p));
    return p;
}

rkv_status gpu_test_append(rkv_cache *cache, int32_t layer, int32_t num_seqs, const int32_t *seq_ids,
                           const int32_t *num_tokens, const float *k, const float *v, const float *q,
                           rkv_dtype io, uint32_t flags) {
    const rkv_cache_params p = params_of(cache);
    int64_t *offsets = malloc(sizeof(int64_t) * (size_t)num_seqs);
    int64_t total = 0;
    for (int32_t i = 0; i < num_seqs; ++i) {
        offsets[i] = total;
        total += num_tokens ? num_tokens[i] : 1;
    }
    const size_t kv_count = (size_t)total * p.num_kv_heads * p.head_dim;
    const size_t q_count = (size_t)total * p.num_q_heads * p.head_dim;
    void *hk = malloc(kv_count * 4), *hv = malloc(kv_count * 4), *hq = q ? malloc(q_count * 4) : NULL;
    convert_from_f32(k, kv_count, io, hk);
    convert_from_f32(v, kv_count, io, hv);
    if (q) convert_from_f32(q, q_count, io, hq);
    const int device = p.device_type == RKV_DEVICE_CUDA;
    void *dk = device ? gpu_upload(hk, kv_count * dtype_bytes(io)) : hk;
    void *dv = device ? gpu_upload(hv, kv_count * dtype_bytes(io)) : hv;
    void *dq = q ? (device ? gpu_upload(hq, q_count * dtype_bytes(io)) : hq) : NULL;
    rkv_append_args a;
    memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.layer = layer;
    a.num_seqs = num_seqs;
    a.seq_ids = seq_ids;
    a.num_tokens = num_tokens;
    a.token_offsets = offsets;
    const rkv_tensor kt = {dk, io, p.num_kv_heads, p.head_dim, 0, (int64_t)p.num_kv_heads * p.head_dim, p.head_dim, 0};
    a.k = kt;
    a.v = kt;
    a.v.data = dv;
    if (q) {
        const rkv_tensor qt = {dq, io, p.num_q_heads, p.head_dim, 0, (int64_t)p.num_q_heads * p.head_dim, p.head_dim, 0};
        a.q = qt;
    }
    a.flags = flags;
    const rkv_status status = rkv_append(cache, &a, NULL);
    if (device) {
        gpu_free(dk); /* cudaFree waits for the kernels that read it */
        gpu_free(dv);
        if (dq) gpu_free(dq);
    }
    free(hk);
    free(hv);
    free(hq);
    free(offsets);
    return status;
}

rkv_status gpu_stream_append(rkv_cache *cache, int32_t seq, uint64_t variant, int64_t first, int32_t count,
                             rkv_dtype io, uint32_t flags) {
    const rkv_cache_params p = params_of(cache);
    const size_t kv = (size_t)count * p.num_kv_heads * p.head_dim, qn = (size_t)count * p.num_q_heads * p.head_dim;
    float *k = malloc(kv * 4), *v = malloc(kv * 4), *q = malloc(qn * 4);
    rkv_status status = RKV_OK;
    for (int32_t layer = 0; layer < p.num_layers && status == RKV_OK; ++layer) {
        stream_tokens(&p, variant, first, count, layer, k, v, q);
        status = gpu_test_append(cache, layer, 1, &seq, &count, k, v, q, io, flags);
    }
    free(k);
    free(v);
    free(q);
    return status;
}

typedef struct bytes {
    unsigned char *data;
    size_t size;
} bytes;

static void append_bytes(bytes *b, const void *data, size_t size, int device) {
    b->data = realloc(b->data, b->size + size + 1);
    assert_non_null(b->data);
    if (device) gpu_download(b->data + b->size, data, size);
    else memcpy(b->data + b->size, data, size);
    b->size += size;
}

test_snapshot gpu_seq_snapshot(const rkv_cache *cache, int32_t seq) {
    const rkv_cache_params p = params_of(cache);
    const int device = p.device_type == RKV_DEVICE_CUDA;
    if (device) gpu_sync();
    bytes b = {NULL, 0};
    const size_t element = dtype_bytes(p.dtype);
    for (int32_t layer = 0; layer < p.num_layers; ++layer) {
        rkv_seq_view view;
        memset(&view, 0, sizeof view);
        view.struct_size = sizeof view;
        ASSERT_OK(rkv_view(cache, seq, layer, &view));
        append_bytes(&b, &view.length, sizeof view.length, 0);
        append_bytes(&b, &view.logical_length, sizeof view.logical_length, 0);
        for (int32_t h = 0; h < view.num_kv_heads; ++h) {
            const size_t rows = (size_t)view.length * view.head_dim * element; /* stride_token = head_dim */
            append_bytes(&b, (const char *)view.k + (size_t)h * view.stride_head * element, rows, device);
            append_bytes(&b, (const char *)view.v + (size_t)h * view.stride_head * element, rows, device);
            append_bytes(&b, view.positions + (size_t)h * view.positions_stride_head, (size_t)view.length * 4, device);
            if (view.k_scale) { /* FP8: the scales of the rows */
                const size_t scales = (size_t)view.length * 4, first = (size_t)h * view.scale_stride_head;
                append_bytes(&b, view.k_scale + first, scales, device);
                append_bytes(&b, view.v_scale + first, scales, device);
            }
        }
    }
    int32_t budget = -1;
    ASSERT_OK(rkv_seq_get_budget(cache, seq, &budget));
    append_bytes(&b, &budget, sizeof budget, 0);
    test_snapshot s = {b.size, b.data};
    return s;
}

void gpu_assert_same_sequence(const rkv_cache *a, int32_t seq_a, const rkv_cache *b, int32_t seq_b,
                              const char *what) {
    test_snapshot sa = gpu_seq_snapshot(a, seq_a), sb = gpu_seq_snapshot(b, seq_b);
    const int same = test_snapshot_equal(&sa, &sb);
    test_snapshot_free(&sa);
    test_snapshot_free(&sb);
    if (!same) fail_msg("%s: the sequences hold different tokens", what);
    assert_same_scores(a, seq_a, b, seq_b);
}

twin twin_create(const rkv_cache_params *params) {
    twin t;
    t.params = *params;
    rkv_cache_params p = *params;
    p.device_type = RKV_DEVICE_CPU;
    t.cpu = test_create(&p);
    p.device_type = RKV_DEVICE_CUDA;
    p.device_id = 0;
    t.gpu = test_create(&p);
    return t;
}

void twin_destroy(twin *t) {
    rkv_cache_destroy(t->cpu);
    rkv_cache_destroy(t->gpu);
    t->cpu = t->gpu = NULL;
}

void twin_append(twin *t, int32_t layer, int32_t num_seqs, const int32_t *seq_ids, const int32_t *num_tokens,
                 const float *k, const float *v, const float *q, rkv_dtype io, uint32_t flags,
                 rkv_status expected) {
    ASSERT_STATUS(gpu_test_append(t->cpu, layer, num_seqs, seq_ids, num_tokens, k, v, q, io, flags), expected);
    ASSERT_STATUS(gpu_test_append(t->gpu, layer, num_seqs, seq_ids, num_tokens, k, v, q, io, flags), expected);
}

void twin_append_random(twin *t, int32_t num_seqs, const int32_t *seq_ids, const int32_t *num_tokens,
                        uint64_t *rng, uint32_t flags) {
    const rkv_cache_params *p = &t->params;
    int64_t total = 0;
    for (int32_t i = 0; i < num_seqs; ++i) total += num_tokens ? num_tokens[i] : 1;
    const size_t kv = (size_t)total * p->num_kv_heads * p->head_dim;
    const size_t qn = (size_t)total * p->num_q_heads * p->head_dim;
    float *k = malloc(kv * 4), *v = malloc(kv * 4), *q = malloc(qn * 4);
    for (int32_t layer = 0; layer < p->num_layers; ++layer) {
        test_fill_normal(k, kv, rng);
        test_fill_normal(v, kv, rng);
        test_fill_normal(q, qn, rng);
        twin_append(t, layer, num_seqs, seq_ids, num_tokens, k, v, q, RKV_DTYPE_F32, flags, RKV_OK);
    }
    free(k);
    free(v);
    free(q);
}

int32_t kept_positions(const rkv_cache *cache, int32_t seq, int32_t layer, int32_t head, int32_t *out,
                       int32_t out_len) {
    int32_t count = 0;
    ASSERT_OK(rkv_seq_positions(cache, seq, layer, head, out, out_len, &count));
    return count;
}

int32_t capacity_of(const rkv_cache_params *p) {
    if (p->method == RKV_METHOD_FULL) return p->max_len;
    return p->budget + p->buffer + ((p->guards & RKV_GUARD_PROMPT) ? p->max_prompt_len : 0);
}

score_snapshot snapshot_scores(const twin *t) {
    const rkv_cache_params *p = &t->params;
    score_snapshot s;
    s.cap = capacity_of(p);
    const size_t rows = (size_t)p->max_seqs * p->num_layers;
    const size_t slots = rows * p->num_kv_heads * (size_t)s.cap;
    s.held = calloc(rows, sizeof(int32_t));
    s.candidates = calloc(rows, sizeof(int32_t));
    s.positions = calloc(slots, sizeof(int32_t));
    s.scores = calloc(slots, sizeof(float));
    for (int32_t seq = 0; seq < p->max_seqs; ++seq)
        for (int32_t l = 0; l < p->num_layers; ++l) {
            const size_t row = (size_t)seq * p->num_layers + l;
            for (int32_t h = 0; h < p->num_kv_heads; ++h) {
                const size_t at = (row * p->num_kv_heads + h) * (size_t)s.cap;
                s.held[row] = kept_positions(t->cpu, seq, l, h, s.positions + at, s.cap);
                int32_t count = 0;
                if (rkv_seq_scores(t->cpu, seq, l, h, RKV_SCORE_FINAL, s.scores + at, s.cap, &count) == RKV_OK)
                    s.candidates[row] = count;
            }
        }
    return s;
}

void snapshot_free(score_snapshot *s) {
    free(s->held);
    free(s->candidates);
    free(s->positions);
    free(s->scores);
    memset(s, 0, sizeof *s);
}

static int contains(const int32_t *set, int32_t n, int32_t value) {
    for (int32_t i = 0; i < n; ++i)
        if (set[i] == value) return 1;
    return 0;
}

/* The CPU score of the token at `position` before the compression, or NaN. */
static float score_of(const score_snapshot *b, size_t row, size_t at, int32_t position) {
    for (int32_t j = 0; j < b->candidates[row]; ++j)
        if (b->positions[at + j] == position) return b->scores[at + j];
    return NAN;
}

void compare_kept(const twin *t, const score_snapshot *before, kept_compare *out, const char *what) {
    const rkv_cache_params *p = &t->params;
    const int32_t cap = capacity_of(p);
    int32_t *a = malloc(sizeof(int32_t) * (size_t)cap), *b = malloc(sizeof(int32_t) * (size_t)cap);
    for (int32_t s = 0; s < p->max_seqs; ++s)
        for (int32_t l = 0; l < p->num_layers; ++l)
            for (int32_t h = 0; h < p->num_kv_heads; ++h) {
                const int32_t na = kept_positions(t->cpu, s, l, h, a, cap);
                const int32_t nb = kept_positions(t->gpu, s, l, h, b, cap);
                out->heads++;
                if (na != nb)
                    fail_msg("%s: seq %d layer %d head %d: the CPU holds %d tokens, CUDA %d", what, s, l, h, na, nb);
                if (memcmp(a, b, sizeof(int32_t) * (size_t)na) == 0) {
                    out->identical++;
                    continue;
                }
                int same_set = 1;
                for (int32_t i = 0; i < na && same_set; ++i) same_set = contains(b, nb, a[i]);
                if (same_set) {
                    /* Reference order ranks winners by score: a swap of two
                     * tokens scored within the tolerance is a near tie too. */
                    int explained = before != NULL;
                    double worst = 0, largest = 0;
                    if (explained) {
                        const size_t row = (size_t)s * p->num_layers + l;
                        const size_t at = (row * p->num_kv_heads + h) * (size_t)before->cap;
                        for (int32_t j = 0; j < before->candidates[row]; ++j)
                            largest = fmax(largest, fabs(before->scores[at + j]));
                        for (int32_t i = 0; i < na && explained; ++i) {
                            if (a[i] == b[i]) continue;
                            const float x = score_of(before, row, at, a[i]), y = score_of(before, row, at, b[i]);
                            if (isnan(x) || isnan(y)) explained = 0;
                            else worst = fmax(worst, fabs((double)x - y));
                        }
                        explained = explained && worst <= TIE_TOLERANCE * largest;
                    }
                    if (explained) {
                        out->near_ties++;
                        print_message("%s: seq %d layer %d head %d: same tokens, order of a near tie differs "
                                      "(scores %.2g of the largest apart)\n", what, s, l, h, worst / largest);
                    } else {
                        out->order_errors++;
                        print_error("%s: seq %d layer %d head %d: same tokens, different slot order\n", what, s, l, h);
                    }
                    continue;
                }
                /* Tokens kept by one side only: explained if every such pair
                 * (x kept by the CPU only, y by CUDA only) scored within the tolerance. */
                int explained = before != NULL;
                double worst = 0, largest = 0;
                if (explained) {
                    const size_t row = (size_t)s * p->num_layers + l;
                    const size_t at = (row * p->num_kv_heads + h) * (size_t)before->cap;
                    for (int32_t j = 0; j < before->candidates[row]; ++j)
                        largest = fmax(largest, fabs(before->scores[at + j]));
                    for (int32_t i = 0; i < na && explained; ++i) {
                        if (contains(b, nb, a[i])) continue;
                        const float x = score_of(before, row, at, a[i]);
                        for (int32_t k = 0; k < nb && explained; ++k) {
                            if (contains(a, na, b[k])) continue;
                            const float y = score_of(before, row, at, b[k]);
                            if (isnan(x) || isnan(y)) explained = 0;
                            else worst = fmax(worst, fabs((double)x - y));
                        }
                    }
                    explained = explained && worst <= TIE_TOLERANCE * largest;
                }
                if (explained) {
                    out->near_ties++;
                    print_message("%s: seq %d layer %d head %d: near tie (swapped scores differ by %.3g, "
                                  "%.2g of the largest)\n", what, s, l, h, worst, worst / largest);
                } else {
                    out->mismatches++;
                    print_error("%s: seq %d layer %d head %d: different kept sets (swapped scores differ by "
                                "%.3g of the largest)\n", what, s, l, h, largest > 0 ? worst / largest : -1.0);
                }
            }
    free(a);
    free(b);
}
