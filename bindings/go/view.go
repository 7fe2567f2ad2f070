package rkv

import (
	"fmt"
	"math"
	"unsafe"

	"rkv/capi"
)

// SeqView is the held K, V and positions of one (sequence, layer). It points
// into the cache's memory: valid until the next call that changes the
// sequence, or Close.
type SeqView struct {
	cache         *Cache         // keeps the cache reachable while the view is used
	k, v          unsafe.Pointer // [NumHeads, Length, HeadDim] at strideHead, strideToken
	positions     *int32         // [NumHeads, Length] at positionsStrideHead
	strideHead    int64
	strideToken   int64
	positionsHead int64
	kScale        *float32 // FP8 storage: [NumHeads, Length] at scaleHead (else nil)
	vScale        *float32
	scaleHead     int64
	Length        int   // tokens held per head
	LogicalLength int64 // tokens appended so far
	NumHeads      int
	HeadDim       int
	DType         DType
	Device        DeviceType
	DeviceID      int
}

// View returns the held K, V and positions of (seq, layer), without copying.
func (c *Cache) View(seq, layer int) (*SeqView, error) {
	raw := capi.NewRkv_seq_view() // struct_size set
	defer capi.DeleteRkv_seq_view(raw)
	if err := c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_view(h, int32(seq), int32(layer), raw)
	}, seq, layer); err != nil {
		return nil, err
	}
	return &SeqView{
		cache: c, k: raw.GetK(), v: raw.GetV(), positions: raw.GetPositions(),
		strideHead: raw.GetStride_head(), strideToken: raw.GetStride_token(),
		positionsHead: raw.GetPositions_stride_head(),
		kScale:        raw.GetK_scale(), vScale: raw.GetV_scale(), scaleHead: raw.GetScale_stride_head(),
		Length: int(raw.GetLength()), LogicalLength: raw.GetLogical_length(),
		NumHeads: int(raw.GetNum_kv_heads()), HeadDim: int(raw.GetHead_dim()),
		DType: DType(raw.GetDtype()), Device: DeviceType(raw.GetDevice_type()),
		DeviceID: int(raw.GetDevice_id()),
	}, nil
}

// host checks that the view can be read from Go: host memory, a cache not
// closed, a head it has.
func (v *SeqView) host(head int) error {
	if v.Device != CPU {
		return invalid("the view is in device memory: use its addresses")
	}
	v.cache.mu.Lock()
	closed := v.cache.handle == nil
	v.cache.mu.Unlock()
	if closed {
		return ErrClosed
	}
	if head < 0 || head >= v.NumHeads {
		return &Error{Status: StatusOutOfRange, Message: fmt.Sprintf("head %d of %d", head, v.NumHeads)}
	}
	return nil
}

// rows is one head's [Length, HeadDim] block of K or V in the cache's memory.
func (v *SeqView) rows(data unsafe.Pointer, head int, dtype DType) (unsafe.Pointer, error) {
	if err := v.host(head); err != nil {
		return nil, err
	}
	if dtype != v.DType {
		return nil, invalid(fmt.Sprintf("the view holds dtype %d, not %d", v.DType, dtype))
	}
	return unsafe.Add(data, int64(head)*v.strideHead*dtype.size()), nil
}

// KeysF32 returns the keys of one head, [Length, HeadDim] row-major, in the
// cache's memory (f32 storage on the CPU).
func (v *SeqView) KeysF32(head int) ([]float32, error) {
	p, err := v.rows(v.k, head, F32)
	if err != nil || v.Length == 0 {
		return nil, err
	}
	return unsafe.Slice((*float32)(p), v.Length*v.HeadDim), nil
}

// ValuesF32 returns the values of one head, [Length, HeadDim].
func (v *SeqView) ValuesF32(head int) ([]float32, error) {
	p, err := v.rows(v.v, head, F32)
	if err != nil || v.Length == 0 {
		return nil, err
	}
	return unsafe.Slice((*float32)(p), v.Length*v.HeadDim), nil
}

// KeysBits returns the keys of one head as raw f16/bf16 bits.
func (v *SeqView) KeysBits(head int) ([]uint16, error) {
	if v.DType != F16 && v.DType != BF16 {
		return nil, invalid(fmt.Sprintf("the view holds dtype %d, not f16 or bf16", v.DType))
	}
	p, err := v.rows(v.k, head, v.DType)
	if err != nil || v.Length == 0 {
		return nil, err
	}
	return unsafe.Slice((*uint16)(p), v.Length*v.HeadDim), nil
}

// KeysFP8 returns the keys of one head of an FP8 cache as E4M3 bytes,
// [Length, HeadDim]; a key is FP8Value(byte) * KeyScales(head)[token].
func (v *SeqView) KeysFP8(head int) ([]uint8, error) {
	p, err := v.rows(v.k, head, FP8E4M3)
	if err != nil || v.Length == 0 {
		return nil, err
	}
	return unsafe.Slice((*uint8)(p), v.Length*v.HeadDim), nil
}

// KeyScales returns the scale of each key row of one head (FP8 storage).
func (v *SeqView) KeyScales(head int) ([]float32, error) { return v.scales(v.kScale, head) }

// ValueScales returns the scale of each value row of one head (FP8 storage).
func (v *SeqView) ValueScales(head int) ([]float32, error) { return v.scales(v.vScale, head) }

func (v *SeqView) scales(data *float32, head int) ([]float32, error) {
	if data == nil {
		return nil, invalid(fmt.Sprintf("the view holds dtype %d: only FP8 storage has scales", v.DType))
	}
	if err := v.host(head); err != nil || v.Length == 0 {
		return nil, err
	}
	p := unsafe.Add(unsafe.Pointer(data), int64(head)*v.scaleHead*4)
	return unsafe.Slice((*float32)(p), v.Length), nil
}

// FP8Value is the value of an E4M3 byte (sign, 4 exponent bits with bias 7,
// 3 mantissa bits; 0x7f and 0xff are NaN).
func FP8Value(b uint8) float32 {
	exponent, mantissa := int((b>>3)&15), float64(b&7)
	var magnitude float64
	switch {
	case exponent == 15 && mantissa == 7:
		return float32(math.NaN())
	case exponent == 0:
		magnitude = mantissa / 512
	default:
		magnitude = (1 + mantissa/8) * math.Ldexp(1, exponent-7)
	}
	if b&0x80 != 0 {
		magnitude = -magnitude
	}
	return float32(magnitude)
}

// Positions returns the original positions one head holds, in slot order.
func (v *SeqView) Positions(head int) ([]int32, error) {
	if err := v.host(head); err != nil || v.Length == 0 {
		return nil, err
	}
	p := unsafe.Add(unsafe.Pointer(v.positions), int64(head)*v.positionsHead*4)
	return unsafe.Slice((*int32)(p), v.Length), nil
}

// Addresses returns the K, V and positions pointers and the element strides
// (between heads, between tokens) for an engine's own kernel.
func (v *SeqView) Addresses() (k, val, positions uintptr, strideHead, strideToken, positionsStrideHead int64) {
	return uintptr(v.k), uintptr(v.v), uintptr(unsafe.Pointer(v.positions)),
		v.strideHead, v.strideToken, v.positionsHead
}
