package rkv_test

// Benchmarks of the binding's own cost (go test -run X -bench .): each C
// struct field the Go layer reads or writes is a cgo call, so these say what
// a call costs on top of the library's work.

import (
	"testing"

	"rkv"
)

// One decode step of one layer: 8 sequences, 8 KV heads, 32 query heads, dim 128.
func BenchmarkAppendDecode(b *testing.B) {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 8, 1, 8, 32, 128
	p.Method, p.MaxLen = rkv.MethodFull, 1024
	cache, err := rkv.NewCache(p)
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	seqs := []int32{0, 1, 2, 3, 4, 5, 6, 7}
	k, q := make([]float32, 8*8*128), make([]float32, 8*32*128)
	kt, qt := rkv.HostF32(k, 8, 128, rkv.Decode), rkv.HostF32(q, 32, 128, rkv.Decode)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%1024 == 0 {
			b.StopTimer()
			if err := cache.SeqReset(rkv.All, 0); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if err := cache.Append(rkv.Append{SeqIDs: seqs, K: kt, V: kt, Q: &qt}); err != nil {
			b.Fatal(err)
		}
	}
}

// View reads every field of the view (one cgo call each).
func BenchmarkView(b *testing.B) {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 1, 1, 2, 2, 16
	cache, err := rkv.NewCache(p)
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	for i := 0; i < b.N; i++ {
		if _, err := cache.View(0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// The cheapest call: one cgo call and the lock.
func BenchmarkCompressDue(b *testing.B) {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 1, 1, 2, 2, 16
	cache, err := rkv.NewCache(p)
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	for i := 0; i < b.N; i++ {
		if _, err := cache.CompressDue(0, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// The binding's own cost: the smallest append (1 sequence, 1 head, dim 16).
func BenchmarkAppendTiny(b *testing.B) {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 1, 1, 1, 1, 16
	p.Method, p.MaxLen = rkv.MethodFull, 4096
	cache, err := rkv.NewCache(p)
	if err != nil {
		b.Fatal(err)
	}
	defer cache.Close()
	k := make([]float32, 16)
	kt := rkv.HostF32(k, 1, 16, rkv.Decode)
	seqs := []int32{0}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%4096 == 0 {
			b.StopTimer()
			if err := cache.SeqReset(rkv.All, 0); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
		if err := cache.Append(rkv.Append{SeqIDs: seqs, K: kt, V: kt, Q: &kt}); err != nil {
			b.Fatal(err)
		}
	}
}
