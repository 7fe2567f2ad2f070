// Launchers of the CUDA kernels: the only entry points the host side
// (src/cuda) calls. Each enqueues on `stream`, never synchronises or
// allocates, and returns the launch's error (cudaSuccess when it was queued).
// Compile-time dispatch over the storage dtype and head dim happens inside.
#pragma once

#include <cuda_runtime_api.h>

#include "params.h"
#include "row_maps.h"

namespace rkv::kernels {

// Raise the dynamic shared-memory limits the kernels of a cache with this
// shape need (call once per device before the first launch). capacity 0: no
// selection kernels (FULL).
cudaError_t configure_kernels(int32_t dtype, int32_t head_dim, int32_t capacity, int32_t groups);
// (its parts, one per file of kernels)
cudaError_t configure_append_kernels(int32_t dtype, int32_t head_dim, int32_t capacity, int32_t groups);
cudaError_t configure_gram_kernels(int32_t dtype, int32_t head_dim);
cudaError_t configure_attend_kernels(int32_t dtype);
cudaError_t configure_sequence_kernels(int32_t dtype, int32_t head_dim, int32_t capacity, int32_t groups);

// Scatter K/V/Q of every chunk (and, with p.h2o, accumulate H2O's attention,
// after committing the pending queries the append pushes past max_rollback),
// then advance the device bookkeeping. With p.batch_ids, the chunks are the
// batch's entries.
cudaError_t launch_append(const AppendParams &p, cudaStream_t stream);

// Decode attention over the held tokens of every entry: p.splits blocks per
// (entry, KV head) of the chosen kernel: the split kernel's wide or narrow
// shape (kernels/attend.cuh), the tensor-core kernel (kernels/attend_mma.cuh);
// the generic kernel, with splits 1, where attend_splits_apply is false.
// The tensor-core kernel copies 16-bit K/V rows with the copy engine (TMA):
// `maps` describes the layer's rows (make_attend_row_maps), NULL for E4M3
// rows and the other kernels.
enum class AttendKernel : int32_t { kWide, kNarrow, kTensor };
cudaError_t launch_attend(const AttendParams &p, AttendKernel kernel, const AttendRowMaps *maps, cudaStream_t stream);
// Whether the tensor-core kernel reads this layout through row maps (16-bit
// rows it serves), and the maps of one layer's rows (keys, values: the layer's
// first row; rows of head_dim elements each).
bool attend_uses_row_maps(int32_t dtype, int32_t head_dim);
cudaError_t make_attend_row_maps(int32_t dtype, int32_t head_dim, const void *keys, const void *values, int64_t rows,
                                 AttendRowMaps *maps);
// Whether the split (flash-decoding) kernels serve this head_dim, the narrow
// shape these groups, and the tensor-core kernel this storage dtype.
bool attend_splits_apply(int32_t head_dim);
bool attend_narrow_exists(int32_t head_dim, int32_t groups);
bool attend_tensor_exists(int32_t dtype, int32_t head_dim);
// Blocks of a split kernel the current device runs at once (SMs x blocks per
// SM; 0 where the kernel does not serve the cache). The tensor-core kernel's
// shared memory depends on the query dtype: counted for the storage's own
// 16-bit dtype (bf16 for E4M3).
int32_t attend_resident_blocks(int32_t dtype, int32_t head_dim, int32_t groups, AttendKernel kernel);
// How rkv_attend runs `pairs` (entry, KV head) pairs of up to `held` tokens
// of the cache, given the blocks of each kernel the GPU holds at once: the measured rule
// (kernels/README.md).
struct AttendPlan {
    int32_t splits;  // blocks per (entry, KV head)
    AttendKernel kernel;
};
struct AttendResidency {
    int32_t wide, narrow, tensor;  // resident blocks per kernel (0: it does not serve the cache)
    int32_t sms;                   // the GPU's SMs
    bool tensor_row_maps;          // the tensor-core kernel copies the rows by row maps (attend_uses_row_maps)
};
AttendPlan choose_attend_plan(int32_t pairs, int32_t held, const AttendResidency &resident);
// The splits alone for `kernel` (forced or chosen): choose_attend_splits with
// the kernel's measured parameters.
int32_t choose_kernel_splits(AttendKernel kernel, int32_t pairs, int32_t held, const AttendResidency &resident);
// One split when the pairs fill half of `fill_blocks`, else up to
// `fill_blocks` blocks, each split keeping at least `min_split_tokens` tokens.
int32_t choose_attend_splits(int32_t pairs, int32_t held, int32_t fill_blocks, int32_t min_split_tokens);

// --- compression of one group of jobs (see kernels/params.h Job) ----------
// FP8 storage: the held keys of every job as bf16 into scratch.keys_dequantised,
// before the kernels that score them (kernels/fp8.cuh).
cudaError_t launch_dequantize_keys(const CompressParams &p, cudaStream_t stream);
cudaError_t launch_key_norms(const CompressParams &p, cudaStream_t stream);
cudaError_t launch_importance_pool(const CompressParams &p, cudaStream_t stream);
cudaError_t launch_gram_row_stats(const CompressParams &p, int32_t first_row, int32_t max_rows,
                                  cudaStream_t stream);
// The fused tensor-core kernels: f16/bf16 storage, head_dim 64, 128 or 256,
// at most 64 window query rows per KV head (G * window). The importance kernel
// writes pooled logits (select_compact_kernel then pools them: kSelectionPools)
// and, with_norms, the key norms and W that the Gram kernel needs.
bool gram_fused_supported(int32_t dtype, int32_t head_dim, int32_t rows);
cudaError_t launch_importance_fused(const CompressParams &p, int32_t max_held, int32_t with_norms,
                                    cudaStream_t stream);
cudaError_t launch_gram_fused(const CompressParams &p, int32_t max_held, cudaStream_t stream);
// The same key Gram on warpgroup MMA (wgmma): where the fused kernels apply, on
// a device of compute capability major.minor 9.0 (sm_90a code).
bool gram_wgmma_supported(int32_t dtype, int32_t head_dim, int32_t rows, int major, int minor);
cudaError_t configure_gram_wgmma_kernels(int32_t dtype, int32_t head_dim);
cudaError_t launch_gram_wgmma(const CompressParams &p, int32_t max_held, cudaStream_t stream);
// The same with an int8 filter before the exact products (head_dim 128, where
// the wgmma kernel applies; needs scratch.keys_int8, which the fused
// importance kernel then fills).
bool gram_int8_supported(int32_t dtype, int32_t head_dim, int32_t rows, int32_t capacity, int major, int minor);
// Where the int8 path's scratch lies in the cuBLASLt path's Gram rows
// (`gram`: [heads, 128, capacity] f32, no memory of its own): the int8 keys
// [heads, tiles * 128, 128], each row's answer [heads, capacity] uint64, the
// Gram kernel's blocks done [heads] uint32 (kernels/params.h). All null where
// they do not fit (capacity below 33: gram_int8_supported refuses those).
struct GramInt8Scratch {
    int8_t *keys;
    unsigned long long *answers;
    unsigned *done;
};
GramInt8Scratch gram_int8_scratch(void *gram, int64_t heads, int32_t capacity);
cudaError_t configure_gram_int8_kernels(int32_t dtype, int32_t head_dim);
cudaError_t launch_gram_int8(const CompressParams &p, int32_t max_held, cudaStream_t stream);
cudaError_t launch_redundancy(const CompressParams &p, cudaStream_t stream);
cudaError_t launch_keydiff(const CompressParams &p, cudaStream_t stream);
cudaError_t launch_select_compact(const CompressParams &p, cudaStream_t stream);
cudaError_t launch_commit(const CompressParams &p, cudaStream_t stream);

// Zero the scorer state and device bookkeeping of one sequence, every layer.
cudaError_t launch_clear_sequence(const ClearParams &p, cudaStream_t stream);

// --- sequences (kernels/sequence.cuh) --------------------------------------
// H2O with max_rollback > 0: the pending queries an append pushes past
// max_rollback (launch_append calls it), and every pending query of each
// active job before its compression (or of jobs[0] into p.state_out).
cudaError_t launch_h2o_commit_before_append(const AppendParams &p, cudaStream_t stream);
cudaError_t launch_h2o_commit_all(const CommitParams &p, cudaStream_t stream);
// Rollback of p.tokens tokens of p.seq, every layer.
cudaError_t launch_truncate(const SequenceParams &p, cudaStream_t stream);
// Every layer of p.src onto p.seq.
cudaError_t launch_copy(const SequenceParams &p, cudaStream_t stream);
// A batch's device ids.
cudaError_t launch_batch_set(const BatchSetParams &p, cudaStream_t stream);

}  // namespace rkv::kernels
