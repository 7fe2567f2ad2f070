package rkv_test

// The package under abuse (issue 11): use after Close, slices shorter than the
// shape they are described with, and Close from one goroutine while another
// is inside a call. Each gives an error, never a crash.
//
// The cases that crash a package without the fix run in a child process (this
// test binary, re-run with RKV_ABUSE_CHILD set), so that a crash fails the
// test instead of ending the test run.

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"rkv"
)

// runChild re-runs this test binary on one scenario and fails t unless the
// child exits cleanly.
func runChild(t *testing.T, scenario string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestAbuseChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "RKV_ABUSE_CHILD="+scenario)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scenario %q: the child failed (%v), a crash is not an error:\n%s", scenario, err, out)
	}
}

// TestAbuseChild runs the scenario RKV_ABUSE_CHILD names (nothing otherwise).
func TestAbuseChild(t *testing.T) {
	switch os.Getenv("RKV_ABUSE_CHILD") {
	case "":
		t.Skip("runs only as a child of the abuse tests")
	case "view-after-close":
		viewAfterClose(t)
	case "close-while-appending":
		closeWhileAppending(t)
	case "calls-racing-close":
		callsRacingClose(t)
	default:
		t.Fatalf("unknown scenario %q", os.Getenv("RKV_ABUSE_CHILD"))
	}
}

// A cache of a few MiB: freed memory is unmapped, so a read after the free
// faults instead of finding stale bytes.
func bigParams() rkv.Params {
	p := rkv.DefaultParams()
	p.MaxSeqs, p.NumLayers, p.NumKVHeads, p.NumQHeads, p.HeadDim = 1, 1, 8, 8, 128
	p.Budget, p.Buffer, p.Window = 448, 64, 8
	return p
}

func appendPrompt(cache *rkv.Cache, tokens int) error {
	x := data(8*tokens*128, 7)
	t := rkv.HostF32(x, 8, 128, rkv.BHTD(tokens))
	return cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{int32(tokens)}, K: t, V: t, Q: &t})
}

func viewAfterClose(t *testing.T) {
	cache, err := rkv.NewCache(bigParams())
	if err != nil {
		t.Fatal(err)
	}
	if err := appendPrompt(cache, 300); err != nil {
		t.Fatal(err)
	}
	view, err := cache.View(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := view.Positions(0); err != nil {
		t.Fatal(err)
	}
	cache.Close()
	// The view outlives the cache: its accessors refuse instead of reading
	// freed memory.
	if _, err := view.Positions(0); !errors.Is(err, rkv.ErrClosed) {
		t.Errorf("Positions after Close: %v, want ErrClosed", err)
	}
	if _, err := view.KeysF32(0); !errors.Is(err, rkv.ErrClosed) {
		t.Errorf("KeysF32 after Close: %v, want ErrClosed", err)
	}
	if _, err := view.ValuesF32(0); !errors.Is(err, rkv.ErrClosed) {
		t.Errorf("ValuesF32 after Close: %v, want ErrClosed", err)
	}
}

func closeWhileAppending(t *testing.T) {
	cache, err := rkv.NewCache(bigParams())
	if err != nil {
		t.Fatal(err)
	}
	inside := make(chan struct{})
	done := make(chan error)
	go func() {
		close(inside)
		done <- appendPrompt(cache, 3000) // seconds inside the library: compressed chunk by chunk
	}()
	<-inside
	time.Sleep(50 * time.Millisecond) // the goroutine is inside the cgo call now
	if err := cache.Close(); err != nil {
		t.Fatal(err)
	}
	// The append finished before Close freed anything, or never started.
	if err := <-done; err != nil && !errors.Is(err, rkv.ErrClosed) {
		t.Fatalf("append during Close: %v", err)
	}
	if _, _, err := cache.SeqLength(0, 0); !errors.Is(err, rkv.ErrClosed) {
		t.Fatalf("SeqLength after Close: %v, want ErrClosed", err)
	}
}

func TestViewAfterCloseRefuses(t *testing.T) { runChild(t, "view-after-close") }

func TestCloseWhileAppendingWaits(t *testing.T) { runChild(t, "close-while-appending") }

func TestEveryCallAfterCloseIsErrClosed(t *testing.T) {
	cache, err := rkv.NewCache(params())
	if err != nil {
		t.Fatal(err)
	}
	k := data(heads*dim, 1)
	q := data(qHeads*dim, 2)
	out := make([]float32, qHeads*dim)
	kt := rkv.HostF32(k, heads, dim, rkv.Decode)
	if err := cache.Append(rkv.Append{SeqIDs: []int32{0}, K: kt, V: kt}); err != nil {
		t.Fatal(err)
	}
	cache.Close()
	if err := cache.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	calls := map[string]error{
		"Append":       cache.Append(rkv.Append{SeqIDs: []int32{0}, K: kt, V: kt}),
		"Compress":     cache.Compress(0, 0, 0),
		"SeqReset":     cache.SeqReset(0, 0),
		"SeqTruncate":  cache.SeqTruncate(0, 0, 0),
		"SeqCopy":      cache.SeqCopy(0, 1, 0),
		"SeqSetBudget": cache.SeqSetBudget(0, 8),
		"Set":          cache.Set(rkv.ParamLambda, 0.5),
		"Attend": cache.Attend(0, []int32{0}, rkv.HostF32(q, qHeads, dim, rkv.Decode),
			rkv.HostF32(out, qHeads, dim, rkv.Decode), 0, 0),
	}
	_, calls["CompressDue"] = cache.CompressDue(0, 0)
	_, _, calls["SeqLength"] = cache.SeqLength(0, 0)
	_, calls["SeqPositions"] = cache.SeqPositions(0, 0, 0)
	_, calls["Get"] = cache.Get(rkv.ParamLambda)
	_, calls["SeqRollbackLimit"] = cache.SeqRollbackLimit(0)
	_, calls["SeqBudget"] = cache.SeqBudget(0)
	_, calls["Stats"] = cache.Stats(rkv.All)
	_, calls["View"] = cache.View(0, 0)
	_, calls["Params"] = cache.Params()
	for name, err := range calls {
		if !errors.Is(err, rkv.ErrClosed) {
			t.Errorf("%s after Close: %v, want ErrClosed", name, err)
		}
	}
}

func TestShortSlicesAreRefused(t *testing.T) {
	cache := newCache(t, params())
	k := data(heads*12*dim, 1)
	vShort := data(heads*2*dim, 2)
	q := data(qHeads*12*dim, 3)
	qShort := data(qHeads*1*dim, 4)
	bhtd := func(x []float32, h int) rkv.Tensor { return rkv.HostF32(x, h, dim, rkv.BHTD(12)) }
	// Since librkv 0.2 every tensor carries its extent (the slice's length)
	// and the library refuses an access past it with RKV_ERR_CAPACITY naming
	// the tensor; a nil slice is refused before, as a missing tensor.
	refused := func(name string, err, want error, tensor string) {
		t.Helper()
		if !errors.Is(err, want) || !strings.Contains(err.Error(), tensor) {
			t.Errorf("%s: %v, want %v naming %q", name, err, want, tensor)
		}
	}
	qt := bhtd(q, qHeads)
	refused("v shorter than k", cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{12},
		K: bhtd(k, heads), V: bhtd(vShort, heads), Q: &qt}), rkv.ErrCapacity, "args->v.extent")
	qs := bhtd(qShort, qHeads)
	refused("q shorter than k", cache.Append(rkv.Append{SeqIDs: []int32{0}, NumTokens: []int32{12},
		K: bhtd(k, heads), V: bhtd(k, heads), Q: &qs}), rkv.ErrCapacity, "args->q.extent")
	packed := func(x []float32) rkv.Tensor { return rkv.HostF32(x, heads, dim, rkv.Packed) }
	refused("packed varlen with a short v", cache.Append(rkv.Append{SeqIDs: []int32{0, 1}, NumTokens: []int32{6, 6},
		TokenOffsets: []int64{0, 6}, K: packed(k), V: packed(vShort)}), rkv.ErrCapacity, "args->v.extent")
	refused("an empty slice", cache.Append(rkv.Append{SeqIDs: []int32{0},
		K: rkv.HostF32(nil, heads, dim, rkv.Decode), V: rkv.HostF32(k, heads, dim, rkv.Decode)}), rkv.ErrInvalidArgument, "")
	if logical, held, err := cache.SeqLength(0, 0); err != nil || logical != 0 || held != 0 {
		t.Errorf("refused appends changed the cache: %d/%d %v", logical, held, err)
	}

	one := rkv.HostF32(k[:heads*dim], heads, dim, rkv.Decode)
	if err := cache.Append(rkv.Append{SeqIDs: []int32{0}, K: one, V: one}); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, qHeads*dim-1)
	for i := range out {
		out[i] = -7
	}
	refused("attend with a short q", cache.Attend(0, []int32{0}, rkv.HostF32(qShort[:qHeads*dim-1], qHeads, dim, rkv.Decode),
		rkv.HostF32(make([]float32, qHeads*dim), qHeads, dim, rkv.Decode), 0, 0), rkv.ErrCapacity, "args->q.extent")
	refused("attend with a short out", cache.Attend(0, []int32{0}, rkv.HostF32(qShort, qHeads, dim, rkv.Decode),
		rkv.HostF32(out, qHeads, dim, rkv.Decode), 0, 0), rkv.ErrCapacity, "args->out.extent")
	for _, x := range out {
		if x != -7 {
			t.Fatal("a refused attend wrote its output")
		}
	}
}

func TestCallsRacingCloseGetErrClosed(t *testing.T) { runChild(t, "calls-racing-close") }

// Goroutines call while another closes: every call returns nil or ErrClosed.
func callsRacingClose(t *testing.T) {
	p := params()
	p.Method = rkv.MethodKeyDiff // compresses without queries
	cache, err := rkv.NewCache(p)
	if err != nil {
		t.Fatal(err)
	}
	k := data(heads*dim, 5)
	kt := rkv.HostF32(k, heads, dim, rkv.Decode)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func(seq int32) {
			defer wg.Done()
			for i := 0; i < 200; i++ {
				err := cache.Append(rkv.Append{SeqIDs: []int32{seq}, K: kt, V: kt})
				if _, _, e := cache.SeqLength(int(seq), 0); err == nil {
					err = e
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}(int32(g))
	}
	time.Sleep(5 * time.Millisecond)
	cache.Close()
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, rkv.ErrClosed) {
			t.Errorf("a call racing Close: %v, want nil or ErrClosed", err)
		}
	}
}
