//! Safe Rust binding of librkv: a KV cache for LLM inference that keeps a
//! fixed budget of tokens per attention head, evicting with R-KV (importance
//! and redundancy) or a baseline.
//!
//! ```no_run
//! use librkv::{Append, Cache, Layout, Method, Params, Stream, Tensor};
//!
//! let params = Params::new(1, 1, 2, 2, 16).method(Method::Rkv).budget(8).buffer(4).window(2);
//! let mut cache = Cache::new(&params)?;
//! let k = vec![0.5f32; 2 * 12 * 16]; // [seq 1, heads 2, tokens 12, dim 16]
//! let t = |x| Tensor::host(x, 2, 16, Layout::Bhtd { tokens: 12 });
//! let mut args = Append::new(0, &[0], t(&k), t(&k), Some(t(&k)));
//! args.num_tokens = Some(&[12]);
//! cache.append(&args, Stream::DEFAULT)?;
//! cache.compress(0, 0, Stream::DEFAULT)?;
//! let view = cache.view(0, 0)?;
//! println!("{} held, positions {:?}", view.len(), view.positions(0)?);
//! # Ok::<(), librkv::Error>(())
//! ```
//!
//! Sequences can be rolled back ([`Cache::seq_truncate`]), forked
//! ([`Cache::seq_copy`]) and given their own budget ([`Cache::seq_set_budget`]);
//! a [`Batch`] lets one decode step (or a CUDA graph of it) serve whichever
//! sequences are running.
//!
//! The cache keeps nothing but the C handle; every error is the library's
//! status as an [`Error`] variant with its message. The library checks every
//! tensor against its extent, which a host [`Tensor`] takes from its slice.

mod batch;
mod cache;
mod error;
mod params;
mod tensor;
mod view;

use std::ffi::CStr;

pub use batch::Batch;
pub use cache::{Append, Cache, Stats, Stream};
pub use error::{Error, Result};
pub use librkv_sys as sys;
pub use params::{guards, Param, Params};
pub use tensor::{Bf16, Element, Fp8E4m3, Layout, Tensor, TensorMut, F16};
pub use view::{LayerView, SeqView};

/// "Every sequence" / "every layer" where a call accepts it.
pub const ALL: i32 = sys::RKV_ALL;

/// The version of the library loaded at run time ("MAJOR.MINOR.PATCH").
pub fn version() -> &'static str {
    // SAFETY: static storage, never NULL.
    unsafe { CStr::from_ptr(sys::rkv_version_string()) }.to_str().unwrap_or("?")
}

/// MAJOR*10000 + MINOR*100 + PATCH of the library loaded at run time; compare
/// with `sys::RKV_VERSION_NUMBER` (the header the bindings were made from).
pub fn version_number() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { sys::rkv_version_number() }
}

/// Storage and input element types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Dtype {
    F32 = sys::RKV_DTYPE_F32,
    F16 = sys::RKV_DTYPE_F16,
    Bf16 = sys::RKV_DTYPE_BF16,
    /// Storage only: E4M3 bytes with one `f32` scale per (token, head); a
    /// value is `fp8 * scale` (the views' `key_scales`/`value_scales`).
    Fp8E4m3 = sys::RKV_DTYPE_FP8_E4M3,
}

impl Dtype {
    fn from_raw(raw: sys::rkv_dtype) -> Dtype {
        match raw {
            sys::RKV_DTYPE_F16 => Dtype::F16,
            sys::RKV_DTYPE_BF16 => Dtype::Bf16,
            sys::RKV_DTYPE_FP8_E4M3 => Dtype::Fp8E4m3,
            _ => Dtype::F32,
        }
    }
}

/// Where the cache's memory lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    Cpu,
    /// A CUDA device ordinal.
    Cuda(i32),
}

impl Device {
    fn raw(self) -> (sys::rkv_device_type, i32) {
        match self {
            Device::Cpu => (sys::RKV_DEVICE_CPU, 0),
            Device::Cuda(id) => (sys::RKV_DEVICE_CUDA, id),
        }
    }
    fn from_raw(kind: sys::rkv_device_type, id: i32) -> Device {
        if kind == sys::RKV_DEVICE_CUDA {
            Device::Cuda(id)
        } else {
            Device::Cpu
        }
    }
}

/// Eviction methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Method {
    /// Importance and redundancy (the default).
    Rkv = sys::RKV_METHOD_RKV,
    /// Importance only.
    SnapKv = sys::RKV_METHOD_SNAPKV,
    /// Attention accumulated over every query.
    H2o = sys::RKV_METHOD_H2O,
    /// The first `sink` tokens plus the most recent.
    StreamingLlm = sys::RKV_METHOD_STREAMINGLLM,
    /// Keys least similar to the mean key.
    KeyDiff = sys::RKV_METHOD_KEYDIFF,
    /// Uniform random, seeded.
    Random = sys::RKV_METHOD_RANDOM,
    /// Never evicts: capacity is `max_len`.
    Full = sys::RKV_METHOD_FULL,
}

/// Order of kept tokens after a compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Mode {
    Position = sys::RKV_MODE_POSITION,
    Reference = sys::RKV_MODE_REFERENCE,
}

/// How the query heads of a KV group are pooled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Pooling {
    Max = sys::RKV_POOLING_MAX,
    Mean = sys::RKV_POOLING_MEAN,
}
