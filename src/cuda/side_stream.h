// A further stream of the cache's device on which rkv_compress runs a lane of
// its groups of jobs (one or three of them beside the caller's stream), so
// that the GPU runs several groups' kernels side by side (two lanes: 5% faster
// at batch 64 on the H200; four: 3% more on Gaussian keys; kernels/README.md,
// "Two lanes" and "Four lanes"). Ordered with the caller's stream by events
// only: fork() before the side stream's first kernel, join() before
// rkv_compress returns, so the call stays stream-ordered whatever stream the
// caller passes (the legacy default stream included;
// test_lanes_join_the_callers_stream fails without the join of any one).
#pragma once

#include <cuda_runtime_api.h>

namespace rkv::cuda {

class SideStream {
 public:
    SideStream() = default;
    // Creates the stream and its two events on the current device. Failure:
    // RKV_ERR_DEVICE naming what could not be created.
    void create();
    ~SideStream();
    SideStream(const SideStream &) = delete;
    SideStream &operator=(const SideStream &) = delete;

    cudaStream_t get() const { return stream_; }
    // Work enqueued on the side stream from now on runs after what `from` holds.
    void fork(cudaStream_t from);
    // Work enqueued on `into` from now on runs after what the side stream holds.
    void join(cudaStream_t into);
    // The same without throwing, for a path that is already failing; false if it could not.
    bool try_join(cudaStream_t into) noexcept;

 private:
    cudaStream_t stream_ = nullptr;
    cudaEvent_t forked_ = nullptr, joined_ = nullptr;
};

// Forks every side stream at construction; join() at the end of the work
// (throws if a join cannot be enqueued); the destructor joins if join() was
// not reached (a launch in between threw), so no path out of rkv_compress
// leaves a side stream unjoined. With no side streams (count 0) it does
// nothing: the call runs on one stream.
class ForkScope {
 public:
    // sides[0 .. count): the side streams the call uses (count 0: none).
    ForkScope(SideStream *sides, int count, cudaStream_t caller);
    ~ForkScope();
    ForkScope(const ForkScope &) = delete;
    ForkScope &operator=(const ForkScope &) = delete;

    void join();

 private:
    SideStream *sides_;
    int count_;
    cudaStream_t caller_;
    bool joined_ = false;
};

}  // namespace rkv::cuda
