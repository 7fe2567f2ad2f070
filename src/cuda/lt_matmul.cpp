#include "cuda/lt_matmul.h"

#include <cstring>

#include "error.h"

namespace rkv::cuda {

namespace {

void check_lt(cublasStatus_t status, const char *what) {
    if (status == CUBLAS_STATUS_SUCCESS) return;
    fail(RKV_ERR_DEVICE, "cuBLASLt: %s failed: %s (%s)", what, cublasLtGetStatusName(status),
         cublasLtGetStatusString(status));
}

template <typename V>
void set_layout(cublasLtMatrixLayout_t layout, cublasLtMatrixLayoutAttribute_t attribute, V value) {
    check_lt(cublasLtMatrixLayoutSetAttribute(layout, attribute, &value, sizeof value),
             "cublasLtMatrixLayoutSetAttribute");
}

template <typename V>
void set_preference(cublasLtMatmulPreference_t preference, cublasLtMatmulPreferenceAttributes_t attribute,
                    V value) {
    check_lt(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &value, sizeof value),
             "cublasLtMatmulPreferenceSetAttribute");
}

void shape_layout(cublasLtMatrixLayout_t layout, uint64_t rows, uint64_t cols, int64_t ld, int32_t batch,
                  int64_t stride) {
    set_layout(layout, CUBLASLT_MATRIX_LAYOUT_ROWS, rows);
    set_layout(layout, CUBLASLT_MATRIX_LAYOUT_COLS, cols);
    set_layout(layout, CUBLASLT_MATRIX_LAYOUT_LD, ld);
    set_layout(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, batch);
    set_layout(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, stride);
}

}  // namespace

bool LtProblem::operator==(const LtProblem &o) const {
    return m == o.m && n == o.n && k == o.k && lda == o.lda && ldb == o.ldb && ldd == o.ldd &&
           stride_a == o.stride_a && stride_b == o.stride_b && stride_d == o.stride_d && batch == o.batch &&
           align_a == o.align_a && align_b == o.align_b && align_d == o.align_d;
}

uint32_t lt_alignment(const void *base, int64_t stride_bytes_1, int64_t stride_bytes_2) {
    const uint64_t bits = uint64_t(reinterpret_cast<uintptr_t>(base)) | uint64_t(stride_bytes_1) |
                          uint64_t(stride_bytes_2) | 256u;
    return uint32_t(bits & (~bits + 1));  // lowest set bit
}

LtMatmul::LtMatmul(rkv_dtype dtype, void *workspace, uint64_t workspace_bytes)
    : input_type_(dtype == RKV_DTYPE_F32 ? CUDA_R_32F : dtype == RKV_DTYPE_F16 ? CUDA_R_16F : CUDA_R_16BF),
      workspace_(workspace),
      workspace_bytes_(workspace_bytes) {
    check_lt(cublasLtCreate(&handle_), "cublasLtCreate");
    // CUBLAS_COMPUTE_32F: float32 arithmetic; TF32 would change which tokens tie.
    check_lt(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t transpose = CUBLAS_OP_T, keep = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose),
             "cublasLtMatmulDescSetAttribute(TRANSA)");
    check_lt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof keep),
             "cublasLtMatmulDescSetAttribute(TRANSB)");
    check_lt(cublasLtMatmulPreferenceCreate(&preference_), "cublasLtMatmulPreferenceCreate");
    set_preference(preference_, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, uint64_t(workspace_bytes_));
    for (Plan &plan : plans_) {
        check_lt(cublasLtMatrixLayoutCreate(&plan.a, input_type_, 1, 1, 1), "cublasLtMatrixLayoutCreate");
        check_lt(cublasLtMatrixLayoutCreate(&plan.b, input_type_, 1, 1, 1), "cublasLtMatrixLayoutCreate");
        check_lt(cublasLtMatrixLayoutCreate(&plan.d, CUDA_R_32F, 1, 1, 1), "cublasLtMatrixLayoutCreate");
    }
}

LtMatmul::~LtMatmul() {
    for (Plan &plan : plans_) {
        if (plan.a) cublasLtMatrixLayoutDestroy(plan.a);
        if (plan.b) cublasLtMatrixLayoutDestroy(plan.b);
        if (plan.d) cublasLtMatrixLayoutDestroy(plan.d);
    }
    if (preference_) cublasLtMatmulPreferenceDestroy(preference_);
    if (desc_) cublasLtMatmulDescDestroy(desc_);
    if (handle_) cublasLtDestroy(handle_);
}

LtMatmul::Plan &LtMatmul::find_or_make(const LtProblem &problem) {
    for (Plan &plan : plans_)
        if (plan.valid && plan.problem == problem) return plan;
    Plan &plan = plans_[next_];
    next_ = (next_ + 1) % kPlans;
    plan.valid = false;
    shape_layout(plan.a, problem.k, problem.m, problem.lda, problem.batch, problem.stride_a);
    shape_layout(plan.b, problem.k, problem.n, problem.ldb, problem.batch, problem.stride_b);
    shape_layout(plan.d, problem.m, problem.n, problem.ldd, problem.batch, problem.stride_d);
    set_preference(preference_, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, problem.align_a);
    set_preference(preference_, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, problem.align_b);
    set_preference(preference_, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, problem.align_d);
    set_preference(preference_, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, problem.align_d);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    check_lt(cublasLtMatmulAlgoGetHeuristic(handle_, desc_, plan.a, plan.b, plan.d, plan.d, preference_, 1,
                                            &result, &found),
             "cublasLtMatmulAlgoGetHeuristic");
    if (found < 1)
        fail(RKV_ERR_DEVICE, "cuBLASLt found no algorithm for a %llu x %llu x %llu product (batch %d)",
             (unsigned long long)problem.m, (unsigned long long)problem.n, (unsigned long long)problem.k,
             problem.batch);
    plan.algo = result.algo;
    plan.problem = problem;
    plan.valid = true;
    return plan;
}

void LtMatmul::plan(const LtProblem &problem) { find_or_make(problem); }

void LtMatmul::run(const LtProblem &problem, float alpha, const void *a, const void *b, float *d,
                   cudaStream_t stream) {
    Plan &plan = find_or_make(problem);
    const float beta = 0.0f;
    check_lt(cublasLtMatmul(handle_, desc_, &alpha, a, plan.a, b, plan.b, &beta, d, plan.d, d, plan.d,
                            &plan.algo, workspace_, workspace_bytes_, stream),
             "cublasLtMatmul");
}

}  // namespace rkv::cuda
