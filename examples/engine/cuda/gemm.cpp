#include "gemm.h"

#include <string>

namespace engine::cuda {

namespace {

void check_lt(cublasStatus_t status, const char *what) {
    if (status != CUBLAS_STATUS_SUCCESS)
        throw Error(std::string(what) + ": cuBLASLt status " + std::to_string(int(status)));
}

}  // namespace

GemmContext::GemmContext() : workspace_(kWorkspaceBytes, "the cuBLASLt workspace") {
    check_lt(cublasLtCreate(&handle_), "cublasLtCreate");
}

GemmContext::~GemmContext() {
    if (handle_) cublasLtDestroy(handle_);
}

GemmPlan::GemmPlan(const GemmContext &context, int64_t m, int64_t n, int64_t k, Output output)
    : context_(context), m_(m), n_(n), k_(k), output_(output) {
    const std::string shape = "matrix product " + std::to_string(m) + " x " + std::to_string(n) + " x " +
                              std::to_string(k);
    const cudaDataType_t y_type = output == Output::BF16 ? CUDA_R_16BF : CUDA_R_32F;
    check_lt(cublasLtMatmulDescCreate(&desc_, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t transpose = CUBLAS_OP_T, none = CUBLAS_OP_N;
    check_lt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose),
             "cublasLtMatmulDescSetAttribute");
    check_lt(cublasLtMatmulDescSetAttribute(desc_, CUBLASLT_MATMUL_DESC_TRANSB, &none, sizeof none),
             "cublasLtMatmulDescSetAttribute");
    // Column-major: W is K x N (ld K) used transposed, x is K x M (ld K), y is N x M (ld N).
    check_lt(cublasLtMatrixLayoutCreate(&w_layout_, CUDA_R_16BF, uint64_t(k), uint64_t(n), k), "layout W");
    check_lt(cublasLtMatrixLayoutCreate(&x_layout_, CUDA_R_16BF, uint64_t(k), uint64_t(m), k), "layout x");
    check_lt(cublasLtMatrixLayoutCreate(&y_layout_, y_type, uint64_t(n), uint64_t(m), n), "layout y");

    cublasLtMatmulPreference_t preference = nullptr;
    check_lt(cublasLtMatmulPreferenceCreate(&preference), "cublasLtMatmulPreferenceCreate");
    const size_t workspace = context.workspace_bytes();
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                         sizeof workspace);
    cublasLtMatmulHeuristicResult_t result{};
    int found = 0;
    const cublasStatus_t status = cublasLtMatmulAlgoGetHeuristic(context.handle(), desc_, w_layout_, x_layout_,
                                                                 y_layout_, y_layout_, preference, 1, &result, &found);
    cublasLtMatmulPreferenceDestroy(preference);
    if (status != CUBLAS_STATUS_SUCCESS || found == 0)
        throw Error("cuBLASLt has no algorithm for the " + shape + " (bf16 in, " +
                    (y_type == CUDA_R_16BF ? "bf16" : "f32") + " out): status " + std::to_string(int(status)));
    algo_ = result.algo;
}

GemmPlan::~GemmPlan() {
    if (y_layout_) cublasLtMatrixLayoutDestroy(y_layout_);
    if (x_layout_) cublasLtMatrixLayoutDestroy(x_layout_);
    if (w_layout_) cublasLtMatrixLayoutDestroy(w_layout_);
    if (desc_) cublasLtMatmulDescDestroy(desc_);
}

void GemmPlan::run(const bf16 *x, const bf16 *w, void *y, cudaStream_t stream) const {
    const float alpha = 1.0f, beta = output_ == Output::F32_ACCUMULATE ? 1.0f : 0.0f;
    check_lt(cublasLtMatmul(context_.handle(), desc_, &alpha, w, w_layout_, x, x_layout_, &beta, y, y_layout_, y,
                            y_layout_, &algo_, context_.workspace(), context_.workspace_bytes(), stream),
             "cublasLtMatmul");
}

}  // namespace engine::cuda
