//! Every status maps to its Error variant with the library's message; each
//! status a CPU build can return is also provoked for real.
use librkv::{sys, Append, Cache, Error, Layout, Method, Param, Params, Stream, Tensor};

fn params() -> Params {
    Params::new(2, 1, 2, 2, 8).budget(8).buffer(4).window(2)
}

/// The error is `expected`'s variant and carries a real message.
fn assert_kind(result: Result<impl std::fmt::Debug, Error>, status: u32) -> Error {
    let error = result.expect_err("the call should fail");
    assert_eq!(error.status(), status, "{error}");
    assert!(!error.message().is_empty());
    assert!(error.to_string().starts_with(error.status_name()));
    error
}

#[test]
fn every_status_maps_to_its_variant() {
    let all = [
        (sys::RKV_ERR_INVALID_ARGUMENT, "RKV_ERR_INVALID_ARGUMENT"),
        (sys::RKV_ERR_OUT_OF_RANGE, "RKV_ERR_OUT_OF_RANGE"),
        (sys::RKV_ERR_UNSUPPORTED, "RKV_ERR_UNSUPPORTED"),
        (sys::RKV_ERR_SHAPE_MISMATCH, "RKV_ERR_SHAPE_MISMATCH"),
        (sys::RKV_ERR_STRUCT_SIZE, "RKV_ERR_STRUCT_SIZE"),
        (sys::RKV_ERR_CAPACITY, "RKV_ERR_CAPACITY"),
        (sys::RKV_ERR_MISSING_QUERIES, "RKV_ERR_MISSING_QUERIES"),
        (sys::RKV_ERR_BAD_STATE, "RKV_ERR_BAD_STATE"),
        (sys::RKV_ERR_OVERFLOW, "RKV_ERR_OVERFLOW"),
        (sys::RKV_ERR_OUT_OF_MEMORY, "RKV_ERR_OUT_OF_MEMORY"),
        (sys::RKV_ERR_DEVICE, "RKV_ERR_DEVICE"),
        (sys::RKV_ERR_FAULTED, "RKV_ERR_FAULTED"),
        (sys::RKV_ERR_INTERNAL, "RKV_ERR_INTERNAL"),
    ];
    let mut variants = std::collections::HashSet::new();
    for (status, name) in all {
        let error = Error::from_status(status, "why");
        assert_eq!(error.status(), status);
        assert_eq!(error.message(), "why");
        assert_eq!(error.status_name(), name);
        assert_eq!(error.to_string(), format!("{name}: why"));
        assert!(!matches!(error, Error::Unknown { .. }));
        variants.insert(std::mem::discriminant(&error));
    }
    assert_eq!(variants.len(), all.len(), "two statuses share a variant");
    let unknown = Error::from_status(77, "new");
    assert_eq!(unknown, Error::Unknown { status: 77, message: "new".into() });
    assert_eq!(unknown.status_name(), "RKV_UNKNOWN_STATUS");
}

#[test]
fn invalid_argument() {
    let e = assert_kind(Cache::new(&params().budget(4).window(4)), sys::RKV_ERR_INVALID_ARGUMENT);
    assert!(matches!(e, Error::InvalidArgument(_)));
}

#[test]
fn out_of_range() {
    let cache = Cache::new(&params()).unwrap();
    assert!(matches!(assert_kind(cache.view(5, 0).map(|_| ()), sys::RKV_ERR_OUT_OF_RANGE), Error::OutOfRange(_)));
    assert!(matches!(assert_kind(params().set(Param::Kernel, 4.0), sys::RKV_ERR_OUT_OF_RANGE), Error::OutOfRange(_)));
}

#[test]
fn unsupported() {
    let mut raw = *params().as_raw();
    raw.method = 77;
    let mut cache = std::ptr::null_mut();
    // SAFETY: valid params struct and output pointer.
    let status = unsafe { sys::rkv_cache_create(&raw, &mut cache) };
    assert_eq!(status, sys::RKV_ERR_UNSUPPORTED);
    assert!(matches!(assert_kind(params().set(Param::Method, 77.0), sys::RKV_ERR_UNSUPPORTED), Error::Unsupported(_)));
}

#[test]
fn shape_mismatch() {
    let mut cache = Cache::new(&params()).unwrap();
    let k = vec![1f32; 3 * 8];
    let t = Tensor::host(&k, 3, 8, Layout::Decode);
    let e = assert_kind(cache.append(&Append::new(0, &[0], t, t, None), Stream::DEFAULT), sys::RKV_ERR_SHAPE_MISMATCH);
    assert!(matches!(e, Error::ShapeMismatch(_)));
    assert_eq!(cache.seq_length(0, 0).unwrap(), (0, 0)); // unchanged
}

#[test]
fn struct_size() {
    // The safe crate always sets struct_size itself, so only the raw call can
    // send a wrong one; the mapping of the status is what the crate adds.
    let mut raw = *params().as_raw();
    // SAFETY: a valid pointer; the wrong size is the point.
    let status = unsafe { sys::rkv_params_default(&mut raw, 3) };
    assert_eq!(status, sys::RKV_ERR_STRUCT_SIZE);
    // SAFETY: never NULL, read right after the failed call on this thread.
    let message = unsafe { std::ffi::CStr::from_ptr(sys::rkv_error_message()) };
    let e = Error::from_status(status, message.to_string_lossy());
    assert!(matches!(e, Error::StructSize(_)) && !e.message().is_empty());
}

#[test]
fn capacity() {
    let mut cache = Cache::new(&params().method(Method::Full).max_len(4)).unwrap();
    let k = vec![1f32; 2 * 5 * 8];
    let t = Tensor::host(&k, 2, 8, Layout::Bhtd { tokens: 5 });
    let mut args = Append::new(0, &[0], t, t, None);
    args.num_tokens = Some(&[5]);
    assert!(matches!(assert_kind(cache.append(&args, Stream::DEFAULT), sys::RKV_ERR_CAPACITY), Error::Capacity(_)));
}

#[test]
fn missing_queries() {
    let mut cache = Cache::new(&params().auto_compress(false)).unwrap();
    let k = vec![1f32; 2 * 12 * 8];
    let t = Tensor::host(&k, 2, 8, Layout::Bhtd { tokens: 12 });
    let mut args = Append::new(0, &[0], t, t, None);
    args.num_tokens = Some(&[12]);
    cache.append(&args, Stream::DEFAULT).unwrap();
    let e = assert_kind(cache.compress(0, 0, Stream::DEFAULT), sys::RKV_ERR_MISSING_QUERIES);
    assert!(matches!(e, Error::MissingQueries(_)));
}

#[test]
fn bad_state() {
    let mut cache = Cache::new(&params()).unwrap();
    assert!(matches!(assert_kind(cache.set(Param::Budget, 16.0), sys::RKV_ERR_BAD_STATE), Error::BadState(_)));
}

#[test]
fn overflow() {
    let p = Params::new(1 << 20, 1024, 1024, 1024, 1024).method(Method::Full).max_len(1 << 25);
    assert!(matches!(assert_kind(p.size(), sys::RKV_ERR_OVERFLOW), Error::Overflow(_)));
}

#[test]
fn out_of_memory() {
    // K alone would be 2^49 bytes, beyond a 47-bit address space: the first
    // allocation fails at once on any machine, nothing is touched.
    let p = Params::new(1, 8, 1024, 1024, 1024).budget(1 << 24).buffer(16);
    assert!(matches!(assert_kind(Cache::new(&p).map(|_| ()), sys::RKV_ERR_OUT_OF_MEMORY), Error::OutOfMemory(_)));
}

#[test]
fn a_slice_shorter_than_its_shape_is_the_library_s_capacity_error() {
    let mut cache = Cache::new(&params()).unwrap();
    let k = vec![1f32; 2 * 3 * 8];
    let t = Tensor::host(&k, 2, 8, Layout::Bhtd { tokens: 3 });
    let mut args = Append::new(0, &[0], t, t, None);
    args.num_tokens = Some(&[2]);
    args.token_offsets = Some(&[2]); // tokens 2..3 of 3: one past the end
    let e = assert_kind(cache.append(&args, Stream::DEFAULT), sys::RKV_ERR_CAPACITY);
    assert!(e.message().contains("args->k.extent is 48 elements"), "{e}");
    let mut args = Append::new(0, &[0, 1], t, t, None);
    args.num_tokens = Some(&[1]); // one count for two seq_ids: the crate's check
    assert_kind(cache.append(&args, Stream::DEFAULT), sys::RKV_ERR_INVALID_ARGUMENT);
    assert_eq!(cache.seq_length(0, 0).unwrap(), (0, 0));
}
