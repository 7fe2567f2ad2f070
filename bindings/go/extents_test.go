package rkv_test

// Extents (issue 10, point 6): a host slice's length is its tensor's extent,
// and the library refuses, with ErrCapacity naming the tensor, any call that
// would touch an element past it; the cache and the output stay unchanged.
// What the library cannot see is this package's to refuse: an empty slice
// (extent 0 means "unchecked" to the library) and a []uint16 described as F32
// (its extent counts 2-byte elements).

import (
	"math"
	"strings"
	"testing"

	"rkv"
)

func expectMessage(t *testing.T, err error, sentinel error, part string) {
	t.Helper()
	expect(t, err, sentinel)
	if !strings.Contains(err.Error(), part) {
		t.Fatalf("the message lacks %q: %v", part, err)
	}
}

func TestExtentsAreTheSlicesLengths(t *testing.T) {
	if e := rkv.HostF32(make([]float32, 7), heads, dim, rkv.Decode).Extent(); e != 7 {
		t.Fatalf("HostF32 extent %d", e)
	}
	if e := rkv.HostBits(make([]uint16, 9), rkv.BF16, heads, dim, rkv.Decode).Extent(); e != 9 {
		t.Fatalf("HostBits extent %d", e)
	}
	if e := rkv.DeviceTensor(0x1000, rkv.F16, heads, dim, rkv.Decode, 77).Extent(); e != 77 {
		t.Fatalf("DeviceTensor extent %d", e)
	}
}

func TestSlicesShorterThanTheirShapeAreRefused(t *testing.T) {
	cache := newCache(t, params())
	k, q := data(heads*12*dim, 1), data(qHeads*12*dim, 2)
	kt := rkv.HostF32(k, heads, dim, rkv.BHTD(12))
	vShort := rkv.HostF32(k[:heads*2*dim], heads, dim, rkv.BHTD(12))
	qShort := rkv.HostF32(q[:qHeads*dim], qHeads, dim, rkv.BHTD(12))
	qt := rkv.HostF32(q, qHeads, dim, rkv.BHTD(12))
	one := []int32{12}
	expectMessage(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: one, K: kt, V: vShort, Q: &qt}),
		rkv.ErrCapacity, "args->v.extent")
	expectMessage(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: one, K: kt, V: kt, Q: &qShort}),
		rkv.ErrCapacity, "args->q.extent")
	// packed varlen: the second entry's offset runs past the end
	packed := rkv.HostF32(k, heads, dim, rkv.Packed)
	expectMessage(t, cache.Append(rkv.Append{SeqIDs: []int32{0, 1}, NumTokens: []int32{6, 6},
		TokenOffsets: []int64{0, 7}, K: packed, V: packed}), rkv.ErrCapacity, "args->k.extent")
	// strides far past the slice, past 64 bits, negative
	far := rkv.HostF32(k, heads, dim, rkv.Strided(0, 0, 1<<50))
	expectMessage(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, K: far, V: kt}), rkv.ErrCapacity, "args->k.extent")
	huge := rkv.HostF32(k, heads, dim, rkv.Strided(0, 0, math.MaxInt64))
	expect(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, K: huge, V: kt}), rkv.ErrOverflow)
	negative := rkv.HostF32(k, heads, dim, rkv.Strided(0, 0, -dim))
	expect(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, K: negative, V: kt}), rkv.ErrInvalidArgument)
	for seq := 0; seq < 2; seq++ {
		if _, physical, _ := cache.SeqLength(seq, 0); physical != 0 {
			t.Fatal("a refused append changed the cache")
		}
	}
}

func TestAttendRefusesShortQueriesAndOutputs(t *testing.T) {
	cache := newCache(t, params())
	k := data(heads*3*dim, 3)
	kt := rkv.HostF32(k, heads, dim, rkv.BHTD(3))
	for seq := int32(0); seq < 2; seq++ {
		if err := cache.Append(rkv.Append{SeqIDs: []int32{seq}, NumTokens: []int32{3}, K: kt, V: kt}); err != nil {
			t.Fatal(err)
		}
	}
	q := data(qHeads*dim, 4)
	out := make([]float32, qHeads*dim)
	for i := range out {
		out[i] = -7
	}
	decode := func(x []float32) rkv.Tensor { return rkv.HostF32(x, qHeads, dim, rkv.Decode) }
	expectMessage(t, cache.Attend(0, []int32{0}, decode(q[:len(q)-1]), decode(out), 0, 0), rkv.ErrCapacity, "args->q.extent")
	expectMessage(t, cache.Attend(0, []int32{0}, decode(q), decode(out[:len(out)-1]), 0, 0), rkv.ErrCapacity,
		"args->out.extent")
	expectMessage(t, cache.Attend(0, []int32{0, 1}, decode(q), decode(out), 0, 0), rkv.ErrCapacity, "args->q.extent")
	for _, x := range out {
		if x != -7 {
			t.Fatal("a refused attend wrote its output")
		}
	}
}

func TestWhatOnlyGoCanSeeIsRefusedHere(t *testing.T) {
	cache := newCache(t, params())
	k := rkv.HostF32(data(heads*dim, 5), heads, dim, rkv.Decode)
	empty := rkv.HostF32(nil, heads, dim, rkv.Decode)
	expectMessage(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, K: empty, V: k}), rkv.ErrInvalidArgument, "K: empty slice")
	// An empty Q is not "no queries".
	expectMessage(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, K: k, V: k, Q: &empty}), rkv.ErrInvalidArgument,
		"Q: empty slice")
	// A []uint16 described as F32 would be read as twice its bytes.
	bits := rkv.HostBits(make([]uint16, heads*dim), rkv.F32, heads, dim, rkv.Decode)
	expectMessage(t, cache.Append(rkv.Append{SeqIDs: []int32{0}, K: bits, V: k}), rkv.ErrInvalidArgument, "K: a slice of 2-byte")
	out := make([]float32, qHeads*dim)
	expectMessage(t, cache.Attend(0, []int32{0}, rkv.HostF32(nil, qHeads, dim, rkv.Decode),
		rkv.HostF32(out, qHeads, dim, rkv.Decode), 0, 0), rkv.ErrInvalidArgument, "q: empty slice")
	if _, physical, _ := cache.SeqLength(0, 0); physical != 0 {
		t.Fatal("a refused append changed the cache")
	}
}
