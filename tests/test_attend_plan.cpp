// rkv_attend's plan rule (choose_attend_plan / choose_kernel_splits,
// kernels/attend.cu): the splits measured best on the H200 (kernels/README.md,
// "Decode attention"), for the R1-Distill-Llama-8B shape (8 KV heads, 1152
// tokens held) on 132 SMs holding two tensor-core blocks each:
//   - 16-bit rows (the copy engine's tensor copies): one split per SM, at
//     least 192 tokens each: 6 splits at 1 sequence, 2 at 8, 1 from 32 up;
//   - rows copied with cp.async (E4M3 rows; the split kernels' residency):
//     up to the resident blocks, at least 128 tokens each: 9 at 1, 4 at 8;
//   - f32 storage: the wide split kernel; short sequences are not split;
//     no plan has more partials than the merge scratch holds.
// The library's headers first: cmocka defines a macro named fail.
#include "kernels/launch.h"

extern "C" {
#include "test_util.h"
}

namespace {

namespace k = rkv::kernels;

constexpr int32_t kKvHeads = 8, kSms = 132;

k::AttendResidency residency(bool row_maps) {
    k::AttendResidency r{};
    r.wide = 2 * kSms;
    r.narrow = 4 * kSms;
    r.tensor = 2 * kSms;
    r.sms = kSms;
    r.tensor_row_maps = row_maps;
    return r;
}

void expect_plan(const k::AttendResidency &r, int32_t batch, int32_t held, k::AttendKernel kernel, int32_t splits) {
    const k::AttendPlan plan = k::choose_attend_plan(batch * kKvHeads, held, r);
    if (plan.kernel != kernel || plan.splits != splits)
        fail_msg("%d x %d (row maps %d): kernel %d, %d splits; expected kernel %d, %d splits", batch, held,
                 int(r.tensor_row_maps), int(plan.kernel), plan.splits, int(kernel), splits);
}

void test_tensor_kernel_on_row_maps(void **state) {
    (void)state;
    const k::AttendResidency r = residency(true);
    expect_plan(r, 1, 1152, k::AttendKernel::kTensor, 6);
    expect_plan(r, 8, 1152, k::AttendKernel::kTensor, 2);
    expect_plan(r, 16, 1152, k::AttendKernel::kTensor, 1);
    expect_plan(r, 32, 1152, k::AttendKernel::kTensor, 1);
    expect_plan(r, 256, 1152, k::AttendKernel::kTensor, 1);
    expect_plan(r, 32, 16384, k::AttendKernel::kTensor, 1);
    expect_plan(r, 1, 16384, k::AttendKernel::kTensor, 16);  // one split per SM for the 8 pairs
    expect_plan(r, 1, 300, k::AttendKernel::kTensor, 1);     // fewer than 2 x 192 tokens
}

void test_tensor_kernel_with_cp_async(void **state) {
    (void)state;
    const k::AttendResidency r = residency(false);
    expect_plan(r, 1, 1152, k::AttendKernel::kTensor, 9);
    expect_plan(r, 8, 1152, k::AttendKernel::kTensor, 4);
    expect_plan(r, 16, 1152, k::AttendKernel::kTensor, 2);
    expect_plan(r, 32, 1152, k::AttendKernel::kTensor, 1);
    expect_plan(r, 1, 200, k::AttendKernel::kTensor, 1);
}

void test_other_kernels(void **state) {
    (void)state;
    k::AttendResidency r = residency(false);
    r.tensor = 0;  // f32 storage: no tensor-core kernel
    expect_plan(r, 1, 1152, k::AttendKernel::kWide, 9);
    expect_plan(r, 64, 1152, k::AttendKernel::kWide, 1);
    // Forced kernels take their own residency.
    assert_int_equal(k::choose_kernel_splits(k::AttendKernel::kNarrow, 8 * kKvHeads, 1152, r), 8);
    assert_int_equal(k::choose_kernel_splits(k::AttendKernel::kWide, 8 * kKvHeads, 1152, r), 4);
}

void test_partials_bound(void **state) {
    (void)state;
    // 100 pairs of long sequences on a GPU of many resident blocks: the
    // merge scratch (kAttendMaxPartials partials) bounds the splits.
    assert_int_equal(k::choose_attend_splits(100, 1 << 20, 1 << 20, 128), k::kAttendMaxPartials / 100);
    assert_int_equal(k::choose_attend_splits(0, 1152, 264, 128), 1);
}

}  // namespace

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tensor_kernel_on_row_maps),
        cmocka_unit_test(test_tensor_kernel_with_cp_async),
        cmocka_unit_test(test_other_kernels),
        cmocka_unit_test(test_partials_bound),
    };
    return cmocka_run_group_tests(tests, nullptr, nullptr);
}
