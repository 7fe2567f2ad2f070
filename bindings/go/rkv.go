// Package rkv is the Go binding of librkv: a KV cache for LLM inference that
// keeps a fixed budget of tokens per attention head, evicting with R-KV
// (importance and redundancy) or a baseline.
//
// A Cache holds the C handle and nothing else. Close it when done (Close is
// idempotent; a finalizer frees a forgotten one). Every failed call returns an
// *Error carrying the library's status and message; compare with the sentinel
// errors through errors.Is. Like the C cache, a Cache must not be used from two
// goroutines at once.
//
// Memory rules: host slices passed in are only read (or written, for
// attention output) during the call; C keeps no Go pointer. Views point into
// the cache's own memory and are valid until the next Append, Compress, Reset
// of that sequence, or Close.
package rkv

/*
#cgo pkg-config: librkv
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "rkv/rkv.h"

// The status of a call and, if it failed, a copy of this thread's message,
// taken in the same cgo call: a goroutine may run on another OS thread by the
// next call, and the message is thread-local. The copy is freed by Go.
typedef struct {
	rkv_status status;
	char *message;
} rkv_go_result;

static rkv_go_result rkv_go_done(rkv_status status) {
	rkv_go_result r;
	r.status = status;
	r.message = status == RKV_OK ? NULL : strdup(rkv_last_error_message());
	return r;
}

static rkv_go_result rkv_go_params_default(rkv_cache_params *p, size_t size) {
	return rkv_go_done(rkv_cache_params_default(p, size));
}
static rkv_go_result rkv_go_param_bounds(int32_t param, double *lower, double *upper) {
	return rkv_go_done(rkv_param_bounds((rkv_param)param, lower, upper));
}
static rkv_go_result rkv_go_cache_size(const rkv_cache_params *p, uint64_t *bytes) {
	return rkv_go_done(rkv_cache_size(p, bytes));
}
static rkv_go_result rkv_go_create(const rkv_cache_params *p, rkv_cache **cache) {
	return rkv_go_done(rkv_cache_create(p, cache));
}
static rkv_go_result rkv_go_get_params(const rkv_cache *c, rkv_cache_params *p) {
	return rkv_go_done(rkv_cache_get_params(c, p));
}
static rkv_go_result rkv_go_set_param(rkv_cache *c, int32_t param, double value) {
	return rkv_go_done(rkv_cache_set_param(c, (rkv_param)param, value));
}
static rkv_go_result rkv_go_reset(rkv_cache *c, int32_t seq, uintptr_t stream) {
	return rkv_go_done(rkv_seq_reset(c, seq, (void *)stream));
}
// args arrives by value: its Go pointers (to pointer-free host arrays) live on
// the C stack for this call only. Device tensors come as addresses (non-zero
// *_device), so no Go code turns an integer into a pointer.
static rkv_go_result rkv_go_append(rkv_cache *c, rkv_append_args args, uintptr_t k_device,
                                   uintptr_t v_device, uintptr_t q_device, uintptr_t stream) {
	if (k_device) args.k.data = (void *)k_device;
	if (v_device) args.v.data = (void *)v_device;
	if (q_device) args.q.data = (void *)q_device;
	return rkv_go_done(rkv_append(c, &args, (void *)stream));
}
static rkv_go_result rkv_go_compress(rkv_cache *c, int32_t seq, int32_t layer, uintptr_t stream) {
	return rkv_go_done(rkv_compress(c, seq, layer, (void *)stream));
}
static rkv_go_result rkv_go_compress_due(const rkv_cache *c, int32_t seq, int32_t layer, int32_t *due) {
	return rkv_go_done(rkv_compress_due(c, seq, layer, due));
}
static rkv_go_result rkv_go_view(const rkv_cache *c, int32_t seq, int32_t layer, rkv_kv_view *v) {
	return rkv_go_done(rkv_view(c, seq, layer, v));
}
static rkv_go_result rkv_go_view_layer(const rkv_cache *c, int32_t layer, rkv_layer_view *v) {
	return rkv_go_done(rkv_view_layer(c, layer, v));
}
static rkv_go_result rkv_go_seq_length(const rkv_cache *c, int32_t seq, int32_t layer,
                                       int64_t *logical, int32_t *physical) {
	return rkv_go_done(rkv_seq_length(c, seq, layer, logical, physical));
}
static rkv_go_result rkv_go_kept_positions(const rkv_cache *c, int32_t seq, int32_t layer,
                                           int32_t head, int32_t *out, int32_t out_len,
                                           int32_t *count) {
	return rkv_go_done(rkv_kept_positions(c, seq, layer, head, out, out_len, count));
}
static rkv_go_result rkv_go_stats(const rkv_cache *c, int32_t seq, rkv_stats *s) {
	return rkv_go_done(rkv_cache_stats(c, seq, s));
}
static rkv_go_result rkv_go_attend(rkv_cache *c, int32_t layer, int32_t n, const int32_t *seq_ids,
                                   rkv_tensor q, rkv_tensor out, uintptr_t q_device,
                                   uintptr_t out_device, float scale, uintptr_t stream) {
	if (q_device) q.data = (void *)q_device;
	if (out_device) out.data = (void *)out_device;
	return rkv_go_done(rkv_attend(c, layer, n, seq_ids, &q, &out, scale, (void *)stream));
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"unsafe"
)

// All means "every sequence" or "every layer" where a call accepts it.
const All = int(C.RKV_ALL)

// ErrClosed is returned by methods of a closed Cache.
var ErrClosed = errors.New("rkv: cache is closed")

// result turns the helper's status and message into an error.
func result(r C.rkv_go_result) error {
	if r.status == C.RKV_OK {
		return nil
	}
	message := ""
	if r.message != nil {
		message = C.GoString(r.message)
		C.free(unsafe.Pointer(r.message))
	}
	return &Error{Status: Status(r.status), Message: message}
}

// Version is the version of the library loaded at run time.
func Version() string { return C.GoString(C.rkv_version_string()) }

// VersionNumber is MAJOR*10000 + MINOR*100 + PATCH of the loaded library;
// HeaderVersion is the same for the header this package was built with.
func VersionNumber() int { return int(C.rkv_version_number()) }

// HeaderVersion is RKV_VERSION_NUMBER of the header at build time.
const HeaderVersion = int(C.RKV_VERSION_NUMBER)

// DType is an element type of K/V storage and of inputs.
type DType int32

const (
	F32  DType = C.RKV_DTYPE_F32
	F16  DType = C.RKV_DTYPE_F16
	BF16 DType = C.RKV_DTYPE_BF16
)

// DeviceType says where a cache's memory lives.
type DeviceType int32

const (
	CPU  DeviceType = C.RKV_DEVICE_CPU
	CUDA DeviceType = C.RKV_DEVICE_CUDA
)

// Method is the eviction method.
type Method int32

const (
	MethodRKV          Method = C.RKV_METHOD_RKV          // importance and redundancy (default)
	MethodSnapKV       Method = C.RKV_METHOD_SNAPKV       // importance only
	MethodH2O          Method = C.RKV_METHOD_H2O          // attention accumulated over every query
	MethodStreamingLLM Method = C.RKV_METHOD_STREAMINGLLM // first sink tokens plus the most recent
	MethodKeyDiff      Method = C.RKV_METHOD_KEYDIFF      // keys least similar to the mean key
	MethodRandom       Method = C.RKV_METHOD_RANDOM       // uniform random, seeded
	MethodFull         Method = C.RKV_METHOD_FULL         // never evicts: capacity MaxLen
)

// Mode orders kept tokens after a compression.
type Mode int32

const (
	ModePosition  Mode = C.RKV_MODE_POSITION
	ModeReference Mode = C.RKV_MODE_REFERENCE
)

// Pooling pools the query heads of one KV group.
type Pooling int32

const (
	PoolingMax  Pooling = C.RKV_POOLING_MAX
	PoolingMean Pooling = C.RKV_POOLING_MEAN
)

// Guard is a set of guard rails.
type Guard uint32

const (
	GuardSink   Guard = C.RKV_GUARD_SINK   // positions below Sink are never evicted
	GuardPrompt Guard = C.RKV_GUARD_PROMPT // prompt tokens are never evicted
)

// Param keys the parameters a live cache may change (SetParam) and bounds.
type Param int32

const (
	ParamKernel       Param = C.RKV_PARAM_KERNEL
	ParamLambda       Param = C.RKV_PARAM_LAMBDA
	ParamThreshold    Param = C.RKV_PARAM_THRESHOLD
	ParamPooling      Param = C.RKV_PARAM_POOLING
	ParamSeed         Param = C.RKV_PARAM_SEED
	ParamAutoCompress Param = C.RKV_PARAM_AUTO_COMPRESS
	ParamBudget       Param = C.RKV_PARAM_BUDGET
	ParamBuffer       Param = C.RKV_PARAM_BUFFER
	ParamWindow       Param = C.RKV_PARAM_WINDOW
	ParamMethod       Param = C.RKV_PARAM_METHOD
)

// Bounds returns the inclusive bounds of a parameter on its own.
func (p Param) Bounds() (lower, upper float64, err error) {
	var lo, hi C.double
	err = result(C.rkv_go_param_bounds(C.int32_t(p), &lo, &hi))
	return float64(lo), float64(hi), err
}

// Params are a cache's parameters. Start from DefaultParams (the library's
// defaults) and set the shape; NewCache validates everything.
type Params struct {
	MaxSeqs, NumLayers, NumKVHeads, NumQHeads, HeadDim int
	DType                                              DType
	Device                                             DeviceType
	DeviceID                                           int
	Method                                             Method
	Mode                                               Mode
	Budget, Buffer, Window, Kernel                     int
	Lambda, Threshold                                  float32
	Pooling                                            Pooling
	Sink                                               int
	Guards                                             Guard
	MaxPromptLen, MaxLen                               int
	Seed                                               uint64
	AutoCompress                                       bool
}

// DefaultParams returns the library's defaults (R-KV, budget 1024 + buffer
// 128, f32 on the CPU, automatic compression) with an unset shape.
func DefaultParams() Params {
	var raw C.rkv_cache_params
	if err := result(C.rkv_go_params_default(&raw, C.size_t(unsafe.Sizeof(raw)))); err != nil {
		panic(err) // the struct is the header's own: cannot fail
	}
	return fromRaw(&raw)
}

func fromRaw(r *C.rkv_cache_params) Params {
	return Params{
		MaxSeqs: int(r.max_seqs), NumLayers: int(r.num_layers), NumKVHeads: int(r.num_kv_heads),
		NumQHeads: int(r.num_q_heads), HeadDim: int(r.head_dim), DType: DType(r.dtype),
		Device: DeviceType(r.device_type), DeviceID: int(r.device_id), Method: Method(r.method),
		Mode: Mode(r.mode), Budget: int(r.budget), Buffer: int(r.buffer), Window: int(r.window),
		Kernel: int(r.kernel), Lambda: float32(r.lambda), Threshold: float32(r.threshold),
		Pooling: Pooling(r.pooling), Sink: int(r.sink), Guards: Guard(r.guards),
		MaxPromptLen: int(r.max_prompt_len), MaxLen: int(r.max_len), Seed: uint64(r.seed),
		AutoCompress: r.auto_compress != 0,
	}
}

func (p *Params) raw() C.rkv_cache_params {
	var r C.rkv_cache_params
	r.struct_size = C.size_t(unsafe.Sizeof(r))
	r.max_seqs, r.num_layers = C.int32_t(p.MaxSeqs), C.int32_t(p.NumLayers)
	r.num_kv_heads, r.num_q_heads, r.head_dim = C.int32_t(p.NumKVHeads), C.int32_t(p.NumQHeads), C.int32_t(p.HeadDim)
	r.dtype, r.device_type, r.device_id = C.rkv_dtype(p.DType), C.rkv_device_type(p.Device), C.int32_t(p.DeviceID)
	r.method, r.mode = C.rkv_method(p.Method), C.rkv_mode(p.Mode)
	r.budget, r.buffer, r.window, r.kernel = C.int32_t(p.Budget), C.int32_t(p.Buffer), C.int32_t(p.Window), C.int32_t(p.Kernel)
	r.lambda, r.threshold, r.pooling = C.float(p.Lambda), C.float(p.Threshold), C.rkv_pooling(p.Pooling)
	r.sink, r.guards = C.int32_t(p.Sink), C.uint32_t(p.Guards)
	r.max_prompt_len, r.max_len, r.seed = C.int32_t(p.MaxPromptLen), C.int32_t(p.MaxLen), C.uint64_t(p.Seed)
	if p.AutoCompress {
		r.auto_compress = 1
	}
	return r
}

// Size returns the bytes a cache with these params would allocate, without
// allocating; it validates as NewCache does.
func (p Params) Size() (uint64, error) {
	r := p.raw()
	var bytes C.uint64_t
	err := result(C.rkv_go_cache_size(&r, &bytes))
	return uint64(bytes), err
}

// Cache is a librkv cache: the K/V memory of MaxSeqs sequences x NumLayers x
// NumKVHeads, compressed to a fixed budget per head.
type Cache struct {
	c *C.rkv_cache
}

// NewCache validates p and allocates all the memory the cache will use.
func NewCache(p Params) (*Cache, error) {
	r := p.raw()
	var handle *C.rkv_cache
	if err := result(C.rkv_go_create(&r, &handle)); err != nil {
		return nil, err
	}
	cache := &Cache{c: handle}
	// A safety net only: call Close to free memory (device memory above all)
	// at a known point.
	runtime.SetFinalizer(cache, (*Cache).Close)
	return cache, nil
}

// Close frees the cache and all its memory; every view becomes invalid.
// Closing again does nothing.
func (c *Cache) Close() error {
	if c.c == nil {
		return nil
	}
	C.rkv_cache_destroy(c.c)
	c.c = nil
	runtime.SetFinalizer(c, nil)
	return nil
}

func (c *Cache) handle() (*C.rkv_cache, error) {
	if c == nil || c.c == nil {
		return nil, ErrClosed
	}
	return c.c, nil
}

// Every method below ends with runtime.KeepAlive(c): without it the Cache
// could become unreachable during the cgo call and its finalizer destroy the
// handle the call is using.

// Params returns the parameters the cache runs with.
func (c *Cache) Params() (Params, error) {
	h, err := c.handle()
	if err != nil {
		return Params{}, err
	}
	var r C.rkv_cache_params
	r.struct_size = C.size_t(unsafe.Sizeof(r))
	err = result(C.rkv_go_get_params(h, &r))
	runtime.KeepAlive(c)
	return fromRaw(&r), err
}

// SetParam changes Lambda, Threshold, Kernel, Pooling, Seed or AutoCompress of
// a live cache (others fail with ErrBadState), from the next compression on.
func (c *Cache) SetParam(p Param, value float64) error {
	h, err := c.handle()
	if err != nil {
		return err
	}
	err = result(C.rkv_go_set_param(h, C.int32_t(p), C.double(value)))
	runtime.KeepAlive(c)
	return err
}

// Layout gives a tensor's element strides (seq, token, head) from its head
// count and head_dim; head_dim is always innermost and contiguous.
type Layout func(heads, dim int64) (seq, token, head int64)

// Decode is [n, heads, dim]: one token per entry.
func Decode(heads, dim int64) (int64, int64, int64) { return heads * dim, 0, dim }

// Packed is [total_tokens, heads, dim] shared by all entries (with TokenOffsets).
func Packed(heads, dim int64) (int64, int64, int64) { return 0, heads * dim, dim }

// BHTD is [n, heads, tokens, dim] (transformers' layout).
func BHTD(tokens int) Layout {
	return func(heads, dim int64) (int64, int64, int64) {
		return heads * int64(tokens) * dim, dim, int64(tokens) * dim
	}
}

// BTHD is [n, tokens, heads, dim].
func BTHD(tokens int) Layout {
	return func(heads, dim int64) (int64, int64, int64) {
		return int64(tokens) * heads * dim, heads * dim, dim
	}
}

// Strided takes any element strides.
func Strided(seq, token, head int64) Layout {
	return func(int64, int64) (int64, int64, int64) { return seq, token, head }
}

// Tensor describes an input or output: a host slice or device memory.
type Tensor struct {
	raw     C.rkv_tensor
	host    unsafe.Pointer // Go memory (nil for device memory)
	hostLen int            // elements of the host slice
	device  uintptr        // device address (0 for host memory)
}

func newTensor(dtype DType, heads, dim int, layout Layout) Tensor {
	var t Tensor
	seq, token, head := layout(int64(heads), int64(dim))
	t.raw.dtype, t.raw.num_heads, t.raw.head_dim = C.rkv_dtype(dtype), C.int32_t(heads), C.int32_t(dim)
	t.raw.stride_seq, t.raw.stride_token, t.raw.stride_head = C.int64_t(seq), C.int64_t(token), C.int64_t(head)
	return t
}

// HostF32 is a float32 host tensor.
func HostF32(data []float32, heads, dim int, layout Layout) Tensor {
	t := newTensor(F32, heads, dim, layout)
	if len(data) > 0 {
		t.host, t.hostLen = unsafe.Pointer(&data[0]), len(data)
	}
	return t
}

// HostBits is a float16 or bfloat16 host tensor, given as its raw bits.
func HostBits(data []uint16, dtype DType, heads, dim int, layout Layout) Tensor {
	t := newTensor(dtype, heads, dim, layout)
	if len(data) > 0 {
		t.host, t.hostLen = unsafe.Pointer(&data[0]), len(data)
	}
	return t
}

// DeviceTensor is device memory of the cache's GPU at address ptr. The
// caller keeps it valid until the work enqueued on the call's stream has run.
func DeviceTensor(ptr uintptr, dtype DType, heads, dim int, layout Layout) Tensor {
	t := newTensor(dtype, heads, dim, layout)
	t.device = ptr
	return t
}

// withData is the C tensor with its host pointer filled in (device addresses
// go to the C helper separately).
func (t *Tensor) withData() C.rkv_tensor {
	r := t.raw
	r.data = t.host
	return r
}

// checkExtent: the library reads element (i, t, h, e) at i*stride_seq +
// (offset_i+t)*stride_token + h*stride_head + e and cannot know a Go slice's
// length, so the largest index is checked here. Negative strides and overflow
// are left to the library, which rejects them before reading.
func (t *Tensor) checkExtent(name string, entries int, counts []int32, offsets []int64) error {
	if t.device != 0 {
		return nil
	}
	if t.host == nil {
		if entries == 0 {
			return nil
		}
		return &Error{StatusInvalidArgument, name + ": empty slice"}
	}
	s, tok, hd := int64(t.raw.stride_seq), int64(t.raw.stride_token), int64(t.raw.stride_head)
	heads, dim := int64(t.raw.num_heads), int64(t.raw.head_dim)
	if s < 0 || tok < 0 || hd < 0 || heads < 1 || dim < 1 {
		return nil
	}
	const limit = int64(1) << 62 // far beyond any slice: no overflow below it
	var last int64
	for i := 0; i < entries; i++ {
		n, off := int64(1), int64(0)
		if counts != nil {
			n = int64(counts[i])
		}
		if offsets != nil {
			off = offsets[i]
		}
		if n < 1 || off < 0 || off > limit/2 || s > limit/int64(entries+1) || tok > limit/(off+n+1) ||
			hd > limit/(heads+1) {
			return nil // the library rejects or reports it
		}
		if index := int64(i)*s + (off+n-1)*tok + (heads-1)*hd + dim - 1; index > last {
			last = index
		}
	}
	if entries > 0 && last >= int64(t.hostLen) {
		return &Error{StatusInvalidArgument, fmt.Sprintf(
			"%s: the shape and strides reach element %d, but the slice holds %d elements", name, last, t.hostLen)}
	}
	return nil
}

// Append is one call of Cache.Append: tokens' K, V (and Q) for one layer of
// one or many sequences.
type Append struct {
	Layer        int
	SeqIDs       []int32 // distinct sequence slots, one per entry
	NumTokens    []int32 // tokens per entry; nil = one each (a decode step)
	TokenOffsets []int64 // first token of each entry; nil = 0 each
	K, V         Tensor  // [entry, token, num_kv_heads, head_dim], post-RoPE
	Q            *Tensor // [entry, token, num_q_heads, head_dim], post-RoPE; nil if none
	Prompt       bool    // these are prompt tokens
	Stream       uintptr // cudaStream_t for CUDA caches; 0 = default stream
}

// Append appends tokens to one layer of one or many sequences; a full
// sequence is compressed first (automatic compression).
func (c *Cache) Append(a Append) error {
	h, err := c.handle()
	if err != nil {
		return err
	}
	n := len(a.SeqIDs)
	if a.NumTokens != nil && len(a.NumTokens) != n || a.TokenOffsets != nil && len(a.TokenOffsets) != n {
		return &Error{StatusInvalidArgument, "NumTokens and TokenOffsets need one entry per SeqIDs entry"}
	}
	if n == 0 {
		return &Error{StatusInvalidArgument, "SeqIDs is empty"}
	}
	var q Tensor
	if a.Q != nil {
		q = *a.Q
	}
	for _, t := range []struct {
		name string
		t    *Tensor
	}{{"K", &a.K}, {"V", &a.V}, {"Q", &q}} {
		if t.name == "Q" && a.Q == nil {
			continue
		}
		if err := t.t.checkExtent(t.name, n, a.NumTokens, a.TokenOffsets); err != nil {
			return err
		}
	}
	var args C.rkv_append_args
	args.struct_size = C.size_t(unsafe.Sizeof(args))
	args.layer, args.num_seqs = C.int32_t(a.Layer), C.int32_t(n)
	args.seq_ids = (*C.int32_t)(unsafe.Pointer(&a.SeqIDs[0]))
	if a.NumTokens != nil {
		args.num_tokens = (*C.int32_t)(unsafe.Pointer(&a.NumTokens[0]))
	}
	if a.TokenOffsets != nil {
		args.token_offsets = (*C.int64_t)(unsafe.Pointer(&a.TokenOffsets[0]))
	}
	args.k, args.v = a.K.withData(), a.V.withData()
	if a.Q != nil {
		args.q = q.withData()
	} else {
		args.q = a.K.raw // a valid description with data NULL: "no queries"
		args.q.data = nil
	}
	if a.Prompt {
		args.flags = C.RKV_APPEND_PROMPT
	}
	err = result(C.rkv_go_append(h, args, C.uintptr_t(a.K.device), C.uintptr_t(a.V.device),
		C.uintptr_t(q.device), C.uintptr_t(a.Stream)))
	// The slices are referenced only through pointers inside args: keep them
	// (and the cache) alive until the library has read them.
	runtime.KeepAlive(a)
	runtime.KeepAlive(q)
	runtime.KeepAlive(c)
	return err
}

// Compress compresses now: seq if it holds more than its budget, or with
// seq = All every sequence that is due; layer or All.
func (c *Cache) Compress(seq, layer int, stream uintptr) error {
	h, err := c.handle()
	if err != nil {
		return err
	}
	err = result(C.rkv_go_compress(h, C.int32_t(seq), C.int32_t(layer), C.uintptr_t(stream)))
	runtime.KeepAlive(c)
	return err
}

// CompressDue reports whether appending one more token to (seq, layer) would
// compress first; either may be All ("any").
func (c *Cache) CompressDue(seq, layer int) (bool, error) {
	h, err := c.handle()
	if err != nil {
		return false, err
	}
	var due C.int32_t
	err = result(C.rkv_go_compress_due(h, C.int32_t(seq), C.int32_t(layer), &due))
	runtime.KeepAlive(c)
	return due != 0, err
}

// Reset forgets a sequence (or All) so its slot can serve a new request.
func (c *Cache) Reset(seq int, stream uintptr) error {
	h, err := c.handle()
	if err != nil {
		return err
	}
	err = result(C.rkv_go_reset(h, C.int32_t(seq), C.uintptr_t(stream)))
	runtime.KeepAlive(c)
	return err
}

// SeqLength returns the logical length (tokens appended) and the physical
// length (tokens held per head) of (seq, layer).
func (c *Cache) SeqLength(seq, layer int) (logical int64, physical int, err error) {
	h, err := c.handle()
	if err != nil {
		return 0, 0, err
	}
	var lg C.int64_t
	var ph C.int32_t
	err = result(C.rkv_go_seq_length(h, C.int32_t(seq), C.int32_t(layer), &lg, &ph))
	runtime.KeepAlive(c)
	return int64(lg), int(ph), err
}

// KeptPositions returns the original positions one head holds, in slot order.
func (c *Cache) KeptPositions(seq, layer, head int) ([]int32, error) {
	_, physical, err := c.SeqLength(seq, layer)
	if err != nil {
		return nil, err
	}
	h, err := c.handle()
	if err != nil {
		return nil, err
	}
	out := make([]int32, physical+1) // +1: never a zero-length slice to point at
	var count C.int32_t
	err = result(C.rkv_go_kept_positions(h, C.int32_t(seq), C.int32_t(layer), C.int32_t(head),
		(*C.int32_t)(unsafe.Pointer(&out[0])), C.int32_t(len(out)), &count))
	runtime.KeepAlive(c)
	if err != nil {
		return nil, err
	}
	return out[:count], nil
}

// Stats are a sequence's or the whole cache's statistics.
type Stats struct {
	BytesAllocated, BytesKVCapacity, BytesKVHeld, BytesKVFull uint64
	TokensAppended, TokensHeld, TokensEvicted, Compressions   uint64
	CompressSeconds                                           float64
}

// Stats returns the statistics of seq, or of the whole cache with All.
func (c *Cache) Stats(seq int) (Stats, error) {
	h, err := c.handle()
	if err != nil {
		return Stats{}, err
	}
	var s C.rkv_stats
	s.struct_size = C.size_t(unsafe.Sizeof(s))
	err = result(C.rkv_go_stats(h, C.int32_t(seq), &s))
	runtime.KeepAlive(c)
	return Stats{uint64(s.bytes_allocated), uint64(s.bytes_kv_capacity), uint64(s.bytes_kv_held),
		uint64(s.bytes_kv_full), uint64(s.tokens_appended), uint64(s.tokens_held),
		uint64(s.tokens_evicted), uint64(s.compressions), float64(s.compress_seconds)}, err
}

// Attend runs decode attention over the held tokens: q and out are
// [n, num_q_heads, head_dim] (Decode layout); scale <= 0 means 1/sqrt(head_dim).
func (c *Cache) Attend(layer int, seqIDs []int32, q, out Tensor, scale float32, stream uintptr) error {
	h, err := c.handle()
	if err != nil {
		return err
	}
	if len(seqIDs) == 0 {
		return &Error{StatusInvalidArgument, "seqIDs is empty"}
	}
	if err := q.checkExtent("q", len(seqIDs), nil, nil); err != nil {
		return err
	}
	if err := out.checkExtent("out", len(seqIDs), nil, nil); err != nil {
		return err
	}
	err = result(C.rkv_go_attend(h, C.int32_t(layer), C.int32_t(len(seqIDs)),
		(*C.int32_t)(unsafe.Pointer(&seqIDs[0])), q.withData(), out.withData(),
		C.uintptr_t(q.device), C.uintptr_t(out.device), C.float(scale), C.uintptr_t(stream)))
	runtime.KeepAlive(seqIDs)
	runtime.KeepAlive(q)
	runtime.KeepAlive(out)
	runtime.KeepAlive(c)
	return err
}

// View is the held K, V and positions of one (sequence, layer). It points
// into the cache's memory: valid until the next Append, Compress or Reset of
// the sequence, or Close.
type View struct {
	cache         *Cache // keeps the cache reachable while the view is used
	raw           C.rkv_kv_view
	Length        int   // tokens held per head
	LogicalLength int64 // tokens appended so far
	NumHeads      int
	HeadDim       int
	DType         DType
	Device        DeviceType
	DeviceID      int
}

// View returns the held K, V and positions of (seq, layer), without copying.
func (c *Cache) View(seq, layer int) (*View, error) {
	h, err := c.handle()
	if err != nil {
		return nil, err
	}
	v := &View{cache: c}
	v.raw.struct_size = C.size_t(unsafe.Sizeof(v.raw))
	err = result(C.rkv_go_view(h, C.int32_t(seq), C.int32_t(layer), &v.raw))
	runtime.KeepAlive(c)
	if err != nil {
		return nil, err
	}
	v.Length, v.LogicalLength = int(v.raw.length), int64(v.raw.logical_length)
	v.NumHeads, v.HeadDim = int(v.raw.num_kv_heads), int(v.raw.head_dim)
	v.DType, v.Device, v.DeviceID = DType(v.raw.dtype), DeviceType(v.raw.device_type), int(v.raw.device_id)
	return v, nil
}

func (v *View) hostRows(data unsafe.Pointer, head int, dtype DType) (unsafe.Pointer, error) {
	if v.Device != CPU {
		return nil, &Error{StatusInvalidArgument, "the view is in device memory: use its addresses"}
	}
	if dtype != v.DType {
		return nil, &Error{StatusInvalidArgument, fmt.Sprintf("the view holds dtype %d, not %d", v.DType, dtype)}
	}
	if head < 0 || head >= v.NumHeads {
		return nil, &Error{StatusOutOfRange, fmt.Sprintf("head %d of %d", head, v.NumHeads)}
	}
	size := int64(4)
	if dtype != F32 {
		size = 2
	}
	return unsafe.Add(data, int64(head)*int64(v.raw.stride_head)*size), nil
}

// KeysF32 returns the keys of one head, [Length, HeadDim] row-major, in the
// cache's memory (f32 storage on the CPU).
func (v *View) KeysF32(head int) ([]float32, error) {
	p, err := v.hostRows(v.raw.k, head, F32)
	if err != nil || v.Length == 0 {
		return nil, err
	}
	return unsafe.Slice((*float32)(p), v.Length*v.HeadDim), nil
}

// ValuesF32 returns the values of one head, [Length, HeadDim].
func (v *View) ValuesF32(head int) ([]float32, error) {
	p, err := v.hostRows(v.raw.v, head, F32)
	if err != nil || v.Length == 0 {
		return nil, err
	}
	return unsafe.Slice((*float32)(p), v.Length*v.HeadDim), nil
}

// KeysBits returns the keys of one head as raw f16/bf16 bits.
func (v *View) KeysBits(head int) ([]uint16, error) {
	if v.DType == F32 {
		return nil, &Error{StatusInvalidArgument, "the view holds f32: use KeysF32"}
	}
	p, err := v.hostRows(v.raw.k, head, v.DType)
	if err != nil || v.Length == 0 {
		return nil, err
	}
	return unsafe.Slice((*uint16)(p), v.Length*v.HeadDim), nil
}

// Positions returns the original positions one head holds, in slot order.
func (v *View) Positions(head int) ([]int32, error) {
	if v.Device != CPU {
		return nil, &Error{StatusInvalidArgument, "the view is in device memory: use its addresses"}
	}
	if head < 0 || head >= v.NumHeads {
		return nil, &Error{StatusOutOfRange, fmt.Sprintf("head %d of %d", head, v.NumHeads)}
	}
	if v.Length == 0 {
		return nil, nil
	}
	p := unsafe.Add(unsafe.Pointer(v.raw.positions), int64(head)*int64(v.raw.positions_stride_head)*4)
	return unsafe.Slice((*int32)(p), v.Length), nil
}

// Addresses returns the K, V and positions pointers and the element strides
// (between heads, between tokens) for an engine's own kernel.
func (v *View) Addresses() (k, val, positions uintptr, strideHead, strideToken, positionsStrideHead int64) {
	return uintptr(v.raw.k), uintptr(v.raw.v), uintptr(unsafe.Pointer(v.raw.positions)),
		int64(v.raw.stride_head), int64(v.raw.stride_token), int64(v.raw.positions_stride_head)
}
