#include "cuda/side_stream.h"

#include "cuda/cuda_check.h"

namespace rkv::cuda {

void SideStream::create() {
    // Non-blocking: the legacy default stream does not order it; the events do.
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "rkv_cache_create: creating the side stream");
    check(cudaEventCreateWithFlags(&forked_, cudaEventDisableTiming), "rkv_cache_create: creating an event");
    check(cudaEventCreateWithFlags(&joined_, cudaEventDisableTiming), "rkv_cache_create: creating an event");
}

SideStream::~SideStream() {
    if (joined_) cudaEventDestroy(joined_);
    if (forked_) cudaEventDestroy(forked_);
    if (stream_) cudaStreamDestroy(stream_);
}

void SideStream::fork(cudaStream_t from) {
    check(cudaEventRecord(forked_, from), "rkv_compress: recording the fork event");
    check(cudaStreamWaitEvent(stream_, forked_, 0), "rkv_compress: ordering the side stream after the caller's");
}

bool SideStream::try_join(cudaStream_t into) noexcept {
    return cudaEventRecord(joined_, stream_) == cudaSuccess && cudaStreamWaitEvent(into, joined_, 0) == cudaSuccess;
}

void SideStream::join(cudaStream_t into) {
    check(cudaEventRecord(joined_, stream_), "rkv_compress: recording the join event");
    check(cudaStreamWaitEvent(into, joined_, 0), "rkv_compress: ordering the caller's stream after the side stream");
}

ForkScope::ForkScope(SideStream *sides, int count, cudaStream_t caller)
    : sides_(sides), count_(count), caller_(caller) {
    for (int i = 0; i < count_; ++i) sides_[i].fork(caller_);
}

void ForkScope::join() {
    if (joined_) return;
    joined_ = true;
    for (int i = 0; i < count_; ++i) sides_[i].join(caller_);
}

ForkScope::~ForkScope() {
    // Only on a path that is already throwing: the error being reported is
    // the one the caller sees; a failure here would hide it.
    if (!joined_)
        for (int i = 0; i < count_; ++i) sides_[i].try_join(caller_);
}

}  // namespace rkv::cuda
