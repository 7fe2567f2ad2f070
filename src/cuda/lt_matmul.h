// The matrix products of the compression through cuBLASLt: strided-batched,
// A and B in the storage dtype, D in float32, computed in float32 (never TF32).
//   D[b] (m x n, column-major, ld ldd) = alpha * A[b]^T B[b]
//   A[b]: k x m column-major (ld lda) = row-major [m rows of k], e.g. keys [N, d]
//   B[b]: k x n column-major (ld ldb) = row-major [n rows of k], e.g. queries [G*window, d]
// so D is row-major [n rows of m]: logits [G*window, C] or Gram rows [rows, N].
//
// Plans (layouts and the chosen algorithm) are made at create for the
// steady-state shapes; a new shape is planned on the host (layouts updated in
// place, one heuristic query) without touching the device, so a product can be
// captured in a CUDA graph. Nothing allocates device memory after create: the
// workspace is the cache's.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "rkv/rkv.h"

namespace rkv::cuda {

struct LtProblem {
    uint64_t m = 0, n = 0, k = 0;
    int64_t lda = 0, ldb = 0, ldd = 0;
    int64_t stride_a = 0, stride_b = 0, stride_d = 0;  // elements between batch entries
    int32_t batch = 1;
    uint32_t align_a = 256, align_b = 256, align_d = 256;  // byte alignment of every batch entry

    bool operator==(const LtProblem &o) const;
};

// Largest power of two (<= 256) dividing the address and every stride in bytes.
uint32_t lt_alignment(const void *base, int64_t stride_bytes_1, int64_t stride_bytes_2);

class LtMatmul {
 public:
    LtMatmul(rkv_dtype dtype, void *workspace, uint64_t workspace_bytes);
    ~LtMatmul();
    LtMatmul(const LtMatmul &) = delete;
    LtMatmul &operator=(const LtMatmul &) = delete;

    // Make (or find) the plan of a shape. Host only.
    void plan(const LtProblem &problem);
    // Enqueue D = alpha * A^T B on `stream`.
    void run(const LtProblem &problem, float alpha, const void *a, const void *b, float *d,
             cudaStream_t stream);

 private:
    struct Plan {
        LtProblem problem;
        cublasLtMatrixLayout_t a = nullptr, b = nullptr, d = nullptr;
        cublasLtMatmulAlgo_t algo{};
        bool valid = false;
    };
    static constexpr int kPlans = 8;  // shapes remembered (round robin)

    Plan &find_or_make(const LtProblem &problem);

    cudaDataType_t input_type_;
    void *workspace_;
    uint64_t workspace_bytes_;
    cublasLtHandle_t handle_ = nullptr;
    cublasLtMatmulDesc_t desc_ = nullptr;
    cublasLtMatmulPreference_t preference_ = nullptr;
    Plan plans_[kPlans];
    int next_ = 0;
};

}  // namespace rkv::cuda
