package rkv_test

import (
	"fmt"

	"rkv"
)

// Create a cache, append a few tokens, compress, read a view.
func Example() {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 1, 1, 2, 2, 16
	p.Method, p.Budget, p.Buffer, p.Window = rkv.MethodRKV, 8, 4, 2
	cache, err := rkv.NewCache(p)
	if err != nil {
		panic(err)
	}
	defer cache.Close()

	// 12 prompt tokens in transformers' layout [seq, head, token, dim]
	data := make([]float32, 2*12*16)
	for i := range data {
		data[i] = float32((i*7919)%97)/97 - 0.5
	}
	t := rkv.HostF32(data, 2, 16, rkv.BHTD(12))
	err = cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{12}, K: t, V: t, Q: &t, Prompt: true})
	if err != nil {
		panic(err)
	}
	if err := cache.Compress(0, 0, 0); err != nil { // 12 held > budget 8: keep 8 per head
		panic(err)
	}
	view, err := cache.View(0, 0)
	if err != nil {
		panic(err)
	}
	positions, _ := view.Positions(0)
	keys, _ := view.KeysF32(0)
	fmt.Println("held", view.Length, "of", view.LogicalLength, "tokens")
	fmt.Println("positions kept by head 0:", positions)
	fmt.Println("K of head 0:", len(keys), "floats")
	// Output:
	// held 8 of 12 tokens
	// positions kept by head 0: [0 1 3 4 7 8 10 11]
	// K of head 0: 128 floats
}
