// Package rkv is the Go binding of librkv: a KV cache for LLM inference that
// keeps a fixed budget of tokens per attention head, evicting with R-KV
// (importance and redundancy) or a baseline.
//
// It is a thin layer over rkv/capi, the raw binding SWIG generates from the C
// header (bindings/rkv.i); this package adds Go types, errors and memory
// safety, and repeats no C declaration.
//
// A Cache holds the C handle. Close it when done (Close is idempotent; a
// finalizer frees a forgotten one). Calls on one Cache are serialised, so a
// Close from another goroutine waits for a running call instead of freeing the
// memory under it. Every failed call returns an *Error carrying the library's
// status and message; compare with the sentinel errors through errors.Is.
//
// Names: a method is its C function's name without rkv_, without the object
// its receiver stands for and without a getter's get_ (rkv_cache_set is
// Cache.Set, rkv_cache_get_params is Cache.Params); the calls on one sequence
// keep their Seq (rkv_seq_truncate(cache, seq, n) is cache.SeqTruncate(seq,
// n, stream)); constructors are New<Type> (rkv_batch_create is NewBatch).
//
// Sequences can be rolled back (SeqTruncate), forked (SeqCopy) and given
// their own budget (SeqSetBudget); a Batch lets one decode step, or a CUDA
// graph of it, serve whichever sequences are running.
//
// Memory rules: host slices passed in are only read (or written, for
// attention output) during the call; C keeps no Go pointer. A host slice's
// length is its tensor's extent, which the library checks every call against.
// Views point into the cache's own memory and are valid until the next call
// that changes that sequence (Append, Compress, SeqTruncate, SeqCopy onto it,
// SeqReset), or Close.
package rkv

import "rkv/capi"

// All means "every sequence" or "every layer" where a call accepts it.
var All = capi.RKV_ALL

// Version is the version of the library loaded at run time.
func Version() string { return capi.Rkv_version_string() }

// VersionNumber is MAJOR*10000 + MINOR*100 + PATCH of the loaded library.
func VersionNumber() int { return int(capi.Rkv_version_number()) }

// HeaderVersion is RKV_VERSION_NUMBER of the header this package was built
// with; it differs from VersionNumber when another librkv is loaded.
var HeaderVersion = capi.RKV_VERSION_NUMBER

// DType is an element type of K/V storage and of inputs.
type DType int32

var (
	F32  = DType(capi.RKV_DTYPE_F32)
	F16  = DType(capi.RKV_DTYPE_F16)
	BF16 = DType(capi.RKV_DTYPE_BF16)
	// FP8E4M3 is a storage dtype only: E4M3 bytes with one float32 scale per
	// (token, head); a value is fp8 * scale (SeqView.KeysFP8, SeqView.KeyScales).
	FP8E4M3 = DType(capi.RKV_DTYPE_FP8_E4M3)
)

// size is the bytes of one element.
func (d DType) size() int64 {
	switch d {
	case F32:
		return 4
	case FP8E4M3:
		return 1
	}
	return 2
}

// DeviceType says where a cache's memory lives.
type DeviceType int32

var (
	CPU  = DeviceType(capi.RKV_DEVICE_CPU)
	CUDA = DeviceType(capi.RKV_DEVICE_CUDA)
)

// Method is the eviction method.
type Method int32

var (
	MethodRKV          = Method(capi.RKV_METHOD_RKV)          // importance and redundancy (default)
	MethodSnapKV       = Method(capi.RKV_METHOD_SNAPKV)       // importance only
	MethodH2O          = Method(capi.RKV_METHOD_H2O)          // attention accumulated over every query
	MethodStreamingLLM = Method(capi.RKV_METHOD_STREAMINGLLM) // first sink tokens plus the most recent
	MethodKeyDiff      = Method(capi.RKV_METHOD_KEYDIFF)      // keys least similar to the mean key
	MethodRandom       = Method(capi.RKV_METHOD_RANDOM)       // uniform random, seeded
	MethodFull         = Method(capi.RKV_METHOD_FULL)         // never evicts: capacity MaxLen
)

// Mode orders kept tokens after a compression.
type Mode int32

var (
	ModePosition  = Mode(capi.RKV_MODE_POSITION)
	ModeReference = Mode(capi.RKV_MODE_REFERENCE)
)

// Pooling pools the query heads of one KV group.
type Pooling int32

var (
	PoolingMax  = Pooling(capi.RKV_POOLING_MAX)
	PoolingMean = Pooling(capi.RKV_POOLING_MEAN)
)

// Guard is a set of guard rails.
type Guard uint32

var (
	GuardSink   = Guard(capi.RKV_GUARD_SINK)   // positions below Sink are never evicted
	GuardPrompt = Guard(capi.RKV_GUARD_PROMPT) // prompt tokens are never evicted
)

// Param keys a parameter: of a live cache (Set, Get) and for Bounds.
type Param int32

var (
	ParamKernel       = Param(capi.RKV_PARAM_KERNEL)
	ParamLambda       = Param(capi.RKV_PARAM_LAMBDA)
	ParamThreshold    = Param(capi.RKV_PARAM_THRESHOLD)
	ParamPooling      = Param(capi.RKV_PARAM_POOLING)
	ParamSeed         = Param(capi.RKV_PARAM_SEED)
	ParamAutoCompress = Param(capi.RKV_PARAM_AUTO_COMPRESS)
	ParamBudget       = Param(capi.RKV_PARAM_BUDGET)
	ParamBuffer       = Param(capi.RKV_PARAM_BUFFER)
	ParamWindow       = Param(capi.RKV_PARAM_WINDOW)
	ParamMethod       = Param(capi.RKV_PARAM_METHOD)
	ParamMaxRollback  = Param(capi.RKV_PARAM_MAX_ROLLBACK)
)

// Bounds returns the inclusive bounds of a parameter on its own.
func (p Param) Bounds() (lower, upper float64, err error) {
	err = check(capi.Rkv_params_bounds(int32(p), &lower, &upper))
	return lower, upper, err
}
