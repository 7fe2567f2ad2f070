// rkv_attend as a programmatic dependent launch (kernels/pdl.cuh): each
// attention kernel may become resident while the kernel before it in the
// stream still runs, and must wait for that kernel before it reads the
// queries or writes its output.
//
// The kernel before it here behaves as a PDL-aware engine kernel may: it lets
// dependents launch at once (griddepcontrol.launch_dependents), runs for
// 200 us, then copies the output buffer away (a reader of the previous
// layer's output) and writes the queries. An attention that read the queries
// early attends with the old ones (its output differs from the one computed
// after a device synchronisation); one that wrote early shows in the copy.
// Every plan that serves the cache: bf16 and E4M3 storage (the tensor-core
// kernel; one sequence: splits merged in a cluster, many: one split each),
// f32 (the split kernel's shapes), head_dim 80 (the generic kernel); eager and
// replayed from a CUDA graph.
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

extern "C" {
#include "gpu_util.h"
}

namespace {

constexpr int32_t kKvHeads = 8, kQHeads = 32, kLength = 1152;
constexpr uint64_t kSpinNanoseconds = 200000;

// Lets its dependents start, waits, then copies `out` to `observed` and
// `fresh` to `q` (bytes, one block).
__global__ void late_writer(const uint4 *fresh, uint4 *q, const uint4 *out, uint4 *observed, size_t chunks) {
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    uint64_t start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < kSpinNanoseconds);
    for (size_t i = threadIdx.x; i < chunks; i += blockDim.x) observed[i] = out[i];
    __syncthreads();
    for (size_t i = threadIdx.x; i < chunks; i += blockDim.x) q[i] = fresh[i];
}

struct Buffers {
    size_t bytes;                                // of q, out: [seqs, kQHeads, dim] bf16
    void *q, *fresh_q, *out, *observed;          // device
    std::vector<uint8_t> stale_q, poison, want;  // host
};

Buffers make_buffers(int32_t seqs, int32_t dim, uint64_t *rng) {
    Buffers b;
    const size_t count = size_t(seqs) * kQHeads * dim;
    b.bytes = count * 2;
    std::vector<float> values(count);
    b.stale_q.resize(b.bytes);
    b.poison.assign(b.bytes, 0x7f);  // a finite bf16 pattern attention never writes
    for (float &x : values) x = test_rng_normal(rng);
    convert_from_f32(values.data(), count, RKV_DTYPE_BF16, b.stale_q.data());
    for (float &x : values) x = test_rng_normal(rng);
    std::vector<uint8_t> fresh(b.bytes);
    convert_from_f32(values.data(), count, RKV_DTYPE_BF16, fresh.data());
    b.q = gpu_alloc(b.bytes);
    b.fresh_q = gpu_upload(fresh.data(), b.bytes);
    b.out = gpu_alloc(b.bytes);
    b.observed = gpu_alloc(b.bytes);
    return b;
}

void free_buffers(Buffers *b) {
    gpu_free(b->q);
    gpu_free(b->fresh_q);
    gpu_free(b->out);
    gpu_free(b->observed);
}

rkv_attend_args attend_args(const Buffers &b, const int32_t *ids, int32_t seqs, int32_t dim) {
    rkv_attend_args a;
    std::memset(&a, 0, sizeof a);
    a.struct_size = sizeof a;
    a.num_seqs = seqs;
    a.seq_ids = ids;
    a.q = {b.q, RKV_DTYPE_BF16, kQHeads, dim, int64_t(kQHeads) * dim, 0, dim, 0};
    a.out = {b.out, RKV_DTYPE_BF16, kQHeads, dim, int64_t(kQHeads) * dim, 0, dim, 0};
    return a;
}

// The late writer, then rkv_attend, on `stream` (what a graph captures).
void writer_then_attend(rkv_cache *cache, const rkv_attend_args &args, const Buffers &b, cudaStream_t stream) {
    const size_t chunks = b.bytes / 16;
    late_writer<<<1, 256, 0, stream>>>(static_cast<const uint4 *>(b.fresh_q), static_cast<uint4 *>(b.q),
                                       static_cast<const uint4 *>(b.out), static_cast<uint4 *>(b.observed), chunks);
    CUDA_OK(cudaGetLastError());
    ASSERT_OK(rkv_attend(cache, &args, stream));
}

void check(const Buffers &b, const char *what) {
    std::vector<uint8_t> got(b.bytes), observed(b.bytes);
    gpu_download(got.data(), b.out, b.bytes);
    gpu_download(observed.data(), b.observed, b.bytes);
    if (std::memcmp(observed.data(), b.poison.data(), b.bytes) != 0)
        fail_msg("%s: attention wrote its output before the kernel before it had read it", what);
    if (std::memcmp(got.data(), b.want.data(), b.bytes) != 0)
        fail_msg("%s: attention read the queries before the kernel before it had written them", what);
}

void run_case(rkv_dtype storage, int32_t dim, int32_t seqs, cudaStream_t stream) {
    rkv_cache_params p = test_params(seqs, 1, kKvHeads, kQHeads, dim, RKV_METHOD_FULL, 16, 8, 4);
    p.dtype = storage;
    p.max_len = kLength;
    p.device_type = RKV_DEVICE_CUDA;
    rkv_cache *cache = test_create(&p);
    uint64_t rng = 77 + uint64_t(seqs) * 1009 + uint64_t(storage) + uint64_t(dim) * 31;
    std::vector<int32_t> ids(static_cast<size_t>(seqs)), tokens(static_cast<size_t>(seqs), kLength);
    for (int32_t s = 0; s < seqs; ++s) ids[size_t(s)] = s;
    const size_t kv = size_t(seqs) * kLength * kKvHeads * dim;
    std::vector<float> k(kv), v(kv);
    for (size_t i = 0; i < kv; ++i) {
        k[i] = test_rng_normal(&rng);
        v[i] = test_rng_normal(&rng);
    }
    ASSERT_OK(gpu_test_append(cache, 0, seqs, ids.data(), tokens.data(), k.data(), v.data(), nullptr,
                              RKV_DTYPE_F32, 0));
    Buffers b = make_buffers(seqs, dim, &rng);
    const rkv_attend_args args = attend_args(b, ids.data(), seqs, dim);
    const struct {
        int32_t splits;
        rkv_attend_variant variant;
    } plans[] = {{0, RKV_ATTEND_AUTO}, {1, RKV_ATTEND_TENSOR}, {4, RKV_ATTEND_TENSOR}, {8, RKV_ATTEND_TENSOR},
                 {3, RKV_ATTEND_WIDE}, {2, RKV_ATTEND_NARROW}};
    int ran = 0;
    for (const auto &plan : plans) {
        if (rkv_cache_set_attend_plan(cache, plan.splits, plan.variant) != RKV_OK) continue;
        char what[128];
        // Reference: the fresh queries in place before the call.
        CUDA_OK(cudaMemcpy(b.q, b.fresh_q, b.bytes, cudaMemcpyDeviceToDevice));
        CUDA_OK(cudaDeviceSynchronize());
        ASSERT_OK(rkv_attend(cache, &args, stream));
        CUDA_OK(cudaStreamSynchronize(stream));
        b.want.resize(b.bytes);
        gpu_download(b.want.data(), b.out, b.bytes);
        for (int graph = 0; graph < 2; ++graph) {
            std::snprintf(what, sizeof what, "storage %d, head_dim %d, %d sequences, splits %d, variant %d, %s",
                          int(storage), int(dim), int(seqs), int(plan.splits), int(plan.variant),
                          graph ? "graph replay" : "eager");
            CUDA_OK(cudaMemcpy(b.q, b.stale_q.data(), b.bytes, cudaMemcpyHostToDevice));
            CUDA_OK(cudaMemcpy(b.out, b.poison.data(), b.bytes, cudaMemcpyHostToDevice));
            CUDA_OK(cudaDeviceSynchronize());
            if (!graph) {
                writer_then_attend(cache, args, b, stream);
            } else {
                cudaGraph_t captured;
                cudaGraphExec_t exec;
                CUDA_OK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
                writer_then_attend(cache, args, b, stream);
                CUDA_OK(cudaStreamEndCapture(stream, &captured));
                CUDA_OK(cudaGraphInstantiate(&exec, captured, 0));
                CUDA_OK(cudaGraphLaunch(exec, stream));
                CUDA_OK(cudaStreamSynchronize(stream));
                CUDA_OK(cudaGraphExecDestroy(exec));
                CUDA_OK(cudaGraphDestroy(captured));
            }
            CUDA_OK(cudaStreamSynchronize(stream));
            check(b, what);
        }
        ++ran;
    }
    // The automatic plan always; forced ones where the cache has the kernel
    // (tensor: 16-bit and E4M3 rows; wide and narrow: head_dim 64/128/256).
    const int expected = dim == 80 ? 1 : storage == RKV_DTYPE_F32 ? 3 : 6;
    assert_int_equal(ran, expected);
    free_buffers(&b);
    rkv_cache_destroy(cache);
}

void test_attend_waits_for_the_kernel_before(void **) {
    cudaStream_t stream;
    CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const int32_t many = gpu_small() ? 8 : 40;
    for (rkv_dtype storage : {RKV_DTYPE_BF16, RKV_DTYPE_FP8_E4M3, RKV_DTYPE_F32})
        for (int32_t seqs : {1, many}) run_case(storage, 128, seqs, stream);
    for (int32_t seqs : {1, many}) run_case(RKV_DTYPE_BF16, 80, seqs, stream);
    CUDA_OK(cudaStreamDestroy(stream));
}

}  // namespace

int main(void) {
    GPU_SKIP_WITHOUT_DEVICE();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attend_waits_for_the_kernel_before),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
