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
// Go value; the C description is built for each call. Its extent (elements
// the library may touch) is the slice's length, or what DeviceTensor is told:
// the library checks every element a call names against it and fails with
// ErrCapacity, naming the tensor, when one lies outside.
type Tensor struct {
	dtype                              DType
	heads, dim                         int
	strideSeq, strideToken, strideHead int64
	extent                             int64          // elements from the data pointer; 0 = unchecked
	host                               unsafe.Pointer // Go memory (nil for device memory or an empty slice)
	hostElement                        int64          // bytes of the host slice's elements; 0 for device memory
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
	t.hostElement, t.extent = 4, int64(len(data))
	if len(data) > 0 {
		t.host = unsafe.Pointer(&data[0])
	}
	return t
}

// HostBits is a float16 or bfloat16 host tensor (dtype F16 or BF16), given as
// its raw bits.
func HostBits(data []uint16, dtype DType, heads, dim int, layout Layout) Tensor {
	t := newTensor(dtype, heads, dim, layout)
	t.hostElement, t.extent = 2, int64(len(data))
	if len(data) > 0 {
		t.host = unsafe.Pointer(&data[0])
	}
	return t
}

// DeviceTensor is device memory of the cache's GPU at address ptr, extent
// elements of dtype long (0: unknown, then nothing is checked). The caller
// keeps it valid until the work enqueued on the call's stream has run.
func DeviceTensor(ptr uintptr, dtype DType, heads, dim int, layout Layout, extent int64) Tensor {
	t := newTensor(dtype, heads, dim, layout)
	t.device, t.extent = ptr, extent
	return t
}

// Extent is the number of elements the library may touch from the tensor's
// data (0: unchecked).
func (t Tensor) Extent() int64 { return t.extent }

// description is what the C rkv_tensor of t holds. Host memory is not part of
// it (cgo forbids Go pointers in C memory): it travels as an argument of the
// call, and data stays 0 for it.
type description struct {
	dtype, heads, dim                  int32
	strideSeq, strideToken, strideHead int64
	extent                             int64
	device                             uintptr
}

// description checks what only Go can see, then describes t: a host slice's
// element type (HostBits must be F16 or BF16: the extent counts its uint16s)
// and an empty slice (extent 0 would mean "unchecked" to the library).
func (t *Tensor) description(name string) (description, error) {
	if t.heads != int(int32(t.heads)) || t.dim != int(int32(t.dim)) {
		return description{}, invalid(fmt.Sprintf("%s: %d heads of dim %d do not fit an int32", name, t.heads, t.dim))
	}
	if t.hostElement != 0 && t.host == nil {
		return description{}, invalid(name + ": empty slice")
	}
	if t.hostElement != 0 && t.hostElement != t.dtype.size() {
		return description{}, invalid(fmt.Sprintf(
			"%s: a slice of %d-byte elements described as dtype %d (HostBits takes F16 or BF16)",
			name, t.hostElement, t.dtype))
	}
	return description{int32(t.dtype), int32(t.heads), int32(t.dim),
		t.strideSeq, t.strideToken, t.strideHead, t.extent, t.device}, nil
}

// write fills a C tensor (each field is a cgo call).
func (d *description) write(raw capi.Rkv_tensor) {
	raw.SetDtype(d.dtype)
	raw.SetNum_heads(d.heads)
	raw.SetHead_dim(d.dim)
	raw.SetStride_seq(d.strideSeq)
	raw.SetStride_token(d.strideToken)
	raw.SetStride_head(d.strideHead)
	raw.SetExtent(d.extent)
	raw.SetData(d.device)
}

// entries is n as the C API's int32 count of entries.
func entries(n int) (int32, error) {
	if n != int(int32(n)) {
		return 0, invalid(fmt.Sprintf("%d entries do not fit an int32", n))
	}
	return int32(n), nil
}
