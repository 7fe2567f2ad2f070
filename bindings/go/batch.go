package rkv

import (
	"errors"
	"runtime"

	"rkv/capi"
)

// ErrBatchClosed is returned by calls given a closed Batch.
var ErrBatchClosed = errors.New("rkv: batch is closed")

// Batch is a batch of sequence ids in the cache's memory (rkv_batch): Append
// and AttendBatch with a batch read entry i's sequence when their work runs,
// and skip entries set to -1 (padding). An engine captures one decode step
// per batch size in a CUDA graph and replays it for whichever sequences it
// Set the batch to; Advance tells the host what the steps did, without a
// sync, so CompressDue and Compress stay right:
//
//	b.Set(ids, stream)                                        // when the running set changes
//	cache.Append(rkv.Append{Batch: b, K: k, V: v, Q: &q})     // per layer, or a graph replay
//	cache.AttendBatch(b, layer, q, out, 0, stream)
//	b.Advance(1)
//	if due, _ := cache.CompressDue(rkv.All, rkv.All); due {
//		cache.Compress(rkv.All, rkv.All, stream)              // outside the graph
//	}
//
// A Batch keeps its Cache reachable. Calls on it are serialised with the
// calls of its cache. Close it when done (Close is idempotent, may come
// before or after the cache's, and a finalizer frees a forgotten batch).
type Batch struct {
	cache   *Cache
	handle  capi.Struct_SS_rkv_batch // nil once closed; guarded by cache.mu
	entries int
}

// NewBatch makes a batch of maxEntries entries (1 .. 65535), all padding, for
// cache: the rows every tensor of a call with the batch has.
func NewBatch(cache *Cache, maxEntries int) (*Batch, error) {
	var handle uintptr
	err := cache.call(func(h capi.Struct_SS_rkv_cache) *capi.Failure {
		return capi.Rkv_batch_create(h, int32(maxEntries), &handle)
	}, maxEntries)
	if err != nil {
		return nil, err
	}
	b := &Batch{cache: cache, handle: capi.SwigcptrStruct_SS_rkv_batch(handle), entries: maxEntries}
	// A safety net only, as for a Cache.
	runtime.SetFinalizer(b, (*Batch).Close)
	return b, nil
}

// Entries is the number of entries: the rows of every tensor a call with the
// batch takes.
func (b *Batch) Entries() int { return b.entries }

// Close frees the batch. Closing again does nothing; a call of its cache
// running in another goroutine finishes first.
func (b *Batch) Close() error {
	if b == nil {
		return nil
	}
	b.cache.mu.Lock()
	defer b.cache.mu.Unlock()
	if b.handle == nil {
		return nil
	}
	// The library needs no cache to free a batch: this is right after the
	// cache's Close too.
	capi.Rkv_batch_destroy(b.handle)
	b.handle = nil
	runtime.SetFinalizer(b, nil)
	return nil
}

// belongsTo refuses a batch of another cache before any lock is taken (its
// handle is guarded by its own cache's lock).
func (b *Batch) belongsTo(c *Cache) error {
	if b != nil && b.cache != c {
		return invalid("the batch belongs to another cache")
	}
	return nil
}

// live is the batch's handle for a call its cache's lock is held for: nil for
// no batch, ErrBatchClosed for a closed one.
func (b *Batch) live() (capi.Struct_SS_rkv_batch, error) {
	if b == nil {
		return nil, nil
	}
	if b.handle == nil {
		return nil, ErrBatchClosed
	}
	return b.handle, nil
}

// Set makes entries 0 .. len(seqIDs)-1 seqIDs (-1 is padding) and the rest
// padding. Ids out of range or repeated fail here and the batch keeps what it
// held. On CUDA the ids reach the batch in stream order.
func (b *Batch) Set(seqIDs []int32, stream uintptr) error {
	n, err := entries(len(seqIDs))
	if err != nil {
		return err
	}
	var ids *int32
	if n > 0 {
		ids = &seqIDs[0]
	}
	err = b.cache.do(func(capi.Struct_SS_rkv_cache) error {
		batch, err := b.live()
		if err != nil {
			return err
		}
		return check(capi.Rkv_go_batch_set(batch, ids, n, stream))
	})
	runtime.KeepAlive(b)
	return err
}

// Advance records on the host that every sequence of the batch got steps
// more tokens in every layer (the batch appends or graph replays since the
// last Advance). No device call, no sync. If a sequence went past its
// capacity, the replayed appends dropped tokens: the cache is faulted and
// Advance returns ErrCapacity naming the sequence.
func (b *Batch) Advance(steps int) error {
	err := b.cache.do(func(capi.Struct_SS_rkv_cache) error {
		batch, err := b.live()
		if err != nil {
			return err
		}
		return check(capi.Rkv_batch_advance(batch, int32(steps)))
	}, steps)
	runtime.KeepAlive(b)
	return err
}
