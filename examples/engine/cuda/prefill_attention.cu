// Causal prompt attention over what librkv holds (kernels.h:
// PrefillAttentionArgs). A flash-attention loop in f32 on CUDA cores: the
// prompt is a small share of a reasoning request's work (its decode is the
// benchmark's subject), so this kernel aims at correct and reasonable, not at
// the tensor-core limit.
//
// Block: one KV head g and a tile of query rows; its "query vectors" are the
// tile's rows times the group's query heads (kVectors = 64 of them), so each
// key/value tile loaded into shared memory serves the whole GQA group.
// Per key tile of kKeys = 64 held slots:
//   scores S[v][j] = q_v . k_j  (q pre-scaled), -inf where positions[j] > the
//   row's position or j >= held; online softmax (running max m_v and sum l_v);
//   O[v] = O[v] * exp(m_old - m_new) + sum_j exp(S[v][j] - m_new) V[j].
// Shared memory (floats): Q [64][D+1], K [64][D+1] (the +1 keeps a warp's
// reads of 16 consecutive keys on distinct banks), V [64][D], P [64][65].
#include <cfloat>
#include <climits>

#include "device.h"
#include "kernels.h"

namespace engine::cuda {

namespace {

constexpr int kVectors = 64, kKeys = 64, kThreads = 256;

template <int D>
struct Shared {
    static constexpr int kQ = kVectors * (D + 1), kK = kKeys * (D + 1), kV = kKeys * D, kP = kVectors * (kKeys + 1);
    static constexpr size_t kBytes = size_t(kQ + kK + kV + kP) * 4 + kKeys * 4 + kVectors * 4 * 3 + 16;
};

template <int D>
__global__ void __launch_bounds__(kThreads) prefill_attention_kernel(PrefillAttentionArgs a) {
    extern __shared__ float smem[];
    float *qs = smem;                                   // [kVectors][D + 1]
    float *ks = qs + Shared<D>::kQ;                     // [kKeys][D + 1]
    float *vs = ks + Shared<D>::kK;                     // [kKeys][D]
    float *ps = vs + Shared<D>::kV;                     // [kVectors][kKeys + 1]
    int32_t *key_pos = reinterpret_cast<int32_t *>(ps + Shared<D>::kP);  // [kKeys]
    float *row_max = reinterpret_cast<float *>(key_pos + kKeys);        // [kVectors]
    float *row_sum = row_max + kVectors;                                 // [kVectors]
    float *rescale = row_sum + kVectors;                                 // [kVectors]
    __shared__ int32_t tile_min_position;

    const int tid = threadIdx.x;
    const int group = a.heads / a.kv_heads;
    const int rows_per_block = kVectors / group;  // >= 1 (group <= 64, checked by the launcher)
    const int first_row = blockIdx.x * rows_per_block;
    const int g = blockIdx.y;
    const int vectors = group * rows_per_block;   // <= kVectors
    // vector v = (row first_row + v / group, query head g * group + v % group)

    // Load the queries, scaled.
    for (int idx = tid; idx < kVectors * D; idx += kThreads) {
        const int v = idx / D, d = idx % D;
        const int row = first_row + v / group;
        float value = 0.0f;
        if (v < vectors && row < a.rows)
            value = a.q[(int64_t(row) * a.heads + g * group + v % group) * D + d] * a.scale;
        qs[v * (D + 1) + d] = value;
    }
    if (tid < kVectors) row_max[tid] = -INFINITY, row_sum[tid] = 0.0f;
    const int last_row = min(first_row + rows_per_block, a.rows) - 1;
    const int32_t last_position = a.first_position + last_row;

    // This thread's output: vectors ov + 16 * j (j < 4), dims od + 16 * i (i < D / 16).
    const int ov = tid / 16, od = tid % 16;
    float acc[4][D / 16];
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
        for (int i = 0; i < D / 16; ++i) acc[j][i] = 0.0f;

    const bf16 *k_head = a.k + int64_t(g) * a.stride_head;
    const bf16 *v_head = a.v + int64_t(g) * a.stride_head;
    const int32_t *pos_head = a.positions + int64_t(g) * a.positions_stride_head;

    for (int tile = 0; tile < a.held; tile += kKeys) {
        __syncthreads();  // the previous tile's readers are done
        if (tid == 0) tile_min_position = INT_MAX;
        __syncthreads();
        if (tid < kKeys) {
            const int j = tile + tid;
            key_pos[tid] = j < a.held ? pos_head[j] : INT_MAX;
            atomicMin(&tile_min_position, key_pos[tid]);
        }
        __syncthreads();
        if (tile_min_position > last_position) continue;  // no row of this block sees any key here
        for (int idx = tid; idx < kKeys * D; idx += kThreads) {
            const int kk = idx / D, d = idx % D, j = tile + kk;
            float kv = 0.0f, vv = 0.0f;
            if (j < a.held) {
                kv = __bfloat162float(k_head[int64_t(j) * a.stride_token + d]);
                vv = __bfloat162float(v_head[int64_t(j) * a.stride_token + d]);
            }
            ks[kk * (D + 1) + d] = kv;
            vs[kk * D + d] = vv;
        }
        __syncthreads();

        // Scores: this thread takes vectors sv + 16 * j and keys sk + 16 * i (4 x 4).
        {
            const int sv = tid / 16, sk = tid % 16;
            float s[4][4];
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int i = 0; i < 4; ++i) s[j][i] = 0.0f;
            for (int d = 0; d < D; ++d) {
                float qv[4], kv[4];
#pragma unroll
                for (int j = 0; j < 4; ++j) qv[j] = qs[(sv + 16 * j) * (D + 1) + d];
#pragma unroll
                for (int i = 0; i < 4; ++i) kv[i] = ks[(sk + 16 * i) * (D + 1) + d];
#pragma unroll
                for (int j = 0; j < 4; ++j)
#pragma unroll
                    for (int i = 0; i < 4; ++i) s[j][i] = fmaf(qv[j], kv[i], s[j][i]);
            }
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int v = sv + 16 * j;
                const int32_t row_position = a.first_position + first_row + v / group;
#pragma unroll
                for (int i = 0; i < 4; ++i) {
                    const int kk = sk + 16 * i;
                    const bool visible = v < vectors && key_pos[kk] <= row_position;
                    ps[v * (kKeys + 1) + kk] = visible ? s[j][i] : -INFINITY;
                }
            }
        }
        __syncthreads();

        // Online softmax: 4 threads per vector, 16 keys each.
        {
            const int v = tid / 4, part = tid % 4;
            float *p = ps + v * (kKeys + 1) + part * 16;
            float m = -INFINITY;
#pragma unroll
            for (int i = 0; i < 16; ++i) m = fmaxf(m, p[i]);
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
            m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
            const float old_max = row_max[v];
            const float new_max = fmaxf(old_max, m);
            float sum = 0.0f;
#pragma unroll
            for (int i = 0; i < 16; ++i) {
                const float e = new_max == -INFINITY ? 0.0f : __expf(p[i] - new_max);
                p[i] = e;
                sum += e;
            }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            __syncwarp();
            if (part == 0) {
                const float factor = old_max == -INFINITY ? 0.0f : __expf(old_max - new_max);
                rescale[v] = factor;
                row_sum[v] = row_sum[v] * factor + sum;
                row_max[v] = new_max;
            }
        }
        __syncthreads();

        // O = O * rescale + P V
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const float factor = rescale[ov + 16 * j];
#pragma unroll
            for (int i = 0; i < D / 16; ++i) acc[j][i] *= factor;
        }
        for (int kk = 0; kk < kKeys; ++kk) {
            float p[4], vv[D / 16];
#pragma unroll
            for (int j = 0; j < 4; ++j) p[j] = ps[(ov + 16 * j) * (kKeys + 1) + kk];
#pragma unroll
            for (int i = 0; i < D / 16; ++i) vv[i] = vs[kk * D + od + 16 * i];
#pragma unroll
            for (int j = 0; j < 4; ++j)
#pragma unroll
                for (int i = 0; i < D / 16; ++i) acc[j][i] = fmaf(p[j], vv[i], acc[j][i]);
        }
    }
    __syncthreads();

#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const int v = ov + 16 * j;
        const int row = first_row + v / group;
        if (v >= vectors || row >= a.rows) continue;
        const float l = row_sum[v];
        const float inv = l > 0.0f ? 1.0f / l : 0.0f;
        bf16 *out = a.out + (int64_t(row) * a.heads + g * group + v % group) * D;
#pragma unroll
        for (int i = 0; i < D / 16; ++i) out[od + 16 * i] = __float2bfloat16(acc[j][i] * inv);
    }
}

template <int D>
void launch(const PrefillAttentionArgs &a, cudaStream_t stream) {
    static bool configured = false;  // the dynamic shared-memory limit is raised once per process
    if (!configured) {
        check_cuda(cudaFuncSetAttribute(prefill_attention_kernel<D>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                        int(Shared<D>::kBytes)),
                   "cudaFuncSetAttribute (prefill attention shared memory)");
        configured = true;
    }
    const int group = a.heads / a.kv_heads;
    const int rows_per_block = kVectors / group;
    const dim3 grid(unsigned((a.rows + rows_per_block - 1) / rows_per_block), unsigned(a.kv_heads));
    prefill_attention_kernel<D><<<grid, kThreads, Shared<D>::kBytes, stream>>>(a);
}

}  // namespace

void prefill_attention(const PrefillAttentionArgs &a, cudaStream_t stream) {
    if (a.rows <= 0 || a.held <= 0) return;
    if (a.heads % a.kv_heads != 0 || a.heads / a.kv_heads > kVectors)
        throw Error("prefill attention: " + std::to_string(a.heads / a.kv_heads) +
                    " query heads per KV head (at most 64)");
    if (a.head_dim == 64) launch<64>(a, stream);
    else if (a.head_dim == 128) launch<128>(a, stream);
    else throw Error("prefill attention: head_dim " + std::to_string(a.head_dim) + " (built for 64 and 128)");
    check_launch("prefill attention kernel");
}

}  // namespace engine::cuda
