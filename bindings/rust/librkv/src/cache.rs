use std::ffi::c_void;
use std::mem::size_of;
use std::ptr::{self, NonNull};

use librkv_sys as sys;

use crate::batch::Batch;
use crate::error::{check, Error, Result};
use crate::params::{Param, Params};
use crate::tensor::{check_not_empty, Tensor, TensorMut};
use crate::view::{LayerView, SeqView};

/// A CUDA stream (`cudaStream_t`) that enqueueing calls run on. CPU caches
/// ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream(pub(crate) *mut c_void);

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
    /// Tokens appended (and not rolled back), summed over layers.
    pub tokens_appended: u64,
    pub tokens_held: u64,
    pub tokens_evicted: u64,
    pub compressions: u64,
    pub compress_seconds: f64,
}

/// A librkv cache: the K/V memory of `max_seqs` sequences x `num_layers` x
/// `num_kv_heads`, compressed to a fixed budget per head. Freed on drop.
///
/// # Names
/// A method is its C function's name without `rkv_`, without the object the
/// receiver stands for (`rkv_cache_stats` is `stats`) and without a getter's
/// `get_` (`rkv_cache_get_params` is `params`); the calls on one sequence
/// keep their `seq_`: `rkv_seq_truncate(cache, seq, n)` is
/// `cache.seq_truncate(seq, n, stream)`.
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

/// The library reads num_tokens[i] and token_offsets[i] for every entry, and
/// cannot see a slice's length: the one check on host arrays left here.
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

fn entries(n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| Error::InvalidArgument(format!("{n} entries do not fit an int32")))
}

/// K and V as given, and Q or an absent tensor (data NULL) shaped like K.
fn append_tensors(k: &Tensor<'_>, v: &Tensor<'_>, q: Option<&Tensor<'_>>) -> Result<[sys::rkv_tensor; 3]> {
    check_not_empty("k", &k.raw, k.host)?;
    check_not_empty("v", &v.raw, v.host)?;
    if let Some(q) = q {
        check_not_empty("q", &q.raw, q.host)?;
    }
    let absent = sys::rkv_tensor { data: ptr::null_mut(), extent: 0, ..k.raw };
    Ok([k.raw, v.raw, q.map_or(absent, |q| q.raw)])
}

impl Cache {
    /// Validate `params` and allocate all the memory the cache will use.
    pub fn new(params: &Params) -> Result<Cache> {
        let mut raw = ptr::null_mut();
        // SAFETY: params is valid; raw receives the handle on success only.
        check(unsafe { sys::rkv_cache_create(&params.raw, &mut raw) })?;
        Ok(Cache { raw: NonNull::new(raw).expect("rkv_cache_create returned OK and NULL") })
    }

    pub(crate) fn ptr(&self) -> *mut sys::rkv_cache {
        self.raw.as_ptr()
    }

    /// The raw handle, for C API calls this crate does not wrap. It stays
    /// owned by this Cache.
    pub fn as_raw(&self) -> *mut sys::rkv_cache {
        self.ptr()
    }

    /// The params the cache runs with (`rkv_cache_get_params`).
    pub fn params(&self) -> Result<Params> {
        let mut params = Params::new(0, 0, 0, 0, 0);
        // SAFETY: live handle; params.raw is sized.
        check(unsafe { sys::rkv_cache_get_params(self.ptr(), &mut params.raw) })?;
        Ok(params)
    }

    /// Change lambda, threshold, kernel, pooling, seed or auto_compress
    /// (others fail with Error::BadState). Applies from the next compression.
    pub fn set(&mut self, param: Param, value: f64) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::rkv_cache_set(self.ptr(), param.raw(), value) })
    }

    /// One parameter of the live cache.
    pub fn get(&self, param: Param) -> Result<f64> {
        let mut value = 0.0;
        // SAFETY: live handle; value is a live f64.
        check(unsafe { sys::rkv_cache_get(self.ptr(), param.raw(), &mut value) })?;
        Ok(value)
    }

    /// Append tokens to one layer of one or many sequences (a full sequence is
    /// compressed first with automatic compression on). The library checks
    /// every tensor against its extent (a host slice's length).
    pub fn append(&mut self, args: &Append<'_>, stream: Stream) -> Result<()> {
        let n = args.seq_ids.len();
        check_len("num_tokens", args.num_tokens, n)?;
        check_len("token_offsets", args.token_offsets, n)?;
        let [k, v, q] = append_tensors(&args.k, &args.v, args.q.as_ref())?;
        let raw = sys::rkv_append_args {
            struct_size: size_of::<sys::rkv_append_args>(),
            layer: args.layer,
            num_seqs: entries(n)?,
            seq_ids: args.seq_ids.as_ptr(),
            num_tokens: opt_ptr(args.num_tokens),
            token_offsets: opt_ptr(args.token_offsets),
            k,
            v,
            q,
            flags: if args.prompt { sys::RKV_APPEND_PROMPT } else { 0 },
            batch: ptr::null(),
        };
        // SAFETY: the host arrays hold num_seqs entries each and are borrowed
        // for the call; every tensor carries its extent, which the library checks.
        check(unsafe { sys::rkv_append(self.ptr(), &raw, stream.0) })
    }

    /// One decode step of every sequence in `batch` at `layer`: K, V (and Q)
    /// have one row per batch entry, `[entries, heads, head_dim]`, padding
    /// rows included. Does not compress and does not move the host's lengths:
    /// [`Batch::advance`] accounts for the step (see [`Batch`]).
    pub fn append_batch(&mut self, batch: &Batch<'_>, layer: i32, k: Tensor<'_>, v: Tensor<'_>, q: Option<Tensor<'_>>, stream: Stream) -> Result<()> {
        let [k, v, q] = append_tensors(&k, &v, q.as_ref())?;
        let raw = sys::rkv_append_args {
            struct_size: size_of::<sys::rkv_append_args>(),
            layer,
            num_seqs: batch.entries() as i32,
            seq_ids: ptr::null(),
            num_tokens: ptr::null(),
            token_offsets: ptr::null(),
            k,
            v,
            q,
            flags: 0,
            batch: batch.as_raw(),
        };
        // SAFETY: the batch is live (it cannot outlive its cache, nor this
        // one, which the library checks it belongs to); tensors carry extents.
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

    /// Forget a sequence (or `ALL`) so its slot can serve a new request; its
    /// budget returns to the cache's.
    pub fn seq_reset(&mut self, seq: i32, stream: Stream) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::rkv_seq_reset(self.ptr(), seq, stream.0) })
    }

    /// Rollback (speculative decoding): remove the last `tokens` appended
    /// tokens of every layer of `seq`, exactly as if they had never come.
    /// More than [`Cache::seq_rollback_limit`] fails with Error::BadState.
    pub fn seq_truncate(&mut self, seq: i32, tokens: i32, stream: Stream) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::rkv_seq_truncate(self.ptr(), seq, tokens, stream.0) })
    }

    /// How many tokens [`Cache::seq_truncate`] accepts now (raise it with
    /// [`Params::max_rollback`] for the methods that keep queries).
    pub fn seq_rollback_limit(&self, seq: i32) -> Result<i32> {
        let mut tokens = 0;
        // SAFETY: live handle; tokens is a live i32.
        check(unsafe { sys::rkv_seq_rollback_limit(self.ptr(), seq, &mut tokens) })?;
        Ok(tokens)
    }

    /// Fork (beam search, parallel sampling): copy the whole state of `src`
    /// into the empty slot `dst`; the two then evolve independently.
    pub fn seq_copy(&mut self, src: i32, dst: i32, stream: Stream) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::rkv_seq_copy(self.ptr(), src, dst, stream.0) })
    }

    /// Per-request budget of an empty sequence: from the smallest the method
    /// allows up to the cache's budget, in the memory the cache already has.
    pub fn seq_set_budget(&mut self, seq: i32, budget: i32) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { sys::rkv_seq_set_budget(self.ptr(), seq, budget) })
    }

    /// The budget `seq` compresses to (`rkv_seq_get_budget`).
    pub fn seq_budget(&self, seq: i32) -> Result<i32> {
        let mut budget = 0;
        // SAFETY: live handle; budget is a live i32.
        check(unsafe { sys::rkv_seq_get_budget(self.ptr(), seq, &mut budget) })?;
        Ok(budget)
    }

    /// (logical, physical): tokens appended so far, tokens held per head now.
    pub fn seq_length(&self, seq: i32, layer: i32) -> Result<(i64, i32)> {
        let (mut logical, mut physical) = (0, 0);
        // SAFETY: live handle; outputs are live.
        check(unsafe { sys::rkv_seq_length(self.ptr(), seq, layer, &mut logical, &mut physical) })?;
        Ok((logical, physical))
    }

    /// Original positions held by one head, in slot order (a copy).
    pub fn seq_positions(&self, seq: i32, layer: i32, head: i32) -> Result<Vec<i32>> {
        let (_, physical) = self.seq_length(seq, layer)?;
        let mut out = vec![0i32; physical.max(0) as usize];
        let mut count = 0;
        // SAFETY: out holds out.len() i32s; count is live.
        check(unsafe {
            sys::rkv_seq_positions(self.ptr(), seq, layer, head, out.as_mut_ptr(), out.len() as i32, &mut count)
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
    /// cache, so it cannot outlive the next call that changes it.
    pub fn view(&self, seq: i32, layer: i32) -> Result<SeqView<'_>> {
        // SAFETY: all-zero is a valid rkv_seq_view (pointers and integers).
        let mut raw: sys::rkv_seq_view = unsafe { std::mem::zeroed() };
        raw.struct_size = size_of::<sys::rkv_seq_view>();
        // SAFETY: live handle; raw is sized.
        check(unsafe { sys::rkv_view(self.ptr(), seq, layer, &mut raw) })?;
        Ok(SeqView::new(raw))
    }

    /// A whole layer for every sequence slot, for one batched attention call.
    pub fn view_layer(&self, layer: i32) -> Result<LayerView<'_>> {
        // SAFETY: as for view.
        let mut raw: sys::rkv_layer_view = unsafe { std::mem::zeroed() };
        raw.struct_size = size_of::<sys::rkv_layer_view>();
        // SAFETY: live handle; raw is sized.
        check(unsafe { sys::rkv_view_layer(self.ptr(), layer, &mut raw) })?;
        Ok(LayerView::new(raw))
    }

    /// Decode attention over the held tokens: `q` and `out` are
    /// `[n, num_q_heads, head_dim]` (Layout::Decode); `scale <= 0` means
    /// 1/sqrt(head_dim).
    pub fn attend(&mut self, layer: i32, seq_ids: &[i32], q: &Tensor<'_>, out: &mut TensorMut<'_>, scale: f32, stream: Stream) -> Result<()> {
        let args = attend_args(layer, entries(seq_ids.len())?, seq_ids.as_ptr(), ptr::null(), q, out, scale)?;
        // SAFETY: seq_ids holds num_seqs ids for the call; q and out carry their extents.
        check(unsafe { sys::rkv_attend(self.ptr(), &args, stream.0) })
    }

    /// Decode attention for every entry of `batch`: `q` and `out` have one
    /// row per entry; padding entries leave their output rows untouched.
    pub fn attend_batch(&mut self, batch: &Batch<'_>, layer: i32, q: &Tensor<'_>, out: &mut TensorMut<'_>, scale: f32, stream: Stream) -> Result<()> {
        let args = attend_args(layer, batch.entries() as i32, ptr::null(), batch.as_raw(), q, out, scale)?;
        // SAFETY: the batch is live (see append_batch); q and out carry their extents.
        check(unsafe { sys::rkv_attend(self.ptr(), &args, stream.0) })
    }
}

fn attend_args(layer: i32, num_seqs: i32, seq_ids: *const i32, batch: *const sys::rkv_batch, q: &Tensor<'_>, out: &TensorMut<'_>, scale: f32) -> Result<sys::rkv_attend_args> {
    check_not_empty("q", &q.raw, q.host)?;
    check_not_empty("out", &out.raw, out.host)?;
    Ok(sys::rkv_attend_args {
        struct_size: size_of::<sys::rkv_attend_args>(),
        layer,
        num_seqs,
        seq_ids,
        batch,
        q: q.raw,
        out: out.raw,
        scale,
        flags: 0,
    })
}
