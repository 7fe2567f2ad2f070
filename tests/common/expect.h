/* The three checks of every rejected call (tests/test_errors.c explains them):
 *   1. it returns the exact status the header documents;
 *   2. it leaves the cache exactly as it was (test_take_snapshot before and after);
 *   3. it sets a non-empty message of its own (a different, earlier failure is
 *      primed before the call and its message must have been replaced). */
#ifndef RKV_TEST_EXPECT_H
#define RKV_TEST_EXPECT_H

#include "test_util.h"

/* Make a failing call of a different kind, so that the next check can tell a
 * message set by the call under test from one left over. */
void prime_message(void);
/* The message after a failed `call` is non-empty and not the primed one. */
void check_message(const char *call, const char *message);
void check_fresh_message(const char *call);
/* `status` is `expected`, the message is fresh, and `cache` equals *before
 * (which this frees before any check can fail). */
void check_rejected(const char *call, rkv_status status, rkv_status expected, const rkv_cache *cache,
                    test_snapshot *before);
/* The primed message (for tests that check a call left it alone). */
const char *primed_message(void);

/* `call` (no cache involved) fails with `expected` and sets its own message. */
#define EXPECT_FAIL(call, expected)    \
    do {                               \
        prime_message();               \
        ASSERT_STATUS(call, expected); \
        check_fresh_message(#call);    \
    } while (0)

/* `call` fails with `expected`, sets its own message, and leaves `cache` as it was. */
#define EXPECT_REJECTED(cache, call, expected)                     \
    do {                                                           \
        test_snapshot before_ = test_take_snapshot(cache);         \
        prime_message();                                           \
        const rkv_status status_ = (call);                         \
        check_rejected(#call, status_, expected, cache, &before_); \
    } while (0)

#endif
