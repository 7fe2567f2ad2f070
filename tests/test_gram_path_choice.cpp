// RKV_MATMUL_AUTO's choice of key-Gram kernel (src/cuda/gram_path_choice.h),
// without a GPU: each path timed once, then the cheaper per unit of work, the
// other again after kReprobe x its cost ratio^2 timed calls (so the tries cost
// at most 1/(4 kReprobe) of the time, however slow the other path), a change of
// keys followed, and calls that cannot be timed (graph capture) on the best
// known path.
#include "cuda/gram_path_choice.h"

extern "C" {
#include "test_util.h"
}

namespace {

using rkv::cuda::GramPathChoice;

void test_tries_each_path_then_keeps_the_cheaper(void **state) {
    (void)state;
    GramPathChoice choice;
    assert_int_equal(choice.best(), GramPathChoice::kWgmma);  // nothing measured: the exact walk
    assert_int_equal(choice.next_timed(), GramPathChoice::kWgmma);
    choice.record(GramPathChoice::kWgmma, 19.5, 1000.0);
    assert_int_equal(choice.next_timed(), GramPathChoice::kInt8);
    choice.record(GramPathChoice::kInt8, 16.3, 1000.0);
    assert_int_equal(choice.best(), GramPathChoice::kInt8);
    // The cost is per unit of work: a call of half the work in half the time costs the same.
    choice.record(GramPathChoice::kInt8, 8.15, 500.0);
    assert_int_equal(choice.best(), GramPathChoice::kInt8);
    // One try of the exact walk per int(kReprobe (19.5 / 16.3)^2) = 45 timed calls.
    const int interval = int(GramPathChoice::kReprobe * (19.5 / 16.3) * (19.5 / 16.3));
    assert_int_equal(interval, 45);
    int int8 = 0, wgmma = 0;
    for (int call = 0; call < 4 * interval; ++call) {
        const GramPathChoice::Path path = choice.next_timed();
        (path == GramPathChoice::kInt8 ? int8 : wgmma)++;
        choice.record(path, path == GramPathChoice::kInt8 ? 16.3 : 19.5, 1000.0);
    }
    assert_int_equal(wgmma, 4);
    assert_int_equal(int8, 4 * interval - 4);
}

void test_tries_a_far_slower_path_seldom(void **state) {
    (void)state;
    // The int8 path on model keys: 3x slower (40.2 ms against 13.4).
    GramPathChoice choice;
    choice.record(GramPathChoice::kWgmma, 13.4, 1000.0);
    choice.record(GramPathChoice::kInt8, 40.2, 1000.0);
    double total = 0.0;
    int tries = 0;
    const int calls = 10 * 9 * GramPathChoice::kReprobe;
    for (int call = 0; call < calls; ++call) {
        const GramPathChoice::Path path = choice.next_timed();
        const double ms = path == GramPathChoice::kInt8 ? 40.2 : 13.4;
        tries += path == GramPathChoice::kInt8;
        total += ms;
        choice.record(path, ms, 1000.0);
    }
    assert_int_equal(choice.best(), GramPathChoice::kWgmma);
    assert_int_equal(tries, 10);  // every 288th call (32 x 3^2)
    // The tries cost at most 1/(4 kReprobe) of the time on average (here 2/288).
    assert_true(total / (calls * 13.4) - 1.0 <= 1.0 / (4 * GramPathChoice::kReprobe));
    assert_true(total > calls * 13.4);  // (and they did happen)
}

void test_follows_keys_that_change(void **state) {
    (void)state;
    GramPathChoice choice;
    choice.record(GramPathChoice::kWgmma, 19.5, 1000.0);
    choice.record(GramPathChoice::kInt8, 16.3, 1000.0);
    assert_int_equal(choice.best(), GramPathChoice::kInt8);
    // The keys gain near-duplicates: the int8 path now costs 17.6, the exact walk 14.1.
    int calls = 0;
    while (choice.best() != GramPathChoice::kWgmma && calls < 4 * GramPathChoice::kReprobe) {
        const GramPathChoice::Path path = choice.next_timed();
        choice.record(path, path == GramPathChoice::kInt8 ? 17.6 : 14.1, 1000.0);
        ++calls;
    }
    assert_int_equal(choice.best(), GramPathChoice::kWgmma);
    assert_true(calls <= int(GramPathChoice::kReprobe * (19.5 / 16.3) * (19.5 / 16.3)));  // at the first try
}

void test_ignores_empty_measurements(void **state) {
    (void)state;
    GramPathChoice choice;
    choice.record(GramPathChoice::kInt8, 0.0, 1000.0);  // an event pair that measured nothing
    choice.record(GramPathChoice::kInt8, 5.0, 0.0);     // a call without Gram work
    assert_false(choice.known(GramPathChoice::kInt8));
    assert_int_equal(choice.best(), GramPathChoice::kWgmma);
    choice.record(GramPathChoice::kInt8, 5.0, 1000.0);  // only the int8 path measured so far
    assert_int_equal(choice.best(), GramPathChoice::kInt8);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tries_each_path_then_keeps_the_cheaper),
        cmocka_unit_test(test_tries_a_far_slower_path_seldom),
        cmocka_unit_test(test_follows_keys_that_change),
        cmocka_unit_test(test_ignores_empty_measurements),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
