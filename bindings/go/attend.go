package rkv

import (
	"runtime"

	"rkv/capi"
)

// attendArgs is the C rkv_attend_args a Cache reuses for every Attend, with a
// copy of what it holds, as appendArgs.
type attendArgs struct {
	raw     capi.Rkv_attend_args
	tensors [2]capi.Rkv_tensor // q, out inside raw
	held    [2]description
	common  heldArgs
	scale   float32
}

func newAttendArgs() (attendArgs, error) {
	raw := capi.NewRkv_attend_args() // zeroed, struct_size set
	if raw.Swigcptr() == 0 {
		return attendArgs{}, &Error{Status: StatusOutOfMemory, Message: "no memory for the attend arguments"}
	}
	return attendArgs{raw: raw, tensors: [2]capi.Rkv_tensor{raw.GetQ(), raw.GetOut()}}, nil
}

func (a *attendArgs) free() {
	if a.raw != nil {
		capi.DeleteRkv_attend_args(a.raw)
		*a = attendArgs{}
	}
}

func (a *attendArgs) set(layer, entries int32, scale float32, batch capi.Struct_SS_rkv_batch, tensors [2]description) {
	a.common.set(layer, entries, batch, a.raw.SetLayer, a.raw.SetNum_seqs, a.raw.SetBatch)
	if scale != a.scale {
		a.raw.SetScale(scale)
		a.scale = scale
	}
	writeChanged(tensors[:], a.held[:], a.tensors[:])
}

// Attend runs decode attention over the held tokens: q and out are
// [n, num_q_heads, head_dim] (Decode layout); scale <= 0 means 1/sqrt(head_dim).
func (c *Cache) Attend(layer int, seqIDs []int32, q, out Tensor, scale float32, stream uintptr) error {
	if len(seqIDs) == 0 {
		return invalid("seqIDs is empty")
	}
	return c.attend(layer, seqIDs, nil, q, out, scale, stream)
}

// AttendBatch runs decode attention for every entry of b, for the sequence
// the entry holds when the work runs: q and out have b.Entries() rows, and
// padding entries leave their rows of out untouched.
func (c *Cache) AttendBatch(b *Batch, layer int, q, out Tensor, scale float32, stream uintptr) error {
	if b == nil {
		return invalid("the batch is nil")
	}
	if err := b.belongsTo(c); err != nil {
		return err
	}
	return c.attend(layer, nil, b, q, out, scale, stream)
}

func (c *Cache) attend(layer int, seqIDs []int32, b *Batch, q, out Tensor, scale float32, stream uintptr) error {
	n := len(seqIDs)
	if b != nil {
		n = b.entries
	}
	count, err := entries(n)
	if err != nil {
		return err
	}
	var described [2]description
	if described[0], err = q.description("q"); err != nil {
		return err
	}
	if described[1], err = out.description("out"); err != nil {
		return err
	}
	var ids *int32
	if len(seqIDs) > 0 {
		ids = &seqIDs[0]
	}
	err = c.do(func(h capi.Struct_SS_rkv_cache) error {
		batch, err := b.live()
		if err != nil {
			return err
		}
		c.attendArgs.set(int32(layer), count, scale, batch, described)
		return check(capi.Rkv_go_attend(h, c.attendArgs.raw, ids, q.host, out.host, stream))
	}, layer)
	runtime.KeepAlive(b)
	return err
}
