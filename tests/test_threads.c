/* Threading rules of the header: distinct caches are independent and may be
 * used from different threads concurrently, and the last error message is
 * thread-local.
 *
 * Worker threads never call CMocka (its assertions longjmp into the main
 * thread's test): they record statuses and results in their own structs, and
 * the main thread checks them after joining. */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "test_util.h"

enum {
    THREADS = 6,
    ROUNDS = 3, /* full decodes per thread in the concurrent phase */
    SEQS = 2,
    LAYERS = 2,
    KV = 2,
    QH = 4,
    D = 16,
    BUDGET = 16,
    BUFFER = 8,
    WINDOW = 4,
    CAPACITY = BUDGET + BUFFER,
    PROMPT = 20, /* prompt tokens per sequence, appended in one call per layer */
    STEPS = 200  /* decode steps: one batched append (and attend) per layer */
};

/* ---------------------------------------------------------------------------
 * One full decode, callable from any thread
 * ------------------------------------------------------------------------- */

/* What a decode leaves behind: the kept positions of every (seq, layer, head),
 * the lengths, the compression count and a checksum of the attention outputs. */
typedef struct decode_result {
    rkv_status status; /* first failure, RKV_OK if none */
    char where[160];   /* the failing call and its message */
    int32_t held[SEQS][LAYERS];
    int64_t logical[SEQS][LAYERS];
    int32_t positions[SEQS][LAYERS][KV][CAPACITY];
    uint64_t compressions;
    double attend_sum; /* sum of every attention output element */
} decode_result;

/* One thread's work: the params to create its cache with, a seed for its data. */
typedef struct decode_job {
    rkv_cache_params params;
    uint64_t seed;
} decode_job;

#define CHECK(result, call)                                                   \
    do {                                                                      \
        rkv_status status_ = (call);                                          \
        if (status_ != RKV_OK) {                                              \
            (result)->status = status_;                                       \
            snprintf((result)->where, sizeof(result)->where, "%s: %s", #call, \
                     rkv_error_message());                               \
            goto done;                                                        \
        }                                                                     \
    } while (0)

/* Prompt, then STEPS decode steps of both sequences in one call per layer, each
 * followed by a decode attention; auto-compression runs several times. Uses no
 * CMocka and no state outside its arguments, so any thread can run it. */
static void run_decode(const decode_job *job, decode_result *result) {
    memset(result, 0, sizeof *result);
    uint64_t rng = job->seed;
    const size_t prompt_kv = (size_t)PROMPT * KV * D, prompt_q = (size_t)PROMPT * QH * D;
    float *k = malloc(prompt_kv * sizeof *k), *v = malloc(prompt_kv * sizeof *v);
    float *q = malloc(prompt_q * sizeof *q), *out = malloc((size_t)SEQS * QH * D * sizeof *out);
    rkv_cache *cache = NULL;
    if (!k || !v || !q || !out) {
        result->status = RKV_ERR_OUT_OF_MEMORY;
        snprintf(result->where, sizeof result->where, "malloc");
        goto done;
    }
    CHECK(result, rkv_cache_create(&job->params, &cache));

    /* Prompt: one call per (sequence, layer), flagged as prompt. */
    for (int32_t seq = 0; seq < SEQS; ++seq) {
        for (int32_t layer = 0; layer < LAYERS; ++layer) {
            test_fill_normal(k, prompt_kv, &rng);
            test_fill_normal(v, prompt_kv, &rng);
            test_fill_normal(q, prompt_q, &rng);
            int32_t tokens = PROMPT;
            rkv_append_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.layer = layer;
            a.num_seqs = 1;
            a.seq_ids = &seq;
            a.num_tokens = &tokens;
            a.k = test_tensor(k, KV, D);
            a.v = test_tensor(v, KV, D);
            a.q = test_tensor(q, QH, D);
            a.flags = RKV_APPEND_PROMPT;
            CHECK(result, rkv_append(cache, &a, NULL));
        }
    }

    /* Decode: [batch, heads, dim] tensors, one append and one attend per layer. */
    static const int32_t seq_ids[SEQS] = {0, 1};
    for (int step = 0; step < STEPS; ++step) {
        for (int32_t layer = 0; layer < LAYERS; ++layer) {
            test_fill_normal(k, (size_t)SEQS * KV * D, &rng);
            test_fill_normal(v, (size_t)SEQS * KV * D, &rng);
            test_fill_normal(q, (size_t)SEQS * QH * D, &rng);
            rkv_append_args a;
            memset(&a, 0, sizeof a);
            a.struct_size = sizeof a;
            a.layer = layer;
            a.num_seqs = SEQS;
            a.seq_ids = seq_ids;
            a.num_tokens = NULL;
            a.k = test_tensor(k, KV, D);
            a.k.stride_seq = KV * D;
            a.v = test_tensor(v, KV, D);
            a.v.stride_seq = KV * D;
            a.q = test_tensor(q, QH, D);
            a.q.stride_seq = QH * D;
            CHECK(result, rkv_append(cache, &a, NULL));
            rkv_tensor o = test_tensor(out, QH, D);
            o.stride_seq = QH * D;
            CHECK(result, test_attend(cache, layer, SEQS, seq_ids, &a.q, &o, 0.0f, NULL));
            for (int i = 0; i < SEQS * QH * D; ++i) result->attend_sum += out[i];
        }
    }

    for (int32_t seq = 0; seq < SEQS; ++seq) {
        for (int32_t layer = 0; layer < LAYERS; ++layer) {
            CHECK(result, rkv_seq_length(cache, seq, layer, &result->logical[seq][layer],
                                         &result->held[seq][layer]));
            for (int32_t head = 0; head < KV; ++head) {
                int32_t count = 0;
                CHECK(result,
                      rkv_seq_positions(cache, seq, layer, head,
                                         result->positions[seq][layer][head], CAPACITY, &count));
            }
        }
    }
    rkv_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.struct_size = sizeof stats;
    CHECK(result, rkv_cache_stats(cache, RKV_ALL, &stats));
    result->compressions = stats.compressions;

done:
    rkv_cache_destroy(cache);
    free(k);
    free(v);
    free(q);
    free(out);
}

/* The decode of `thread`: each thread gets another method or seed. */
static decode_job make_job(int thread) {
    static const rkv_method methods[] = {RKV_METHOD_RKV,     RKV_METHOD_SNAPKV, RKV_METHOD_H2O,
                                         RKV_METHOD_KEYDIFF, RKV_METHOD_RANDOM, RKV_METHOD_RKV};
    decode_job job;
    job.params = test_params(SEQS, LAYERS, KV, QH, D, methods[thread % 6], BUDGET, BUFFER, WINDOW);
    job.params.seed = 1000u + (uint64_t)thread;
    if (thread == 5) job.params.mode = RKV_MODE_REFERENCE;
    job.seed = 77u * (uint64_t)(thread + 1);
    return job;
}

/* The main thread checks a worker's result against the single-threaded one. */
static void assert_same_result(const decode_result *got, const decode_result *want, int thread) {
    if (got->status != RKV_OK)
        fail_msg("thread %d: %s returned %s", thread, got->where, rkv_status_name(got->status));
    for (int s = 0; s < SEQS; ++s) {
        for (int l = 0; l < LAYERS; ++l) {
            assert_int_equal(got->held[s][l], want->held[s][l]);
            assert_int_equal(got->logical[s][l], want->logical[s][l]);
            for (int h = 0; h < KV; ++h)
                for (int32_t i = 0; i < want->held[s][l]; ++i)
                    if (got->positions[s][l][h][i] != want->positions[s][l][h][i])
                        fail_msg(
                            "thread %d: seq %d layer %d head %d slot %d keeps position %d, "
                            "one thread alone kept %d",
                            thread, s, l, h, i, got->positions[s][l][h][i],
                            want->positions[s][l][h][i]);
        }
    }
    assert_int_equal(got->compressions, want->compressions);
    /* Same code, same inputs, same order of operations: equal up to rounding. */
    if (fabs(got->attend_sum - want->attend_sum) > 1e-6 * (1.0 + fabs(want->attend_sum)))
        fail_msg("thread %d: attention outputs sum to %.9g, one thread alone %.9g", thread,
                 got->attend_sum, want->attend_sum);
}

/* ---------------------------------------------------------------------------
 * Distinct caches on distinct threads
 * ------------------------------------------------------------------------- */

typedef struct worker {
    pthread_t thread;
    pthread_barrier_t *start;
    decode_job job;
    decode_result results[ROUNDS];
} worker;

static void *decode_worker(void *arg) {
    worker *w = arg;
    pthread_barrier_wait(w->start); /* all threads decode at the same time */
    for (int round = 0; round < ROUNDS; ++round) run_decode(&w->job, &w->results[round]);
    return NULL;
}

/* THREADS threads, each with its own cache, decode at once (several methods,
 * several compressions each); every one keeps exactly the positions the same
 * work keeps when done alone on the main thread. */
static void test_concurrent_caches_match_serial(void **state) {
    (void)state;
    static decode_result expected[THREADS];
    static worker workers[THREADS];
    for (int t = 0; t < THREADS; ++t) {
        decode_job job = make_job(t);
        run_decode(&job, &expected[t]);
        if (expected[t].status != RKV_OK)
            fail_msg("serial decode %d: %s returned %s", t, expected[t].where,
                     rkv_status_name(expected[t].status));
        /* The work is what the test claims: tokens were evicted, more than once. */
        assert_int_equal(expected[t].logical[0][0], PROMPT + STEPS);
        assert_true(expected[t].held[0][0] < PROMPT + STEPS);
        assert_true(expected[t].compressions >= (uint64_t)(2 * SEQS * LAYERS));
    }
    /* Distinct threads get distinct work, so that a result crossing threads shows. */
    assert_memory_not_equal(expected[0].positions, expected[1].positions,
                            sizeof expected[0].positions);

    pthread_barrier_t start;
    assert_int_equal(pthread_barrier_init(&start, NULL, THREADS), 0);
    for (int t = 0; t < THREADS; ++t) {
        workers[t].start = &start;
        workers[t].job = make_job(t);
        assert_int_equal(pthread_create(&workers[t].thread, NULL, decode_worker, &workers[t]), 0);
    }
    for (int t = 0; t < THREADS; ++t) assert_int_equal(pthread_join(workers[t].thread, NULL), 0);
    pthread_barrier_destroy(&start);
    for (int t = 0; t < THREADS; ++t)
        for (int round = 0; round < ROUNDS; ++round)
            assert_same_result(&workers[t].results[round], &expected[t], t);
}

/* ---------------------------------------------------------------------------
 * Thread-local error messages
 * ------------------------------------------------------------------------- */

enum { MESSAGE_ROUNDS = 50 };

typedef struct message_worker {
    pthread_t thread;
    pthread_barrier_t *barrier;
    int index;
    int started_empty;     /* the message was "" before this thread's first failure */
    rkv_status status;     /* status of the thread's failing call (the last one) */
    char own[256];         /* the message right after the thread's own failure */
    int overwritten_round; /* first round where the message changed under it, or -1 */
    char seen[256];        /* what it saw then */
    int ok_call_failed;    /* a successful call on its own cache failed */
} message_worker;

/* The failing call of thread `index`: each thread fails in a different way
 * (a different function, or a different bad value), so their messages differ. */
static rkv_status failing_call(int index, rkv_cache *cache) {
    rkv_seq_view view;
    memset(&view, 0, sizeof view);
    view.struct_size = sizeof view;
    switch (index) {
        case 0:
            return rkv_params_default(NULL, sizeof(rkv_cache_params));
        case 1:
            return rkv_view(cache, 0, 1000 + index, &view);
        case 2:
            return rkv_compress(cache, 2000 + index, 0, NULL);
        case 3:
            return rkv_cache_set(cache, RKV_PARAM_BUDGET, 64);
        default:
            return rkv_view(cache, 3000 + index, 0, &view);
    }
}

static void *message_thread(void *arg) {
    message_worker *w = arg;
    w->overwritten_round = -1;
    const char *initial = rkv_error_message();
    w->started_empty = initial != NULL && initial[0] == '\0';
    rkv_cache_params p;
    rkv_cache *cache = NULL;
    if (rkv_params_default(&p, sizeof p) == RKV_OK) {
        p.max_seqs = 1;
        p.num_layers = 1;
        p.num_kv_heads = 1;
        p.num_q_heads = 1;
        p.head_dim = 4;
        p.budget = 8;
        p.buffer = 4;
        p.window = 2;
        p.kernel = 3;
        if (rkv_cache_create(&p, &cache) != RKV_OK) w->ok_call_failed = 1;
    } else {
        w->ok_call_failed = 1;
    }
    for (int round = 0; round < MESSAGE_ROUNDS; ++round) {
        w->status = failing_call(w->index, cache);
        snprintf(w->own, sizeof w->own, "%s", rkv_error_message());
        /* Every other thread now makes its own failing call... */
        pthread_barrier_wait(w->barrier);
        /* ...and a successful call here does not reset the message either. */
        int32_t due = 0;
        if (cache && rkv_compress_due(cache, 0, 0, &due) != RKV_OK) w->ok_call_failed = 1;
        pthread_barrier_wait(w->barrier);
        const char *now = rkv_error_message();
        if (w->overwritten_round < 0 && (now == NULL || strcmp(now, w->own) != 0)) {
            w->overwritten_round = round;
            snprintf(w->seen, sizeof w->seen, "%s", now ? now : "(NULL)");
        }
        pthread_barrier_wait(w->barrier);
    }
    rkv_cache_destroy(cache);
    return NULL;
}

/* Each thread's failing call sets a message only that thread sees: while the
 * other threads fail in their own ways, its message stays its own. A thread
 * that never failed sees "". */
static void test_error_messages_are_thread_local(void **state) {
    (void)state;
    /* The main thread fails first: a new thread must not see this message. */
    double lower, upper;
    ASSERT_STATUS(rkv_params_bounds((rkv_param)777, &lower, &upper), RKV_ERR_UNSUPPORTED);
    char main_message[256];
    snprintf(main_message, sizeof main_message, "%s", rkv_error_message());
    assert_true(main_message[0] != '\0');

    enum { N = 5 };
    static message_worker workers[N];
    pthread_barrier_t barrier;
    assert_int_equal(pthread_barrier_init(&barrier, NULL, N), 0);
    for (int t = 0; t < N; ++t) {
        memset(&workers[t], 0, sizeof workers[t]);
        workers[t].barrier = &barrier;
        workers[t].index = t;
        assert_int_equal(pthread_create(&workers[t].thread, NULL, message_thread, &workers[t]), 0);
    }
    for (int t = 0; t < N; ++t) assert_int_equal(pthread_join(workers[t].thread, NULL), 0);
    pthread_barrier_destroy(&barrier);

    static const rkv_status expected[N] = {RKV_ERR_INVALID_ARGUMENT, RKV_ERR_OUT_OF_RANGE,
                                           RKV_ERR_OUT_OF_RANGE, RKV_ERR_BAD_STATE,
                                           RKV_ERR_OUT_OF_RANGE};
    for (int t = 0; t < N; ++t) {
        message_worker *w = &workers[t];
        assert_false(w->ok_call_failed);
        assert_true(w->started_empty);
        assert_int_equal(w->status, expected[t]);
        assert_true(w->own[0] != '\0');
        if (w->overwritten_round >= 0)
            fail_msg(
                "thread %d: its message \"%s\" became \"%s\" in round %d, while other "
                "threads failed",
                t, w->own, w->seen, w->overwritten_round);
        /* Precondition of the check above: every thread's message is different. */
        for (int u = 0; u < t; ++u)
            if (strcmp(workers[u].own, w->own) == 0)
                fail_msg(
                    "threads %d and %d failed with the same message \"%s\": the test "
                    "cannot tell them apart",
                    u, t, w->own);
    }
    /* Nor did the workers touch the main thread's message. */
    assert_string_equal(rkv_error_message(), main_message);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_caches_match_serial),
        cmocka_unit_test(test_error_messages_are_thread_local),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
