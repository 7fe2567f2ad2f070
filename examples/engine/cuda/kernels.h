// The engine's own small kernels (the model's, not librkv's): embedding,
// RMSNorm, RoPE, SwiGLU, greedy sampling, the slot bookkeeping of a decode
// step, random weights, and the causal prompt attention over librkv's view.
// Each launcher enqueues on `stream`, never synchronises or allocates, and is
// safe to capture in a CUDA graph; launch errors are thrown by the caller's
// check of cudaGetLastError (check_launch).
#pragma once

#include <cuda_bf16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace engine::cuda {

using bf16 = __nv_bfloat16;

// Throws engine::cuda::Error if the last launch failed.
void check_launch(const char *what);

// x[r, :] = float(table[tokens[r], :]) for r < rows; an out-of-range id reads row 0.
void embed(const int32_t *tokens, int32_t rows, const bf16 *table, int32_t dim, int32_t vocab, float *x,
           cudaStream_t stream);

// out[r, :] = bf16(x[r, :] / rms(x[r, :]) * weight), rows of x at x_stride floats.
void rmsnorm(const float *x, int64_t x_stride, int32_t rows, int32_t dim, const float *weight, float eps, bf16 *out,
             cudaStream_t stream);

// The Q/K/V projections of `rows` rows, rotated and split into the tensors
// librkv reads:
//   qkv [rows, (heads + 2 * kv_heads) * head_dim]  f32: Q heads, then K, then V
// becomes q [rows, heads, head_dim], k and v [rows, kv_heads, head_dim] (f32).
// Row r's position is position_of_row[r] when that is not NULL (decode: every
// slot's next position), else first_position + r (a prompt piece).
// Pairs (2i, 2i+1) of Q and K rotate by position * freq[i] (GGUF's Llama layout).
struct RopeArgs {
    const float *qkv;
    int32_t rows;
    const int32_t *position_of_row;
    int32_t first_position;
    int32_t heads, kv_heads, head_dim;
    const float *freq;  // [head_dim / 2]
    float *q, *k, *v;
};
void rope_split(const RopeArgs &args, cudaStream_t stream);

// out[r, j] = bf16(silu(g) * u) with g = gate_up[r, j], u = gate_up[r, mlp + j].
void swiglu(const bf16 *gate_up, int32_t rows, int32_t mlp, bf16 *out, cudaStream_t stream);

// tokens[r] = the first index of the largest logits[r, :] (NaN counts as
// -inf), for r < rows where decoding is NULL or decoding[r] != 0; the other
// rows keep their token (a slot that sits out a step resumes with it).
void argmax(const float *logits, int32_t rows, int32_t vocab, const int32_t *decoding, int32_t *tokens,
            cudaStream_t stream);

// End of a decode step: position_of_slot[s] += 1 for every slot s with
// decoding[s] != 0, and history[step % history_rows, s] = tokens[s] for every
// slot, where step is *step_counter (read here, advanced by advance_counter).
void finish_step(int32_t *position_of_slot, const int32_t *decoding, const int32_t *tokens, int32_t slots,
                 int32_t *history, int32_t history_rows, const int32_t *step_counter, cudaStream_t stream);
void advance_counter(int32_t *step_counter, cudaStream_t stream);

// dst[0 .. n) = values[0 .. n) (host memory), carried to the device as kernel
// arguments: no staging buffer, no synchronisation, and `values` may change as
// soon as this returns (a pageable cudaMemcpyAsync may wait for the stream).
void upload_by_value(int32_t *dst, const int32_t *values, int32_t n, cudaStream_t stream);

// tokens[slot] = token, position_of_slot[slot] = position (values travel as launch arguments).
void set_slot(int32_t *tokens, int32_t *position_of_slot, int32_t slot, int32_t token, int32_t position,
              cudaStream_t stream);

// Deterministic uniform values in [-scale, scale) from (seed, index).
void fill_random(bf16 *x, uint64_t n, float scale, uint64_t seed, cudaStream_t stream);
void fill_random(float *x, uint64_t n, float scale, uint64_t seed, cudaStream_t stream);
void fill_value(float *x, uint64_t n, float value, cudaStream_t stream);

// Causal attention of the `rows` tokens of one sequence just appended to a
// layer, over everything the sequence holds there (librkv's rkv_view, bf16):
//   out[r, h, :] = softmax_j(scale * q[r, h] . K[g][j]) V[g][j],  g = h / group,
// over the held slots j with positions[g][j] <= first_position + r (librkv
// keeps each token's original position beside it; compression reorders slots).
struct PrefillAttentionArgs {
    const float *q;  // [rows, heads, head_dim]
    const bf16 *k, *v;         // [kv_heads, held, head_dim] at the strides below
    const int32_t *positions;  // [kv_heads, held]
    int64_t stride_head, stride_token, positions_stride_head;
    int32_t held, rows, first_position;
    int32_t heads, kv_heads, head_dim;
    float scale;
    bf16 *out;  // [rows, heads * head_dim]
};
void prefill_attention(const PrefillAttentionArgs &args, cudaStream_t stream);

}  // namespace engine::cuda
