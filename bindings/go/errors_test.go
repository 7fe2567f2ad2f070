package rkv_test

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"rkv"
	"rkv/capi"
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
	expect(t, cache.Set(rkv.ParamBudget, 16), rkv.ErrBadState)
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

// A slice shorter than its shape and strides reach is the library's
// ErrCapacity (the slice's length is the tensor's extent); per-entry slices of
// another length than SeqIDs are this package's ErrInvalidArgument (the
// library cannot see their lengths).
func TestShortSlices(t *testing.T) {
	cache := newCache(t, small())
	k := rkv.HostF32(ones(2*3*8), 2, 8, rkv.BHTD(3))
	err := cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{2}, TokenOffsets: []int64{2}, K: k, V: k})
	expect(t, err, rkv.ErrCapacity)
	if !strings.Contains(err.Error(), "args->k.extent is 48 elements") {
		t.Fatalf("message: %v", err)
	}
	err = cache.Append(rkv.Append{SeqIDs: []int32{0, 1}, NumTokens: []int32{1}, K: k, V: k})
	expect(t, err, rkv.ErrInvalidArgument)
	if _, physical, _ := cache.SeqLength(0, 0); physical != 0 {
		t.Fatal("a rejected call changed the cache")
	}
}

// The message is thread-local in C and a goroutine may change OS threads
// between two cgo calls: each failure must carry its own message, read by the
// call that failed, however many goroutines fail at once.
func TestConcurrentFailuresKeepTheirMessages(t *testing.T) {
	const goroutines, calls = 8, 500
	errs := make(chan error, goroutines)
	for g := 0; g < goroutines; g++ {
		go func(g int) {
			for i := 0; i < calls; i++ {
				key := 1000 + g*calls + i
				_, _, err := rkv.Param(key).Bounds()
				var e *rkv.Error
				if !errors.As(err, &e) || !strings.Contains(e.Message, fmt.Sprintf("key %d ", key)) {
					errs <- fmt.Errorf("key %d failed with %v", key, err)
					return
				}
				runtime.Gosched()
			}
			errs <- nil
		}(g)
	}
	for g := 0; g < goroutines; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// The raw layer itself returns the status and message of a failed call.
func TestRawFailure(t *testing.T) {
	var lower, upper float64
	f := capi.Rkv_params_bounds(4242, &lower, &upper)
	if f == nil || f.Status != capi.RKV_ERR_UNSUPPORTED || !strings.Contains(f.Message, "4242") {
		t.Fatalf("raw failure %+v", f)
	}
	if f := capi.Rkv_params_bounds(capi.RKV_PARAM_KERNEL, &lower, &upper); f != nil || upper != 255 {
		t.Fatalf("raw success %+v, upper %v", f, upper)
	}
}

// Go ints wider than the C API's int32 are refused, not wrapped into another
// valid value.
func TestIntsBeyondInt32(t *testing.T) {
	p := small()
	p.Budget = 1<<32 + 8 // would wrap to 8, a valid budget
	_, err := rkv.NewCache(p)
	expect(t, err, rkv.ErrInvalidArgument)
	if !strings.Contains(err.Error(), "Budget") {
		t.Fatalf("message: %v", err)
	}
	cache := newCache(t, small())
	_, err = cache.View(1<<32, 0) // would wrap to sequence 0
	expect(t, err, rkv.ErrOutOfRange)
}
