//! Round trips through every layout, views, compression, stats, attention.
use librkv::{Append, Bf16, Cache, Dtype, Fp8E4m3, Layout, Method, Param, Params, Stream, Tensor, TensorMut, ALL, F16};

const H: i32 = 2;
const HQ: i32 = 4;
const D: i32 = 16;

fn params() -> Params {
    Params::new(4, 2, H, HQ, D).budget(16).buffer(8).window(4)
}

/// Deterministic pseudo-random values in [-1, 1).
fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Element (entry, head, token, dim) of a bhtd buffer.
fn at(x: &[f32], heads: i32, tokens: i32, e: i32, h: i32, t: i32) -> &[f32] {
    let start = (((e * heads + h) * tokens + t) * D) as usize;
    &x[start..start + D as usize]
}

#[test]
fn round_trip_prompt_then_decode() {
    let mut cache = Cache::new(&params()).unwrap();
    let (k, v, q) = (data((H * 10 * D) as usize, 1), data((H * 10 * D) as usize, 2), data((HQ * 10 * D) as usize, 3));
    let layout = Layout::Bhtd { tokens: 10 };
    let mut args = Append::new(1, &[2], Tensor::host(&k, H, D, layout), Tensor::host(&v, H, D, layout), Some(Tensor::host(&q, HQ, D, layout)));
    args.num_tokens = Some(&[10]);
    args.prompt = true;
    cache.append(&args, Stream::DEFAULT).unwrap();
    {
        let view = cache.view(2, 1).unwrap();
        assert_eq!((view.len(), view.logical_len()), (10, 10));
        assert_eq!(view.dtype(), Dtype::F32);
        for h in 0..H {
            let keys = view.keys::<f32>(h as usize).unwrap();
            let values = view.values::<f32>(h as usize).unwrap();
            for t in 0..10 {
                assert_eq!(&keys[(t * D) as usize..((t + 1) * D) as usize], at(&k, H, 10, 0, h, t));
                assert_eq!(&values[(t * D) as usize..((t + 1) * D) as usize], at(&v, H, 10, 0, h, t));
            }
            assert_eq!(view.positions(h as usize).unwrap(), (0..10).collect::<Vec<i32>>());
        }
        assert!(view.keys::<F16>(0).is_err(), "wrong element type must be refused");
    }
    // a decode step [n, H, D]
    let (k1, q1) = (data((H * D) as usize, 4), data((HQ * D) as usize, 5));
    let args = Append::new(1, &[2], Tensor::host(&k1, H, D, Layout::Decode), Tensor::host(&k1, H, D, Layout::Decode), Some(Tensor::host(&q1, HQ, D, Layout::Decode)));
    cache.append(&args, Stream::DEFAULT).unwrap();
    assert_eq!(cache.seq_length(2, 1).unwrap(), (11, 11));
    assert_eq!(cache.seq_length(2, 0).unwrap(), (0, 0));
    assert_eq!(&cache.view(2, 1).unwrap().keys::<f32>(1).unwrap()[(10 * D) as usize..], &k1[D as usize..]);
}

#[test]
fn layouts_agree() {
    let k = data((2 * H * 6 * D) as usize, 7);
    let q = data((2 * HQ * 6 * D) as usize, 8);
    // bhtd reference
    let mut a = Cache::new(&params()).unwrap();
    let bhtd = Layout::Bhtd { tokens: 6 };
    let mut args = Append::new(0, &[0, 1], Tensor::host(&k, H, D, bhtd), Tensor::host(&k, H, D, bhtd), Some(Tensor::host(&q, HQ, D, bhtd)));
    args.num_tokens = Some(&[6, 6]);
    a.append(&args, Stream::DEFAULT).unwrap();
    // the same tokens packed [total, H, D], and left padded (last 4 tokens of entry 1)
    let pack = |x: &[f32], heads: i32| {
        let mut out = Vec::new();
        for e in 0..2 {
            for t in 0..6 {
                for h in 0..heads {
                    out.extend_from_slice(at(x, heads, 6, e, h, t));
                }
            }
        }
        out
    };
    let (kp, qp) = (pack(&k, H), pack(&q, HQ));
    let mut b = Cache::new(&params()).unwrap();
    let mut args = Append::new(0, &[0, 1], Tensor::host(&kp, H, D, Layout::Packed), Tensor::host(&kp, H, D, Layout::Packed), Some(Tensor::host(&qp, HQ, D, Layout::Packed)));
    args.num_tokens = Some(&[6, 6]);
    args.token_offsets = Some(&[0, 6]);
    b.append(&args, Stream::DEFAULT).unwrap();
    let mut c = Cache::new(&params()).unwrap();
    let mut args = Append::new(0, &[0, 1], Tensor::host(&k, H, D, bhtd), Tensor::host(&k, H, D, bhtd), Some(Tensor::host(&q, HQ, D, bhtd)));
    args.num_tokens = Some(&[6, 4]);
    args.token_offsets = Some(&[0, 2]);
    c.append(&args, Stream::DEFAULT).unwrap();
    for seq in 0..2 {
        for h in 0..H as usize {
            assert_eq!(a.view(seq, 0).unwrap().keys::<f32>(h).unwrap(), b.view(seq, 0).unwrap().keys::<f32>(h).unwrap());
        }
    }
    let padded = c.view(1, 0).unwrap();
    assert_eq!(padded.logical_len(), 4);
    assert_eq!(padded.keys::<f32>(1).unwrap(), &a.view(1, 0).unwrap().keys::<f32>(1).unwrap()[(2 * D) as usize..]);
}

#[test]
fn half_inputs_and_bf16_storage() {
    let k: Vec<f32> = data((H * 3 * D) as usize, 9);
    let k16: Vec<Bf16> = k.iter().map(|&x| Bf16::from_f32(x)).collect();
    let mut cache = Cache::new(&params().dtype(Dtype::Bf16)).unwrap();
    let bhtd = Layout::Bhtd { tokens: 3 };
    let mut args = Append::new(0, &[0], Tensor::host(&k16, H, D, bhtd), Tensor::host(&k, H, D, bhtd), None);
    args.num_tokens = Some(&[3]);
    cache.append(&args, Stream::DEFAULT).unwrap();
    let view = cache.view(0, 0).unwrap();
    assert_eq!(view.dtype(), Dtype::Bf16);
    assert_eq!(view.keys::<Bf16>(0).unwrap(), &k16[..(3 * D) as usize]);
    assert_eq!(view.values::<Bf16>(0).unwrap(), &k16[..(3 * D) as usize]);
}

#[test]
fn fp8_storage_has_scales() {
    let k: Vec<f32> = data((H * 3 * D) as usize, 12).iter().map(|x| x * 5.0).collect();
    let mut cache = Cache::new(&params().dtype(Dtype::Fp8E4m3)).unwrap();
    let bhtd = Layout::Bhtd { tokens: 3 };
    let mut args = Append::new(0, &[0], Tensor::host(&k, H, D, bhtd), Tensor::host(&k, H, D, bhtd), None);
    args.num_tokens = Some(&[3]);
    cache.append(&args, Stream::DEFAULT).unwrap();
    let view = cache.view(0, 0).unwrap();
    assert_eq!(view.dtype(), Dtype::Fp8E4m3);
    let (bytes, scales) = (view.keys::<Fp8E4m3>(1).unwrap(), view.key_scales(1).unwrap());
    assert_eq!(scales.len(), 3);
    for t in 0..3usize {
        assert_eq!(scales[t], 2f32.powi(scales[t].log2() as i32)); // a power of two
        for e in 0..D as usize {
            let want = at(&k, H, 3, 0, 1, t as i32)[e];
            let got = bytes[t * D as usize + e].to_f32() * scales[t];
            assert!((got - want).abs() <= want.abs() / 16.0 + 1e-3, "{got} vs {want}");
        }
    }
    assert!(cache.view(0, 0).unwrap().value_scales(0).is_ok());
    let bf16 = Cache::new(&params().dtype(Dtype::Bf16)).unwrap();
    assert!(bf16.view(0, 0).unwrap().key_scales(0).is_err());
}

#[test]
fn compression_keeps_the_budget() {
    let mut cache = Cache::new(&params().method(Method::SnapKv)).unwrap();
    let n = 29;
    let (k, q) = (data((H * n * D) as usize, 10), data((HQ * n * D) as usize, 11));
    let l = Layout::Bhtd { tokens: n as i64 };
    let mut args = Append::new(0, &[0], Tensor::host(&k, H, D, l), Tensor::host(&k, H, D, l), Some(Tensor::host(&q, HQ, D, l)));
    let counts = [n];
    args.num_tokens = Some(&counts);
    cache.append(&args, Stream::DEFAULT).unwrap();
    cache.compress(0, 0, Stream::DEFAULT).unwrap();
    assert_eq!(cache.seq_length(0, 0).unwrap(), (n as i64, 16));
    let view = cache.view(0, 0).unwrap();
    for h in 0..H {
        let kept = cache.seq_positions(0, 0, h).unwrap();
        assert_eq!(kept, view.positions(h as usize).unwrap());
        assert_eq!(&kept[12..], &[n - 4, n - 3, n - 2, n - 1]); // the window stays
        assert!(kept.windows(2).all(|w| w[0] < w[1]));
    }
    let stats = cache.stats(0).unwrap();
    assert_eq!((stats.tokens_held, stats.tokens_appended, stats.tokens_evicted), (16, n as u64, n as u64 - 16));
    assert_eq!(cache.stats(ALL).unwrap().bytes_allocated, params().method(Method::SnapKv).size().unwrap());
    let layer = cache.view_layer(0).unwrap();
    assert_eq!(layer.capacity(), 24);
    assert_eq!(layer.lengths().unwrap(), &[16, 0, 0, 0]);
    assert_eq!(&layer.keys::<f32>(0, 1).unwrap()[..(16 * D) as usize], view.keys::<f32>(1).unwrap());
}

#[test]
fn due_reset_params() {
    let mut cache = Cache::new(&params().auto_compress(false)).unwrap();
    assert!(!cache.compress_due(0, 0).unwrap());
    let (k, q) = (data((H * 24 * D) as usize, 12), data((HQ * 24 * D) as usize, 13));
    let l = Layout::Bhtd { tokens: 24 };
    let mut args = Append::new(0, &[0], Tensor::host(&k, H, D, l), Tensor::host(&k, H, D, l), Some(Tensor::host(&q, HQ, D, l)));
    args.num_tokens = Some(&[24]);
    cache.append(&args, Stream::DEFAULT).unwrap();
    assert!(cache.compress_due(0, 0).unwrap() && cache.compress_due(ALL, ALL).unwrap());
    cache.compress(ALL, ALL, Stream::DEFAULT).unwrap();
    assert_eq!(cache.seq_length(0, 0).unwrap(), (24, 16));
    cache.seq_reset(0, Stream::DEFAULT).unwrap();
    assert_eq!(cache.seq_length(0, 0).unwrap(), (0, 0));
    cache.set(Param::Lambda, 0.25).unwrap();
    let p = cache.params().unwrap();
    assert_eq!(p.get(Param::Lambda).unwrap(), 0.25);
    assert_eq!(p.get(Param::Budget).unwrap(), 16.0);
    assert_eq!(Param::Kernel.bounds().unwrap(), (1.0, 255.0));
    assert_eq!(cache.get(Param::Lambda).unwrap(), 0.25);
    assert_eq!(Param::MaxRollback.bounds().unwrap(), (0.0, 1024.0));
    let rollback = Cache::new(&params().set(Param::MaxRollback, 6.0).unwrap()).unwrap();
    assert_eq!((rollback.get(Param::MaxRollback).unwrap(), rollback.params().unwrap().as_raw().max_rollback), (6.0, 6));
    assert_eq!(params().max_rollback(7).get(Param::MaxRollback).unwrap(), 7.0);
    let seeded = Cache::new(&params().method(Method::Random).seed(u64::MAX - 1)).unwrap();
    assert_eq!(seeded.params().unwrap().as_raw().seed, u64::MAX - 1);
}

#[test]
fn attend_matches_a_reference() {
    let mut cache = Cache::new(&params()).unwrap();
    let (k, v, q) = (data((H * 7 * D) as usize, 14), data((H * 7 * D) as usize, 15), data((HQ * 7 * D) as usize, 16));
    let l = Layout::Bhtd { tokens: 7 };
    let mut args = Append::new(0, &[3], Tensor::host(&k, H, D, l), Tensor::host(&v, H, D, l), Some(Tensor::host(&q, HQ, D, l)));
    args.num_tokens = Some(&[7]);
    cache.append(&args, Stream::DEFAULT).unwrap();
    let query = data((HQ * D) as usize, 17);
    let mut out = vec![0f32; (HQ * D) as usize];
    cache.attend(0, &[3], &Tensor::host(&query, HQ, D, Layout::Decode), &mut TensorMut::host(&mut out, HQ, D, Layout::Decode), 0.0, Stream::DEFAULT).unwrap();
    for h in 0..HQ {
        let g = h / (HQ / H);
        let qh = &query[(h * D) as usize..((h + 1) * D) as usize];
        let logits: Vec<f64> = (0..7).map(|t| at(&k, H, 7, 0, g, t).iter().zip(qh).map(|(a, b)| (*a as f64) * (*b as f64)).sum::<f64>() / (D as f64).sqrt()).collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let p: Vec<f64> = logits.iter().map(|x| (x - max).exp()).collect();
        let total: f64 = p.iter().sum();
        for e in 0..D as usize {
            let expected: f64 = (0..7).map(|t| p[t as usize] / total * at(&v, H, 7, 0, g, t)[e] as f64).sum();
            assert!((out[(h * D) as usize + e] as f64 - expected).abs() < 1e-4);
        }
    }
}

#[test]
fn cache_moves_to_another_thread() {
    let mut cache = Cache::new(&params()).unwrap();
    let k = data((H * D) as usize, 18);
    let handle = std::thread::spawn(move || {
        let args = Append::new(0, &[0], Tensor::host(&k, H, D, Layout::Decode), Tensor::host(&k, H, D, Layout::Decode), None);
        cache.append(&args, Stream::DEFAULT).unwrap();
        cache
    });
    let cache = handle.join().unwrap();
    assert_eq!(cache.seq_length(0, 0).unwrap(), (1, 1));
    drop(cache); // destroyed exactly once, here
}

#[test]
fn version_matches_the_header() {
    assert_eq!(librkv::version_number(), librkv::sys::RKV_VERSION_NUMBER);
    assert!(librkv::version().starts_with("0."));
}
