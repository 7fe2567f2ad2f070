package rkv

import "rkv/capi"

// A Cache keeps one C argument struct per call (rkv_append_args,
// rkv_attend_args) and a copy of what it holds: a decode loop repeats one
// layout, and each field written is a cgo call, so only what changed is
// written.

// heldArgs is the copy of the fields every call's arguments have.
type heldArgs struct {
	layer, entries int32
	batch          uintptr // the rkv_batch the struct points to (0: none)
}

// set brings the fields to these values through the struct's setters,
// calling only those whose value differs.
func (h *heldArgs) set(layer, entries int32, batch capi.Struct_SS_rkv_batch,
	setLayer, setEntries func(int32), setBatch func(capi.Struct_SS_rkv_batch)) {
	if layer != h.layer {
		setLayer(layer)
		h.layer = layer
	}
	if entries != h.entries {
		setEntries(entries)
		h.entries = entries
	}
	var address uintptr
	if batch != nil {
		address = batch.Swigcptr()
	}
	if address != h.batch {
		setBatch(batch)
		h.batch = address
	}
}

// writeChanged writes want[i] into raw[i] where it differs from held[i],
// the copy of what raw[i] holds.
func writeChanged(want, held []description, raw []capi.Rkv_tensor) {
	for i := range want {
		if want[i] != held[i] {
			want[i].write(raw[i])
			held[i] = want[i]
		}
	}
}
