package rkv_test

// Calls on one sequence (issue 10, points 1-3): rollback (SeqTruncate and its
// limit), fork (SeqCopy), per-request budgets (SeqSetBudget), each with its
// bad input as an error that leaves the cache unchanged.

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"rkv"
)

const (
	seqLayers                  = 2
	seqBudget, seqBuffer, seqW = 12, 6, 3
)

func seqParams(method rkv.Method) rkv.Params {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 4, seqLayers, heads, qHeads, dim
	p.Method, p.Budget, p.Buffer, p.Window, p.Kernel, p.Sink, p.MaxLen = method, seqBudget, seqBuffer, seqW, 3, 2, 64
	return p
}

func mustFeed(t *testing.T, cache *rkv.Cache, seq int, position int64, count int, stream uint64) {
	t.Helper()
	if err := feed(cache, seqLayers, seq, position, count, stream); err != nil {
		t.Fatal(err)
	}
}

// Speculative decoding: drafts appended, rolled back, the real tokens
// appended: the cache holds exactly what a cache that never saw the drafts
// holds, through compressions, for every method but Random.
func TestDraftsRolledBackAreAsNeverDrafted(t *testing.T) {
	const drafts, realTokens = 2, 3
	for _, method := range []rkv.Method{rkv.MethodRKV, rkv.MethodSnapKV, rkv.MethodH2O, rkv.MethodStreamingLLM,
		rkv.MethodKeyDiff, rkv.MethodFull} {
		p := seqParams(method)
		p.MaxRollback = 4
		capacity := seqBudget + seqBuffer
		if method == rkv.MethodFull {
			capacity = p.MaxLen
		}
		drafted, plain := newCache(t, p), newCache(t, p)
		var position int64
		rollbacks := 0
		for step := 0; step < 16; step++ {
			// drafts that do not fit without a compression are not made
			if _, held, _ := drafted.SeqLength(1, 0); held+drafts <= capacity {
				mustFeed(t, drafted, 1, position, drafts, 9)
				if limit, err := drafted.SeqRollbackLimit(1); err != nil || limit < drafts {
					t.Fatalf("method %d step %d: limit %d (%v)", method, step, limit, err)
				}
				if err := drafted.SeqTruncate(1, drafts, 0); err != nil {
					t.Fatal(err)
				}
				rollbacks++
			}
			mustFeed(t, drafted, 1, position, realTokens, 0)
			mustFeed(t, plain, 1, position, realTokens, 0)
			position += realTokens
			sameSequence(t, drafted, 1, plain, 1, "method %d step %d", method, step)
			sd, _ := drafted.Stats(1)
			sp, _ := plain.Stats(1)
			sd.CompressSeconds, sp.CompressSeconds = 0, 0
			if sd != sp {
				t.Fatalf("method %d step %d: stats %+v, never drafted %+v", method, step, sd, sp)
			}
		}
		if s, _ := drafted.Stats(1); rollbacks < 8 || method != rkv.MethodFull && s.Compressions == 0 {
			t.Fatalf("method %d: %d rollbacks, %d compressions", method, rollbacks, s.Compressions)
		}
	}
}

func TestTruncatingMoreThanTheLimitIsRefused(t *testing.T) {
	p := seqParams(rkv.MethodRKV)
	p.MaxRollback = 2
	cache := newCache(t, p)
	mustFeed(t, cache, 0, 0, seqBudget+seqBuffer, 0)
	mustFeed(t, cache, 0, seqBudget+seqBuffer, 2, 0) // compresses, then 2 more
	limit, err := cache.SeqRollbackLimit(0)
	if err != nil || limit != 2 {
		t.Fatalf("limit %d (%v), want the 2 tokens since the compression", limit, err)
	}
	before := snapshot(t, cache, 0)
	err = cache.SeqTruncate(0, limit+1, 0)
	expect(t, err, rkv.ErrBadState)
	if !strings.Contains(err.Error(), strconv.Itoa(limit)) {
		t.Fatalf("the message does not name the limit: %v", err)
	}
	expect(t, cache.SeqTruncate(0, -1, 0), rkv.ErrInvalidArgument)
	expect(t, cache.SeqTruncate(4, 1, 0), rkv.ErrOutOfRange)
	_, err = cache.SeqRollbackLimit(-1)
	expect(t, err, rkv.ErrOutOfRange)
	if !reflect.DeepEqual(snapshot(t, cache, 0), before) {
		t.Fatal("a refused truncate changed the sequence")
	}
	if err := cache.SeqTruncate(0, limit, 0); err != nil {
		t.Fatal(err)
	}
	if logical, physical, _ := cache.SeqLength(0, 1); logical != seqBudget+seqBuffer || physical != seqBudget {
		t.Fatalf("after the rollback: %d, %d", logical, physical)
	}
}

func TestForkHoldsWhatItsSourceHoldsThenGoesItsOwnWay(t *testing.T) {
	for _, method := range []rkv.Method{rkv.MethodRKV, rkv.MethodH2O, rkv.MethodKeyDiff, rkv.MethodFull} {
		cache, reference := newCache(t, seqParams(method)), newCache(t, seqParams(method))
		var position int64
		for _, count := range []int{5, 7, 9} {
			mustFeed(t, cache, 0, position, count, 0)
			mustFeed(t, reference, 2, position, count, 0)
			position += int64(count)
		}
		source := snapshot(t, cache, 0)
		if err := cache.SeqCopy(0, 2, 0); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(snapshot(t, cache, 0), source) {
			t.Fatalf("method %d: the source changed", method)
		}
		sameSequence(t, cache, 2, cache, 0, "method %d: the fork", method)
		for _, count := range []int{4, 6, 1} {
			mustFeed(t, cache, 0, position, count, 0)
			mustFeed(t, cache, 2, position, count, 0)
			mustFeed(t, reference, 2, position, count, 0)
			position += int64(count)
			sameSequence(t, cache, 2, cache, 0, "method %d: fork and source", method)
			sameSequence(t, cache, 2, reference, 2, "method %d: fork and a sequence fed from the start", method)
		}
		source = snapshot(t, cache, 0)
		mustFeed(t, cache, 2, position, 1, 5)
		if !reflect.DeepEqual(snapshot(t, cache, 0), source) {
			t.Fatalf("method %d: the fork is not independent of its source", method)
		}
	}
}

func TestCopyingOntoABusyOrTheSameSlotIsRefused(t *testing.T) {
	cache := newCache(t, seqParams(rkv.MethodRKV))
	mustFeed(t, cache, 0, 0, 8, 0)
	mustFeed(t, cache, 1, 0, 1, 0)
	zero, one := snapshot(t, cache, 0), snapshot(t, cache, 1)
	expect(t, cache.SeqCopy(0, 1, 0), rkv.ErrBadState)        // busy
	expect(t, cache.SeqCopy(0, 0, 0), rkv.ErrInvalidArgument) // itself
	expect(t, cache.SeqCopy(3, 3, 0), rkv.ErrInvalidArgument) // itself, empty
	expect(t, cache.SeqCopy(0, 4, 0), rkv.ErrOutOfRange)
	expect(t, cache.SeqCopy(-1, 2, 0), rkv.ErrOutOfRange)
	expect(t, cache.SeqCopy(0, rkv.All, 0), rkv.ErrOutOfRange)
	if !reflect.DeepEqual(snapshot(t, cache, 0), zero) || !reflect.DeepEqual(snapshot(t, cache, 1), one) {
		t.Fatal("a refused copy changed a sequence")
	}
}

func TestASequenceCompressesToItsOwnBudget(t *testing.T) {
	cache := newCache(t, seqParams(rkv.MethodRKV))
	small := seqW + 2
	if err := cache.SeqSetBudget(1, small); err != nil {
		t.Fatal(err)
	}
	if b1, _ := cache.SeqBudget(1); b1 != small {
		t.Fatalf("budget %d", b1)
	}
	mustFeed(t, cache, 0, 0, small+seqBuffer+1, 0)
	mustFeed(t, cache, 1, 0, small+seqBuffer+1, 0)
	if _, physical, _ := cache.SeqLength(1, 0); physical != small+1 {
		t.Fatalf("sequence 1 holds %d, want its budget %d + 1", physical, small)
	}
	if _, physical, _ := cache.SeqLength(0, 0); physical != small+seqBuffer+1 {
		t.Fatalf("sequence 0 holds %d: it has the cache's budget", physical)
	}
	if err := cache.SeqCopy(1, 2, 0); err != nil {
		t.Fatal(err)
	}
	if b2, _ := cache.SeqBudget(2); b2 != small {
		t.Fatalf("the fork's budget is %d", b2)
	}
	if err := cache.SeqReset(1, 0); err != nil {
		t.Fatal(err)
	}
	if b1, _ := cache.SeqBudget(1); b1 != seqBudget {
		t.Fatalf("after a reset the budget is %d", b1)
	}
}

func TestBudgetsOutsideTheirBoundsOrOnABusySlotAreRefused(t *testing.T) {
	cache := newCache(t, seqParams(rkv.MethodRKV))
	for _, budget := range []int{seqBudget + 1, seqW, 0, -1, 1 << 33} {
		err := cache.SeqSetBudget(0, budget)
		expect(t, err, rkv.ErrOutOfRange)
		if budget < 1<<31 && !strings.Contains(err.Error(), strconv.Itoa(seqBudget)) {
			t.Fatalf("budget %d: the message lacks the bounds: %v", budget, err)
		}
	}
	mustFeed(t, cache, 0, 0, 1, 0)
	expect(t, cache.SeqSetBudget(0, seqBudget-1), rkv.ErrBadState)
	expect(t, cache.SeqSetBudget(4, seqBudget-1), rkv.ErrOutOfRange)
	if b, _ := cache.SeqBudget(0); b != seqBudget {
		t.Fatalf("a refused budget changed it to %d", b)
	}
	full := newCache(t, seqParams(rkv.MethodFull))
	expect(t, full.SeqSetBudget(0, 8), rkv.ErrUnsupported)
	if b, err := full.SeqBudget(0); err != nil || b != 64 {
		t.Fatalf("Full's budget is its max_len: %d (%v)", b, err)
	}
	_, err := full.SeqBudget(9)
	if !errors.Is(err, rkv.ErrOutOfRange) {
		t.Fatal(err)
	}
}
