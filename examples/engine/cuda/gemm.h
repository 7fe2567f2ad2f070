// Matrix products through cuBLASLt: every product of the engine is
//   y[M, N] (+)= x[M, K] W[N, K]^T      (x, W bf16; f32 accumulation; y bf16 or f32)
// with x the activations (M rows: slots or prompt tokens) and W a weight in
// the checkpoint's [out, in] layout. In cuBLASLt's column-major terms that is
// the "TN" product y^T = W^T(op T) x^T, the layout its tensor-core kernels
// serve best.
//
// A GemmPlan is made once at start for one (M, N, K, output type): its
// descriptors and the algorithm chosen by cuBLASLt's heuristic. Running a plan
// only enqueues (capturable in a CUDA graph; no allocation; the workspace is
// shared and the work is stream-ordered).
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "device.h"
#include "kernels.h"

namespace engine::cuda {

enum class Output { BF16, F32, F32_ACCUMULATE /* y += x W^T, in place */ };

class GemmContext;

class GemmPlan {
  public:
    GemmPlan(const GemmContext &context, int64_t m, int64_t n, int64_t k, Output output);
    ~GemmPlan();
    GemmPlan(const GemmPlan &) = delete;
    GemmPlan &operator=(const GemmPlan &) = delete;

    // y = x W^T (or y += x W^T).
    void run(const bf16 *x, const bf16 *w, void *y, cudaStream_t stream) const;
    int64_t m() const { return m_; }
    double flops() const { return 2.0 * double(m_) * double(n_) * double(k_); }

  private:
    const GemmContext &context_;
    int64_t m_, n_, k_;
    Output output_;
    cublasLtMatmulDesc_t desc_ = nullptr;
    cublasLtMatrixLayout_t w_layout_ = nullptr, x_layout_ = nullptr, y_layout_ = nullptr;
    cublasLtMatmulAlgo_t algo_{};
};

// The cuBLASLt handle and the workspace every plan shares.
class GemmContext {
  public:
    GemmContext();
    ~GemmContext();
    GemmContext(const GemmContext &) = delete;
    GemmContext &operator=(const GemmContext &) = delete;
    cublasLtHandle_t handle() const { return handle_; }
    void *workspace() const { return workspace_.data(); }
    size_t workspace_bytes() const { return workspace_.bytes(); }
    static constexpr size_t kWorkspaceBytes = size_t(32) << 20;

  private:
    cublasLtHandle_t handle_ = nullptr;
    DeviceBuffer workspace_;
};

}  // namespace engine::cuda
