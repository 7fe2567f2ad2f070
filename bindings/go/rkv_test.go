package rkv_test

import (
	"errors"
	"math"
	"reflect"
	"runtime"
	"testing"

	"rkv"
)

const (
	heads, qHeads, dim = 2, 4, 16
)

func params() rkv.Params {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 4, 2, heads, qHeads, dim
	p.Budget, p.Buffer, p.Window = 16, 8, 4
	return p
}

func newCache(t *testing.T, p rkv.Params) *rkv.Cache {
	t.Helper()
	cache, err := rkv.NewCache(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	return cache
}

// data returns n deterministic values in [-1, 1).
func data(n int, seed uint64) []float32 {
	out := make([]float32, n)
	for i := range out {
		seed = seed*6364136223846793005 + 1442695040888963407
		out[i] = float32(seed>>40)/float32(1<<24)*2 - 1
	}
	return out
}

// row is element (entry e, head h, token t) of a [n, heads, tokens, dim] buffer.
func row(x []float32, nHeads, tokens, e, h, t int) []float32 {
	start := ((e*nHeads+h)*tokens + t) * dim
	return x[start : start+dim]
}

func TestRoundTrip(t *testing.T) {
	cache := newCache(t, params())
	k, v, q := data(heads*10*dim, 1), data(heads*10*dim, 2), data(qHeads*10*dim, 3)
	qt := rkv.HostF32(q, qHeads, dim, rkv.BHTD(10))
	err := cache.Append(rkv.Append{Layer: 1, SeqIDs: []int32{2}, NumTokens: []int32{10},
		K: rkv.HostF32(k, heads, dim, rkv.BHTD(10)), V: rkv.HostF32(v, heads, dim, rkv.BHTD(10)), Q: &qt, Prompt: true})
	if err != nil {
		t.Fatal(err)
	}
	view, err := cache.View(2, 1)
	if err != nil {
		t.Fatal(err)
	}
	if view.Length != 10 || view.LogicalLength != 10 {
		t.Fatalf("held %d of %d", view.Length, view.LogicalLength)
	}
	for h := 0; h < heads; h++ {
		keys, _ := view.KeysF32(h)
		values, _ := view.ValuesF32(h)
		positions, _ := view.Positions(h)
		for tok := 0; tok < 10; tok++ {
			if !reflect.DeepEqual(keys[tok*dim:(tok+1)*dim], row(k, heads, 10, 0, h, tok)) ||
				!reflect.DeepEqual(values[tok*dim:(tok+1)*dim], row(v, heads, 10, 0, h, tok)) ||
				positions[tok] != int32(tok) {
				t.Fatalf("head %d token %d differs", h, tok)
			}
		}
	}
	if _, err := view.KeysBits(0); !errors.Is(err, rkv.ErrInvalidArgument) {
		t.Fatalf("f32 view read as bits: %v", err)
	}
	// a decode step [n, heads, dim]
	k1, q1 := data(heads*dim, 4), data(qHeads*dim, 5)
	q1t := rkv.HostF32(q1, qHeads, dim, rkv.Decode)
	if err := cache.Append(rkv.Append{Layer: 1, SeqIDs: []int32{2}, K: rkv.HostF32(k1, heads, dim, rkv.Decode),
		V: rkv.HostF32(k1, heads, dim, rkv.Decode), Q: &q1t}); err != nil {
		t.Fatal(err)
	}
	if logical, physical, _ := cache.SeqLength(2, 1); logical != 11 || physical != 11 {
		t.Fatalf("lengths %d %d", logical, physical)
	}
	if logical, physical, _ := cache.SeqLength(2, 0); logical != 0 || physical != 0 {
		t.Fatal("another layer changed")
	}
}

func TestLayoutsAgree(t *testing.T) {
	k, q := data(2*heads*6*dim, 7), data(2*qHeads*6*dim, 8)
	a, b := newCache(t, params()), newCache(t, params())
	qa := rkv.HostF32(q, qHeads, dim, rkv.BHTD(6))
	if err := a.Append(rkv.Append{SeqIDs: []int32{0, 1}, NumTokens: []int32{6, 4}, TokenOffsets: []int64{0, 2},
		K: rkv.HostF32(k, heads, dim, rkv.BHTD(6)), V: rkv.HostF32(k, heads, dim, rkv.BHTD(6)), Q: &qa}); err != nil {
		t.Fatal(err)
	}
	// the same tokens packed [total, heads, dim]
	var kp, qp []float32
	for e := 0; e < 2; e++ {
		for tok := 2 * e; tok < 6; tok++ {
			for h := 0; h < heads; h++ {
				kp = append(kp, row(k, heads, 6, e, h, tok)...)
			}
			for h := 0; h < qHeads; h++ {
				qp = append(qp, row(q, qHeads, 6, e, h, tok)...)
			}
		}
	}
	qb := rkv.HostF32(qp, qHeads, dim, rkv.Packed)
	if err := b.Append(rkv.Append{SeqIDs: []int32{0, 1}, NumTokens: []int32{6, 4}, TokenOffsets: []int64{0, 6},
		K: rkv.HostF32(kp, heads, dim, rkv.Packed), V: rkv.HostF32(kp, heads, dim, rkv.Packed), Q: &qb}); err != nil {
		t.Fatal(err)
	}
	for seq := 0; seq < 2; seq++ {
		va, _ := a.View(seq, 0)
		vb, _ := b.View(seq, 0)
		for h := 0; h < heads; h++ {
			ka, _ := va.KeysF32(h)
			kb, _ := vb.KeysF32(h)
			if !reflect.DeepEqual(ka, kb) {
				t.Fatalf("seq %d head %d differs", seq, h)
			}
		}
	}
	if v, _ := a.View(1, 0); v.LogicalLength != 4 {
		t.Fatalf("left padding entered: %d", v.LogicalLength)
	}
}

func TestCompressionKeepsTheBudget(t *testing.T) {
	p := params()
	p.Method, p.AutoCompress = rkv.MethodSnapKV, false
	cache := newCache(t, p)
	const n = 24
	k, q := data(heads*n*dim, 9), data(qHeads*n*dim, 10)
	qt := rkv.HostF32(q, qHeads, dim, rkv.BHTD(n))
	if err := cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{n},
		K: rkv.HostF32(k, heads, dim, rkv.BHTD(n)), V: rkv.HostF32(k, heads, dim, rkv.BHTD(n)), Q: &qt}); err != nil {
		t.Fatal(err)
	}
	if due, _ := cache.CompressDue(rkv.All, rkv.All); !due {
		t.Fatal("a full sequence is due")
	}
	if err := cache.Compress(rkv.All, rkv.All, 0); err != nil {
		t.Fatal(err)
	}
	view, _ := cache.View(0, 0)
	for h := 0; h < heads; h++ {
		kept, err := cache.SeqPositions(0, 0, h)
		if err != nil {
			t.Fatal(err)
		}
		positions, _ := view.Positions(h)
		if len(kept) != 16 || !reflect.DeepEqual(kept, positions) ||
			!reflect.DeepEqual(kept[12:], []int32{n - 4, n - 3, n - 2, n - 1}) {
			t.Fatalf("head %d kept %v", h, kept)
		}
	}
	stats, _ := cache.Stats(0)
	if stats.TokensHeld != 16 || stats.TokensAppended != n || stats.TokensEvicted != n-16 || stats.Compressions != 1 {
		t.Fatalf("stats %+v", stats)
	}
	size, _ := p.Size()
	if all, _ := cache.Stats(rkv.All); all.BytesAllocated != size {
		t.Fatalf("allocated %d, size said %d", all.BytesAllocated, size)
	}
	if err := cache.SeqReset(0, 0); err != nil {
		t.Fatal(err)
	}
	if _, physical, _ := cache.SeqLength(0, 0); physical != 0 {
		t.Fatal("reset kept tokens")
	}
}

func TestParamsAndBF16(t *testing.T) {
	p := params()
	p.DType, p.Seed, p.Method = rkv.BF16, math.MaxUint64-1, rkv.MethodRandom
	cache := newCache(t, p)
	got, err := cache.Params()
	if err != nil || got != p {
		t.Fatalf("params %+v, want %+v (%v)", got, p, err)
	}
	if err := cache.Set(rkv.ParamLambda, 0.25); err != nil {
		t.Fatal(err)
	}
	if got, _ := cache.Params(); got.Lambda != 0.25 {
		t.Fatal("lambda not set")
	}
	if lambda, err := cache.Get(rkv.ParamLambda); err != nil || lambda != 0.25 {
		t.Fatalf("Get(ParamLambda) = %v (%v)", lambda, err)
	}
	if lo, hi, err := rkv.ParamMaxRollback.Bounds(); err != nil || lo != 0 || hi != 1024 {
		t.Fatalf("max_rollback bounds %v %v %v", lo, hi, err)
	}
	p.MaxRollback = 6
	rollback := newCache(t, p)
	if got, _ := rollback.Params(); got.MaxRollback != 6 {
		t.Fatalf("MaxRollback %d", got.MaxRollback)
	}
	if value, err := rollback.Get(rkv.ParamMaxRollback); err != nil || value != 6 {
		t.Fatalf("Get(ParamMaxRollback) = %v (%v)", value, err)
	}
	if lo, hi, err := rkv.ParamKernel.Bounds(); err != nil || lo != 1 || hi != 255 {
		t.Fatalf("kernel bounds %v %v %v", lo, hi, err)
	}
	bits := make([]uint16, heads*dim)
	for i := range bits {
		bits[i] = uint16(0x3f80 + i) // bf16 around 1.0
	}
	kt := rkv.HostBits(bits, rkv.BF16, heads, dim, rkv.Decode)
	if err := cache.Append(rkv.Append{SeqIDs: []int32{3}, K: kt, V: kt}); err != nil {
		t.Fatal(err)
	}
	view, _ := cache.View(3, 0)
	keys, err := view.KeysBits(1)
	if err != nil || !reflect.DeepEqual(keys, bits[dim:]) {
		t.Fatalf("bf16 round trip: %v %v", keys, err)
	}
}

func TestFP8Storage(t *testing.T) {
	p := params()
	p.DType = rkv.FP8E4M3
	cache := newCache(t, p)
	k := data(heads*dim, 21)
	for i := range k {
		k[i] *= 5
	}
	kt := rkv.HostF32(k, heads, dim, rkv.Decode)
	if err := cache.Append(rkv.Append{SeqIDs: []int32{1}, K: kt, V: kt}); err != nil {
		t.Fatal(err)
	}
	view, _ := cache.View(1, 0)
	bytes, err := view.KeysFP8(1)
	if err != nil {
		t.Fatal(err)
	}
	scales, err := view.KeyScales(1)
	if err != nil || len(scales) != 1 {
		t.Fatalf("scales %v %v", scales, err)
	}
	if frac, _ := math.Frexp(float64(scales[0])); frac != 0.5 {
		t.Fatalf("scale %v is not a power of two", scales[0])
	}
	for e := 0; e < dim; e++ {
		want, got := k[dim+e], rkv.FP8Value(bytes[e])*scales[0]
		if math.Abs(float64(got-want)) > math.Abs(float64(want))/16+1e-3 {
			t.Fatalf("element %d: %v, want %v", e, got, want)
		}
	}
	if _, err := view.KeysBits(0); err == nil {
		t.Fatal("KeysBits on FP8 storage succeeded")
	}
}

func TestAttend(t *testing.T) {
	cache := newCache(t, params())
	k, v := data(heads*7*dim, 11), data(heads*7*dim, 12)
	if err := cache.Append(rkv.Append{SeqIDs: []int32{1}, NumTokens: []int32{7},
		K: rkv.HostF32(k, heads, dim, rkv.BHTD(7)), V: rkv.HostF32(v, heads, dim, rkv.BHTD(7))}); err != nil {
		t.Fatal(err)
	}
	query, out := data(qHeads*dim, 13), make([]float32, qHeads*dim)
	if err := cache.Attend(0, []int32{1}, rkv.HostF32(query, qHeads, dim, rkv.Decode),
		rkv.HostF32(out, qHeads, dim, rkv.Decode), 0, 0); err != nil {
		t.Fatal(err)
	}
	for h := 0; h < qHeads; h++ {
		g := h / (qHeads / heads)
		logits := make([]float64, 7)
		maxLogit := math.Inf(-1)
		for tok := range logits {
			for e, x := range row(k, heads, 7, 0, g, tok) {
				logits[tok] += float64(x) * float64(query[h*dim+e])
			}
			logits[tok] /= math.Sqrt(dim)
			maxLogit = math.Max(maxLogit, logits[tok])
		}
		total := 0.0
		for tok := range logits {
			logits[tok] = math.Exp(logits[tok] - maxLogit)
			total += logits[tok]
		}
		for e := 0; e < dim; e++ {
			want := 0.0
			for tok := range logits {
				want += logits[tok] / total * float64(row(v, heads, 7, 0, g, tok)[e])
			}
			if math.Abs(float64(out[h*dim+e])-want) > 1e-4 {
				t.Fatalf("head %d dim %d: %v, want %v", h, e, out[h*dim+e], want)
			}
		}
	}
}

func TestCloseTwice(t *testing.T) {
	cache, err := rkv.NewCache(params())
	if err != nil {
		t.Fatal(err)
	}
	if err := cache.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cache.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := cache.View(0, 0); !errors.Is(err, rkv.ErrClosed) {
		t.Fatalf("use after Close: %v", err)
	}
	if err := cache.Compress(0, 0, 0); !errors.Is(err, rkv.ErrClosed) {
		t.Fatalf("use after Close: %v", err)
	}
}

// A view of a closed cache no longer reads the freed memory.
func TestViewAfterClose(t *testing.T) {
	cache, err := rkv.NewCache(params())
	if err != nil {
		t.Fatal(err)
	}
	k := data(heads*dim, 1)
	if err := cache.Append(rkv.Append{SeqIDs: []int32{0}, K: rkv.HostF32(k, heads, dim, rkv.Decode),
		V: rkv.HostF32(k, heads, dim, rkv.Decode)}); err != nil {
		t.Fatal(err)
	}
	view, err := cache.View(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if keys, err := view.KeysF32(0); err != nil || !reflect.DeepEqual(keys, k[:dim]) {
		t.Fatalf("keys %v %v", keys, err)
	}
	cache.Close()
	if _, err := view.KeysF32(0); !errors.Is(err, rkv.ErrClosed) {
		t.Fatalf("keys after Close: %v", err)
	}
	if _, err := view.Positions(0); !errors.Is(err, rkv.ErrClosed) {
		t.Fatalf("positions after Close: %v", err)
	}
}

// Close from another goroutine waits for a running call: every call either
// runs on the live cache or reports ErrClosed.
func TestCloseWhileInUse(t *testing.T) {
	p := params()
	p.Method = rkv.MethodStreamingLLM // compresses without queries: appends never stop
	for round := 0; round < 20; round++ {
		cache, err := rkv.NewCache(p)
		if err != nil {
			t.Fatal(err)
		}
		k := data(heads*dim, uint64(round))
		done := make(chan error)
		for g := 0; g < 4; g++ {
			go func() {
				for {
					err := cache.Append(rkv.Append{SeqIDs: []int32{0}, K: rkv.HostF32(k, heads, dim, rkv.Decode),
						V: rkv.HostF32(k, heads, dim, rkv.Decode)})
					if err == nil {
						_, err = cache.Stats(rkv.All)
					}
					if err != nil {
						if errors.Is(err, rkv.ErrClosed) {
							err = nil
						}
						done <- err
						return
					}
				}
			}()
		}
		runtime.Gosched()
		cache.Close()
		for g := 0; g < 4; g++ {
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		}
	}
}

// A forgotten cache is freed by its finalizer; calls made while it is still
// referenced are not disturbed by garbage collection.
func TestFinalizerAndKeepAlive(t *testing.T) {
	for i := 0; i < 50; i++ {
		cache, err := rkv.NewCache(params())
		if err != nil {
			t.Fatal(err)
		}
		k := data(heads*dim, uint64(i))
		for j := 0; j < 10; j++ {
			runtime.GC()
			if err := cache.Append(rkv.Append{SeqIDs: []int32{0}, K: rkv.HostF32(k, heads, dim, rkv.Decode),
				V: rkv.HostF32(k, heads, dim, rkv.Decode)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	runtime.GC()
}

func TestVersion(t *testing.T) {
	if rkv.VersionNumber() != rkv.HeaderVersion || rkv.Version() == "" {
		t.Fatalf("library %d (%s), header %d", rkv.VersionNumber(), rkv.Version(), rkv.HeaderVersion)
	}
}

// A Cache reuses Append's C arguments and rewrites only what changed: calls
// that change layout, queries, prompt flag, entries and layer in turn must
// each be read as given.
func TestAppendArgsFollowEachCall(t *testing.T) {
	p := params()
	p.Method, p.MaxLen = rkv.MethodFull, 64
	cache := newCache(t, p)
	k := data(2*heads*3*dim, 21) // [2, heads, 3, dim]
	q := data(2*qHeads*3*dim, 22)
	qt := rkv.HostF32(q, qHeads, dim, rkv.BHTD(3))
	// 1. two sequences, three prompt tokens each, [n, heads, T, dim], with queries
	if err := cache.Append(rkv.Append{SeqIDs: []int32{0, 1}, NumTokens: []int32{3, 3},
		K: rkv.HostF32(k, heads, dim, rkv.BHTD(3)), V: rkv.HostF32(k, heads, dim, rkv.BHTD(3)), Q: &qt,
		Prompt: true}); err != nil {
		t.Fatal(err)
	}
	// 2. one sequence, one generated token, [n, heads, dim], no queries, layer 1 then 0
	k1 := data(heads*dim, 23)
	for _, layer := range []int{1, 0} {
		if err := cache.Append(rkv.Append{Layer: layer, SeqIDs: []int32{1},
			K: rkv.HostF32(k1, heads, dim, rkv.Decode), V: rkv.HostF32(k1, heads, dim, rkv.Decode)}); err != nil {
			t.Fatal(err)
		}
	}
	// 3. the flag went back to 0: prompt tokens after generated ones are refused
	err := cache.Append(rkv.Append{SeqIDs: []int32{1},
		K: rkv.HostF32(k1, heads, dim, rkv.Decode), V: rkv.HostF32(k1, heads, dim, rkv.Decode), Prompt: true})
	if !errors.Is(err, rkv.ErrBadState) {
		t.Fatalf("prompt after generated tokens: %v", err)
	}
	for _, c := range []struct{ seq, layer, length int }{{0, 0, 3}, {1, 0, 4}, {1, 1, 1}, {0, 1, 0}} {
		view, err := cache.View(c.seq, c.layer)
		if err != nil || view.Length != c.length {
			t.Fatalf("seq %d layer %d holds %v (%v), want %d", c.seq, c.layer, view, err, c.length)
		}
		for h := 0; h < heads && c.length > 0; h++ {
			keys, _ := view.KeysF32(h)
			for tok := 0; tok < c.length; tok++ {
				want := k1[h*dim : (h+1)*dim]
				if c.layer == 0 && tok < 3 {
					want = row(k, heads, 3, c.seq, h, tok)
				}
				if !reflect.DeepEqual(keys[tok*dim:(tok+1)*dim], want) {
					t.Fatalf("seq %d layer %d head %d token %d differs", c.seq, c.layer, h, tok)
				}
			}
		}
	}
}
