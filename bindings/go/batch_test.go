package rkv_test

// Batches (issue 10, point 4): decode steps through a batch whose members
// change, padding included, hold and attend bit for bit as the same steps
// made with host ids; several steps, one Advance; a step past a sequence's
// capacity faults the cache at the Advance; Close is idempotent and works in
// either order with the cache's; bad input (ids out of range, repeated, too
// many; another cache's batch; extents too small; missing queries) is an
// error and leaves the batch and the cache as they were.

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"rkv"
)

const (
	batchSeqs, batchEntries = 5, 4
	kvRow, qRow             = heads * dim, qHeads * dim
)

func batchParams(method rkv.Method) rkv.Params {
	p := seqParams(method)
	p.MaxSeqs = batchSeqs
	return p
}

// stepRows is one decode step's rows, one per entry ([entries, heads, dim]):
// the next token of each entry's sequence; padding rows hold huge values
// that no sequence may ever see.
type stepRows struct{ k, v, q []float32 }

func rowsFor(t *testing.T, cache *rkv.Cache, ids []int32, layer int) stepRows {
	t.Helper()
	n := len(ids)
	r := stepRows{make([]float32, n*kvRow), make([]float32, n*kvRow), make([]float32, n*qRow)}
	for _, x := range [][]float32{r.k, r.v, r.q} {
		for i := range x {
			x[i] = 1e30
		}
	}
	for i, seq := range ids {
		if seq < 0 {
			continue
		}
		position, _, err := cache.SeqLength(int(seq), layer)
		if err != nil {
			t.Fatal(err)
		}
		copy(r.k[i*kvRow:], token(position, layer, 0, 0, heads))
		copy(r.v[i*kvRow:], token(position, layer, 1, 0, heads))
		copy(r.q[i*qRow:], token(position, layer, 2, 0, qHeads))
	}
	return r
}

// eagerStep makes the same step with host ids, one entry at a time, and
// returns each entry's attention output (nil for padding).
func eagerStep(t *testing.T, cache *rkv.Cache, ids []int32, layer int, r stepRows) [][]float32 {
	t.Helper()
	outs := make([][]float32, len(ids))
	for i, seq := range ids {
		if seq < 0 {
			continue
		}
		k := rkv.HostF32(r.k[i*kvRow:(i+1)*kvRow], heads, dim, rkv.Decode)
		v := rkv.HostF32(r.v[i*kvRow:(i+1)*kvRow], heads, dim, rkv.Decode)
		q := rkv.HostF32(r.q[i*qRow:(i+1)*qRow], qHeads, dim, rkv.Decode)
		if err := cache.Append(rkv.Append{Layer: layer, SeqIDs: []int32{seq}, K: k, V: v, Q: &q}); err != nil {
			t.Fatal(err)
		}
		outs[i] = make([]float32, qRow)
		if err := cache.Attend(layer, []int32{seq}, q, rkv.HostF32(outs[i], qHeads, dim, rkv.Decode), 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	return outs
}

func batchStep(cache *rkv.Cache, b *rkv.Batch, layer int, r stepRows, out []float32) error {
	q := rkv.HostF32(r.q, qHeads, dim, rkv.Decode)
	err := cache.Append(rkv.Append{Layer: layer, Batch: b, K: rkv.HostF32(r.k, heads, dim, rkv.Decode),
		V: rkv.HostF32(r.v, heads, dim, rkv.Decode), Q: &q})
	if err != nil || out == nil {
		return err
	}
	return cache.AttendBatch(b, layer, q, rkv.HostF32(out, qHeads, dim, rkv.Decode), 0, 0)
}

func compressDue(t *testing.T, cache *rkv.Cache) {
	t.Helper()
	if due, err := cache.CompressDue(rkv.All, rkv.All); err != nil {
		t.Fatal(err)
	} else if due {
		if err := cache.Compress(rkv.All, rkv.All, 0); err != nil {
			t.Fatal(err)
		}
	}
}

func newBatch(t *testing.T, cache *rkv.Cache, entries int) *rkv.Batch {
	t.Helper()
	b, err := rkv.NewBatch(cache, entries)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestBatchStepsEqualStepsWithHostIDs(t *testing.T) {
	for _, method := range []rkv.Method{rkv.MethodRKV, rkv.MethodH2O, rkv.MethodStreamingLLM, rkv.MethodFull} {
		batched, eager := newCache(t, batchParams(method)), newCache(t, batchParams(method))
		b := newBatch(t, batched, batchEntries)
		ids := make([]int32, batchEntries)
		rng := uint64(7 + method)
		next := func() int {
			rng = rng*6364136223846793005 + 1442695040888963407
			return int(rng >> 33)
		}
		steps := 60
		if method == rkv.MethodFull {
			steps = 40 // within max_len
		}
		for step := 0; step < steps; step++ {
			if step%3 == 0 { // new members: up to batchEntries distinct sequences, the rest padding
				for i := range ids {
					ids[i] = -1
				}
				pool := []int32{0, 1, 2, 3, 4}
				for m := 1 + next()%batchEntries; m > 0; m-- {
					pick := next() % len(pool)
					entry := next() % batchEntries
					for ids[entry] >= 0 {
						entry = (entry + 1) % batchEntries
					}
					ids[entry] = pool[pick]
					pool = append(pool[:pick], pool[pick+1:]...)
				}
				if err := b.Set(ids, 0); err != nil {
					t.Fatal(err)
				}
			}
			compressDue(t, batched)
			compressDue(t, eager)
			for layer := 0; layer < seqLayers; layer++ {
				r := rowsFor(t, eager, ids, layer)
				want := eagerStep(t, eager, ids, layer, r)
				out := make([]float32, batchEntries*qRow)
				for i := range out {
					out[i] = -7
				}
				if err := batchStep(batched, b, layer, r, out); err != nil {
					t.Fatal(err)
				}
				for i := range ids {
					got := out[i*qRow : (i+1)*qRow]
					if want[i] == nil {
						for _, x := range got {
							if x != -7 {
								t.Fatalf("method %d step %d: padding row %d was written", method, step, i)
							}
						}
					} else if !reflect.DeepEqual(got, want[i]) {
						t.Fatalf("method %d step %d layer %d: entry %d attends differently", method, step, layer, i)
					}
				}
			}
			if err := b.Advance(1); err != nil {
				t.Fatal(err)
			}
			for seq := 0; seq < batchSeqs; seq++ {
				sameSequence(t, batched, seq, eager, seq, "method %d step %d", method, step)
			}
		}
		if s, _ := batched.Stats(rkv.All); method != rkv.MethodFull && s.Compressions == 0 {
			t.Fatalf("method %d never compressed", method)
		}
	}
}

func TestSeveralStepsOneAdvanceAndTwoBatches(t *testing.T) {
	batched, eager := newCache(t, batchParams(rkv.MethodH2O)), newCache(t, batchParams(rkv.MethodH2O))
	wide, narrow := newBatch(t, batched, batchEntries), newBatch(t, batched, 1)
	if wide.Entries() != batchEntries || narrow.Entries() != 1 {
		t.Fatal("entries")
	}
	ids := []int32{3, -1, 0, -1}
	if err := wide.Set(ids[:3], 0); err != nil { // the 4th entry is padding anyway
		t.Fatal(err)
	}
	if err := narrow.Set([]int32{1}, 0); err != nil {
		t.Fatal(err)
	}
	for step := 0; step < 3; step++ {
		for layer := 0; layer < seqLayers; layer++ {
			r := rowsFor(t, eager, ids, layer)
			eagerStep(t, eager, ids, layer, r)
			if err := batchStep(batched, wide, layer, r, nil); err != nil {
				t.Fatal(err)
			}
		}
	}
	if logical, _, _ := batched.SeqLength(3, 1); logical != 0 {
		t.Fatal("the host heard of the steps before the advance")
	}
	if err := wide.Advance(3); err != nil {
		t.Fatal(err)
	}
	for layer := 0; layer < seqLayers; layer++ {
		r := rowsFor(t, eager, []int32{1}, layer)
		eagerStep(t, eager, []int32{1}, layer, r)
		if err := batchStep(batched, narrow, layer, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := narrow.Advance(1); err != nil {
		t.Fatal(err)
	}
	for seq := 0; seq < batchSeqs; seq++ {
		sameSequence(t, batched, seq, eager, seq, "after the advances")
	}
}

func TestAStepPastTheCapacityFaultsTheCacheAtTheAdvance(t *testing.T) {
	cache := newCache(t, batchParams(rkv.MethodStreamingLLM))
	b := newBatch(t, cache, 2)
	if err := b.Set([]int32{-1, 2}, 0); err != nil {
		t.Fatal(err)
	}
	rows := append(token(0, 0, 0, 0, heads), token(0, 0, 0, 0, heads)...)
	kv := rkv.HostF32(rows, heads, dim, rkv.Decode)
	const steps = seqBudget + seqBuffer + 1 // no compression: the last step finds sequence 2 full
	for step := 0; step < steps; step++ {
		if err := cache.Append(rkv.Append{Batch: b, K: kv, V: kv}); err != nil {
			t.Fatal(err)
		}
	}
	err := b.Advance(steps)
	expect(t, err, rkv.ErrCapacity)
	if !strings.Contains(err.Error(), "sequence 2") {
		t.Fatalf("the message does not name the sequence: %v", err)
	}
	_, err = cache.CompressDue(rkv.All, rkv.All)
	expect(t, err, rkv.ErrFaulted)
	expect(t, b.Set([]int32{0}, 0), rkv.ErrFaulted)
}

func TestBatchCloseAndCacheClose(t *testing.T) {
	cache, err := rkv.NewCache(batchParams(rkv.MethodStreamingLLM))
	if err != nil {
		t.Fatal(err)
	}
	b, err := rkv.NewBatch(cache, 2)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := b.Set([]int32{0}, 0); !errors.Is(err, rkv.ErrBatchClosed) {
		t.Fatalf("Set on a closed batch: %v", err)
	}
	if err := b.Advance(1); !errors.Is(err, rkv.ErrBatchClosed) {
		t.Fatalf("Advance on a closed batch: %v", err)
	}
	kv := rkv.HostF32(make([]float32, 2*kvRow), heads, dim, rkv.Decode)
	if err := cache.Append(rkv.Append{Batch: b, K: kv, V: kv}); !errors.Is(err, rkv.ErrBatchClosed) {
		t.Fatalf("Append with a closed batch: %v", err)
	}
	if err := cache.AttendBatch(b, 0, kv, kv, 0, 0); !errors.Is(err, rkv.ErrBatchClosed) {
		t.Fatalf("AttendBatch with a closed batch: %v", err)
	}
	// The cache closed first: the batch refuses calls, and still closes.
	late, err := rkv.NewBatch(cache, 2)
	if err != nil {
		t.Fatal(err)
	}
	cache.Close()
	if err := late.Set([]int32{0}, 0); !errors.Is(err, rkv.ErrClosed) {
		t.Fatalf("Set after the cache's Close: %v", err)
	}
	if err := late.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := rkv.NewBatch(cache, 2); !errors.Is(err, rkv.ErrClosed) {
		t.Fatalf("NewBatch of a closed cache: %v", err)
	}
}

func TestBadBatchInputIsRefusedAndChangesNothing(t *testing.T) {
	p := batchParams(rkv.MethodRKV)
	cache, other, eager := newCache(t, p), newCache(t, p), newCache(t, p)
	for seq := 0; seq < batchSeqs; seq++ {
		mustFeed(t, cache, seq, 0, 4, 0)
		mustFeed(t, eager, seq, 0, 4, 0)
	}
	for _, entries := range []int{0, 65536, -1, 1 << 33} {
		if _, err := rkv.NewBatch(cache, entries); !errors.Is(err, rkv.ErrOutOfRange) {
			t.Fatalf("%d entries: %v", entries, err)
		}
	}
	b, foreign := newBatch(t, cache, batchEntries), newBatch(t, other, batchEntries)
	good := []int32{1, -1, 4, 0}
	if err := b.Set(good, 0); err != nil {
		t.Fatal(err)
	}
	for _, ids := range [][]int32{{1, batchSeqs, 4, 0}, {1, -2, 4, 0}, {1 << 30, 1, 2, 3}} {
		expect(t, b.Set(ids, 0), rkv.ErrOutOfRange)
	}
	expect(t, b.Set([]int32{1, -1, 1, 0}, 0), rkv.ErrInvalidArgument)   // repeated
	expect(t, b.Set([]int32{0, 1, 2, 3, 4}, 0), rkv.ErrInvalidArgument) // too many
	expect(t, b.Advance(-1), rkv.ErrInvalidArgument)

	r := rowsFor(t, eager, good, 0)
	q := rkv.HostF32(r.q, qHeads, dim, rkv.Decode)
	k, v := rkv.HostF32(r.k, heads, dim, rkv.Decode), rkv.HostF32(r.v, heads, dim, rkv.Decode)
	err := cache.Append(rkv.Append{Batch: foreign, K: k, V: v, Q: &q})
	expect(t, err, rkv.ErrInvalidArgument)
	if !strings.Contains(err.Error(), "another cache") {
		t.Fatalf("message: %v", err)
	}
	short := rkv.HostF32(r.k[:len(r.k)-1], heads, dim, rkv.Decode) // the last row, a padding row here, is short
	err = cache.Append(rkv.Append{Batch: b, K: short, V: v, Q: &q})
	expect(t, err, rkv.ErrCapacity)
	if !strings.Contains(err.Error(), "args->k.extent") {
		t.Fatalf("message: %v", err)
	}
	expect(t, cache.Append(rkv.Append{Batch: b, K: k, V: v}), rkv.ErrMissingQueries)
	expect(t, cache.Append(rkv.Append{Batch: b, SeqIDs: good, K: k, V: v, Q: &q}), rkv.ErrInvalidArgument)
	expect(t, cache.Append(rkv.Append{Batch: b, K: k, V: v, Q: &q, Prompt: true}), rkv.ErrInvalidArgument)
	expect(t, cache.Append(rkv.Append{Layer: seqLayers, Batch: b, K: k, V: v, Q: &q}), rkv.ErrOutOfRange)
	out := make([]float32, batchEntries*qRow)
	for i := range out {
		out[i] = -7
	}
	err = cache.AttendBatch(b, 0, q, rkv.HostF32(out[:len(out)-1], qHeads, dim, rkv.Decode), 0, 0)
	expect(t, err, rkv.ErrCapacity)
	if !strings.Contains(err.Error(), "args->out.extent") {
		t.Fatalf("message: %v", err)
	}
	expect(t, cache.AttendBatch(foreign, 0, q, rkv.HostF32(out, qHeads, dim, rkv.Decode), 0, 0), rkv.ErrInvalidArgument)
	for _, x := range out {
		if x != -7 {
			t.Fatal("a refused attend wrote its output")
		}
	}
	for seq := 0; seq < batchSeqs; seq++ {
		sameSequence(t, cache, seq, eager, seq, "after the refused calls")
	}
	// The refused sets left the batch as set: a step with it equals one with `good`.
	for layer := 0; layer < seqLayers; layer++ {
		r := rowsFor(t, eager, good, layer)
		eagerStep(t, eager, good, layer, r)
		if err := batchStep(cache, b, layer, r, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Advance(1); err != nil {
		t.Fatal(err)
	}
	for seq := 0; seq < batchSeqs; seq++ {
		sameSequence(t, cache, seq, eager, seq, "a step after the refused calls")
	}
}
