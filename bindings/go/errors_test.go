package rkv_test

import (
	"errors"
	"strings"
	"testing"

	"rkv"
)

var sentinels = map[rkv.Status]error{
	rkv.StatusInvalidArgument: rkv.ErrInvalidArgument,
	rkv.StatusOutOfRange:      rkv.ErrOutOfRange,
	rkv.StatusUnsupported:     rkv.ErrUnsupported,
	rkv.StatusShapeMismatch:   rkv.ErrShapeMismatch,
	rkv.StatusStructSize:      rkv.ErrStructSize,
	rkv.StatusCapacity:        rkv.ErrCapacity,
	rkv.StatusMissingQueries:  rkv.ErrMissingQueries,
	rkv.StatusBadState:        rkv.ErrBadState,
	rkv.StatusOverflow:        rkv.ErrOverflow,
	rkv.StatusOutOfMemory:     rkv.ErrOutOfMemory,
	rkv.StatusDevice:          rkv.ErrDevice,
	rkv.StatusFaulted:         rkv.ErrFaulted,
	rkv.StatusInternal:        rkv.ErrInternal,
}

func TestEveryStatusHasASentinel(t *testing.T) {
	for status, sentinel := range sentinels {
		err := error(&rkv.Error{Status: status, Message: "why"})
		if !errors.Is(err, sentinel) {
			t.Errorf("%v does not match its sentinel", status)
		}
		for other, o := range sentinels {
			if other != status && errors.Is(err, o) {
				t.Errorf("%v matches %v", status, other)
			}
		}
		if !strings.HasPrefix(status.String(), "RKV_ERR_") || err.Error() != status.String()+": why" {
			t.Errorf("%v reads %q", status, err.Error())
		}
	}
	if rkv.Status(77).String() != "RKV_UNKNOWN_STATUS" {
		t.Error("unknown status name")
	}
}

// expect checks that err is an *rkv.Error matching sentinel, with a message.
func expect(t *testing.T, err error, sentinel error) {
	t.Helper()
	var e *rkv.Error
	if !errors.As(err, &e) || !errors.Is(err, sentinel) {
		t.Fatalf("got %v, want %v", err, sentinel)
	}
	if e.Message == "" {
		t.Fatalf("%v has no message", err)
	}
}

func small() rkv.Params {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 2, 1, 2, 2, 8
	p.Budget, p.Buffer, p.Window = 8, 4, 2
	return p
}

func ones(n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = 1
	}
	return x
}

func TestInvalidArgument(t *testing.T) {
	p := small()
	p.Budget, p.Window = 4, 4
	_, err := rkv.NewCache(p)
	expect(t, err, rkv.ErrInvalidArgument)
}

func TestOutOfRange(t *testing.T) {
	cache := newCache(t, small())
	_, err := cache.View(5, 0)
	expect(t, err, rkv.ErrOutOfRange)
}

func TestUnsupported(t *testing.T) {
	p := small()
	p.Method = 77
	_, err := rkv.NewCache(p)
	expect(t, err, rkv.ErrUnsupported)
	_, _, err = rkv.Param(4242).Bounds()
	expect(t, err, rkv.ErrUnsupported)
}

func TestShapeMismatch(t *testing.T) {
	cache := newCache(t, small())
	k := rkv.HostF32(ones(3*8), 3, 8, rkv.Decode)
	expect(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, K: k, V: k}), rkv.ErrShapeMismatch)
	if _, physical, _ := cache.SeqLength(0, 0); physical != 0 {
		t.Fatal("a rejected call changed the cache")
	}
}

func TestCapacity(t *testing.T) {
	p := small()
	p.Method, p.MaxLen = rkv.MethodFull, 4
	cache := newCache(t, p)
	k := rkv.HostF32(ones(2*5*8), 2, 8, rkv.BHTD(5))
	expect(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{5}, K: k, V: k}), rkv.ErrCapacity)
}

func TestMissingQueries(t *testing.T) {
	p := small()
	p.AutoCompress = false
	cache := newCache(t, p)
	k := rkv.HostF32(ones(2*12*8), 2, 8, rkv.BHTD(12))
	if err := cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{12}, K: k, V: k}); err != nil {
		t.Fatal(err)
	}
	expect(t, cache.Compress(0, 0, 0), rkv.ErrMissingQueries)
}

func TestBadState(t *testing.T) {
	cache := newCache(t, small())
	expect(t, cache.SetParam(rkv.ParamBudget, 16), rkv.ErrBadState)
}

func TestOverflow(t *testing.T) {
	p := small()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 1<<20, 1024, 1024, 1024, 1024
	p.Method, p.MaxLen = rkv.MethodFull, 1<<25
	_, err := p.Size()
	expect(t, err, rkv.ErrOverflow)
}

func TestOutOfMemory(t *testing.T) {
	// K alone would be 2^49 bytes, beyond a 47-bit address space: the first
	// allocation fails at once on any machine, nothing is touched.
	p := small()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 1, 8, 1024, 1024, 1024
	p.Budget, p.Buffer = 1<<24, 16
	_, err := rkv.NewCache(p)
	expect(t, err, rkv.ErrOutOfMemory)
}

// STRUCT_SIZE cannot come from this package (it always sets struct sizes),
// and DEVICE, FAULTED and INTERNAL need a failing GPU or a librkv bug; their
// mapping is checked in TestEveryStatusHasASentinel.

func TestShortSlicesAreRefusedBeforeTheCall(t *testing.T) {
	cache := newCache(t, small())
	k := rkv.HostF32(ones(2*3*8), 2, 8, rkv.BHTD(3))
	err := cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{2}, TokenOffsets: []int64{2}, K: k, V: k})
	expect(t, err, rkv.ErrInvalidArgument)
	if !strings.Contains(err.Error(), "slice") {
		t.Fatalf("message: %v", err)
	}
	err = cache.Append(rkv.Append{SeqIDs: []int32{0, 1}, NumTokens: []int32{1}, K: k, V: k})
	expect(t, err, rkv.ErrInvalidArgument)
}
