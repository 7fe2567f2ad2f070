/* The struct layouts of librkv 0.1.0 (git show 72f41ab:include/rkv/rkv.h), as
 * a program compiled against that header lays them out, renamed rkv01_* so
 * that they can sit beside the current header. test_abi_v0_1.c passes them,
 * with struct_size = their sizeof, to the current library. Never edit these:
 * they are what 0.1 binaries send. */
#ifndef RKV_TEST_0_1_LAYOUTS_H
#define RKV_TEST_0_1_LAYOUTS_H

#include <stddef.h>
#include <stdint.h>

typedef struct rkv01_cache_params {
    size_t struct_size;
    int32_t max_seqs;
    int32_t num_layers;
    int32_t num_kv_heads;
    int32_t num_q_heads;
    int32_t head_dim;
    int32_t dtype;          /* rkv_dtype */
    int32_t device_type;    /* rkv_device_type */
    int32_t device_id;
    int32_t method;         /* rkv_method */
    int32_t mode;           /* rkv_mode */
    int32_t budget;
    int32_t buffer;
    int32_t window;
    int32_t kernel;
    float lambda;
    float threshold;
    int32_t pooling;        /* rkv_pooling */
    int32_t sink;
    uint32_t guards;
    int32_t max_prompt_len;
    int32_t max_len;
    uint64_t seed;
    int32_t auto_compress;
} rkv01_cache_params;

typedef struct rkv01_tensor {
    void *data;
    int32_t dtype;
    int32_t num_heads;
    int32_t head_dim;
    int64_t stride_seq;
    int64_t stride_token;
    int64_t stride_head;
} rkv01_tensor;

typedef struct rkv01_append_args {
    size_t struct_size;
    int32_t layer;
    int32_t num_seqs;
    const int32_t *seq_ids;
    const int32_t *num_tokens;
    const int64_t *token_offsets;
    rkv01_tensor k;
    rkv01_tensor v;
    rkv01_tensor q;
    uint32_t flags;
} rkv01_append_args;

typedef struct rkv01_kv_view {
    size_t struct_size;
    void *k;
    void *v;
    int32_t *positions;
    int32_t dtype;
    int32_t device_type;
    int32_t device_id;
    int32_t num_kv_heads;
    int32_t head_dim;
    int32_t length;
    int64_t logical_length;
    int64_t stride_head;
    int64_t stride_token;
    int64_t positions_stride_head;
} rkv01_kv_view;

typedef struct rkv01_layer_view {
    size_t struct_size;
    void *k;
    void *v;
    int32_t *positions;
    const int32_t *lengths;
    int32_t dtype;
    int32_t device_type;
    int32_t device_id;
    int32_t max_seqs;
    int32_t num_kv_heads;
    int32_t head_dim;
    int32_t capacity;
    int64_t stride_seq;
    int64_t stride_head;
    int64_t stride_token;
    int64_t positions_stride_seq;
    int64_t positions_stride_head;
} rkv01_layer_view;

typedef struct rkv01_stats {
    size_t struct_size;
    uint64_t bytes_allocated;
    uint64_t bytes_kv_capacity;
    uint64_t bytes_kv_held;
    uint64_t bytes_kv_full;
    uint64_t tokens_appended;
    uint64_t tokens_held;
    uint64_t tokens_evicted;
    uint64_t compressions;
    double compress_seconds;
} rkv01_stats;

#endif
