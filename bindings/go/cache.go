package rkv

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

	"rkv/capi"
)

// ErrClosed is returned by methods of a closed Cache.
var ErrClosed = errors.New("rkv: cache is closed")

// Cache is a librkv cache: the K/V memory of MaxSeqs sequences x NumLayers x
// NumKVHeads, compressed to a fixed budget per head.
type Cache struct {
	mu         sync.Mutex               // serialises calls (its batches' too), and Close with them
	handle     capi.Struct_SS_rkv_cache // nil once closed
	args       appendArgs               // Append's C arguments, reused (calls are serialised)
	attendArgs attendArgs               // Attend's
}

// NewCache validates p and allocates all the memory the cache will use.
func NewCache(p Params) (*Cache, error) {
	r, err := p.raw()
	if err != nil {
		return nil, err
	}
	defer capi.DeleteRkv_cache_params(r)
	args, err := newAppendArgs()
	if err != nil {
		return nil, err
	}
	attend, err := newAttendArgs()
	if err != nil {
		args.free()
		return nil, err
	}
	var handle uintptr
	if err := check(capi.Rkv_cache_create(r, &handle)); err != nil {
		args.free()
		attend.free()
		return nil, err
	}
	cache := &Cache{handle: capi.SwigcptrStruct_SS_rkv_cache(handle), args: args, attendArgs: attend}
	// A safety net only: call Close to free memory (device memory above all)
	// at a known point.
	runtime.SetFinalizer(cache, (*Cache).Close)
	return cache, nil
}

// Close frees the cache and all its memory; every view becomes invalid, and
// its batches refuse calls (Close them too). Closing again does nothing. A
// call running in another goroutine finishes first.
func (c *Cache) Close() error {
	if c == nil {
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handle == nil {
		return nil
	}
	capi.Rkv_cache_destroy(c.handle)
	c.handle = nil
	c.args.free()
	c.attendArgs.free()
	runtime.SetFinalizer(c, nil)
	return nil
}

// call runs one raw call on the live handle, serialised with every other
// call and with Close, and turns its result into an error. The sequence,
// layer and head indices the call passes are listed to be checked first: the
// C API takes them as int32, and an int that does not fit is refused here
// rather than wrapped into another, valid-looking index.
func (c *Cache) call(raw func(h capi.Struct_SS_rkv_cache) *capi.Failure, indices ...int) error {
	return c.do(func(h capi.Struct_SS_rkv_cache) error { return check(raw(h)) }, indices...)
}

// do is call for a body that may fail before its raw call (a closed batch).
func (c *Cache) do(body func(h capi.Struct_SS_rkv_cache) error, indices ...int) error {
	for _, i := range indices {
		if i != int(int32(i)) {
			return &Error{Status: StatusOutOfRange, Message: fmt.Sprintf("index %d does not fit an int32", i)}
		}
	}
	if c == nil {
		return ErrClosed
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.handle == nil {
		return ErrClosed
	}
	err := body(c.handle)
	// Without this the Cache could become unreachable during the cgo call and
	// its finalizer destroy the handle the call is using.
	runtime.KeepAlive(c)
	return err
}

// Params returns the parameters the cache runs with.
func (c *Cache) Params() (Params, error) {
	r := capi.NewRkv_cache_params()
	defer capi.DeleteRkv_cache_params(r)
	err := c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_cache_get_params(h, r)
	})
	if err != nil {
		return Params{}, err
	}
	return fromRaw(r), nil
}

// Set changes Lambda, Threshold, Kernel, Pooling, Seed or AutoCompress of a
// live cache (others fail with ErrBadState), from the next compression on.
func (c *Cache) Set(p Param, value float64) error {
	return c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_cache_set(h, int32(p), value)
	})
}

// Get reads one parameter of the live cache.
func (c *Cache) Get(p Param) (float64, error) {
	var value float64
	err := c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_cache_get(h, int32(p), &value)
	})
	return value, err
}

// Compress compresses now: seq if it holds more than its budget, or with
// seq = All every sequence that is due; layer or All.
func (c *Cache) Compress(seq, layer int, stream uintptr) error {
	return c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_compress(h, int32(seq), int32(layer), stream)
	}, seq, layer)
}

// CompressDue reports whether appending one more token to (seq, layer) would
// compress first; either may be All ("any").
func (c *Cache) CompressDue(seq, layer int) (bool, error) {
	var due int32
	err := c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_compress_due(h, int32(seq), int32(layer), &due)
	}, seq, layer)
	return due != 0, err
}

// SeqReset forgets a sequence (or All) so its slot can serve a new request;
// its budget returns to the cache's.
func (c *Cache) SeqReset(seq int, stream uintptr) error {
	return c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_seq_reset(h, int32(seq), stream)
	}, seq)
}

// SeqTruncate rolls back the last tokens appended tokens of every layer of
// seq (speculative decoding), exactly as if they had never come. More than
// SeqRollbackLimit fails with ErrBadState.
func (c *Cache) SeqTruncate(seq, tokens int, stream uintptr) error {
	return c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_seq_truncate(h, int32(seq), int32(tokens), stream)
	}, seq, tokens)
}

// SeqRollbackLimit is how many tokens SeqTruncate accepts now (raise it with
// Params.MaxRollback for the methods that keep queries).
func (c *Cache) SeqRollbackLimit(seq int) (int, error) {
	var tokens int32
	err := c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_seq_rollback_limit(h, int32(seq), &tokens)
	}, seq)
	return int(tokens), err
}

// SeqCopy forks src into the empty slot dst (beam search, parallel
// sampling): the whole state, after which the two evolve independently.
func (c *Cache) SeqCopy(src, dst int, stream uintptr) error {
	return c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_seq_copy(h, int32(src), int32(dst), stream)
	}, src, dst)
}

// SeqSetBudget gives the empty sequence seq its own budget, from the smallest
// the method allows up to the cache's, in the memory the cache already has.
func (c *Cache) SeqSetBudget(seq, budget int) error {
	return c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_seq_set_budget(h, int32(seq), int32(budget))
	}, seq, budget)
}

// SeqBudget is the budget seq compresses to.
func (c *Cache) SeqBudget(seq int) (int, error) {
	var budget int32
	err := c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_seq_get_budget(h, int32(seq), &budget)
	}, seq)
	return int(budget), err
}

// SeqLength returns the logical length (tokens appended) and the physical
// length (tokens held per head) of (seq, layer).
func (c *Cache) SeqLength(seq, layer int) (logical int64, physical int, err error) {
	var held int32
	err = c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_seq_length(h, int32(seq), int32(layer), &logical, &held)
	}, seq, layer)
	return logical, int(held), err
}

// SeqPositions returns the original positions one head holds, in slot order
// (a copy).
func (c *Cache) SeqPositions(seq, layer, head int) ([]int32, error) {
	var out []int32
	var count int32
	err := c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		// Asked and copied under one lock: no call can change the length between.
		if f := capi.Rkv_seq_positions(h, int32(seq), int32(layer), int32(head), nil, 0, &count); f != nil {
			return f
		}
		out = make([]int32, count+1) // +1: never a zero-length slice to point at
		return capi.Rkv_seq_positions(h, int32(seq), int32(layer), int32(head),
			&out[0], int32(len(out)), &count)
	}, seq, layer, head)
	if err != nil {
		return nil, err
	}
	return out[:count], nil
}

// Stats are a sequence's or the whole cache's statistics.
type Stats struct {
	BytesAllocated, BytesKVCapacity, BytesKVHeld, BytesKVFull uint64
	TokensAppended, TokensHeld, TokensEvicted, Compressions   uint64
	CompressSeconds                                           float64
}

// Stats returns the statistics of seq, or of the whole cache with All.
func (c *Cache) Stats(seq int) (Stats, error) {
	s := capi.NewRkv_stats()
	defer capi.DeleteRkv_stats(s)
	if err := c.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_cache_stats(h, int32(seq), s)
	}, seq); err != nil {
		return Stats{}, err
	}
	return Stats{
		BytesAllocated: s.GetBytes_allocated(), BytesKVCapacity: s.GetBytes_kv_capacity(),
		BytesKVHeld: s.GetBytes_kv_held(), BytesKVFull: s.GetBytes_kv_full(),
		TokensAppended: s.GetTokens_appended(), TokensHeld: s.GetTokens_held(),
		TokensEvicted: s.GetTokens_evicted(), Compressions: s.GetCompressions(),
		CompressSeconds: s.GetCompress_seconds(),
	}, nil
}
