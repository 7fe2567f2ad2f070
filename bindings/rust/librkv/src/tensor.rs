use std::ffi::c_void;
use std::marker::PhantomData;

use librkv_sys as sys;

use crate::error::{Error, Result};
use crate::Dtype;

mod sealed {
    pub trait Sealed {}
}

/// An element type librkv reads and writes: `f32`, [`F16`] or [`Bf16`].
pub trait Element: Copy + sealed::Sealed {
    const DTYPE: Dtype;
}

/// IEEE half precision, as its bits (Rust has no stable `f16`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct F16(pub u16);

/// bfloat16, as its bits: the upper half of an `f32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct Bf16(pub u16);

impl Bf16 {
    /// Round to nearest even from f32.
    pub fn from_f32(x: f32) -> Bf16 {
        let bits = x.to_bits();
        Bf16(((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16)
    }
    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

impl sealed::Sealed for f32 {}
impl sealed::Sealed for F16 {}
impl sealed::Sealed for Bf16 {}
impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl Element for F16 {
    const DTYPE: Dtype = Dtype::F16;
}
impl Element for Bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
}

/// How the entries, tokens and heads of a tensor are laid out (the head_dim
/// axis is always innermost and contiguous). `n` entries, `H` heads, `D` dims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// `[n, H, D]`: one token per entry (a decode step).
    Decode,
    /// `[n, H, tokens, D]`: transformers' layout.
    Bhtd { tokens: i64 },
    /// `[n, tokens, H, D]`.
    Bthd { tokens: i64 },
    /// `[total_tokens, H, D]` shared by all entries: packed varlen, with
    /// token offsets giving each entry's first token.
    Packed,
    /// Any element strides.
    Strided { seq: i64, token: i64, head: i64 },
}

impl Layout {
    /// (stride_seq, stride_token, stride_head) for this many heads and dims.
    fn strides(self, heads: i64, dim: i64) -> (i64, i64, i64) {
        match self {
            Layout::Decode => (heads * dim, 0, dim),
            Layout::Bhtd { tokens } => (heads * tokens * dim, dim, tokens * dim),
            Layout::Bthd { tokens } => (tokens * heads * dim, heads * dim, dim),
            Layout::Packed => (0, heads * dim, dim),
            Layout::Strided { seq, token, head } => (seq, token, head),
        }
    }
}

fn describe(data: *const c_void, dtype: Dtype, num_heads: i32, head_dim: i32, layout: Layout) -> sys::rkv_tensor {
    let (stride_seq, stride_token, stride_head) = layout.strides(num_heads as i64, head_dim as i64);
    sys::rkv_tensor {
        data: data as *mut c_void,
        dtype: dtype as _,
        num_heads,
        head_dim,
        stride_seq,
        stride_token,
        stride_head,
    }
}

/// An input tensor: a host slice borrowed for `'a`, or device memory.
#[derive(Clone, Copy)]
pub struct Tensor<'a> {
    pub(crate) raw: sys::rkv_tensor,
    /// Elements of the host slice, for the extent check; None for device memory.
    pub(crate) host_len: Option<usize>,
    _data: PhantomData<&'a [u8]>,
}

impl<'a> Tensor<'a> {
    /// Host memory, read by the library during the call that takes it.
    pub fn host<T: Element>(data: &'a [T], num_heads: i32, head_dim: i32, layout: Layout) -> Tensor<'a> {
        Tensor {
            raw: describe(data.as_ptr().cast(), T::DTYPE, num_heads, head_dim, layout),
            host_len: Some(data.len()),
            _data: PhantomData,
        }
    }

    /// Device memory of the cache's GPU (CUDA caches).
    ///
    /// # Safety
    /// `ptr` must point to device memory on the cache's GPU, of `dtype`,
    /// covering every element the call reads, valid until the work the call
    /// enqueues on its stream has run.
    pub unsafe fn device(ptr: *const c_void, dtype: Dtype, num_heads: i32, head_dim: i32, layout: Layout) -> Tensor<'static> {
        Tensor { raw: describe(ptr, dtype, num_heads, head_dim, layout), host_len: None, _data: PhantomData }
    }
}

/// An output tensor (attention results): a mutable host slice or device memory.
pub struct TensorMut<'a> {
    pub(crate) raw: sys::rkv_tensor,
    pub(crate) host_len: Option<usize>,
    _data: PhantomData<&'a mut [u8]>,
}

impl<'a> TensorMut<'a> {
    pub fn host<T: Element>(data: &'a mut [T], num_heads: i32, head_dim: i32, layout: Layout) -> TensorMut<'a> {
        TensorMut {
            raw: describe(data.as_mut_ptr().cast(), T::DTYPE, num_heads, head_dim, layout),
            host_len: Some(data.len()),
            _data: PhantomData,
        }
    }

    /// # Safety
    /// As [`Tensor::device`], and the memory must be writable.
    pub unsafe fn device(ptr: *mut c_void, dtype: Dtype, num_heads: i32, head_dim: i32, layout: Layout) -> TensorMut<'static> {
        TensorMut { raw: describe(ptr, dtype, num_heads, head_dim, layout), host_len: None, _data: PhantomData }
    }
}

/// The library reads element (i, t, h, e) at
/// i*stride_seq + (offset_i + t)*stride_token + h*stride_head + e: check that
/// the largest such index lies inside a host slice, since C cannot know a
/// slice's length. Negative strides and overflowing products are left to the
/// library, which rejects them before reading anything.
pub(crate) fn check_extent(
    name: &str,
    raw: &sys::rkv_tensor,
    host_len: Option<usize>,
    entries: usize,
    num_tokens: Option<&[i32]>,
    token_offsets: Option<&[i64]>,
) -> Result<()> {
    let Some(len) = host_len else { return Ok(()) };
    if raw.stride_seq < 0 || raw.stride_token < 0 || raw.stride_head < 0 || raw.num_heads < 1 || raw.head_dim < 1 {
        return Ok(());
    }
    let mut last: i64 = 0;
    for i in 0..entries {
        let tokens = num_tokens.map_or(1, |n| n[i] as i64);
        let offset = token_offsets.map_or(0, |o| o[i]);
        if tokens < 1 || offset < 0 {
            return Ok(()); // the library rejects these
        }
        let index = (i as i64)
            .checked_mul(raw.stride_seq)
            .and_then(|a| (offset + tokens - 1).checked_mul(raw.stride_token).and_then(|b| a.checked_add(b)))
            .and_then(|a| (raw.num_heads as i64 - 1).checked_mul(raw.stride_head).and_then(|b| a.checked_add(b)))
            .and_then(|a| a.checked_add(raw.head_dim as i64 - 1));
        match index {
            Some(index) => last = last.max(index),
            None => return Ok(()), // the library reports the overflow
        }
    }
    if entries > 0 && last as u128 >= len as u128 {
        return Err(Error::InvalidArgument(format!(
            "{name}: the shape and strides reach element {last}, but the slice holds {len} elements"
        )));
    }
    Ok(())
}
