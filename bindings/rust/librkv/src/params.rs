use std::mem::{size_of, MaybeUninit};

use librkv_sys as sys;

use crate::error::{check, Result};
use crate::{Device, Dtype, Method, Mode, Pooling};

/// Keys of the parameter setter (`rkv_param`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Param {
    MaxSeqs,
    NumLayers,
    NumKvHeads,
    NumQHeads,
    HeadDim,
    Dtype,
    DeviceType,
    DeviceId,
    Method,
    Mode,
    Budget,
    Buffer,
    Window,
    Kernel,
    Lambda,
    Threshold,
    Pooling,
    Sink,
    Guards,
    MaxPromptLen,
    MaxLen,
    Seed,
    AutoCompress,
    MaxRollback,
}

impl Param {
    pub(crate) fn raw(self) -> sys::rkv_param {
        match self {
            Param::MaxSeqs => sys::RKV_PARAM_MAX_SEQS,
            Param::NumLayers => sys::RKV_PARAM_NUM_LAYERS,
            Param::NumKvHeads => sys::RKV_PARAM_NUM_KV_HEADS,
            Param::NumQHeads => sys::RKV_PARAM_NUM_Q_HEADS,
            Param::HeadDim => sys::RKV_PARAM_HEAD_DIM,
            Param::Dtype => sys::RKV_PARAM_DTYPE,
            Param::DeviceType => sys::RKV_PARAM_DEVICE_TYPE,
            Param::DeviceId => sys::RKV_PARAM_DEVICE_ID,
            Param::Method => sys::RKV_PARAM_METHOD,
            Param::Mode => sys::RKV_PARAM_MODE,
            Param::Budget => sys::RKV_PARAM_BUDGET,
            Param::Buffer => sys::RKV_PARAM_BUFFER,
            Param::Window => sys::RKV_PARAM_WINDOW,
            Param::Kernel => sys::RKV_PARAM_KERNEL,
            Param::Lambda => sys::RKV_PARAM_LAMBDA,
            Param::Threshold => sys::RKV_PARAM_THRESHOLD,
            Param::Pooling => sys::RKV_PARAM_POOLING,
            Param::Sink => sys::RKV_PARAM_SINK,
            Param::Guards => sys::RKV_PARAM_GUARDS,
            Param::MaxPromptLen => sys::RKV_PARAM_MAX_PROMPT_LEN,
            Param::MaxLen => sys::RKV_PARAM_MAX_LEN,
            Param::Seed => sys::RKV_PARAM_SEED,
            Param::AutoCompress => sys::RKV_PARAM_AUTO_COMPRESS,
            Param::MaxRollback => sys::RKV_PARAM_MAX_ROLLBACK,
        }
    }

    /// Inclusive bounds of this parameter on its own (cross-parameter rules
    /// are checked when a cache is created).
    pub fn bounds(self) -> Result<(f64, f64)> {
        let (mut lower, mut upper) = (0.0, 0.0);
        // SAFETY: both outputs point to live f64s.
        check(unsafe { sys::rkv_params_bounds(self.raw(), &mut lower, &mut upper) })?;
        Ok((lower, upper))
    }
}

/// Guard rails (`RKV_GUARD_*`), combined with `|`.
pub mod guards {
    /// Tokens at positions below `sink` are never evicted.
    pub const SINK: u32 = librkv_sys::RKV_GUARD_SINK;
    /// Prompt tokens are never evicted; the budget applies to generated tokens.
    pub const PROMPT: u32 = librkv_sys::RKV_GUARD_PROMPT;
}

/// Parameters of a cache: the library's defaults plus the shape, changed with
/// the builder methods. Values are checked when a cache is created (or by
/// [`Params::size`]), with the library's messages.
#[derive(Clone, Copy)]
pub struct Params {
    pub(crate) raw: sys::rkv_cache_params,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $field:ident),* $(,)?) => {
        $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Self {
            self.raw.$field = value as _;
            self
        })*
    };
}

impl Params {
    /// Defaults (R-KV, budget 1024 + buffer 128, f32 on the CPU) for this
    /// model shape; `num_q_heads` is a multiple of `num_kv_heads`.
    pub fn new(max_seqs: i32, num_layers: i32, num_kv_heads: i32, num_q_heads: i32, head_dim: i32) -> Params {
        let mut raw = MaybeUninit::<sys::rkv_cache_params>::zeroed();
        // SAFETY: a valid pointer with the struct's own size: cannot fail.
        let status = unsafe { sys::rkv_params_default(raw.as_mut_ptr(), size_of::<sys::rkv_cache_params>()) };
        assert_eq!(status, sys::RKV_OK, "rkv_params_default rejected its own struct");
        // SAFETY: zeroed, then filled by the library.
        let mut raw = unsafe { raw.assume_init() };
        raw.max_seqs = max_seqs;
        raw.num_layers = num_layers;
        raw.num_kv_heads = num_kv_heads;
        raw.num_q_heads = num_q_heads;
        raw.head_dim = head_dim;
        Params { raw }
    }

    setters! {
        /// Tokens kept per head after a compression.
        budget: i32 => budget,
        /// Tokens appended between compressions.
        buffer: i32 => buffer,
        /// Most recent tokens always kept; their queries form the observation window.
        window: i32 => window,
        /// Max-pool width over slots (odd).
        kernel: i32 => kernel,
        /// R-KV mix: lambda * importance - (1 - lambda) * redundancy.
        lambda: f32 => lambda,
        /// Cosine above which keys count as near-duplicates.
        threshold: f32 => threshold,
        /// StreamingLLM's sink tokens, and the sink guard.
        sink: i32 => sink,
        /// `guards::SINK | guards::PROMPT`.
        guards: u32 => guards,
        /// With `guards::PROMPT`: the longest prompt, reserved on top of budget + buffer.
        max_prompt_len: i32 => max_prompt_len,
        /// Method::Full: capacity per sequence.
        max_len: i32 => max_len,
        /// Method::Random's seed.
        seed: u64 => seed,
        /// Tokens [`Cache::seq_truncate`](crate::Cache::seq_truncate) can remove
        /// exactly for the methods that keep queries (their queries are kept
        /// that much longer); 0 .. 1024.
        max_rollback: i32 => max_rollback,
    }

    pub fn method(mut self, method: Method) -> Self {
        self.raw.method = method as _;
        self
    }
    pub fn mode(mut self, mode: Mode) -> Self {
        self.raw.mode = mode as _;
        self
    }
    pub fn pooling(mut self, pooling: Pooling) -> Self {
        self.raw.pooling = pooling as _;
        self
    }
    /// Storage dtype of K and V.
    pub fn dtype(mut self, dtype: Dtype) -> Self {
        self.raw.dtype = dtype as _;
        self
    }
    pub fn device(mut self, device: Device) -> Self {
        let (kind, id) = device.raw();
        self.raw.device_type = kind;
        self.raw.device_id = id;
        self
    }
    /// false: an append that does not fit fails with Error::Capacity instead
    /// of compressing first.
    pub fn auto_compress(mut self, on: bool) -> Self {
        self.raw.auto_compress = on as i32;
        self
    }

    /// Set one parameter by key, checked against its bounds.
    pub fn set(mut self, param: Param, value: f64) -> Result<Self> {
        // SAFETY: raw is a valid, sized params struct.
        check(unsafe { sys::rkv_params_set(&mut self.raw, param.raw(), value) })?;
        Ok(self)
    }

    /// Read one parameter as a double.
    pub fn get(&self, param: Param) -> Result<f64> {
        let mut value = 0.0;
        // SAFETY: raw is valid; value is a live f64.
        check(unsafe { sys::rkv_params_get(&self.raw, param.raw(), &mut value) })?;
        Ok(value)
    }

    /// Bytes a cache with these params would allocate, without allocating.
    pub fn size(&self) -> Result<u64> {
        let mut bytes = 0;
        // SAFETY: raw is valid; bytes is a live u64.
        check(unsafe { sys::rkv_cache_size(&self.raw, &mut bytes) })?;
        Ok(bytes)
    }

    /// The raw C struct, for fields without a builder method.
    pub fn as_raw(&self) -> &sys::rkv_cache_params {
        &self.raw
    }
}

impl std::fmt::Debug for Params {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let r = &self.raw;
        f.debug_struct("Params")
            .field("max_seqs", &r.max_seqs)
            .field("num_layers", &r.num_layers)
            .field("num_kv_heads", &r.num_kv_heads)
            .field("num_q_heads", &r.num_q_heads)
            .field("head_dim", &r.head_dim)
            .field("method", &r.method)
            .field("budget", &r.budget)
            .field("buffer", &r.buffer)
            .field("window", &r.window)
            .field("max_rollback", &r.max_rollback)
            .finish_non_exhaustive()
    }
}
