use std::ffi::CStr;
use std::fmt;

use librkv_sys as sys;

/// A failed librkv call: one variant per status, each with the library's
/// message (what was wrong, in words a user can act on).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// NULL pointer, bad value, bad stride (also, found by this crate: an
    /// empty host slice, or per-entry slices of another length than seq_ids).
    InvalidArgument(String),
    /// Sequence, layer or head index outside the cache.
    OutOfRange(String),
    /// Unknown enum value, or a feature this build lacks (e.g. CUDA).
    Unsupported(String),
    /// Heads, head_dim or dtype disagree with the cache.
    ShapeMismatch(String),
    /// A struct size the library does not know.
    StructSize(String),
    /// Too many tokens for the cache, a buffer too small, or a tensor whose
    /// extent (a host slice's length) is too small for its shape and strides.
    Capacity(String),
    /// The method needs queries that were never appended.
    MissingQueries(String),
    /// Not valid in the sequence's current state.
    BadState(String),
    /// A size computation overflows.
    Overflow(String),
    /// Host or device allocation failed at create.
    OutOfMemory(String),
    /// A CUDA call failed; the message names it.
    Device(String),
    /// An earlier fault left the cache unusable: drop it and create a new one.
    Faulted(String),
    /// A bug in librkv: please report the message.
    Internal(String),
    /// A status this version of the crate does not know.
    Unknown { status: u32, message: String },
}

/// `Result` with librkv's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The error for a failed status and its message.
    pub fn from_status(status: u32, message: impl Into<String>) -> Error {
        let m = message.into();
        match status {
            sys::RKV_ERR_INVALID_ARGUMENT => Error::InvalidArgument(m),
            sys::RKV_ERR_OUT_OF_RANGE => Error::OutOfRange(m),
            sys::RKV_ERR_UNSUPPORTED => Error::Unsupported(m),
            sys::RKV_ERR_SHAPE_MISMATCH => Error::ShapeMismatch(m),
            sys::RKV_ERR_STRUCT_SIZE => Error::StructSize(m),
            sys::RKV_ERR_CAPACITY => Error::Capacity(m),
            sys::RKV_ERR_MISSING_QUERIES => Error::MissingQueries(m),
            sys::RKV_ERR_BAD_STATE => Error::BadState(m),
            sys::RKV_ERR_OVERFLOW => Error::Overflow(m),
            sys::RKV_ERR_OUT_OF_MEMORY => Error::OutOfMemory(m),
            sys::RKV_ERR_DEVICE => Error::Device(m),
            sys::RKV_ERR_FAULTED => Error::Faulted(m),
            sys::RKV_ERR_INTERNAL => Error::Internal(m),
            status => Error::Unknown { status, message: m },
        }
    }

    /// The C status code (`RKV_ERR_*`).
    pub fn status(&self) -> u32 {
        match self {
            Error::InvalidArgument(_) => sys::RKV_ERR_INVALID_ARGUMENT,
            Error::OutOfRange(_) => sys::RKV_ERR_OUT_OF_RANGE,
            Error::Unsupported(_) => sys::RKV_ERR_UNSUPPORTED,
            Error::ShapeMismatch(_) => sys::RKV_ERR_SHAPE_MISMATCH,
            Error::StructSize(_) => sys::RKV_ERR_STRUCT_SIZE,
            Error::Capacity(_) => sys::RKV_ERR_CAPACITY,
            Error::MissingQueries(_) => sys::RKV_ERR_MISSING_QUERIES,
            Error::BadState(_) => sys::RKV_ERR_BAD_STATE,
            Error::Overflow(_) => sys::RKV_ERR_OVERFLOW,
            Error::OutOfMemory(_) => sys::RKV_ERR_OUT_OF_MEMORY,
            Error::Device(_) => sys::RKV_ERR_DEVICE,
            Error::Faulted(_) => sys::RKV_ERR_FAULTED,
            Error::Internal(_) => sys::RKV_ERR_INTERNAL,
            Error::Unknown { status, .. } => *status,
        }
    }

    /// The library's message.
    pub fn message(&self) -> &str {
        match self {
            Error::InvalidArgument(m)
            | Error::OutOfRange(m)
            | Error::Unsupported(m)
            | Error::ShapeMismatch(m)
            | Error::StructSize(m)
            | Error::Capacity(m)
            | Error::MissingQueries(m)
            | Error::BadState(m)
            | Error::Overflow(m)
            | Error::OutOfMemory(m)
            | Error::Device(m)
            | Error::Faulted(m)
            | Error::Internal(m) => m,
            Error::Unknown { message, .. } => message,
        }
    }

    /// The library's static name of the status, e.g. `"RKV_ERR_CAPACITY"`.
    pub fn status_name(&self) -> &'static str {
        // SAFETY: rkv_status_name returns static storage, never NULL, for any value.
        unsafe { CStr::from_ptr(sys::rkv_status_name(self.status())) }
            .to_str()
            .unwrap_or("RKV_UNKNOWN_STATUS")
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.status_name(), self.message())
    }
}

impl std::error::Error for Error {}

/// Turn a status into a Result. The thread-local message is read right away,
/// on the thread that made the call, before any other librkv call.
pub(crate) fn check(status: sys::rkv_status) -> Result<()> {
    if status == sys::RKV_OK {
        return Ok(());
    }
    // SAFETY: never NULL; valid until the next librkv call on this thread.
    let message = unsafe { CStr::from_ptr(sys::rkv_error_message()) };
    Err(Error::from_status(status, message.to_string_lossy()))
}
