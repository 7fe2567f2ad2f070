// Decode attention over the held tokens: one query token per entry, every
// query head of a KV head's group at once (GQA), online softmax in float32.
// The held length is read from the device bookkeeping, so a captured decode
// step attends over what the replayed append left.
//
// grid (kv head, entry), kAttendThreads threads. Each group of kLanes threads
// works on one token at a time (kPerLane elements per thread), the groups
// stride over the tokens, and their partial softmax states are merged at the end.
#pragma once

#include "common.cuh"

namespace rkv::kernels {

constexpr int kAttendThreads = 256;

template <typename T, int D>
struct AttendShape {
    static constexpr bool kVectorized = D > 0;  // D == 0: any head_dim <= 256, strided lanes
    static constexpr int kPerVector = 16 / int(sizeof(T));
    static constexpr int kPerLane = !kVectorized ? 8 : (D / kPerVector <= 32 ? kPerVector : D / 32);
    static constexpr int kLanes = kVectorized ? D / kPerLane : 32;
    static constexpr int kTokenGroups = kAttendThreads / kLanes;
    static constexpr int kMaxGroup = kPerLane >= 8 ? 4 : 8;  // query heads per pass
    static constexpr int kRow = kLanes * kPerLane;           // accumulator row (>= head_dim)
};

// Element i of this lane in a row.
template <typename S>
__device__ __forceinline__ int lane_element(int lane, int i) {
    return S::kVectorized ? lane * S::kPerLane + i : lane + 32 * i;
}

template <typename T, typename S>
__device__ __forceinline__ void load_lane(const T *row, int lane, int d, float (&out)[S::kPerLane]) {
    if constexpr (S::kVectorized) {
        const uint4 *v = reinterpret_cast<const uint4 *>(row + lane * S::kPerLane);
#pragma unroll
        for (int u = 0; u < S::kPerLane / S::kPerVector; ++u) unpack16(v[u], out + u * S::kPerVector, T());
    } else {
#pragma unroll
        for (int i = 0; i < S::kPerLane; ++i) {
            const int e = lane + 32 * i;
            out[i] = e < d ? to_float(row[e]) : 0.0f;
        }
    }
}

// Sum over the kLanes lanes of a token group (they are consecutive in a warp).
template <int kLanes>
__device__ __forceinline__ float lanes_sum(float v) {
#pragma unroll
    for (int offset = kLanes / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

template <typename T, int D>
__global__ void __launch_bounds__(kAttendThreads) attend_kernel(AttendParams p) {
    using S = AttendShape<T, D>;
    constexpr int kUnroll = 2;  // tokens whose rows are loaded before any is used
    __shared__ float acc_shared[S::kTokenGroups][S::kMaxGroup][S::kRow];
    __shared__ float max_shared[S::kTokenGroups][S::kMaxGroup];
    __shared__ float sum_shared[S::kTokenGroups][S::kMaxGroup];
    const CacheLayer &c = p.cache;
    const int32_t head = blockIdx.x, entry = blockIdx.y;
    const int32_t seq = p.seq_ids[entry];
    const int32_t d = D > 0 ? D : c.head_dim;
    const int32_t groups = c.q_heads / c.kv_heads;
    const int32_t held = c.lengths[seq];
    const int lane = threadIdx.x % S::kLanes, token_group = threadIdx.x / S::kLanes;
    const T *keys = static_cast<const T *>(c.keys) + slot_index(c, seq, head, 0) * d;
    const T *values = static_cast<const T *>(c.values) + slot_index(c, seq, head, 0) * d;

    for (int32_t g0 = 0; g0 < groups; g0 += S::kMaxGroup) {
        const int32_t count = min(S::kMaxGroup, groups - g0);
        float q[S::kMaxGroup][S::kPerLane];
        float running_max[S::kMaxGroup], running_sum[S::kMaxGroup], acc[S::kMaxGroup][S::kPerLane];
#pragma unroll
        for (int g = 0; g < S::kMaxGroup; ++g) {
            running_max[g] = -INFINITY;
            running_sum[g] = 0.0f;
#pragma unroll
            for (int i = 0; i < S::kPerLane; ++i) {
                const int e = lane_element<S>(lane, i);
                acc[g][i] = 0.0f;
                q[g][i] = (g < count && e < d)
                              ? load_any(p.q.data, p.q.dtype,
                                         entry * p.q.stride_seq + (int64_t(head) * groups + g0 + g) * p.q.stride_head + e)
                              : 0.0f;
            }
        }
        // The loop bound is uniform over the block: the lanes of every warp stay
        // together for the shuffles, whatever token each group is on.
        for (int32_t base = 0; base < held; base += S::kTokenGroups * kUnroll) {
            float k[kUnroll][S::kPerLane], v[kUnroll][S::kPerLane];
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const int32_t t = min(base + u * S::kTokenGroups + token_group, held - 1);  // clamped rows are ignored
                load_lane<T, S>(keys + int64_t(t) * d, lane, d, k[u]);
                load_lane<T, S>(values + int64_t(t) * d, lane, d, v[u]);
            }
#pragma unroll
            for (int u = 0; u < kUnroll; ++u) {
                const bool valid = base + u * S::kTokenGroups + token_group < held;
#pragma unroll
                for (int g = 0; g < S::kMaxGroup; ++g) {
                    float dot = 0.0f;
#pragma unroll
                    for (int i = 0; i < S::kPerLane; ++i) dot += q[g][i] * k[u][i];
                    const float logit = lanes_sum<S::kLanes>(dot) * p.scale;
                    if (!valid) continue;
                    const float new_max = fmaxf(running_max[g], logit);
                    const float correction = expf(running_max[g] - new_max);
                    const float weight = expf(logit - new_max);
                    running_sum[g] = running_sum[g] * correction + weight;
#pragma unroll
                    for (int i = 0; i < S::kPerLane; ++i) acc[g][i] = acc[g][i] * correction + weight * v[u][i];
                    running_max[g] = new_max;
                }
            }
        }
        // Merge the token groups.
#pragma unroll
        for (int g = 0; g < S::kMaxGroup; ++g) {
#pragma unroll
            for (int i = 0; i < S::kPerLane; ++i) acc_shared[token_group][g][lane_element<S>(lane, i)] = acc[g][i];
            if (lane == 0) {
                max_shared[token_group][g] = running_max[g];
                sum_shared[token_group][g] = running_sum[g];
            }
        }
        __syncthreads();
        for (int32_t index = threadIdx.x; index < count * d; index += blockDim.x) {
            const int32_t g = index / d, e = index % d;
            float total_max = -INFINITY;
            for (int tg = 0; tg < S::kTokenGroups; ++tg) total_max = fmaxf(total_max, max_shared[tg][g]);
            float total_sum = 0.0f, total = 0.0f;
            for (int tg = 0; tg < S::kTokenGroups; ++tg) {
                if (max_shared[tg][g] == -INFINITY) continue;  // a group that saw no token
                const float scale = expf(max_shared[tg][g] - total_max);
                total_sum += sum_shared[tg][g] * scale;
                total += acc_shared[tg][g][e] * scale;
            }
            const float out = total_sum > 0.0f ? total / total_sum : 0.0f;
            store_any(const_cast<void *>(p.out.data), p.out.dtype,
                      entry * p.out.stride_seq + (int64_t(head) * groups + g0 + g) * p.out.stride_head + e, out);
        }
        __syncthreads();  // shared memory is reused by the next pass over the group
    }
}

}  // namespace rkv::kernels
