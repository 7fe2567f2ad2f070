use std::ffi::c_void;
use std::marker::PhantomData;

use librkv_sys as sys;

use crate::error::{Error, Result};
use crate::Dtype;

mod sealed {
    pub trait Sealed {}
}

/// An element type librkv reads and writes: `f32`, [`F16`] or [`Bf16`]; and
/// [`Fp8E4m3`], which FP8 caches store (views only: not an input dtype).
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

/// FP8 E4M3, as its byte: the storage of an FP8 cache, read through a view
/// (librkv takes no FP8 inputs). The value of a stored element is
/// `to_f32() * scale` with its row's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(transparent)]
pub struct Fp8E4m3(pub u8);

impl Fp8E4m3 {
    /// The byte's value: sign, 4 exponent bits (bias 7), 3 mantissa bits;
    /// 0x7f and 0xff are NaN.
    pub fn to_f32(self) -> f32 {
        let (exponent, mantissa) = ((self.0 >> 3) & 15, self.0 & 7);
        let magnitude = match (exponent, mantissa) {
            (15, 7) => f32::NAN,
            (0, m) => m as f32 / 512.0,
            (e, m) => (1.0 + m as f32 / 8.0) * 2f32.powi(e as i32 - 7),
        };
        if self.0 & 0x80 != 0 { -magnitude } else { magnitude }
    }
}

impl sealed::Sealed for f32 {}
impl sealed::Sealed for F16 {}
impl sealed::Sealed for Bf16 {}
impl sealed::Sealed for Fp8E4m3 {}
impl Element for f32 {
    const DTYPE: Dtype = Dtype::F32;
}
impl Element for F16 {
    const DTYPE: Dtype = Dtype::F16;
}
impl Element for Bf16 {
    const DTYPE: Dtype = Dtype::Bf16;
}
impl Element for Fp8E4m3 {
    const DTYPE: Dtype = Dtype::Fp8E4m3;
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

fn describe(data: *const c_void, dtype: Dtype, num_heads: i32, head_dim: i32, layout: Layout, extent: i64) -> sys::rkv_tensor {
    let (stride_seq, stride_token, stride_head) = layout.strides(num_heads as i64, head_dim as i64);
    sys::rkv_tensor {
        data: data as *mut c_void,
        dtype: dtype as _,
        num_heads,
        head_dim,
        stride_seq,
        stride_token,
        stride_head,
        extent,
    }
}

/// Elements of a slice as an extent (a slice never holds more than isize::MAX bytes).
fn extent_of<T>(data: &[T]) -> i64 {
    data.len() as i64
}

/// An input tensor: a host slice borrowed for `'a`, or device memory.
///
/// Its `extent` is the slice's length (host) or what the caller says (device):
/// the library checks that every element a call reads lies inside it and
/// refuses the call with [`Error::Capacity`](crate::Error::Capacity) otherwise.
#[derive(Clone, Copy)]
pub struct Tensor<'a> {
    pub(crate) raw: sys::rkv_tensor,
    /// True for a host slice: an empty one cannot be described to the library
    /// (extent 0 means "unchecked" there), so calls refuse it.
    pub(crate) host: bool,
    _data: PhantomData<&'a [u8]>,
}

impl<'a> Tensor<'a> {
    /// Host memory, read by the library during the call that takes it. The
    /// element type is `T`'s and the extent the slice's length.
    pub fn host<T: Element>(data: &'a [T], num_heads: i32, head_dim: i32, layout: Layout) -> Tensor<'a> {
        Tensor {
            raw: describe(data.as_ptr().cast(), T::DTYPE, num_heads, head_dim, layout, extent_of(data)),
            host: true,
            _data: PhantomData,
        }
    }

    /// Device memory of the cache's GPU (CUDA caches), `extent` elements of
    /// `dtype` from `ptr` (0: unknown, then nothing is checked).
    ///
    /// # Safety
    /// `ptr` must point to device memory on the cache's GPU, of `dtype`,
    /// holding `extent` elements (with `extent` 0: covering every element the
    /// call reads), valid until the work the call enqueues on its stream has
    /// run.
    pub unsafe fn device(ptr: *const c_void, dtype: Dtype, num_heads: i32, head_dim: i32, layout: Layout, extent: i64) -> Tensor<'static> {
        Tensor { raw: describe(ptr, dtype, num_heads, head_dim, layout, extent), host: false, _data: PhantomData }
    }

    /// Elements the library may read from the data pointer (0: unchecked).
    pub fn extent(&self) -> i64 {
        self.raw.extent
    }
}

/// An output tensor (attention results): a mutable host slice or device memory.
pub struct TensorMut<'a> {
    pub(crate) raw: sys::rkv_tensor,
    pub(crate) host: bool,
    _data: PhantomData<&'a mut [u8]>,
}

impl<'a> TensorMut<'a> {
    /// Host memory, written by the library during the call; the extent is the slice's length.
    pub fn host<T: Element>(data: &'a mut [T], num_heads: i32, head_dim: i32, layout: Layout) -> TensorMut<'a> {
        let extent = extent_of(data);
        TensorMut {
            raw: describe(data.as_mut_ptr().cast(), T::DTYPE, num_heads, head_dim, layout, extent),
            host: true,
            _data: PhantomData,
        }
    }

    /// # Safety
    /// As [`Tensor::device`], and the memory must be writable.
    pub unsafe fn device(ptr: *mut c_void, dtype: Dtype, num_heads: i32, head_dim: i32, layout: Layout, extent: i64) -> TensorMut<'static> {
        TensorMut { raw: describe(ptr, dtype, num_heads, head_dim, layout, extent), host: false, _data: PhantomData }
    }

    /// Elements the library may write from the data pointer (0: unchecked).
    pub fn extent(&self) -> i64 {
        self.raw.extent
    }
}

/// The one thing about a host slice the library cannot tell apart: an empty
/// slice would reach it as extent 0, "unchecked", with a dangling pointer.
pub(crate) fn check_not_empty(name: &str, raw: &sys::rkv_tensor, host: bool) -> Result<()> {
    if host && raw.extent == 0 {
        return Err(Error::InvalidArgument(format!("{name}: the slice is empty")));
    }
    Ok(())
}
