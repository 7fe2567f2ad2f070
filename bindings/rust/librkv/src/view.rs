//! Views: the held K, V and positions of a sequence, or of a whole layer, in
//! the cache's own memory, borrowed from the cache.
use std::ffi::c_void;
use std::marker::PhantomData;
use std::slice;

use librkv_sys as sys;

use crate::cache::Cache;
use crate::error::{Error, Result};
use crate::tensor::Element;
use crate::{Device, Dtype};

/// Which storage a view's memory is in, and its element type.
fn host_slice<'c, T: Element>(data: *const c_void, dtype: sys::rkv_dtype, device: sys::rkv_device_type, offset: i64, len: usize) -> Result<&'c [T]> {
    if device != sys::RKV_DEVICE_CPU {
        return Err(Error::InvalidArgument("the view is in device memory: use as_raw() for its pointers".into()));
    }
    if dtype != T::DTYPE as sys::rkv_dtype {
        return Err(Error::InvalidArgument(format!("the view holds {:?}, not {:?}", Dtype::from_raw(dtype), T::DTYPE)));
    }
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: host memory of the cache, of T, with len elements from offset
    // (the caller derived both from the view's own shape); borrowed from the
    // cache for 'c, so no call that changes the cache, nor its drop, can happen meanwhile.
    Ok(unsafe { slice::from_raw_parts((data as *const T).offset(offset as isize), len) })
}

/// The held K, V and positions of one (sequence, layer), borrowed from the cache.
///
/// The borrow is what keeps the C rule "a view is valid until the next append,
/// compress, truncate, copy onto it or reset of that sequence, or destroy":
/// code that would read a view, or a slice taken from one, after any of them
/// (every call that changes the cache takes `&mut`) does not compile. Each
/// example below differs from compiling code (the last one) only in its
/// marked line, so it fails for the borrow the error code after
/// `compile_fail` names (nightly rustdoc also checks the code).
///
/// A view cannot outlive its cache:
/// ```compile_fail,E0597
/// # use librkv::{Cache, Params};
/// let view = {
///     let cache = Cache::new(&Params::new(1, 1, 1, 1, 8).budget(4).buffer(2).window(1)).unwrap();
///     cache.view(0, 0).unwrap()
/// }; // the cache is dropped here, the view still borrows it
/// println!("{}", view.len());
/// ```
/// nor can a slice taken from it:
/// ```compile_fail,E0505
/// # use librkv::{Cache, Params};
/// let cache = Cache::new(&Params::new(1, 1, 1, 1, 8).budget(4).buffer(2).window(1)).unwrap();
/// let view = cache.view(0, 0).unwrap();
/// let keys: &[f32] = view.keys(0).unwrap();
/// drop(cache); // moves the cache out while `keys` borrows it
/// println!("{}", keys.len());
/// ```
/// and no call that changes the cache can run while a view is alive:
/// ```compile_fail,E0502
/// # use librkv::{Cache, Params, Stream};
/// let mut cache = Cache::new(&Params::new(1, 1, 1, 1, 8).budget(4).buffer(2).window(1)).unwrap();
/// let view = cache.view(0, 0).unwrap();
/// cache.seq_reset(0, Stream::DEFAULT).unwrap(); // needs &mut while the view borrows &
/// println!("{:?}", view.positions(0));
/// ```
/// Read the view first, then change the cache; this compiles and runs:
/// ```
/// # use librkv::{Cache, Params, Stream};
/// let mut cache = Cache::new(&Params::new(1, 1, 1, 1, 8).budget(4).buffer(2).window(1)).unwrap();
/// let view = cache.view(0, 0).unwrap();
/// let keys: &[f32] = view.keys(0).unwrap();
/// assert!(keys.is_empty() && view.is_empty());
/// cache.seq_reset(0, Stream::DEFAULT).unwrap();
/// drop(cache);
/// ```
pub struct SeqView<'c> {
    raw: sys::rkv_seq_view,
    _cache: PhantomData<&'c Cache>,
}

impl<'c> SeqView<'c> {
    pub(crate) fn new(raw: sys::rkv_seq_view) -> SeqView<'c> {
        SeqView { raw, _cache: PhantomData }
    }
    /// Tokens held per head.
    pub fn len(&self) -> usize {
        self.raw.length as usize
    }
    pub fn is_empty(&self) -> bool {
        self.raw.length == 0
    }
    /// Tokens appended so far (the next position).
    pub fn logical_len(&self) -> i64 {
        self.raw.logical_length
    }
    pub fn num_heads(&self) -> usize {
        self.raw.num_kv_heads as usize
    }
    pub fn head_dim(&self) -> usize {
        self.raw.head_dim as usize
    }
    pub fn dtype(&self) -> Dtype {
        Dtype::from_raw(self.raw.dtype)
    }
    pub fn device(&self) -> Device {
        Device::from_raw(self.raw.device_type, self.raw.device_id)
    }
    /// Keys of one head, `[len, head_dim]` row-major (host caches; `T` must
    /// be the storage dtype).
    pub fn keys<T: Element>(&self, head: usize) -> Result<&'c [T]> {
        self.rows(self.raw.k, head)
    }
    /// Values of one head, `[len, head_dim]`.
    pub fn values<T: Element>(&self, head: usize) -> Result<&'c [T]> {
        self.rows(self.raw.v, head)
    }
    /// FP8 storage: the scale of each key row one head holds (`value = fp8 *
    /// scale`), in slot order (host caches).
    pub fn key_scales(&self, head: usize) -> Result<&'c [f32]> {
        self.scales(self.raw.k_scale, head)
    }
    /// FP8 storage: the scale of each value row.
    pub fn value_scales(&self, head: usize) -> Result<&'c [f32]> {
        self.scales(self.raw.v_scale, head)
    }
    /// Original positions of the tokens one head holds, in slot order.
    pub fn positions(&self, head: usize) -> Result<&'c [i32]> {
        self.head_check(head)?;
        if self.raw.device_type != sys::RKV_DEVICE_CPU {
            return Err(Error::InvalidArgument("the view is in device memory: use as_raw() for its pointers".into()));
        }
        if self.raw.length == 0 {
            return Ok(&[]);
        }
        // SAFETY: host memory, `length` positions per head at positions_stride_head.
        Ok(unsafe {
            slice::from_raw_parts(self.raw.positions.offset((head as i64 * self.raw.positions_stride_head) as isize), self.len())
        })
    }
    /// The raw view: pointers and strides for an engine's own kernel.
    pub fn as_raw(&self) -> &sys::rkv_seq_view {
        &self.raw
    }
    fn head_check(&self, head: usize) -> Result<()> {
        if head >= self.num_heads() {
            return Err(Error::OutOfRange(format!("head {head} of {}", self.num_heads())));
        }
        Ok(())
    }
    fn scales(&self, data: *mut f32, head: usize) -> Result<&'c [f32]> {
        self.head_check(head)?;
        if data.is_null() {
            return Err(Error::InvalidArgument(format!("the view holds {:?}: only FP8 storage has scales", self.dtype())));
        }
        host_slice(data as *const c_void, sys::RKV_DTYPE_F32, self.raw.device_type, head as i64 * self.raw.scale_stride_head, self.len())
    }
    fn rows<T: Element>(&self, data: *mut c_void, head: usize) -> Result<&'c [T]> {
        self.head_check(head)?;
        // tokens of a head are contiguous rows: stride_token == head_dim
        debug_assert_eq!(self.raw.stride_token, self.raw.head_dim as i64);
        host_slice(data, self.raw.dtype, self.raw.device_type, head as i64 * self.raw.stride_head, self.len() * self.head_dim())
    }
}

/// A whole layer for every sequence slot, borrowed from the cache.
pub struct LayerView<'c> {
    raw: sys::rkv_layer_view,
    _cache: PhantomData<&'c Cache>,
}

impl<'c> LayerView<'c> {
    pub(crate) fn new(raw: sys::rkv_layer_view) -> LayerView<'c> {
        LayerView { raw, _cache: PhantomData }
    }
    /// Slots per (sequence, head).
    pub fn capacity(&self) -> usize {
        self.raw.capacity as usize
    }
    /// Tokens held per head, per sequence slot (host caches).
    pub fn lengths(&self) -> Result<&'c [i32]> {
        if self.raw.device_type != sys::RKV_DEVICE_CPU {
            return Err(Error::InvalidArgument("lengths are in device memory: use as_raw()".into()));
        }
        // SAFETY: host memory, max_seqs lengths.
        Ok(unsafe { slice::from_raw_parts(self.raw.lengths, self.raw.max_seqs as usize) })
    }
    /// All `capacity` key slots of (seq, head), `[capacity, head_dim]`; the
    /// first `lengths()[seq]` are held tokens.
    pub fn keys<T: Element>(&self, seq: usize, head: usize) -> Result<&'c [T]> {
        self.slots(self.raw.k, seq, head)
    }
    pub fn values<T: Element>(&self, seq: usize, head: usize) -> Result<&'c [T]> {
        self.slots(self.raw.v, seq, head)
    }
    pub fn as_raw(&self) -> &sys::rkv_layer_view {
        &self.raw
    }
    fn slots<T: Element>(&self, data: *mut c_void, seq: usize, head: usize) -> Result<&'c [T]> {
        if seq >= self.raw.max_seqs as usize || head >= self.raw.num_kv_heads as usize {
            return Err(Error::OutOfRange(format!("seq {seq}, head {head}")));
        }
        let offset = seq as i64 * self.raw.stride_seq + head as i64 * self.raw.stride_head;
        host_slice(data, self.raw.dtype, self.raw.device_type, offset, self.capacity() * self.raw.head_dim as usize)
    }
}
