// The winners of a selection without sorting: a block-wide radix select of the
// `count` largest of a head's selection keys (kernels/common.cuh,
// selection_key: distinct where nonzero; a protected candidate's key is 0).
//
// Where the kept tokens go in position order, only the set of winners
// matters, not their ranks. A bitonic sort of the candidates padded to a power
// of two (2,048 keys for 1,144 candidates: 66 stages, a block barrier each)
// took 1.2 ms of the 6.3 ms selection + compaction phase at batch 64 (H200:
// what replacing it saved). The select finds the count-th largest
// key one 8-bit digit at a time, most significant first: per pass a histogram
// of the next digit over the keys that share the digits found so far, then
// one warp finds the digit's bin from the top. At most 8 passes of 3 barriers;
// it stops early once the keys at and above a bin are exactly the count.
#pragma once

#include "common.cuh"

namespace rkv::kernels {

// flags[j] |= 2 for the `count` largest of keys[0 .. candidates), all threads
// of the block taking part. Needs count <= the number of nonzero keys (the
// winners never include a protected candidate). keys and flags: shared memory.
__device__ void mark_largest_keys(const uint64_t *keys, int32_t candidates, int32_t count, uint8_t *flags) {
    __shared__ int32_t histogram[256];  // keys per digit of this pass, among those matching `prefix`
    __shared__ uint64_t found_prefix;   // the threshold's digits found so far
    __shared__ int32_t found_remaining, found_shift;
    if (count <= 0) return;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t prefix = 0;  // the digits above `shift` of the count-th largest key
    int32_t remaining = count;  // winners still to find among the keys matching prefix
    int32_t shift = 56, last_shift = 0;
    for (; shift >= 0; shift -= 8) {
        for (int b = threadIdx.x; b < 256; b += blockDim.x) histogram[b] = 0;
        __syncthreads();
        const uint64_t above = shift == 56 ? 0 : ~uint64_t(0) << (shift + 8);
        for (int32_t first = 0; first < candidates; first += blockDim.x) {
            const int32_t j = first + threadIdx.x;
            const uint64_t key = j < candidates ? keys[j] : 0;
            const bool counted = j < candidates && (key & above) == prefix;
            const int digit = counted ? int((key >> shift) & 255) : -1;
            // Lanes with the same digit add once (scores cluster: most keys
            // share their top digits, and one address would serialise them).
            const unsigned same = __match_any_sync(0xffffffffu, digit);
            if (counted && lane == __ffs(same) - 1) atomicAdd(&histogram[digit], __popc(same));
        }
        __syncthreads();
        if (warp == 0) {
            // Lane L holds bins 255 - 8L down to 248 - 8L; keys in higher bins come first.
            int32_t bins[8], sum = 0;
#pragma unroll
            for (int u = 0; u < 8; ++u) {
                bins[u] = histogram[255 - 8 * lane - u];
                sum += bins[u];
            }
            int32_t inclusive = sum;
#pragma unroll
            for (int offset = 1; offset < 32; offset <<= 1) {
                const int32_t from = __shfl_up_sync(0xffffffffu, inclusive, offset);
                if (lane >= offset) inclusive += from;
            }
            int32_t higher = inclusive - sum;  // matching keys in the bins above this lane's
            if (higher < remaining && remaining <= inclusive) {
#pragma unroll
                for (int u = 0; u < 8; ++u) {
                    if (remaining <= higher + bins[u]) {
                        found_prefix = prefix | (uint64_t(255 - 8 * lane - u) << shift);
                        found_remaining = remaining - higher;
                        // Every key of the bin wins: the threshold needs no lower digits.
                        found_shift = remaining == higher + bins[u] ? shift : -1;
                        break;
                    }
                    higher += bins[u];
                }
            }
        }
        __syncthreads();
        prefix = found_prefix;
        remaining = found_remaining;
        if (found_shift >= 0) {
            last_shift = found_shift;
            break;
        }
        __syncthreads();  // found_* and the histogram are rewritten by the next pass
    }
    // The winners: keys whose digits down to last_shift are at least the threshold's.
    const uint64_t threshold = prefix >> last_shift;
    for (int32_t j = threadIdx.x; j < candidates; j += blockDim.x)
        if ((keys[j] >> last_shift) >= threshold) flags[j] |= 2;
}

}  // namespace rkv::kernels
