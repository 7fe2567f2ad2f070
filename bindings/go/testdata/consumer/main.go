// A program outside the rkv module that uses the Go binding the way the
// README shows, built against an installed librkv found by pkg-config
// (bindings/go/installed_test.sh builds and runs it).
package main

import (
	"errors"
	"fmt"
	"os"

	"rkv"
)

func run() error {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 1, 1, 2, 2, 16
	p.Budget, p.Buffer, p.Window = 8, 4, 2
	cache, err := rkv.NewCache(p)
	if err != nil {
		return err
	}
	defer cache.Close()

	data := make([]float32, 2*12*16) // [seq, head, token, dim]
	for i := range data {
		data[i] = float32(i%17) / 17
	}
	t := rkv.HostF32(data, 2, 16, rkv.BHTD(12))
	err = cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{12}, K: t, V: t, Q: &t, Prompt: true})
	if errors.Is(err, rkv.ErrCapacity) {
		return fmt.Errorf("cache full: %w", err)
	} else if err != nil {
		return err
	}
	if err := cache.Compress(0, 0, 0); err != nil { // keep 8 of 12 per head
		return err
	}
	view, err := cache.View(0, 0)
	if err != nil {
		return err
	}
	positions, err := view.Positions(0)
	if err != nil {
		return err
	}
	fmt.Println("librkv", rkv.Version(), "held", view.Length, "of", view.LogicalLength, "tokens:", positions)
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
