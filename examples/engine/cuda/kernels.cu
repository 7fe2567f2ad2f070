// The engine's small kernels (see kernels.h). Each is memory-bound and simple:
// one block per row where a row needs a reduction, grid-stride loops elsewhere.
#include <cfloat>
#include <climits>
#include <cstdint>

#include "device.h"
#include "kernels.h"

namespace engine::cuda {

void check_launch(const char *what) { check_cuda(cudaGetLastError(), what); }

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(uint64_t n, int threads = kThreads) {
    const uint64_t b = (n + uint64_t(threads) - 1) / uint64_t(threads);
    return unsigned(b < 65536 ? (b > 0 ? b : 1) : 65536);
}

// Sum of v over the block (blockDim.x a multiple of 32, at most 1024).
__device__ float block_sum(float v) {
    __shared__ float partial[32];
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    const int warps = blockDim.x >> 5;
    v = lane < warps ? partial[lane] : 0.0f;
    for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;  // every thread holds the total
}

__global__ void embed_kernel(const int32_t *tokens, const bf16 *table, int32_t dim, int32_t vocab, float *x) {
    const int32_t row = blockIdx.x;
    int32_t token = tokens[row];
    if (token < 0 || token >= vocab) token = 0;
    const bf16 *src = table + int64_t(token) * dim;
    float *dst = x + int64_t(row) * dim;
    for (int32_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = __bfloat162float(src[i]);
}

__global__ void rmsnorm_kernel(const float *x, int64_t x_stride, int32_t dim, const float *weight, float eps,
                               bf16 *out) {
    const float *row = x + int64_t(blockIdx.x) * x_stride;
    float sum = 0.0f;
    for (int32_t i = threadIdx.x; i < dim; i += blockDim.x) sum += row[i] * row[i];
    sum = block_sum(sum);
    const float scale = 1.0f / sqrtf(sum / float(dim) + eps);
    bf16 *dst = out + int64_t(blockIdx.x) * dim;
    for (int32_t i = threadIdx.x; i < dim; i += blockDim.x) dst[i] = __float2bfloat16(row[i] * scale * weight[i]);
}

// grid (rows, heads + 2 * kv_heads), head_dim / 2 threads: one pair each.
__global__ void rope_split_kernel(RopeArgs a) {
    const int32_t row = blockIdx.x, head = blockIdx.y, i = threadIdx.x;
    const int32_t total_heads = a.heads + 2 * a.kv_heads;
    const float *src = a.qkv + (int64_t(row) * total_heads + head) * a.head_dim + 2 * i;
    float x0 = src[0], x1 = src[1];
    float *dst;
    if (head < a.heads + a.kv_heads) {  // Q or K: rotate
        const int32_t position = a.position_of_row ? a.position_of_row[row] : a.first_position + row;
        const float angle = float(position) * a.freq[i];
        float s, c;
        sincosf(angle, &s, &c);
        const float r0 = x0 * c - x1 * s, r1 = x0 * s + x1 * c;
        x0 = r0;
        x1 = r1;
        dst = head < a.heads ? a.q + (int64_t(row) * a.heads + head) * a.head_dim
                             : a.k + (int64_t(row) * a.kv_heads + (head - a.heads)) * a.head_dim;
    } else {
        dst = a.v + (int64_t(row) * a.kv_heads + (head - a.heads - a.kv_heads)) * a.head_dim;
    }
    dst[2 * i] = x0;
    dst[2 * i + 1] = x1;
}

__global__ void swiglu_kernel(const bf16 *gate_up, int32_t rows, int32_t mlp, bf16 *out) {
    const uint64_t n = uint64_t(rows) * uint64_t(mlp);
    for (uint64_t idx = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; idx < n;
         idx += uint64_t(gridDim.x) * blockDim.x) {
        const uint64_t r = idx / uint64_t(mlp), j = idx % uint64_t(mlp);
        const float g = __bfloat162float(gate_up[r * 2 * mlp + j]);
        const float u = __bfloat162float(gate_up[r * 2 * mlp + mlp + j]);
        out[idx] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
    }
}

// One block per row. Ties keep the first index, as the CPU engine's argmax.
__global__ void argmax_kernel(const float *logits, int32_t vocab, const int32_t *decoding, int32_t *tokens) {
    if (decoding && decoding[blockIdx.x] == 0) return;  // the whole block: the row keeps its token
    const float *row = logits + int64_t(blockIdx.x) * vocab;
    float best = -INFINITY;
    int32_t index = INT_MAX;
    for (int32_t j = threadIdx.x; j < vocab; j += blockDim.x) {
        float v = row[j];
        if (v != v) v = -INFINITY;  // NaN
        if (index == INT_MAX || v > best) best = v, index = j;
    }
    // (value, index) with the larger value, then the smaller index, wins.
    for (int offset = 16; offset > 0; offset >>= 1) {
        const float other = __shfl_xor_sync(0xffffffffu, best, offset);
        const int32_t other_index = __shfl_xor_sync(0xffffffffu, index, offset);
        if (other > best || (other == best && other_index < index)) best = other, index = other_index;
    }
    __shared__ float values[32];
    __shared__ int32_t indices[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    if (lane == 0) values[warp] = best, indices[warp] = index;
    __syncthreads();
    if (warp == 0) {
        const int warps = blockDim.x >> 5;
        best = lane < warps ? values[lane] : -INFINITY;
        index = lane < warps ? indices[lane] : INT_MAX;
        for (int offset = 16; offset > 0; offset >>= 1) {
            const float other = __shfl_xor_sync(0xffffffffu, best, offset);
            const int32_t other_index = __shfl_xor_sync(0xffffffffu, index, offset);
            if (other > best || (other == best && other_index < index)) best = other, index = other_index;
        }
        if (lane == 0) tokens[blockIdx.x] = index == INT_MAX ? 0 : index;
    }
}

__global__ void finish_step_kernel(int32_t *position_of_slot, const int32_t *decoding, const int32_t *tokens,
                                   int32_t slots, int32_t *history, int32_t history_rows,
                                   const int32_t *step_counter) {
    const int32_t s = blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= slots) return;
    if (decoding[s] != 0) position_of_slot[s] += 1;
    history[int64_t(*step_counter % history_rows) * slots + s] = tokens[s];
}

__global__ void advance_counter_kernel(int32_t *step_counter) { *step_counter += 1; }

// Up to kUploadChunk values per launch: 4008 bytes of arguments, within the
// 4 KiB every CUDA version accepts.
constexpr int32_t kUploadChunk = 1000;
struct UploadChunk {
    int32_t first, count;
    int32_t values[kUploadChunk];
};

__global__ void upload_kernel(int32_t *dst, const UploadChunk chunk) {
    for (int32_t i = threadIdx.x; i < chunk.count; i += blockDim.x) dst[chunk.first + i] = chunk.values[i];
}

__global__ void set_slot_kernel(int32_t *tokens, int32_t *position_of_slot, int32_t slot, int32_t token,
                                int32_t position) {
    tokens[slot] = token;
    position_of_slot[slot] = position;
}

__device__ float uniform(uint64_t seed, uint64_t index) {  // splitmix64 -> [-1, 1)
    uint64_t z = seed + (index + 1) * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return float(z >> 40) * (2.0f / 16777216.0f) - 1.0f;
}

__global__ void fill_random_bf16_kernel(bf16 *x, uint64_t n, float scale, uint64_t seed) {
    for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x)
        x[i] = __float2bfloat16(scale * uniform(seed, i));
}

__global__ void fill_random_f32_kernel(float *x, uint64_t n, float scale, uint64_t seed) {
    for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x)
        x[i] = scale * uniform(seed, i);
}

__global__ void fill_value_kernel(float *x, uint64_t n, float value) {
    for (uint64_t i = blockIdx.x * uint64_t(blockDim.x) + threadIdx.x; i < n; i += uint64_t(gridDim.x) * blockDim.x)
        x[i] = value;
}

}  // namespace

void embed(const int32_t *tokens, int32_t rows, const bf16 *table, int32_t dim, int32_t vocab, float *x,
           cudaStream_t stream) {
    if (rows > 0) embed_kernel<<<unsigned(rows), kThreads, 0, stream>>>(tokens, table, dim, vocab, x);
}

void rmsnorm(const float *x, int64_t x_stride, int32_t rows, int32_t dim, const float *weight, float eps, bf16 *out,
             cudaStream_t stream) {
    if (rows > 0) rmsnorm_kernel<<<unsigned(rows), 512, 0, stream>>>(x, x_stride, dim, weight, eps, out);
}

void rope_split(const RopeArgs &args, cudaStream_t stream) {
    if (args.rows <= 0) return;
    const dim3 grid(unsigned(args.rows), unsigned(args.heads + 2 * args.kv_heads));
    rope_split_kernel<<<grid, unsigned(args.head_dim / 2), 0, stream>>>(args);
}

void swiglu(const bf16 *gate_up, int32_t rows, int32_t mlp, bf16 *out, cudaStream_t stream) {
    const uint64_t n = uint64_t(rows) * uint64_t(mlp);
    if (n > 0) swiglu_kernel<<<blocks_for(n), kThreads, 0, stream>>>(gate_up, rows, mlp, out);
}

void argmax(const float *logits, int32_t rows, int32_t vocab, const int32_t *decoding, int32_t *tokens,
            cudaStream_t stream) {
    if (rows > 0) argmax_kernel<<<unsigned(rows), 1024, 0, stream>>>(logits, vocab, decoding, tokens);
}

void finish_step(int32_t *position_of_slot, const int32_t *decoding, const int32_t *tokens, int32_t slots,
                 int32_t *history, int32_t history_rows, const int32_t *step_counter, cudaStream_t stream) {
    if (slots > 0)
        finish_step_kernel<<<blocks_for(uint64_t(slots)), kThreads, 0, stream>>>(
            position_of_slot, decoding, tokens, slots, history, history_rows, step_counter);
}

void upload_by_value(int32_t *dst, const int32_t *values, int32_t n, cudaStream_t stream) {
    UploadChunk chunk;
    for (int32_t first = 0; first < n; first += kUploadChunk) {
        chunk.first = first;
        chunk.count = n - first < kUploadChunk ? n - first : kUploadChunk;
        for (int32_t i = 0; i < chunk.count; ++i) chunk.values[i] = values[first + i];
        upload_kernel<<<1, kThreads, 0, stream>>>(dst, chunk);
    }
}

void advance_counter(int32_t *step_counter, cudaStream_t stream) {
    advance_counter_kernel<<<1, 1, 0, stream>>>(step_counter);
}

void set_slot(int32_t *tokens, int32_t *position_of_slot, int32_t slot, int32_t token, int32_t position,
              cudaStream_t stream) {
    set_slot_kernel<<<1, 1, 0, stream>>>(tokens, position_of_slot, slot, token, position);
}

void fill_random(bf16 *x, uint64_t n, float scale, uint64_t seed, cudaStream_t stream) {
    if (n > 0) fill_random_bf16_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, scale, seed);
}

void fill_random(float *x, uint64_t n, float scale, uint64_t seed, cudaStream_t stream) {
    if (n > 0) fill_random_f32_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, scale, seed);
}

void fill_value(float *x, uint64_t n, float value, cudaStream_t stream) {
    if (n > 0) fill_value_kernel<<<blocks_for(n), kThreads, 0, stream>>>(x, n, value);
}

}  // namespace engine::cuda
