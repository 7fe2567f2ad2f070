package rkv_test

// Helpers of the sequence and batch tests: deterministic tokens, appending
// them to every layer of a sequence, and a snapshot of everything a sequence
// holds.

import (
	"fmt"
	"reflect"
	"testing"

	"rkv"
)

// token returns deterministic values in [-1, 1) for one token of nHeads x
// dim: its position, layer, which tensor (0 K, 1 V, 2 Q) and stream (0 the
// real tokens, others drafts).
func token(position int64, layer int, which, stream uint64, nHeads int) []float32 {
	state := (uint64(position)*1_000_003 + uint64(layer)*7919 + which*131 + stream*17 + 1) * 6364136223846793005
	out := make([]float32, nHeads*dim)
	for i := range out {
		state = state*6364136223846793005 + 1442695040888963407
		out[i] = float32(state>>40)/float32(1<<24)*2 - 1
	}
	return out
}

// tokens is count tokens from position on, [1, count, nHeads, dim].
func tokens(position int64, count, layer int, which, stream uint64, nHeads int) []float32 {
	var out []float32
	for t := 0; t < count; t++ {
		out = append(out, token(position+int64(t), layer, which, stream, nHeads)...)
	}
	return out
}

// feed appends count tokens of stream from position on to every layer of
// seq, one chunk per layer, with queries.
func feed(cache *rkv.Cache, layers, seq int, position int64, count int, stream uint64) error {
	for layer := 0; layer < layers; layer++ {
		l := rkv.BTHD(count)
		q := rkv.HostF32(tokens(position, count, layer, 2, stream, qHeads), qHeads, dim, l)
		err := cache.Append(rkv.Append{Layer: layer, SeqIDs: []int32{int32(seq)}, NumTokens: []int32{int32(count)},
			K: rkv.HostF32(tokens(position, count, layer, 0, stream, heads), heads, dim, l),
			V: rkv.HostF32(tokens(position, count, layer, 1, stream, heads), heads, dim, l), Q: &q})
		if err != nil {
			return err
		}
	}
	return nil
}

// layerSnapshot is what one layer of a sequence holds.
type layerSnapshot struct {
	Logical      int64
	Physical     int
	Keys, Values [][]float32
	Positions    [][]int32
}

// snapshot copies everything seq holds in every layer (f32 storage).
func snapshot(t *testing.T, cache *rkv.Cache, seq int) []layerSnapshot {
	t.Helper()
	p, err := cache.Params()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]layerSnapshot, p.NumLayers)
	for layer := range out {
		s := &out[layer]
		if s.Logical, s.Physical, err = cache.SeqLength(seq, layer); err != nil {
			t.Fatal(err)
		}
		view, err := cache.View(seq, layer)
		if err != nil {
			t.Fatal(err)
		}
		for h := 0; h < p.NumKVHeads; h++ {
			keys, err1 := view.KeysF32(h)
			values, err2 := view.ValuesF32(h)
			positions, err3 := view.Positions(h)
			if err1 != nil || err2 != nil || err3 != nil {
				t.Fatal(err1, err2, err3)
			}
			s.Keys = append(s.Keys, append([]float32(nil), keys...))
			s.Values = append(s.Values, append([]float32(nil), values...))
			s.Positions = append(s.Positions, append([]int32(nil), positions...))
		}
	}
	return out
}

// sameSequence fails unless sequence a of ca holds exactly what b of cb does.
func sameSequence(t *testing.T, ca *rkv.Cache, a int, cb *rkv.Cache, b int, what string, args ...any) {
	t.Helper()
	if sa, sb := snapshot(t, ca, a), snapshot(t, cb, b); !reflect.DeepEqual(sa, sb) {
		t.Fatalf("%s: sequence %d holds\n%+v\nsequence %d holds\n%+v", fmt.Sprintf(what, args...), a, sa, b, sb)
	}
}
