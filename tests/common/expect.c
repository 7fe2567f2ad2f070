#include "expect.h"

#include <stdio.h>
#include <string.h>

static char g_primed[1024];

void prime_message(void) {
    double lower, upper;
    if (rkv_params_bounds((rkv_param)4242, &lower, &upper) != RKV_ERR_UNSUPPORTED)
        fail_msg("priming failed: rkv_params_bounds accepted key 4242");
    snprintf(g_primed, sizeof g_primed, "%s", rkv_error_message());
}

const char *primed_message(void) { return g_primed; }

void check_message(const char *call, const char *message) {
    if (message == NULL) fail_msg("%s: rkv_error_message() returned NULL", call);
    if (message[0] == '\0') fail_msg("%s failed with an empty message", call);
    if (strcmp(message, g_primed) == 0)
        fail_msg("%s failed without setting its own message (still \"%s\")", call, message);
}

void check_fresh_message(const char *call) { check_message(call, rkv_error_message()); }

void check_rejected(const char *call, rkv_status status, rkv_status expected, const rkv_cache *cache,
                    test_snapshot *before) {
    const char *last = rkv_error_message();
    char message[1024];
    snprintf(message, sizeof message, "%s", last ? last : "");
    test_snapshot after = test_take_snapshot(cache);
    const int same = test_snapshot_equal(before, &after);
    test_snapshot_free(before);
    test_snapshot_free(&after);
    if (status != expected)
        fail_msg("%s returned %s, expected %s: %s", call, rkv_status_name(status), rkv_status_name(expected),
                 message);
    check_message(call, last ? message : NULL);
    if (!same) fail_msg("%s failed but changed the cache", call);
}
