// Decode attention over the held tokens: one query token per entry, every
// query head of a KV head's group at once (GQA), online softmax in float32.
// The held length is read from the device bookkeeping, so a captured decode
// step attends over what the replayed append left; with a batch, so is the
// sequence of each entry.
//
// grid (kv head, entry), kAttendThreads threads. Each group of kLanes threads
// works on one token at a time (kPerLane elements per thread), the groups
// stride over the tokens, and their partial softmax states are merged at the end.
#pragma once

#include "common.cuh"

namespace rkv::kernels {

constexpr int kAttendThreads = 256;

// The sequence of entry i: from the host's list, or from a batch's device ids.
__device__ __forceinline__ int32_t entry_seq(const AttendParams &p, int32_t entry) {
    return p.batch_ids ? p.batch_ids[entry] : p.seq_ids[entry];
}

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
    const int32_t seq = entry_seq(p, entry);
    if (seq < 0) return;  // batch padding: the whole block leaves, its output rows untouched
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

// ---------------------------------------------------------------------------
// The same attention for head_dim 64, 128 and 256 with the K and V rows
// streamed through shared memory by cp.async, kAttendStages tiles deep: the
// bytes in flight no longer cost registers, so an SM keeps enough reads
// outstanding to run near the copy bandwidth. Same arithmetic, same merge.

constexpr int kAttendStages = 3;
constexpr int kAttendStageBytes = 16384;  // K (and again V) bytes per stage

template <typename T, int D>
struct PipelineShape {
    static constexpr int kTokens = kAttendStageBytes / (D * int(sizeof(T)));  // tokens per stage
    static constexpr size_t kSharedBytes = size_t(kAttendStages) * 2 * kAttendStageBytes;
};

// grid (kv head, entry), kAttendThreads threads, PipelineShape::kSharedBytes
// of dynamic shared memory.
template <typename T, int D>
__global__ void __launch_bounds__(kAttendThreads) attend_pipelined_kernel(AttendParams p) {
    using S = AttendShape<T, D>;
    using P = PipelineShape<T, D>;
    static_assert(P::kTokens % S::kTokenGroups == 0, "a stage holds whole rounds of token groups");
    extern __shared__ __align__(16) char attend_shared[];
    const CacheLayer &c = p.cache;
    const int32_t head = blockIdx.x, entry = blockIdx.y;
    const int32_t seq = entry_seq(p, entry);
    if (seq < 0) return;  // batch padding: the whole block leaves, its output rows untouched
    const int32_t groups = c.q_heads / c.kv_heads;
    const int32_t held = c.lengths[seq];
    const int lane = threadIdx.x % S::kLanes, token_group = threadIdx.x / S::kLanes;
    const T *keys = static_cast<const T *>(c.keys) + slot_index(c, seq, head, 0) * D;
    const T *values = static_cast<const T *>(c.values) + slot_index(c, seq, head, 0) * D;
    const int32_t stages = (held + P::kTokens - 1) / P::kTokens;
    constexpr int kChunksPerRow = D * int(sizeof(T)) / 16;

    // Stage s: K rows then V rows of tokens s*kTokens .., zero past `held`.
    auto load_stage = [&](int32_t stage) {
        char *k_stage = attend_shared + (stage % kAttendStages) * 2 * kAttendStageBytes;
        char *v_stage = k_stage + kAttendStageBytes;
        for (int index = threadIdx.x; index < P::kTokens * kChunksPerRow; index += blockDim.x) {
            const int32_t t = stage * P::kTokens + index / kChunksPerRow;
            const int chunk = index % kChunksPerRow;
            const bool valid = t < held;
            const int64_t offset = valid ? int64_t(t) * D * int64_t(sizeof(T)) + chunk * 16 : 0;
            cp_async_16(shared_address(k_stage + index * 16), reinterpret_cast<const char *>(keys) + offset, valid);
            cp_async_16(shared_address(v_stage + index * 16), reinterpret_cast<const char *>(values) + offset, valid);
        }
        cp_async_commit();
    };

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
                const int e = lane * S::kPerLane + i;
                acc[g][i] = 0.0f;
                q[g][i] = g < count ? load_any(p.q.data, p.q.dtype,
                                               entry * p.q.stride_seq + (int64_t(head) * groups + g0 + g) * p.q.stride_head + e)
                                    : 0.0f;
            }
        }
        __syncthreads();  // the previous pass (or group) is done with the shared memory
        for (int32_t s = 0; s < kAttendStages - 1; ++s)
            if (s < stages) load_stage(s);
        for (int32_t stage = 0; stage < stages; ++stage) {
            // Wait for this stage (the later ones may still be in flight).
            if (stage + 1 < stages) cp_async_wait<kAttendStages - 2>();
            else cp_async_wait<0>();
            __syncthreads();
            if (stage + kAttendStages - 1 < stages) load_stage(stage + kAttendStages - 1);
            const char *k_stage = attend_shared + (stage % kAttendStages) * 2 * kAttendStageBytes;
            const char *v_stage = k_stage + kAttendStageBytes;
#pragma unroll
            for (int round = 0; round < P::kTokens / S::kTokenGroups; ++round) {
                const int local = round * S::kTokenGroups + token_group;
                const bool valid = stage * P::kTokens + local < held;
                float k[S::kPerLane], v[S::kPerLane];
                load_lane<T, S>(reinterpret_cast<const T *>(k_stage) + local * D, lane, D, k);
                load_lane<T, S>(reinterpret_cast<const T *>(v_stage) + local * D, lane, D, v);
#pragma unroll
                for (int g = 0; g < S::kMaxGroup; ++g) {
                    float dot = 0.0f;
#pragma unroll
                    for (int i = 0; i < S::kPerLane; ++i) dot += q[g][i] * k[i];
                    const float logit = lanes_sum<S::kLanes>(dot) * p.scale;
                    if (!valid) continue;
                    const float new_max = fmaxf(running_max[g], logit);
                    const float correction = expf(running_max[g] - new_max);
                    const float weight = expf(logit - new_max);
                    running_sum[g] = running_sum[g] * correction + weight;
#pragma unroll
                    for (int i = 0; i < S::kPerLane; ++i) acc[g][i] = acc[g][i] * correction + weight * v[i];
                    running_max[g] = new_max;
                }
            }
        }
        // Merge the token groups through the (now idle) stage memory.
        __syncthreads();
        float *acc_shared = reinterpret_cast<float *>(attend_shared);       // [groups][kMaxGroup][kRow]
        float *max_shared = acc_shared + S::kTokenGroups * S::kMaxGroup * S::kRow;
        float *sum_shared = max_shared + S::kTokenGroups * S::kMaxGroup;
#pragma unroll
        for (int g = 0; g < S::kMaxGroup; ++g) {
#pragma unroll
            for (int i = 0; i < S::kPerLane; ++i)
                acc_shared[(token_group * S::kMaxGroup + g) * S::kRow + lane * S::kPerLane + i] = acc[g][i];
            if (lane == 0) {
                max_shared[token_group * S::kMaxGroup + g] = running_max[g];
                sum_shared[token_group * S::kMaxGroup + g] = running_sum[g];
            }
        }
        __syncthreads();
        for (int32_t index = threadIdx.x; index < count * D; index += blockDim.x) {
            const int32_t g = index / D, e = index % D;
            float total_max = -INFINITY;
            for (int tg = 0; tg < S::kTokenGroups; ++tg) total_max = fmaxf(total_max, max_shared[tg * S::kMaxGroup + g]);
            float total_sum = 0.0f, total = 0.0f;
            for (int tg = 0; tg < S::kTokenGroups; ++tg) {
                const float m = max_shared[tg * S::kMaxGroup + g];
                if (m == -INFINITY) continue;  // a group that saw no token
                const float scale = expf(m - total_max);
                total_sum += sum_shared[tg * S::kMaxGroup + g] * scale;
                total += acc_shared[(tg * S::kMaxGroup + g) * S::kRow + e] * scale;
            }
            const float out = total_sum > 0.0f ? total / total_sum : 0.0f;
            store_any(const_cast<void *>(p.out.data), p.out.dtype,
                      entry * p.out.stride_seq + (int64_t(head) * groups + g0 + g) * p.out.stride_head + e, out);
        }
    }
}

}  // namespace rkv::kernels
