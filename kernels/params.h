// Plain parameter structs of the CUDA kernels, shared by the host side
// (src/cuda) and the device code (kernels/*.cuh). No CUDA header: the host
// compiler sees this file too. Every tensor is described by element strides;
// the innermost (head_dim) axis is contiguous. Layouts of the cache memory are
// the ones of src/backend.h.
//
// Everything a kernel needs from the host travels by value in these structs
// (kernel parameters), never through host memory the device reads later: a
// launch captured in a CUDA graph carries its own copy, so a replay does the
// same work whatever the host has done since.
#pragma once

#include <cstdint>

#include "core/method.h"
#include "rkv/rkv.h"

namespace rkv::kernels {

// The cache memory of one layer. Slot (seq, head, slot) of K/V/positions/state
// is ((seq * kv_heads + head) * capacity + slot), times head_dim for K and V.
struct CacheLayer {
    void *keys;              // [max_seqs, kv_heads, capacity, head_dim] storage dtype
    void *values;            // [max_seqs, kv_heads, capacity, head_dim] storage dtype
    int32_t *positions;      // [max_seqs, kv_heads, capacity] original positions
    float *state;            // [max_seqs, kv_heads, capacity] H2O's accumulated attention
    void *queries;           // [max_seqs, q_heads, window, head_dim] ring by position % window
    void *history_queries;   // [max_seqs, q_heads, history, head_dim] ring by position % history
                             // (history 0: none): what a rollback restores the window from,
                             // and H2O's pending queries
    // Device-side bookkeeping of the layer ([max_seqs] each). The kernels read
    // and advance these, so captured work replays at the right slots.
    int32_t *lengths;        // held tokens per head (the layer view's `lengths`)
    int32_t *logical;        // tokens appended: the next token's position
    int32_t *queries_valid;  // most recent tokens whose queries are in the ring (<= window)
    int32_t *compressions;   // compressions so far (seeds Random)
    int32_t *dropped;        // tokens a replayed append found no room for
    int32_t *recent;         // tokens appended since the last compression
    int32_t *pending;        // H2O: latest tokens whose query is not accumulated yet
    int32_t layer;
    int32_t max_seqs;
    int32_t kv_heads;
    int32_t q_heads;
    int32_t capacity;
    int32_t head_dim;
    int32_t window;
    int32_t dtype;           // storage rkv_dtype
    int32_t history;         // queries the history holds (window + max_rollback), or 0
    int32_t max_rollback;    // H2O commits a query once it is this many tokens old
    // FP8_E4M3 storage: the scale of each K and V row, value = fp8 * scale;
    // nullptr for the other dtypes.
    float *k_scale;          // [max_seqs, kv_heads, capacity]
    float *v_scale;          // [max_seqs, kv_heads, capacity]
};

// A caller's tensor: element (entry, token, head, e) at
// data + entry*stride_seq + token*stride_token + head*stride_head + e.
struct Tensor {
    const void *data;
    int32_t dtype;           // rkv_dtype
    int32_t pad_;
    int64_t stride_seq;
    int64_t stride_token;
    int64_t stride_head;
};

// ---------------------------------------------------------------------------
// append

// One entry's run of tokens into one sequence. The destination slot and
// position are read from the device bookkeeping, not from the host.
struct AppendChunk {
    int32_t seq;
    int32_t entry;           // index along stride_seq
    int32_t count;           // tokens
    int32_t pad_;
    int64_t token0;          // first token along stride_token (offset + first token)
};

constexpr int kMaxAppendChunks = 256;  // chunks per launch (6 KiB of parameters)

struct AppendParams {
    CacheLayer cache;
    const int32_t *batch_ids; // non-NULL: a batch append; chunk i is entry i of the batch, one
                              // token at row i, for the sequence batch_ids[i] (-1: padding);
                              // `chunks` is unused and num_chunks is the batch's entries
    Tensor k;                // [entry, token, kv_heads, head_dim]
    Tensor v;                // [entry, token, kv_heads, head_dim]
    Tensor q;                // [entry, token, q_heads, head_dim]; data NULL = no queries
    unsigned *counter;       // grid-completion counter (last block advances the lengths)
    int32_t num_chunks;
    int32_t max_count;       // largest chunks[i].count
    int32_t h2o;             // 1: Scorer::AccumulatedAttention: the H2O kernel runs next and
                             // advances the lengths itself
    rkv_pooling pooling;     // H2O
    float scale;             // 1/sqrt(head_dim) (H2O)
    int32_t pad_;
    AppendChunk chunks[kMaxAppendChunks];
};

// ---------------------------------------------------------------------------
// attend

constexpr int kMaxAttendSeqs = 1024;     // entries per launch (4 KiB of parameters)
constexpr int kAttendMaxPartials = 2048; // (entry, KV head, split) partial results per launch

struct AttendParams {
    CacheLayer cache;
    const int32_t *batch_ids; // non-NULL: entry i attends for batch_ids[i] (-1: skipped), and
                              // seq_ids is unused
    Tensor q;                // [entry, q_heads, head_dim] (stride_token unused)
    Tensor out;              // [entry, q_heads, head_dim] (written)
    float scale;
    int32_t num_seqs;
    int32_t groups;          // query heads per KV head
    int32_t splits;          // blocks per (entry, KV head); entries * kv_heads * splits <= kAttendMaxPartials
    // Flash-decoding scratch (splits > 1, except where the tensor-core kernel's
    // splits merge in a cluster: mma_cluster_merge): partial (entry, head, split) =
    // (entry * kv_heads + head) * splits + split.
    float *partial_state;    // [kAttendMaxPartials, groups, 2] max (log2 units) and sum
    float *partial_acc;      // [kAttendMaxPartials, groups, head_dim] weighted V sums
    unsigned *counters;      // [kMaxAttendSeqs, kv_heads] blocks done per pair; 0 between launches
    int32_t seq_ids[kMaxAttendSeqs];
};

// ---------------------------------------------------------------------------
// compression

// One (sequence, layer) to compress. It runs only if the device still holds
// `held` tokens (lengths[seq] == held): eagerly that is always the case; a
// replayed graph compresses exactly the sequences in the state it was captured in.
// The jobs of one group may be of different layers (job_cache in common.cuh
// gives a job its layer's memory).
struct Job {
    int32_t seq;
    int32_t layer;
    int32_t held;
    int32_t keep;
    int32_t protect_below;   // tokens at positions below this are always kept
};

constexpr int kMaxGroupJobs = 64;       // jobs per group: bounds the scratch memory
constexpr int kSelectMaxCapacity = 16384;  // slots per head the selection holds in shared memory
constexpr int kGramTile = 128;          // rows and columns of one key-Gram tile
constexpr int kWPartialLoads = 8;       // the Gram kernels: W's per-tile partials loaded at once

// Scratch of one group of jobs. Per (group job jj, head h) arrays start at
// (jj * kv_heads + h) * capacity (times the extra extent where noted).
struct Scratch {
    float *importance;        // [J, H, cap]  max-pooled attention importance
    float *redundancy;        // [J, H, cap]  R over the candidates
    float *final_scores;      // [J, H, cap]  the score the selection ranks
    float *aux;               // [J, H, cap]  window-averaged attention before pooling
    float *inv_norm;          // [J, H, cap]  1 / (|k| + 1e-8)
    float *first_column;      // [J, H, cap]  S[r, 0] (the reference's slot-0 quirk)
    long long *corrections;   // [J, H, cap]  fixed-point sums of the entries the rule zeroes
    float *partial_sum;       // [J, H, tiles, cap]  slot 0: row sums of S (diagonal excluded)
    int32_t *partial_latest;  // [J, H, tiles, cap]  latest column above tau per slot (-1: none); a row's
                              // answer is the largest over its slots (fused Gram: slot t < the row's tile:
                              // column tile t; its own tile's slot: its own and later tiles; -1 after it)
    float *partial_value;     // [J, H, tiles, cap]  S at that column
    float *partial_w;         // [J, H, tiles, head_dim]  sum of the normalised keys of each key tile
    float *logits;            // [J, H, rows, cap]   window queries x keys (cuBLASLt path), or
                              //                     [J, H, window, cap] logits pooled over the group (fused)
    float *gram;              // [J, H, kGramTile, cap]  raw key Gram rows (cuBLASLt path)
    void *gather;             // [J, H, cap, head_dim] storage dtype (reference-order compaction)
    void *keys_dequantised;   // FP8 storage: [J, H, cap, head_dim] bf16, the keys the scoring reads
                              // (common.cuh scoring_keys); nullptr otherwise
    int8_t *keys_int8;        // int8 Gram path (head_dim 128): [J, H, tiles * kGramTile, 128] int8
                              // round(127 k / (|k| + 1e-8)), each row's 16-byte chunk c at c XOR row % 8
                              // (the SW128 layout, so a tile lands by one bulk copy), rows past the held
                              // length zero; written by the fused importance kernel, in the memory of
                              // `gram` (which only the cuBLASLt path uses), for the group's J jobs;
                              // nullptr otherwise
    unsigned long long *int8_answers;  // int8 Gram path: [J, H, cap] each row's latest column above tau
                                       // + 1 << 32 | S there (0: none), kept by atomicMax; after keys_int8
    unsigned *int8_done;               // int8 Gram path: [J, H] the Gram kernel's blocks done, after the
                                       // answers; both zeroed by the fused importance kernel. The three fit
                                       // in `gram` from capacity 33 on; nullptr with keys_int8
    int32_t tiles;            // ceil(cap / kGramTile)
    int32_t rows;             // G * window: query rows per KV head
};

// CompressParams::scores_in_selection: the per-head scoring steps that
// select_compact_kernel runs before its selection, in the same block, instead
// of importance_pool_kernel and redundancy_kernel: one launch per group
// instead of three, and the scores stay in the block that ranks them (the
// fused and wgmma paths; kernels/README.md, Session 14).
constexpr int32_t kSelectionPools = 1;       // importance_pool_head
constexpr int32_t kSelectionRedundancy = 2;  // redundancy_head

struct CompressParams {
    CacheLayer cache;         // layer 0; a job's layer is `layer` strides further (job_cache)
    int64_t layer_slots;      // slots between layers in K/V (times head_dim), positions, state
    int64_t layer_queries;    // elements between layers in the query ring
    int64_t layer_history;    // elements between layers in the query history
    Scratch scratch;
    Scorer scorer;            // what the candidates rank by (core/method.h)
    int32_t reference_order;  // 1: kept candidates by descending score (reference mode)
    int32_t slot0_quirk;      // 1: a redundancy row without a near-duplicate zeroes S[r, 0]
    rkv_pooling pooling;
    int32_t kernel;           // max-pool width
    float lambda;
    float threshold;
    int32_t score_only;       // 1: compute the scores, leave the cache alone (inspection)
    uint64_t seed;
    int32_t num_jobs;
    int32_t gram_fused;       // 1: latest near-duplicates come from the fused Gram kernel (one
                              // slot per column tile); 0: one slot per row (slot 0: the cuBLASLt
                              // rows, or the wgmma kernel's walk of every column tile)
    int32_t pooled_groups;    // query heads per window row in `logits`: G (cuBLASLt), 1 (fused: pooled)
    int32_t scores_in_selection;  // kSelectionPools | kSelectionRedundancy: select_compact_kernel
                                  // computes those scores itself first (no kernel of their own)
    Job jobs[kMaxGroupJobs];
};

// ---------------------------------------------------------------------------
// reset of one sequence

// The device bookkeeping: kBookkeepingArrays int32 arrays [layers, max_seqs],
// in this order (src/backend.h CountArray): lengths, logical, queries_valid,
// compressions, dropped, recent, pending.
constexpr int kBookkeepingArrays = 7;

struct ClearParams {
    float *state;            // [layers, max_seqs, kv_heads, capacity]
    int32_t *bookkeeping;    // the kBookkeepingArrays arrays, at stride `book_stride`
    int64_t book_stride;     // layers * max_seqs
    int32_t layers, max_seqs, kv_heads, capacity, seq;
};

// ---------------------------------------------------------------------------
// sequences: rollback, fork (kernels/sequence.cuh)

// The whole cache (every layer), for the kernels that work on a sequence.
struct SequenceParams {
    CacheLayer layer0;       // layer 0; layer l's buffers are at l * the per-layer strides below
    int64_t layer_slots;     // max_seqs * kv_heads * capacity (positions, state; K/V times head_dim)
    int64_t layer_queries;   // max_seqs * q_heads * window * head_dim
    int64_t layer_history;   // max_seqs * q_heads * history * head_dim
    int32_t *bookkeeping;    // the kBookkeepingArrays arrays, at stride `book_stride`
    int64_t book_stride;     // layers * max_seqs
    int32_t layers;
    int32_t seq;             // truncate: the sequence; copy: the destination
    int32_t src;             // copy: the source
    int32_t tokens;          // truncate: tokens removed
};

// Sets a batch's device ids from kernel parameters (no host memory is read later).
constexpr int kMaxBatchSetIds = 2048;
struct BatchSetParams {
    int32_t *ids;            // the batch's device array
    int32_t first;           // entries first .. first+count-1
    int32_t count;
    int32_t values[kMaxBatchSetIds];
};

// H2O: accumulate every pending query (from the history) of each active job
// before it is compressed, into the cache's state, or (inspection, one job)
// into state_out [kv_heads, capacity], a copy of the job's state.
struct CommitParams {
    CacheLayer cache;
    float *state_out;        // NULL: the cache's state
    rkv_pooling pooling;
    float scale;             // 1/sqrt(head_dim)
    int32_t num_jobs;
    Job jobs[kMaxGroupJobs];
};

}  // namespace rkv::kernels
