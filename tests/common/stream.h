/* A deterministic token stream for the sequence tests (rollback, fork, budget,
 * batches): the K, V and Q of a token depend only on (variant, position,
 * layer), so two caches fed "the same tokens" by different routes get
 * bit-identical inputs. Variant 0 is the real text; other variants are drafts
 * that a rollback removes. */
#ifndef RKV_TEST_STREAM_H
#define RKV_TEST_STREAM_H

#include "test_util.h"

/* k, v [count, kv_heads, head_dim] and q [count, q_heads, head_dim] of
 * positions first .. first+count-1 at `layer`. */
void stream_tokens(const rkv_cache_params *p, uint64_t variant, int64_t first, int32_t count, int32_t layer,
                   float *k, float *v, float *q);

/* Append those tokens to every layer of `seq` (one call per layer, one entry
 * of `count` tokens, with queries); returns the first failing status. */
rkv_status stream_append(rkv_cache *cache, int32_t seq, uint64_t variant, int64_t first, int32_t count,
                         uint32_t flags);

/* A batch's members: ids[0 .. entries) holds 1 .. entries distinct sequences
 * of 0 .. seqs-1 in random entries, -1 (padding) elsewhere. seqs <= 256. */
void stream_draw_batch(uint64_t *rng, int32_t seqs, int32_t entries, int32_t *ids);

/* The next position of `seq` (its logical length at layer 0). */
int64_t stream_position(const rkv_cache *cache, int32_t seq);

/* Asserts that every score rkv_seq_scores gives for (seq, every layer, every
 * head, every kind) is bit-identical in a and b, and that both give the same
 * status where there is none. */
void assert_same_scores(const rkv_cache *a, int32_t seq_a, const rkv_cache *b, int32_t seq_b);

/* Asserts that sequence seq_a of a and seq_b of b hold the same tokens:
 * lengths, K, V, positions, budget, statistics and scores, bit for bit. */
void assert_same_sequence(const rkv_cache *a, int32_t seq_a, const rkv_cache *b, int32_t seq_b,
                          const char *what);

#endif
