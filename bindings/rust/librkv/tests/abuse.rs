//! The safe crate under abuse (issue 11, issue 10 point 6): a host slice's
//! length travels as its tensor's extent, and the library refuses, with
//! Error::Capacity naming the tensor, any call that would read or write past
//! it; the cache and the output are left unchanged. What the library cannot
//! see (an empty slice, per-entry slices of another length) the crate refuses
//! itself. (That a view or a batch cannot outlive its cache, nor a view an
//! append or reset, is checked at compile time: the `compile_fail` examples on
//! `SeqView` and `Batch`.)
use librkv::{sys, Append, Cache, Error, Layout, Params, Stream, Tensor, TensorMut};

const H: i32 = 2;
const HQ: i32 = 4;
const D: i32 = 8;

fn cache() -> Cache {
    Cache::new(&Params::new(2, 1, H, HQ, D).budget(8).buffer(4).window(2)).unwrap()
}

/// The library's extent check: Capacity, naming the tensor of the C arguments.
fn beyond_extent(result: librkv::Result<()>, tensor: &str) {
    match result {
        Err(Error::Capacity(message)) => {
            assert!(message.contains(&format!("args->{tensor}.extent")), "{message}")
        }
        other => panic!("expected Capacity naming args->{tensor}, got {other:?}"),
    }
}

fn elements(tokens: i32, heads: i32) -> usize {
    (tokens * heads * D) as usize
}

#[test]
fn extents_are_the_slices_lengths() {
    let k = vec![0.5f32; elements(3, H)];
    assert_eq!(Tensor::host(&k, H, D, Layout::Decode).extent(), k.len() as i64);
    let mut out = vec![0f32; 5];
    assert_eq!(TensorMut::host(&mut out, H, D, Layout::Decode).extent(), 5);
    // SAFETY: never passed to a call.
    let device = unsafe { Tensor::device(std::ptr::null(), librkv::Dtype::F16, H, D, Layout::Decode, 77) };
    assert_eq!(device.extent(), 77);
}

#[test]
fn v_and_q_shorter_than_k_are_refused() {
    let mut cache = cache();
    let bhtd = |tokens| Layout::Bhtd { tokens };
    let k = vec![0.5f32; elements(12, H)];
    let v_short = vec![0.5f32; elements(2, H)];
    let q = vec![0.5f32; elements(12, HQ)];
    let q_short = vec![0.5f32; elements(1, HQ)];
    // v described as 12 tokens but holding 2
    let mut args = Append::new(0, &[0], Tensor::host(&k, H, D, bhtd(12)), Tensor::host(&v_short, H, D, bhtd(12)),
                               Some(Tensor::host(&q, HQ, D, bhtd(12))));
    args.num_tokens = Some(&[12]);
    beyond_extent(cache.append(&args, Stream::DEFAULT), "v");
    // q likewise
    let mut args = Append::new(0, &[0], Tensor::host(&k, H, D, bhtd(12)), Tensor::host(&k, H, D, bhtd(12)),
                               Some(Tensor::host(&q_short, HQ, D, bhtd(12))));
    args.num_tokens = Some(&[12]);
    beyond_extent(cache.append(&args, Stream::DEFAULT), "q");
    assert_eq!(cache.seq_length(0, 0).unwrap(), (0, 0));
}

#[test]
fn packed_varlen_with_a_short_v_is_refused() {
    let mut cache = cache();
    let k = vec![0.5f32; elements(12, H)];
    let v = vec![0.5f32; elements(2, H)];
    let mut args = Append::new(0, &[0, 1], Tensor::host(&k, H, D, Layout::Packed), Tensor::host(&v, H, D, Layout::Packed), None);
    args.num_tokens = Some(&[6, 6]);
    args.token_offsets = Some(&[0, 6]);
    beyond_extent(cache.append(&args, Stream::DEFAULT), "v");
    // an offset one token past the end of k
    let mut args = Append::new(0, &[0], Tensor::host(&k, H, D, Layout::Packed), Tensor::host(&k, H, D, Layout::Packed), None);
    args.num_tokens = Some(&[2]);
    args.token_offsets = Some(&[11]);
    beyond_extent(cache.append(&args, Stream::DEFAULT), "k");
    assert_eq!(cache.seq_length(1, 0).unwrap(), (0, 0));
}

#[test]
fn more_heads_or_entries_than_the_slice_holds_are_refused() {
    let mut cache = cache();
    let one_head = vec![0.5f32; elements(1, 1)];
    let k = vec![0.5f32; elements(1, H)];
    // the layout says H heads, the slice holds one
    let args = Append::new(0, &[0], Tensor::host(&one_head, H, D, Layout::Decode), Tensor::host(&k, H, D, Layout::Decode), None);
    beyond_extent(cache.append(&args, Stream::DEFAULT), "k");
    // two entries of one decode step, slices of one
    let args = Append::new(0, &[0, 1], Tensor::host(&k, H, D, Layout::Decode), Tensor::host(&k, H, D, Layout::Decode), None);
    beyond_extent(cache.append(&args, Stream::DEFAULT), "k");
    assert_eq!(cache.seq_length(0, 0).unwrap(), (0, 0));
}

#[test]
fn empty_slices_and_short_count_slices_are_the_crate_s_errors() {
    let mut cache = cache();
    let k = vec![0.5f32; elements(1, H)];
    let empty: Vec<f32> = Vec::new();
    // An empty slice would reach the library as extent 0, "unchecked".
    let args = Append::new(0, &[0], Tensor::host(&empty, H, D, Layout::Decode), Tensor::host(&k, H, D, Layout::Decode), None);
    let e = cache.append(&args, Stream::DEFAULT).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m.starts_with("k: the slice is empty")), "{e}");
    let args = Append::new(0, &[0], Tensor::host(&k, H, D, Layout::Decode), Tensor::host(&k, H, D, Layout::Decode),
                           Some(Tensor::host(&empty, HQ, D, Layout::Decode)));
    let e = cache.append(&args, Stream::DEFAULT).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m.starts_with("q: the slice is empty")), "{e}");
    // The library reads one count per entry.
    let mut args = Append::new(0, &[0, 1], Tensor::host(&k, H, D, Layout::Packed), Tensor::host(&k, H, D, Layout::Packed), None);
    args.num_tokens = Some(&[1]);
    let e = cache.append(&args, Stream::DEFAULT).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("num_tokens has 1 entries for 2")), "{e}");
    assert_eq!(cache.seq_length(0, 0).unwrap(), (0, 0));
}

#[test]
fn strides_that_overflow_or_go_negative_are_refused() {
    let mut cache = cache();
    let k = vec![0.5f32; elements(1, H)];
    let far = Layout::Strided { seq: 0, token: 0, head: 1 << 50 };
    let args = Append::new(0, &[0], Tensor::host(&k, H, D, far), Tensor::host(&k, H, D, Layout::Decode), None);
    beyond_extent(cache.append(&args, Stream::DEFAULT), "k");
    let overflowing = Layout::Strided { seq: 0, token: 0, head: i64::MAX };
    let args = Append::new(0, &[0], Tensor::host(&k, H, D, overflowing), Tensor::host(&k, H, D, Layout::Decode), None);
    assert!(matches!(cache.append(&args, Stream::DEFAULT), Err(Error::Overflow(_))));
    let negative = Layout::Strided { seq: 0, token: 0, head: -(D as i64) };
    let args = Append::new(0, &[0], Tensor::host(&k, H, D, negative), Tensor::host(&k, H, D, Layout::Decode), None);
    assert_eq!(cache.append(&args, Stream::DEFAULT).unwrap_err().status(), sys::RKV_ERR_INVALID_ARGUMENT);
    assert_eq!(cache.seq_length(0, 0).unwrap(), (0, 0));
}

#[test]
fn attend_refuses_short_queries_and_outputs() {
    let mut cache = cache();
    let k = vec![0.25f32; elements(3, H)];
    let mut args = Append::new(0, &[0], Tensor::host(&k, H, D, Layout::Bhtd { tokens: 3 }),
                               Tensor::host(&k, H, D, Layout::Bhtd { tokens: 3 }), None);
    args.num_tokens = Some(&[3]);
    cache.append(&args, Stream::DEFAULT).unwrap();
    cache.append(&Append { seq_ids: &[1], ..args }, Stream::DEFAULT).unwrap();
    let q = vec![1.0f32; elements(1, HQ)];
    let q_short = vec![1.0f32; elements(1, HQ) - 1];
    let mut out_short = vec![-7.0f32; elements(1, HQ) - 1];
    let mut out = vec![-7.0f32; elements(1, HQ)];
    beyond_extent(cache.attend(0, &[0], &Tensor::host(&q_short, HQ, D, Layout::Decode),
                               &mut TensorMut::host(&mut out, HQ, D, Layout::Decode), 0.0, Stream::DEFAULT), "q");
    beyond_extent(cache.attend(0, &[0], &Tensor::host(&q, HQ, D, Layout::Decode),
                               &mut TensorMut::host(&mut out_short, HQ, D, Layout::Decode), 0.0, Stream::DEFAULT), "out");
    assert!(out_short.iter().all(|&x| x == -7.0), "a refused attend wrote its output");
    // two entries need two rows of q and out
    beyond_extent(cache.attend(0, &[0, 1], &Tensor::host(&q, HQ, D, Layout::Decode),
                               &mut TensorMut::host(&mut out, HQ, D, Layout::Decode), 0.0, Stream::DEFAULT), "q");
    assert!(out.iter().all(|&x| x == -7.0));
    cache.attend(0, &[0], &Tensor::host(&q, HQ, D, Layout::Decode), &mut TensorMut::host(&mut out, HQ, D, Layout::Decode),
                 0.0, Stream::DEFAULT).unwrap();
    assert!(out.iter().all(|&x| (x - 0.25).abs() < 1e-6), "attention over equal values is that value");
}
