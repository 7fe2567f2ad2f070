package rkv

import (
	"runtime"

	"rkv/capi"
)

// Append is one call of Cache.Append: tokens' K, V (and Q) for one layer of
// one or many sequences, named by SeqIDs or by a Batch.
type Append struct {
	Layer        int
	SeqIDs       []int32 // distinct sequence slots, one per entry; nil with a Batch
	NumTokens    []int32 // tokens per entry; nil = one each (a decode step; always with a Batch)
	TokenOffsets []int64 // first token of each entry; nil = 0 each (always with a Batch)
	K, V         Tensor  // [entry, token, num_kv_heads, head_dim], post-RoPE
	Q            *Tensor // [entry, token, num_q_heads, head_dim], post-RoPE; nil if none
	Prompt       bool    // these are prompt tokens (not with a Batch)
	// Batch, instead of SeqIDs: one token for every entry of the batch
	// (padding rows included: the tensors have Batch.Entries() rows), for the
	// sequences it holds when the work runs. Does not compress and does not
	// move the host's lengths: Batch.Advance accounts for the step.
	Batch  *Batch
	Stream uintptr // cudaStream_t for CUDA caches; 0 = default stream
}

// appendArgs is the C rkv_append_args a Cache reuses for every Append, with a
// copy of what it holds: a decode loop that repeats one layout writes nothing
// into it but what changed (each field written is a cgo call).
type appendArgs struct {
	raw     capi.Rkv_append_args
	tensors [3]capi.Rkv_tensor // K, V, Q inside raw
	held    [3]description     // what they hold (calloc: zeros)
	common  heldArgs
	flags   uint32
}

func newAppendArgs() (appendArgs, error) {
	raw := capi.NewRkv_append_args() // zeroed, struct_size set
	if raw.Swigcptr() == 0 {
		return appendArgs{}, &Error{Status: StatusOutOfMemory, Message: "no memory for the append arguments"}
	}
	return appendArgs{raw: raw, tensors: [3]capi.Rkv_tensor{raw.GetK(), raw.GetV(), raw.GetQ()}}, nil
}

func (a *appendArgs) free() {
	if a.raw != nil {
		capi.DeleteRkv_append_args(a.raw)
		*a = appendArgs{}
	}
}

// set brings the C arguments to these values, writing only what differs.
func (a *appendArgs) set(layer, entries int32, flags uint32, batch capi.Struct_SS_rkv_batch, tensors [3]description) {
	a.common.set(layer, entries, batch, a.raw.SetLayer, a.raw.SetNum_seqs, a.raw.SetBatch)
	if flags != a.flags {
		a.raw.SetFlags(flags)
		a.flags = flags
	}
	writeChanged(tensors[:], a.held[:], a.tensors[:])
}

// Append appends tokens to one layer of one or many sequences; a full
// sequence is compressed first (automatic compression). The library checks
// every tensor against its extent (a host slice's length).
func (c *Cache) Append(a Append) error {
	n := len(a.SeqIDs)
	if a.Batch != nil {
		if err := a.Batch.belongsTo(c); err != nil {
			return err
		}
		n = a.Batch.entries
	} else if n == 0 {
		return invalid("SeqIDs is empty (and there is no Batch)")
	}
	// The library reads one count and one offset per entry: what it cannot
	// see is a slice's length.
	if a.NumTokens != nil && len(a.NumTokens) != n || a.TokenOffsets != nil && len(a.TokenOffsets) != n {
		return invalid("NumTokens and TokenOffsets need one value per entry")
	}
	count, err := entries(n)
	if err != nil {
		return err
	}
	q := a.K // no queries: K's description with no data
	q.host, q.hostElement, q.device, q.extent = nil, 0, 0, 0
	if a.Q != nil {
		q = *a.Q
	}
	var described [3]description
	for i, in := range [3]struct {
		name string
		t    *Tensor
	}{{"K", &a.K}, {"V", &a.V}, {"Q", &q}} {
		if described[i], err = in.t.description(in.name); err != nil {
			return err
		}
	}
	var flags uint32
	if a.Prompt {
		flags = uint32(capi.RKV_APPEND_PROMPT)
	}
	var seqIDs, numTokens *int32
	if len(a.SeqIDs) > 0 {
		seqIDs = &a.SeqIDs[0]
	}
	if len(a.NumTokens) > 0 {
		numTokens = &a.NumTokens[0]
	}
	var offsets *int64
	if len(a.TokenOffsets) > 0 {
		offsets = &a.TokenOffsets[0]
	}
	// The host slices are arguments of this one cgo call, which keeps them
	// alive and pinned while the library reads them.
	err = c.do(func(h capi.Struct_SS_rkv_cache) error {
		batch, err := a.Batch.live() // under the cache's lock, which Batch.Close takes
		if err != nil {
			return err
		}
		c.args.set(int32(a.Layer), count, flags, batch, described)
		return check(capi.Rkv_go_append(h, c.args.raw, seqIDs, numTokens, offsets,
			a.K.host, a.V.host, q.host, a.Stream))
	}, a.Layer)
	runtime.KeepAlive(a.Batch)
	return err
}
