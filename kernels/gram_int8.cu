// Launcher of the key Gram with an int8 filter (kernels/gram_int8.cuh).
#include "gram_int8.cuh"
#include "launch.h"

namespace rkv::kernels {

namespace {

// Calls f(kernel) for the 16-bit dtype the scoring reads (FP8 storage: its bf16 copy).
template <typename F>
cudaError_t with_int8_instance(int32_t dtype, F &&f) {
    if (dtype == RKV_DTYPE_F16) return f(gram_int8_kernel<__half>);
    return f(gram_int8_kernel<__nv_bfloat16>);
}

int32_t key_tiles(int32_t capacity) { return (capacity + kGramTile - 1) / kGramTile; }

// A head's int8 keys: [ceil(capacity / 128) * 128, 128] int8.
int64_t int8_key_bytes(int32_t capacity) { return int64_t(key_tiles(capacity)) * kGramTile * kGramInt8Dim; }

// Whether a head's int8 keys, answers ([capacity] uint64) and count (one
// uint32) fit in its Gram rows ([128, capacity] f32): from capacity 33 on.
bool int8_scratch_fits(int32_t capacity) {
    return capacity > 0 && int8_key_bytes(capacity) + int64_t(capacity) * 8 + 4 <= int64_t(kGramTile) * capacity * 4;
}

}  // namespace

GramInt8Scratch gram_int8_scratch(void *gram, int64_t heads, int32_t capacity) {
    if (!int8_scratch_fits(capacity)) return {};
    char *base = static_cast<char *>(gram);
    const int64_t keys = heads * int8_key_bytes(capacity), answers = heads * int64_t(capacity) * 8;
    return {reinterpret_cast<int8_t *>(base), reinterpret_cast<unsigned long long *>(base + keys),
            reinterpret_cast<unsigned *>(base + keys + answers)};
}

bool gram_int8_supported(int32_t dtype, int32_t head_dim, int32_t rows, int32_t capacity, int major, int minor) {
    return head_dim == kGramInt8Dim && int8_scratch_fits(capacity) &&
           gram_wgmma_supported(dtype, head_dim, rows, major, minor);
}

cudaError_t configure_gram_int8_kernels(int32_t dtype, int32_t head_dim) {
    if (dtype == RKV_DTYPE_F32 || head_dim != kGramInt8Dim) return cudaSuccess;
    return with_int8_instance(dtype, [&](auto kernel) {
        return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(GramInt8Shared::kBytes));
    });
}

cudaError_t launch_gram_int8(const CompressParams &p, int32_t max_held, cudaStream_t stream) {
    if (p.cache.head_dim != kGramInt8Dim || p.scratch.keys_int8 == nullptr || p.scratch.int8_answers == nullptr ||
        !gram_fused_supported(p.cache.dtype, p.cache.head_dim, p.scratch.rows))
        return cudaErrorNotSupported;
    // A block per pair of row tiles (i, tiles - 1 - i) of each head.
    const int32_t chunks = (key_tiles(max_held) + 1) / 2;
    const dim3 grid(unsigned(chunks), unsigned(p.cache.kv_heads), unsigned(p.num_jobs));
    with_int8_instance(p.cache.dtype, [&](auto kernel) {
        kernel<<<grid, kGramInt8Threads, GramInt8Shared::kBytes, stream>>>(p);
        return cudaSuccess;
    });
    return cudaGetLastError();
}

}  // namespace rkv::kernels
