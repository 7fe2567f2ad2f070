package rkv

import (
	"fmt"
	"unsafe"

	"rkv/capi"
)

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

// Tensor describes an input or output: a host slice or device memory. It is a
// Go value; the C description is built for each call.
type Tensor struct {
	dtype                              DType
	heads, dim                         int
	strideSeq, strideToken, strideHead int64
	host                               unsafe.Pointer // Go memory (nil for device memory)
	hostLen                            int            // elements of the host slice
	device                             uintptr        // device address (0 for host memory)
}

func newTensor(dtype DType, heads, dim int, layout Layout) Tensor {
	t := Tensor{dtype: dtype, heads: heads, dim: dim}
	t.strideSeq, t.strideToken, t.strideHead = layout(int64(heads), int64(dim))
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

// description is what the C rkv_tensor of t holds. Host memory is not part of
// it (cgo forbids Go pointers in C memory): it travels as an argument of the
// call, and data stays 0 for it.
type description struct {
	dtype, heads, dim                  int32
	strideSeq, strideToken, strideHead int64
	device                             uintptr
}

func (t *Tensor) description(name string) (description, error) {
	if t.heads != int(int32(t.heads)) || t.dim != int(int32(t.dim)) {
		return description{}, invalid(fmt.Sprintf("%s: %d heads of dim %d do not fit an int32", name, t.heads, t.dim))
	}
	return description{int32(t.dtype), int32(t.heads), int32(t.dim),
		t.strideSeq, t.strideToken, t.strideHead, t.device}, nil
}

// write fills a C tensor (each field is a cgo call).
func (d *description) write(raw capi.Rkv_tensor) {
	raw.SetDtype(d.dtype)
	raw.SetNum_heads(d.heads)
	raw.SetHead_dim(d.dim)
	raw.SetStride_seq(d.strideSeq)
	raw.SetStride_token(d.strideToken)
	raw.SetStride_head(d.strideHead)
	raw.SetData(d.device)
}

// appendArgs is the C rkv_append_args a Cache reuses for every Append, with a
// copy of what it holds: a decode loop that repeats one layout writes nothing
// into it but what changed (each field written is a cgo call).
type appendArgs struct {
	raw            capi.Rkv_append_args
	tensors        [3]capi.Rkv_tensor // K, V, Q inside raw
	held           [3]description     // what they hold (calloc: zeros)
	layer, entries int32
	flags          uint32
}

func newAppendArgs() (appendArgs, error) {
	raw := capi.NewRkv_append_args() // zeroed, struct_size set
	if raw.Swigcptr() == 0 {
		return appendArgs{}, &Error{Status: StatusOutOfMemory, Message: "no memory for the append arguments"}
	}
	return appendArgs{raw: raw, tensors: [3]capi.Rkv_tensor{raw.GetK(), raw.GetV(), raw.GetQ()}}, nil
}

func (a *appendArgs) free() {
	if a.raw != nil {
		capi.DeleteRkv_append_args(a.raw)
		*a = appendArgs{}
	}
}

// set brings the C arguments to these values, writing only what differs.
func (a *appendArgs) set(layer, entries int32, flags uint32, tensors [3]description) {
	if layer != a.layer {
		a.raw.SetLayer(layer)
		a.layer = layer
	}
	if entries != a.entries {
		a.raw.SetNum_seqs(entries)
		a.entries = entries
	}
	if flags != a.flags {
		a.raw.SetFlags(flags)
		a.flags = flags
	}
	for i := range tensors {
		if tensors[i] != a.held[i] {
			tensors[i].write(a.tensors[i])
			a.held[i] = tensors[i]
		}
	}
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
		return invalid(name + ": empty slice")
	}
	s, tok, hd := t.strideSeq, t.strideToken, t.strideHead
	heads, dim := int64(t.heads), int64(t.dim)
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
			hd > limit/(heads+1) || dim > limit/2 {
			return nil // the library rejects or reports it
		}
		if index := int64(i)*s + (off+n-1)*tok + (heads-1)*hd + dim - 1; index > last {
			last = index
		}
	}
	if entries > 0 && last >= int64(t.hostLen) {
		return invalid(fmt.Sprintf(
			"%s: the shape and strides reach element %d, but the slice holds %d elements", name, last, t.hostLen))
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
	n := len(a.SeqIDs)
	if a.NumTokens != nil && len(a.NumTokens) != n || a.TokenOffsets != nil && len(a.TokenOffsets) != n {
		return invalid("NumTokens and TokenOffsets need one entry per SeqIDs entry")
	}
	if n == 0 {
		return invalid("SeqIDs is empty")
	}
	if n != int(int32(n)) {
		return invalid(fmt.Sprintf("%d entries do not fit an int32", n))
	}
	q := a.K // no queries: K's description with no data
	q.host, q.hostLen, q.device = nil, 0, 0
	if a.Q != nil {
		q = *a.Q
	}
	var described [3]description
	for i, in := range [3]struct {
		name string
		t    *Tensor
	}{{"K", &a.K}, {"V", &a.V}, {"Q", &q}} {
		if i < 2 || a.Q != nil {
			if err := in.t.checkExtent(in.name, n, a.NumTokens, a.TokenOffsets); err != nil {
				return err
			}
		}
		var err error
		if described[i], err = in.t.description(in.name); err != nil {
			return err
		}
	}
	var flags uint32
	if a.Prompt {
		flags = uint32(capi.RKV_APPEND_PROMPT)
	}
	var numTokens *int32
	if a.NumTokens != nil {
		numTokens = &a.NumTokens[0]
	}
	var offsets *int64
	if a.TokenOffsets != nil {
		offsets = &a.TokenOffsets[0]
	}
	// The host slices are arguments of this one cgo call, which keeps them
	// alive and pinned while the library reads them.
	return c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		c.args.set(int32(a.Layer), int32(n), flags, described)
		return capi.Rkv_go_append(h, c.args.raw, &a.SeqIDs[0], numTokens, offsets,
			a.K.host, a.V.host, q.host, a.Stream)
	}, a.Layer)
}

// Attend runs decode attention over the held tokens: q and out are
// [n, num_q_heads, head_dim] (Decode layout); scale <= 0 means 1/sqrt(head_dim).
func (c *Cache) Attend(layer int, seqIDs []int32, q, out Tensor, scale float32, stream uintptr) error {
	n := len(seqIDs)
	if n == 0 {
		return invalid("seqIDs is empty")
	}
	if n != int(int32(n)) {
		return invalid(fmt.Sprintf("%d entries do not fit an int32", n))
	}
	if err := q.checkExtent("q", n, nil, nil); err != nil {
		return err
	}
	if err := out.checkExtent("out", n, nil, nil); err != nil {
		return err
	}
	dq, err := q.description("q")
	if err != nil {
		return err
	}
	dout, err := out.description("out")
	if err != nil {
		return err
	}
	rawQ, rawOut := capi.NewRkv_tensor(), capi.NewRkv_tensor()
	defer capi.DeleteRkv_tensor(rawQ)
	defer capi.DeleteRkv_tensor(rawOut)
	dq.write(rawQ)
	dout.write(rawOut)
	return c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_go_attend(h, int32(layer), int32(n), &seqIDs[0], rawQ, rawOut,
			q.host, out.host, scale, stream)
	}, layer)
}
