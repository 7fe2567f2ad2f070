//! Batches: sequence ids in the cache's memory, which append and attend read
//! when they run, so one decode step (or the CUDA graph that captured it)
//! serves whichever sequences the batch is set to.
use std::marker::PhantomData;
use std::ptr::{self, NonNull};

use librkv_sys as sys;

use crate::cache::{Cache, Stream};
use crate::error::{check, Error, Result};

/// A batch of `entries()` sequence ids (`rkv_batch`) for one cache; entries
/// set to -1 are padding. Freed on drop.
///
/// [`Batch::new`] borrows the cache for as long as the batch lives and hands
/// the cache back as `&mut Cache`, through which every call goes on, the
/// batch's included: a batch cannot outlive its cache, yet several batches
/// (one per captured batch size) and every call of the cache live together.
/// The decode loop of an engine:
///
/// ```
/// # use librkv::{Batch, Cache, Layout, Method, Params, Stream, Tensor, TensorMut, ALL};
/// let params = Params::new(4, 1, 1, 1, 8).method(Method::StreamingLlm).budget(6).buffer(2).window(1).sink(1);
/// let mut cache = Cache::new(&params)?;
/// let (mut batch, cache) = Batch::new(&mut cache, 2)?; // `cache` is now &mut Cache
/// let rows = vec![0.5f32; 2 * 8]; // [entries, heads, head_dim]
/// let t = || Tensor::host(&rows, 1, 8, Layout::Decode);
/// let mut out = vec![0f32; 2 * 8];
/// batch.set(cache, &[3, 1], Stream::DEFAULT)?; // when the running set changes
/// for _step in 0..10 {
///     if cache.compress_due(ALL, ALL)? {
///         cache.compress(ALL, ALL, Stream::DEFAULT)?; // outside any captured graph
///     }
///     cache.append_batch(&batch, 0, t(), t(), None, Stream::DEFAULT)?; // or replay a graph
///     cache.attend_batch(&batch, 0, &t(), &mut TensorMut::host(&mut out, 1, 8, Layout::Decode), 0.0, Stream::DEFAULT)?;
///     batch.advance(cache, 1)?; // the host learns what the step did, without a sync
/// }
/// assert_eq!(cache.seq_length(3, 0)?, (10, 6 + 2));
/// # Ok::<(), librkv::Error>(())
/// ```
///
/// A batch cannot outlive its cache:
/// ```compile_fail,E0597
/// # use librkv::{Batch, Cache, Params};
/// let batch = {
///     let mut cache = Cache::new(&Params::new(2, 1, 1, 1, 8).budget(4).buffer(2).window(1)).unwrap();
///     let (batch, _) = Batch::new(&mut cache, 2).unwrap();
///     batch
/// }; // the cache is dropped here, the batch still borrows it
/// println!("{}", batch.entries());
/// ```
/// nor can the cache be dropped (or moved) while a batch lives:
/// ```compile_fail,E0505
/// # use librkv::{Batch, Cache, Params};
/// let mut cache = Cache::new(&Params::new(2, 1, 1, 1, 8).budget(4).buffer(2).window(1)).unwrap();
/// let (batch, _) = Batch::new(&mut cache, 2).unwrap();
/// drop(cache); // moves the cache out while the batch borrows it
/// println!("{}", batch.entries());
/// ```
/// Dropping the batch first, then the cache, compiles:
/// ```
/// # use librkv::{Batch, Cache, Params};
/// let mut cache = Cache::new(&Params::new(2, 1, 1, 1, 8).budget(4).buffer(2).window(1)).unwrap();
/// let (batch, _) = Batch::new(&mut cache, 2).unwrap();
/// println!("{}", batch.entries());
/// drop(batch);
/// drop(cache);
/// ```
pub struct Batch<'c> {
    raw: NonNull<sys::rkv_batch>,
    /// The cache it was made for: calls check that they get that cache.
    cache: *const sys::rkv_cache,
    entries: usize,
    _cache: PhantomData<&'c mut Cache>,
}

// SAFETY: no thread affinity. Every call on a batch takes its cache (&Cache or
// &mut Cache, and Cache is not Sync), so it runs on the thread that has the
// cache; destroying a batch touches the batch alone (rkv.h lets it be
// destroyed even after its cache).
unsafe impl Send for Batch<'_> {}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        // SAFETY: created by rkv_batch_create, destroyed only here.
        unsafe { sys::rkv_batch_destroy(self.raw.as_ptr()) }
    }
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch").field("raw", &self.raw).field("entries", &self.entries).finish()
    }
}

impl<'c> Batch<'c> {
    /// A batch of `max_entries` entries (1 .. 65535), all padding, for
    /// `cache`; returns it with the cache, reborrowed for the batch's life.
    pub fn new(cache: &'c mut Cache, max_entries: i32) -> Result<(Batch<'c>, &'c mut Cache)> {
        let mut raw = ptr::null_mut();
        // SAFETY: live cache; raw receives the handle on success only.
        check(unsafe { sys::rkv_batch_create(cache.ptr(), max_entries, &mut raw) })?;
        let raw = NonNull::new(raw).expect("rkv_batch_create returned OK and NULL");
        let batch = Batch { raw, cache: cache.ptr(), entries: max_entries as usize, _cache: PhantomData };
        Ok((batch, cache))
    }

    /// Entries of the batch: the rows of every tensor a batch call takes.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// The raw handle, for C API calls this crate does not wrap (and for the
    /// engine's own bookkeeping of captured graphs). It stays owned here.
    pub fn as_raw(&self) -> *mut sys::rkv_batch {
        self.raw.as_ptr()
    }

    fn check_cache(&self, cache: &Cache) -> Result<()> {
        if cache.ptr().cast_const() != self.cache {
            return Err(Error::InvalidArgument("the batch belongs to another cache".into()));
        }
        Ok(())
    }

    /// Entries `0 .. seq_ids.len()` become `seq_ids` (-1 is padding), the rest
    /// padding. Ids out of range or repeated fail here, and the batch keeps
    /// what it held. On CUDA the ids reach the batch in stream order.
    pub fn set(&mut self, cache: &Cache, seq_ids: &[i32], stream: Stream) -> Result<()> {
        self.check_cache(cache)?;
        let n = i32::try_from(seq_ids.len())
            .map_err(|_| Error::InvalidArgument(format!("{} ids do not fit an int32", seq_ids.len())))?;
        // SAFETY: live batch of this live cache; seq_ids holds n ids for the call.
        check(unsafe { sys::rkv_batch_set(self.as_raw(), seq_ids.as_ptr(), n, stream.0) })
    }

    /// Record on the host that every sequence of the batch got `steps` more
    /// tokens in every layer (the batch appends or graph replays since the
    /// last advance). No device call, no sync. If a sequence went past its
    /// capacity, the replayed appends dropped tokens: the cache is faulted
    /// and this returns Error::Capacity naming the sequence.
    pub fn advance(&mut self, cache: &mut Cache, steps: i32) -> Result<()> {
        self.check_cache(cache)?;
        // SAFETY: live batch of this live cache, which &mut holds exclusively.
        check(unsafe { sys::rkv_batch_advance(self.as_raw(), steps) })
    }
}
