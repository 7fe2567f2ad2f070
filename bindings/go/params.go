package rkv

import (
	"fmt"

	"rkv/capi"
)

// Params are a cache's parameters. Start from DefaultParams (the library's
// defaults) and set the shape; NewCache validates everything.
type Params struct {
	MaxSeqs, NumLayers, NumKVHeads, NumQHeads, HeadDim int
	DType                                              DType
	Device                                             DeviceType
	DeviceID                                           int
	Method                                             Method
	Mode                                               Mode
	Budget, Buffer, Window, Kernel                     int
	Lambda, Threshold                                  float32
	Pooling                                            Pooling
	Sink                                               int
	Guards                                             Guard
	MaxPromptLen, MaxLen                               int
	Seed                                               uint64
	AutoCompress                                       bool
	// MaxRollback: tokens SeqTruncate can remove exactly for the methods that
	// keep queries (their queries are kept that much longer); 0 .. 1024.
	MaxRollback int
}

// DefaultParams returns the library's defaults (R-KV, budget 1024 + buffer
// 128, f32 on the CPU, automatic compression) with an unset shape.
func DefaultParams() Params {
	r := capi.NewRkv_cache_params() // filled by rkv_params_default
	defer capi.DeleteRkv_cache_params(r)
	return fromRaw(r)
}

func fromRaw(r capi.Rkv_cache_params) Params {
	return Params{
		MaxSeqs: int(r.GetMax_seqs()), NumLayers: int(r.GetNum_layers()),
		NumKVHeads: int(r.GetNum_kv_heads()), NumQHeads: int(r.GetNum_q_heads()),
		HeadDim: int(r.GetHead_dim()), DType: DType(r.GetDtype()),
		Device: DeviceType(r.GetDevice_type()), DeviceID: int(r.GetDevice_id()),
		Method: Method(r.GetMethod()), Mode: Mode(r.GetMode()),
		Budget: int(r.GetBudget()), Buffer: int(r.GetBuffer()), Window: int(r.GetWindow()),
		Kernel: int(r.GetKernel()), Lambda: r.GetLambda(), Threshold: r.GetThreshold(),
		Pooling: Pooling(r.GetPooling()), Sink: int(r.GetSink()), Guards: Guard(r.GetGuards()),
		MaxPromptLen: int(r.GetMax_prompt_len()), MaxLen: int(r.GetMax_len()),
		Seed: r.GetSeed(), AutoCompress: r.GetAuto_compress() != 0,
		MaxRollback: int(r.GetMax_rollback()),
	}
}

// raw is p as the C struct (struct_size set), for one call; the caller
// deletes it. Counts that do not fit the C API's int32 are refused here rather
// than wrapped into other, valid-looking values.
func (p *Params) raw() (capi.Rkv_cache_params, error) {
	var err error
	i32 := func(name string, n int) int32 {
		if n != int(int32(n)) && err == nil {
			err = invalid(fmt.Sprintf("Params.%s = %d does not fit an int32", name, n))
		}
		return int32(n)
	}
	r := capi.NewRkv_cache_params()
	r.SetMax_seqs(i32("MaxSeqs", p.MaxSeqs))
	r.SetNum_layers(i32("NumLayers", p.NumLayers))
	r.SetNum_kv_heads(i32("NumKVHeads", p.NumKVHeads))
	r.SetNum_q_heads(i32("NumQHeads", p.NumQHeads))
	r.SetHead_dim(i32("HeadDim", p.HeadDim))
	r.SetDtype(int32(p.DType))
	r.SetDevice_type(int32(p.Device))
	r.SetDevice_id(i32("DeviceID", p.DeviceID))
	r.SetMethod(int32(p.Method))
	r.SetMode(int32(p.Mode))
	r.SetBudget(i32("Budget", p.Budget))
	r.SetBuffer(i32("Buffer", p.Buffer))
	r.SetWindow(i32("Window", p.Window))
	r.SetKernel(i32("Kernel", p.Kernel))
	r.SetLambda(p.Lambda)
	r.SetThreshold(p.Threshold)
	r.SetPooling(int32(p.Pooling))
	r.SetSink(i32("Sink", p.Sink))
	r.SetGuards(uint32(p.Guards))
	r.SetMax_prompt_len(i32("MaxPromptLen", p.MaxPromptLen))
	r.SetMax_len(i32("MaxLen", p.MaxLen))
	r.SetSeed(p.Seed)
	var auto int32
	if p.AutoCompress {
		auto = 1
	}
	r.SetAuto_compress(auto)
	r.SetMax_rollback(i32("MaxRollback", p.MaxRollback))
	if err != nil {
		capi.DeleteRkv_cache_params(r)
		return nil, err
	}
	return r, nil
}

// Size returns the bytes a cache with these params would allocate, without
// allocating; it validates as NewCache does.
func (p Params) Size() (uint64, error) {
	r, err := p.raw()
	if err != nil {
		return 0, err
	}
	defer capi.DeleteRkv_cache_params(r)
	var bytes uint64
	err = check(capi.Rkv_cache_size(r, &bytes))
	return bytes, err
}
