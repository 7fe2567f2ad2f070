use std::ffi::c_void;
use std::marker::PhantomData;
use std::mem::size_of;
use std::ptr::{self, NonNull};
use std::slice;

use librkv_sys as sys;

use crate::error::{check, Error, Result};
use crate::params::{Param, Params};
use crate::tensor::{check_extent, Element, Tensor, TensorMut};
use crate::{Device, Dtype};

/// A CUDA stream (`cudaStream_t`) that enqueueing calls run on. CPU caches
/// ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream(*mut c_void);

impl Stream {
    /// The legacy default stream (NULL); the only one a CPU cache needs.
    pub const DEFAULT: Stream = Stream(ptr::null_mut());

    /// # Safety
    /// `stream` must be a live `cudaStream_t` of the cache's device (or NULL)
    /// for as long as calls use it.
    pub unsafe fn from_raw(stream: *mut c_void) -> Stream {
        Stream(stream)
    }
}

/// One call of [`Cache::append`]: tokens' K, V (and Q) for one layer of one or
/// many sequences.
#[derive(Clone, Copy)]
pub struct Append<'a> {
    pub layer: i32,
    /// Distinct sequence slots, one per entry.
    pub seq_ids: &'a [i32],
    /// Tokens per entry; None = one each (a decode step).
    pub num_tokens: Option<&'a [i32]>,
    /// First token of each entry along the token axis; None = 0 each.
    pub token_offsets: Option<&'a [i64]>,
    /// `[entry, token, num_kv_heads, head_dim]`, post-RoPE.
    pub k: Tensor<'a>,
    pub v: Tensor<'a>,
    /// `[entry, token, num_q_heads, head_dim]`, post-RoPE; attention-based
    /// methods need it.
    pub q: Option<Tensor<'a>>,
    /// These are prompt tokens.
    pub prompt: bool,
}

impl<'a> Append<'a> {
    /// A decode step or prompt chunk with no per-entry counts or offsets.
    pub fn new(layer: i32, seq_ids: &'a [i32], k: Tensor<'a>, v: Tensor<'a>, q: Option<Tensor<'a>>) -> Self {
        Append { layer, seq_ids, num_tokens: None, token_offsets: None, k, v, q, prompt: false }
    }
}

/// Statistics of one sequence or of the whole cache.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    pub bytes_allocated: u64,
    pub bytes_kv_capacity: u64,
    pub bytes_kv_held: u64,
    pub bytes_kv_full: u64,
    pub tokens_appended: u64,
    pub tokens_held: u64,
    pub tokens_evicted: u64,
    pub compressions: u64,
    pub compress_seconds: f64,
}

/// A librkv cache: the K/V memory of `max_seqs` sequences x `num_layers` x
/// `num_kv_heads`, compressed to a fixed budget per head. Freed on drop.
///
/// # Threads
/// `Cache` is `Send`: the library lets a cache be used from any thread, one
/// at a time, and keeps no thread affinity (its error message is read on the
/// calling thread right after each call). It is not `Sync`: the C API forbids
/// two concurrent calls on one cache, even read-only ones (views, stats), so
/// sharing `&Cache` across threads must not compile. Wrap it in a `Mutex` to
/// share it.
///
/// ```compile_fail
/// fn shared<T: Sync>() {}
/// shared::<librkv::Cache>();
/// ```
///
/// Dropping releases it exactly once; there is no separate close to call twice:
///
/// ```compile_fail
/// # use librkv::{Cache, Params};
/// let cache = Cache::new(&Params::new(1, 1, 1, 1, 8)).unwrap();
/// drop(cache);
/// drop(cache); // use of moved value
/// ```
pub struct Cache {
    raw: NonNull<sys::rkv_cache>,
}

// SAFETY: see "Threads" above: no thread affinity, exclusive use is enforced
// by &mut self on mutating calls and by Cache not being Sync.
unsafe impl Send for Cache {}

impl Drop for Cache {
    fn drop(&mut self) {
        // SAFETY: created by rkv_cache_create, destroyed only here.
        unsafe { sys::rkv_cache_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Cache").field(&self.raw).finish()
    }
}

fn check_len<T>(name: &str, values: Option<&[T]>, entries: usize) -> Result<()> {
    match values {
        Some(v) if v.len() != entries => Err(Error::InvalidArgument(format!(
            "{name} has {} entries for {entries} seq_ids",
            v.len()
        ))),
        _ => Ok(()),
    }
}

fn opt_ptr<T>(values: Option<&[T]>) -> *const T {
    values.map_or(ptr::null(), |v| v.as_ptr())
}

impl Cache {
    /// Validate `params` and allocate all the memory the cache will use.
    pub fn new(params: &Params) -> Result<Cache> {
        let mut raw = ptr::null_mut();
        // SAFETY: params is valid; raw receives the handle on success only.
        check(unsafe { sys::rkv_cache_create(&params.raw, &mut raw) })?;
        Ok(Cache { raw: NonNull::new(raw).expect("rkv_cache_create returned OK and NULL") })
    }

    fn ptr(&self) -> *mut sys::rkv_cache {
        self.raw.as_ptr()
    }

    /// The raw handle, for C API calls this crate does not wrap. It stays
    /// owned by this Cache.
    pub fn as_raw(&self) -> *mut sys::rkv_cache {
        self.ptr()
    }

    /// The params the cache runs with.
    pub fn params(&self) -> Result<Params> {
        let mut params = Params::new(0, 0, 0, 0, 0);
        // SAFETY: live handle; params.raw is sized.
        check(unsafe { sys::rkv_cache_get_params(self.ptr(), &mut params.raw) })?;
        Ok(params)
    }

    /// Change lambda, threshold, kernel, pooling, seed or auto_compress
    /// (others fail with Error::BadState). Applies from the next compression.
    pub fn set_param(&mut self, param: Param, value: f64) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::rkv_cache_set_param(self.ptr(), param.raw(), value) })
    }

    /// Append tokens to one layer of one or many sequences (a full sequence is
    /// compressed first with automatic compression on).
    pub fn append(&mut self, args: &Append<'_>, stream: Stream) -> Result<()> {
        let n = args.seq_ids.len();
        check_len("num_tokens", args.num_tokens, n)?;
        check_len("token_offsets", args.token_offsets, n)?;
        check_extent("k", &args.k.raw, args.k.host_len, n, args.num_tokens, args.token_offsets)?;
        check_extent("v", &args.v.raw, args.v.host_len, n, args.num_tokens, args.token_offsets)?;
        if let Some(q) = &args.q {
            check_extent("q", &q.raw, q.host_len, n, args.num_tokens, args.token_offsets)?;
        }
        let raw = sys::rkv_append_args {
            struct_size: size_of::<sys::rkv_append_args>(),
            layer: args.layer,
            num_seqs: i32::try_from(n).map_err(|_| Error::InvalidArgument("too many seq_ids".into()))?,
            seq_ids: args.seq_ids.as_ptr(),
            num_tokens: opt_ptr(args.num_tokens),
            token_offsets: opt_ptr(args.token_offsets),
            k: args.k.raw,
            v: args.v.raw,
            q: args.q.map_or(sys::rkv_tensor { data: ptr::null_mut(), ..args.k.raw }, |q| q.raw),
            flags: if args.prompt { sys::RKV_APPEND_PROMPT } else { 0 },
        };
        // SAFETY: every host array was checked to cover what the library reads
        // and is borrowed for the duration of the call.
        check(unsafe { sys::rkv_append(self.ptr(), &raw, stream.0) })
    }

    /// Compress now: `seq` if it holds more than its budget, or with
    /// `seq = ALL` every sequence that is due; `layer` or `ALL`.
    pub fn compress(&mut self, seq: i32, layer: i32, stream: Stream) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::rkv_compress(self.ptr(), seq, layer, stream.0) })
    }

    /// Whether appending one more token to (seq, layer) would compress first;
    /// either may be `ALL` ("any").
    pub fn compress_due(&self, seq: i32, layer: i32) -> Result<bool> {
        let mut due = 0;
        // SAFETY: live handle; due is a live i32.
        check(unsafe { sys::rkv_compress_due(self.ptr(), seq, layer, &mut due) })?;
        Ok(due != 0)
    }

    /// Forget a sequence (or `ALL`) so its slot can serve a new request.
    pub fn reset(&mut self, seq: i32, stream: Stream) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::rkv_seq_reset(self.ptr(), seq, stream.0) })
    }

    /// (logical, physical): tokens appended so far, tokens held per head now.
    pub fn seq_length(&self, seq: i32, layer: i32) -> Result<(i64, i32)> {
        let (mut logical, mut physical) = (0, 0);
        // SAFETY: live handle; outputs are live.
        check(unsafe { sys::rkv_seq_length(self.ptr(), seq, layer, &mut logical, &mut physical) })?;
        Ok((logical, physical))
    }

    /// Original positions held by one head, in slot order (a copy).
    pub fn kept_positions(&self, seq: i32, layer: i32, head: i32) -> Result<Vec<i32>> {
        let (_, physical) = self.seq_length(seq, layer)?;
        let mut out = vec![0i32; physical.max(0) as usize];
        let mut count = 0;
        // SAFETY: out holds out.len() i32s; count is live.
        check(unsafe {
            sys::rkv_kept_positions(self.ptr(), seq, layer, head, out.as_mut_ptr(), out.len() as i32, &mut count)
        })?;
        out.truncate(count as usize);
        Ok(out)
    }

    /// Statistics of one sequence, or of the whole cache with `ALL`.
    pub fn stats(&self, seq: i32) -> Result<Stats> {
        // SAFETY: all-zero is a valid rkv_stats (integers and a double).
        let mut raw: sys::rkv_stats = unsafe { std::mem::zeroed() };
        raw.struct_size = size_of::<sys::rkv_stats>();
        // SAFETY: live handle; raw is sized.
        check(unsafe { sys::rkv_cache_stats(self.ptr(), seq, &mut raw) })?;
        Ok(Stats {
            bytes_allocated: raw.bytes_allocated,
            bytes_kv_capacity: raw.bytes_kv_capacity,
            bytes_kv_held: raw.bytes_kv_held,
            bytes_kv_full: raw.bytes_kv_full,
            tokens_appended: raw.tokens_appended,
            tokens_held: raw.tokens_held,
            tokens_evicted: raw.tokens_evicted,
            compressions: raw.compressions,
            compress_seconds: raw.compress_seconds,
        })
    }

    /// The held K, V and positions of (seq, layer). The view borrows the
    /// cache, so it cannot outlive the next append, compress or reset.
    pub fn view(&self, seq: i32, layer: i32) -> Result<KvView<'_>> {
        // SAFETY: all-zero is a valid rkv_kv_view (pointers and integers).
        let mut raw: sys::rkv_kv_view = unsafe { std::mem::zeroed() };
        raw.struct_size = size_of::<sys::rkv_kv_view>();
        // SAFETY: live handle; raw is sized.
        check(unsafe { sys::rkv_view(self.ptr(), seq, layer, &mut raw) })?;
        Ok(KvView { raw, _cache: PhantomData })
    }

    /// A whole layer for every sequence slot, for one batched attention call.
    pub fn layer_view(&self, layer: i32) -> Result<LayerView<'_>> {
        // SAFETY: as for view.
        let mut raw: sys::rkv_layer_view = unsafe { std::mem::zeroed() };
        raw.struct_size = size_of::<sys::rkv_layer_view>();
        // SAFETY: live handle; raw is sized.
        check(unsafe { sys::rkv_view_layer(self.ptr(), layer, &mut raw) })?;
        Ok(LayerView { raw, _cache: PhantomData })
    }

    /// Decode attention over the held tokens: `q` and `out` are
    /// `[n, num_q_heads, head_dim]` (Layout::Decode); `scale <= 0` means
    /// 1/sqrt(head_dim).
    pub fn attend(&mut self, layer: i32, seq_ids: &[i32], q: &Tensor<'_>, out: &mut TensorMut<'_>, scale: f32, stream: Stream) -> Result<()> {
        let n = seq_ids.len();
        check_extent("q", &q.raw, q.host_len, n, None, None)?;
        check_extent("out", &out.raw, out.host_len, n, None, None)?;
        // SAFETY: the slices cover what the library reads and writes.
        check(unsafe {
            sys::rkv_attend(self.ptr(), layer, n as i32, seq_ids.as_ptr(), &q.raw, &out.raw, scale, stream.0)
        })
    }
}

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
    // cache for 'c, so no append, compress, reset or drop can happen meanwhile.
    Ok(unsafe { slice::from_raw_parts((data as *const T).offset(offset as isize), len) })
}

/// The held K, V and positions of one (sequence, layer), borrowed from the cache.
///
/// The borrow is what keeps the C rule "a view is valid until the next append,
/// compress or reset of that sequence, or destroy": code that would read a
/// view, or a slice taken from one, after any of them does not compile. Each
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
/// cache.reset(0, Stream::DEFAULT).unwrap(); // needs &mut while the view borrows &
/// println!("{:?}", view.positions(0));
/// ```
/// Read the view first, then change the cache; this compiles and runs:
/// ```
/// # use librkv::{Cache, Params, Stream};
/// let mut cache = Cache::new(&Params::new(1, 1, 1, 1, 8).budget(4).buffer(2).window(1)).unwrap();
/// let view = cache.view(0, 0).unwrap();
/// let keys: &[f32] = view.keys(0).unwrap();
/// assert!(keys.is_empty() && view.is_empty());
/// cache.reset(0, Stream::DEFAULT).unwrap();
/// drop(cache);
/// ```
pub struct KvView<'c> {
    raw: sys::rkv_kv_view,
    _cache: PhantomData<&'c Cache>,
}

impl<'c> KvView<'c> {
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
    pub fn as_raw(&self) -> &sys::rkv_kv_view {
        &self.raw
    }
    fn head_check(&self, head: usize) -> Result<()> {
        if head >= self.num_heads() {
            return Err(Error::OutOfRange(format!("head {head} of {}", self.num_heads())));
        }
        Ok(())
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
