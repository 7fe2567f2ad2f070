//! Batches (issue 10, point 4): decode steps through a batch whose members
//! change, padding included, hold and attend bit for bit as the same steps
//! made with host ids; several steps, one advance; a step past a sequence's
//! capacity faults the cache at the advance; bad input (ids out of range,
//! repeated, too many; another cache's batch; extents too small; missing
//! queries) is a typed error and leaves the batch and the cache as they were.
mod common;

use common::{snapshot, token};
use librkv::{Append, Batch, Cache, Error, Layout, Method, Params, Stream, Tensor, TensorMut, ALL};

const SEQS: i32 = 5;
const ENTRIES: usize = 4;
const LAYERS: i32 = 2;
const H: i32 = 2;
const HQ: i32 = 4;
const D: i32 = 8;
const KV_ROW: usize = (H * D) as usize;
const Q_ROW: usize = (HQ * D) as usize;

fn params(method: Method) -> Params {
    Params::new(SEQS, LAYERS, H, HQ, D).method(method).budget(12).buffer(6).window(3).kernel(3).sink(2).max_len(64)
}

/// One decode step's rows, one per batch entry ([ENTRIES, heads, D]): the
/// next token of each entry's sequence; padding rows hold huge values that
/// no sequence may ever see.
struct Rows {
    k: Vec<f32>,
    v: Vec<f32>,
    q: Vec<f32>,
}

fn rows(cache: &Cache, ids: &[i32; ENTRIES], layer: i32) -> Rows {
    let mut r = Rows { k: vec![1e30; ENTRIES * KV_ROW], v: vec![1e30; ENTRIES * KV_ROW], q: vec![1e30; ENTRIES * Q_ROW] };
    for (i, &seq) in ids.iter().enumerate() {
        if seq < 0 {
            continue;
        }
        let position = cache.seq_length(seq, layer).unwrap().0;
        r.k[i * KV_ROW..][..KV_ROW].copy_from_slice(&token(position, layer, 0, 0, H, D));
        r.v[i * KV_ROW..][..KV_ROW].copy_from_slice(&token(position, layer, 1, 0, H, D));
        r.q[i * Q_ROW..][..Q_ROW].copy_from_slice(&token(position, layer, 2, 0, HQ, D));
    }
    r
}

fn decode(data: &[f32], heads: i32) -> Tensor<'_> {
    Tensor::host(data, heads, D, Layout::Decode)
}

/// The same step with host ids: the non-padding entries, one call each
/// (append then attend); returns each entry's attention output.
fn eager_step(cache: &mut Cache, ids: &[i32; ENTRIES], layer: i32, r: &Rows) -> Vec<Option<Vec<f32>>> {
    (0..ENTRIES)
        .map(|i| {
            let seq = ids[i];
            if seq < 0 {
                return None;
            }
            let (k, v, q) = (&r.k[i * KV_ROW..][..KV_ROW], &r.v[i * KV_ROW..][..KV_ROW], &r.q[i * Q_ROW..][..Q_ROW]);
            let seqs = [seq];
            cache.append(&Append::new(layer, &seqs, decode(k, H), decode(v, H), Some(decode(q, HQ))), Stream::DEFAULT).unwrap();
            let mut out = vec![0f32; Q_ROW];
            cache.attend(layer, &seqs, &decode(q, HQ), &mut TensorMut::host(&mut out, HQ, D, Layout::Decode), 0.0, Stream::DEFAULT)
                .unwrap();
            Some(out)
        })
        .collect()
}

fn compress_due(cache: &mut Cache) {
    if cache.compress_due(ALL, ALL).unwrap() {
        cache.compress(ALL, ALL, Stream::DEFAULT).unwrap();
    }
}

/// Up to ENTRIES distinct sequences in random entries, the rest padding.
fn draw(rng: &mut u64, ids: &mut [i32; ENTRIES]) {
    let mut next = || {
        *rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (*rng >> 33) as usize
    };
    *ids = [-1; ENTRIES];
    let mut pool: Vec<i32> = (0..SEQS).collect();
    for _ in 0..1 + next() % ENTRIES {
        let seq = pool.swap_remove(next() % pool.len());
        let free: Vec<usize> = (0..ENTRIES).filter(|&i| ids[i] < 0).collect();
        ids[free[next() % free.len()]] = seq;
    }
}

#[test]
fn batch_steps_equal_steps_with_host_ids() {
    for method in [Method::Rkv, Method::H2o, Method::StreamingLlm, Method::Full] {
        let p = params(method);
        let (mut batched, mut eager) = (Cache::new(&p).unwrap(), Cache::new(&p).unwrap());
        let (mut batch, batched) = Batch::new(&mut batched, ENTRIES as i32).unwrap();
        let mut ids = [-1; ENTRIES];
        let mut rng = 7 + method as u64;
        let steps = if method == Method::Full { 40 } else { 60 };
        for step in 0..steps {
            if step % 3 == 0 {
                draw(&mut rng, &mut ids);
                let members: Vec<i32> = ids.to_vec();
                batch.set(batched, &members, Stream::DEFAULT).unwrap();
            }
            compress_due(batched);
            compress_due(&mut eager);
            for layer in 0..LAYERS {
                let r = rows(&eager, &ids, layer);
                let expected = eager_step(&mut eager, &ids, layer, &r);
                batched.append_batch(&batch, layer, decode(&r.k, H), decode(&r.v, H), Some(decode(&r.q, HQ)), Stream::DEFAULT).unwrap();
                let mut out = vec![-7f32; ENTRIES * Q_ROW];
                batched.attend_batch(&batch, layer, &decode(&r.q, HQ), &mut TensorMut::host(&mut out, HQ, D, Layout::Decode), 0.0,
                                     Stream::DEFAULT).unwrap();
                for (i, want) in expected.iter().enumerate() {
                    let got = &out[i * Q_ROW..][..Q_ROW];
                    match want {
                        Some(want) => assert_eq!(got, &want[..], "{method:?} step {step} layer {layer} entry {i}"),
                        None => assert!(got.iter().all(|&x| x == -7.0), "a padding row was written"),
                    }
                }
            }
            batch.advance(batched, 1).unwrap();
            for seq in 0..SEQS {
                assert_eq!(snapshot(batched, seq), snapshot(&eager, seq), "{method:?} step {step} sequence {seq}");
            }
        }
        assert!(method == Method::Full || batched.stats(ALL).unwrap().compressions > 0, "{method:?} never compressed");
    }
}

#[test]
fn several_steps_one_advance_and_several_batches() {
    let p = params(Method::H2o);
    let (mut batched, mut eager) = (Cache::new(&p).unwrap(), Cache::new(&p).unwrap());
    let (mut wide, batched) = Batch::new(&mut batched, ENTRIES as i32).unwrap();
    let (mut narrow, batched) = Batch::new(batched, 1).unwrap(); // a second batch, alive with the first
    let ids = [3, -1, 0, -1];
    wide.set(batched, &ids[..3], Stream::DEFAULT).unwrap(); // the 4th entry is padding anyway
    narrow.set(batched, &[1], Stream::DEFAULT).unwrap();
    for _ in 0..3 {
        for layer in 0..LAYERS {
            let r = rows(&eager, &ids, layer);
            eager_step(&mut eager, &ids, layer, &r);
            batched.append_batch(&wide, layer, decode(&r.k, H), decode(&r.v, H), Some(decode(&r.q, HQ)), Stream::DEFAULT).unwrap();
        }
    }
    assert_eq!(batched.seq_length(3, 1).unwrap().0, 0, "the host has not heard of the steps yet");
    wide.advance(batched, 3).unwrap();
    // one step of the narrow batch, for sequence 1
    let one = [1, -1, -1, -1];
    for layer in 0..LAYERS {
        let r = rows(&eager, &one, layer);
        eager_step(&mut eager, &one, layer, &r);
        let (k, v, q) = (&r.k[..KV_ROW], &r.v[..KV_ROW], &r.q[..Q_ROW]);
        batched.append_batch(&narrow, layer, decode(k, H), decode(v, H), Some(decode(q, HQ)), Stream::DEFAULT).unwrap();
    }
    narrow.advance(batched, 1).unwrap();
    wide.advance(batched, 0).unwrap(); // nothing
    for seq in 0..SEQS {
        assert_eq!(snapshot(batched, seq), snapshot(&eager, seq), "sequence {seq}");
    }
    drop(narrow);
    drop(wide);
}

#[test]
fn a_step_past_the_capacity_faults_the_cache_at_the_advance() {
    let p = params(Method::StreamingLlm);
    let mut cache = Cache::new(&p).unwrap();
    let (mut batch, cache) = Batch::new(&mut cache, 2).unwrap();
    batch.set(cache, &[-1, 2], Stream::DEFAULT).unwrap();
    let row = token(0, 0, 0, 0, H, D);
    let two: Vec<f32> = row.iter().chain(&row).copied().collect();
    for _ in 0..12 + 6 + 1 {
        // no compression: the last step finds sequence 2 full
        cache.append_batch(&batch, 0, decode(&two, H), decode(&two, H), None, Stream::DEFAULT).unwrap();
    }
    match batch.advance(cache, 12 + 6 + 1) {
        Err(Error::Capacity(message)) => assert!(message.contains("sequence 2"), "{message}"),
        other => panic!("expected Capacity naming sequence 2, got {other:?}"),
    }
    assert!(matches!(cache.compress_due(ALL, ALL), Err(Error::Faulted(_))));
    assert!(matches!(batch.set(cache, &[0], Stream::DEFAULT), Err(Error::Faulted(_))));
}

#[test]
fn bad_batch_input_is_refused_and_changes_nothing() {
    let p = params(Method::Rkv);
    let (mut cache, mut other) = (Cache::new(&p).unwrap(), Cache::new(&p).unwrap());
    let mut eager = Cache::new(&p).unwrap();
    for seq in 0..SEQS {
        for c in [&mut cache, &mut eager] {
            for layer in 0..LAYERS {
                let t: Vec<f32> = (0..4).flat_map(|pos| token(pos, layer, 0, 0, H, D)).collect();
                let q: Vec<f32> = (0..4).flat_map(|pos| token(pos, layer, 2, 0, HQ, D)).collect();
                let l = Layout::Bthd { tokens: 4 };
                let mut args = Append::new(layer, std::slice::from_ref(&seq), Tensor::host(&t, H, D, l), Tensor::host(&t, H, D, l),
                                           Some(Tensor::host(&q, HQ, D, l)));
                args.num_tokens = Some(&[4]);
                c.append(&args, Stream::DEFAULT).unwrap();
            }
        }
    }
    for entries in [0, 65536, -1] {
        assert!(matches!(Batch::new(&mut cache, entries), Err(Error::OutOfRange(_))), "{entries} entries");
    }
    let (mut foreign, _) = Batch::new(&mut other, ENTRIES as i32).unwrap();
    let (mut batch, cache) = Batch::new(&mut cache, ENTRIES as i32).unwrap();
    assert_eq!(batch.entries(), ENTRIES);
    let good = [1, -1, 4, 0];
    batch.set(cache, &good, Stream::DEFAULT).unwrap();

    // ids out of range, repeated, too many: the batch keeps `good`
    for ids in [&[1, SEQS, 4, 0][..], &[1, -2, 4, 0], &[i32::MAX, 1, 2, 3]] {
        assert!(matches!(batch.set(cache, ids, Stream::DEFAULT), Err(Error::OutOfRange(_))), "{ids:?}");
    }
    assert!(matches!(batch.set(cache, &[1, -1, 1, 0], Stream::DEFAULT), Err(Error::InvalidArgument(_))), "repeated");
    assert!(matches!(batch.set(cache, &[0, 1, 2, 3, 4], Stream::DEFAULT), Err(Error::InvalidArgument(_))), "too many");
    assert!(matches!(batch.advance(cache, -1), Err(Error::InvalidArgument(_))));
    // another cache's batch, here and in the library
    let e = foreign.set(cache, &good, Stream::DEFAULT).unwrap_err();
    assert!(matches!(&e, Error::InvalidArgument(m) if m.contains("another cache")), "{e}");
    assert!(matches!(foreign.advance(cache, 1), Err(Error::InvalidArgument(_))));
    let r = rows(&eager, &good, 0);
    let append = |c: &mut Cache, b: &Batch, k: &[f32], q: Option<&[f32]>| {
        c.append_batch(b, 0, decode(k, H), decode(&r.v, H), q.map(|q| decode(q, HQ)), Stream::DEFAULT)
    };
    assert!(matches!(append(cache, &foreign, &r.k, Some(&r.q)), Err(Error::InvalidArgument(_))));
    // a row short (the last entry's, padding or not), queries missing, a layer out of range
    match append(cache, &batch, &r.k[..r.k.len() - 1], Some(&r.q)) {
        Err(Error::Capacity(m)) => assert!(m.contains("args->k.extent"), "{m}"),
        other => panic!("expected Capacity for a short k, got {other:?}"),
    }
    assert!(matches!(append(cache, &batch, &r.k, None), Err(Error::MissingQueries(_))));
    assert!(matches!(
        cache.append_batch(&batch, LAYERS, decode(&r.k, H), decode(&r.v, H), Some(decode(&r.q, HQ)), Stream::DEFAULT),
        Err(Error::OutOfRange(_))
    ));
    let mut out = vec![-7f32; ENTRIES * Q_ROW];
    let short = ENTRIES * Q_ROW - 1;
    match cache.attend_batch(&batch, 0, &decode(&r.q, HQ), &mut TensorMut::host(&mut out[..short], HQ, D, Layout::Decode), 0.0,
                             Stream::DEFAULT) {
        Err(Error::Capacity(m)) => assert!(m.contains("args->out.extent"), "{m}"),
        other => panic!("expected Capacity for a short out, got {other:?}"),
    }
    assert!(out.iter().all(|&x| x == -7.0), "a refused attend wrote its output");
    assert!(matches!(
        cache.attend_batch(&foreign, 0, &decode(&r.q, HQ), &mut TensorMut::host(&mut out, HQ, D, Layout::Decode), 0.0, Stream::DEFAULT),
        Err(Error::InvalidArgument(_))
    ));
    for seq in 0..SEQS {
        assert_eq!(snapshot(cache, seq), snapshot(&eager, seq), "a refused call changed sequence {seq}");
    }

    // The refused sets left the batch as set: a step with it equals one with `good`.
    for layer in 0..LAYERS {
        let r = rows(&eager, &good, layer);
        eager_step(&mut eager, &good, layer, &r);
        cache.append_batch(&batch, layer, decode(&r.k, H), decode(&r.v, H), Some(decode(&r.q, HQ)), Stream::DEFAULT).unwrap();
    }
    batch.advance(cache, 1).unwrap();
    for seq in 0..SEQS {
        assert_eq!(snapshot(cache, seq), snapshot(&eager, seq), "sequence {seq} after the refused calls");
    }
}
