//! Calls on one sequence (issue 10, points 1-3): rollback (seq_truncate and
//! its limit), fork (seq_copy), per-request budgets (seq_set_budget), each
//! with its bad input as a typed error that leaves the cache unchanged.
mod common;

use common::{snapshot, token};
use librkv::{Append, Cache, Error, Layout, Method, Params, Stream, Tensor};

const SEQS: i32 = 4;
const LAYERS: i32 = 2;
const H: i32 = 2;
const HQ: i32 = 4;
const D: i32 = 8;
const BUDGET: i32 = 12;
const BUFFER: i32 = 6;
const WINDOW: i32 = 3;

fn params(method: Method) -> Params {
    Params::new(SEQS, LAYERS, H, HQ, D).method(method).budget(BUDGET).buffer(BUFFER).window(WINDOW).kernel(3).sink(2)
}

/// Append `count` tokens from `position` on of `stream` to every layer of
/// `seq`, as one chunk per layer ([1, tokens, heads, D]) with queries.
fn feed(cache: &mut Cache, seq: i32, position: i64, count: i32, stream: u64) -> librkv::Result<()> {
    for layer in 0..LAYERS {
        let rows = |which, heads| -> Vec<f32> {
            (0..count as i64).flat_map(|t| token(position + t, layer, which, stream, heads, D)).collect()
        };
        let (k, v, q) = (rows(0, H), rows(1, H), rows(2, HQ));
        let l = Layout::Bthd { tokens: count as i64 };
        let mut args = Append::new(layer, std::slice::from_ref(&seq), Tensor::host(&k, H, D, l), Tensor::host(&v, H, D, l),
                                   Some(Tensor::host(&q, HQ, D, l)));
        let counts = [count];
        args.num_tokens = Some(&counts);
        cache.append(&args, Stream::DEFAULT)?;
    }
    Ok(())
}

#[test]
fn drafts_rolled_back_leave_the_cache_as_if_they_never_came() {
    const DRAFTS: i32 = 2;
    const REAL: i32 = 3;
    for method in [Method::Rkv, Method::SnapKv, Method::H2o, Method::StreamingLlm, Method::KeyDiff, Method::Full] {
        let p = params(method).max_rollback(4).max_len(64);
        let capacity = if method == Method::Full { 64 } else { BUDGET + BUFFER };
        let (mut drafted, mut plain) = (Cache::new(&p).unwrap(), Cache::new(&p).unwrap());
        let (mut position, mut rollbacks) = (0, 0);
        for step in 0..16 {
            // speculative decoding: drafts that do not fit without a
            // compression are not made (a compressed token cannot come back)
            if drafted.seq_length(1, 0).unwrap().1 + DRAFTS <= capacity {
                feed(&mut drafted, 1, position, DRAFTS, 9).unwrap();
                let limit = drafted.seq_rollback_limit(1).unwrap();
                assert!(limit >= DRAFTS, "{method:?}, step {step}: limit {limit}");
                drafted.seq_truncate(1, DRAFTS, Stream::DEFAULT).unwrap();
                rollbacks += 1;
            }
            feed(&mut drafted, 1, position, REAL, 0).unwrap();
            feed(&mut plain, 1, position, REAL, 0).unwrap();
            position += REAL as i64;
            assert_eq!(snapshot(&drafted, 1), snapshot(&plain, 1), "{method:?}, step {step}");
            let counts = |c: &Cache| {
                let s = c.stats(1).unwrap();
                (s.tokens_appended, s.tokens_held, s.tokens_evicted, s.compressions)
            };
            assert_eq!(counts(&drafted), counts(&plain), "{method:?}, step {step}: the statistics");
        }
        assert!(rollbacks >= 8, "{method:?}: {rollbacks} rollbacks");
        assert!(method == Method::Full || drafted.stats(1).unwrap().compressions > 0, "{method:?} never compressed");
    }
}

#[test]
fn truncating_more_than_the_limit_is_refused() {
    let mut cache = Cache::new(&params(Method::Rkv).max_rollback(2)).unwrap();
    feed(&mut cache, 0, 0, BUDGET + BUFFER, 0).unwrap(); // full, not yet compressed
    feed(&mut cache, 0, (BUDGET + BUFFER) as i64, 2, 0).unwrap(); // compresses, then 2 more
    let limit = cache.seq_rollback_limit(0).unwrap();
    assert_eq!(limit, 2, "the 2 tokens since the compression");
    let before = snapshot(&cache, 0);
    match cache.seq_truncate(0, limit + 1, Stream::DEFAULT) {
        Err(Error::BadState(message)) => assert!(message.contains(&limit.to_string()), "{message}"),
        other => panic!("expected BadState naming the limit, got {other:?}"),
    }
    assert!(matches!(cache.seq_truncate(0, -1, Stream::DEFAULT), Err(Error::InvalidArgument(_))));
    assert!(matches!(cache.seq_truncate(SEQS, 1, Stream::DEFAULT), Err(Error::OutOfRange(_))));
    assert!(matches!(cache.seq_rollback_limit(-1), Err(Error::OutOfRange(_))));
    assert_eq!(snapshot(&cache, 0), before, "a refused truncate changed the sequence");
    cache.seq_truncate(0, 0, Stream::DEFAULT).unwrap(); // nothing
    cache.seq_truncate(0, limit, Stream::DEFAULT).unwrap();
    assert_eq!(cache.seq_length(0, 1).unwrap(), ((BUDGET + BUFFER) as i64, BUDGET));
    assert_eq!(cache.seq_rollback_limit(0).unwrap(), 0);
    // without max_rollback, a method that keeps queries rolls nothing back once its window is full
    let mut strict = Cache::new(&params(Method::SnapKv)).unwrap();
    feed(&mut strict, 0, 0, WINDOW + 2, 0).unwrap();
    assert_eq!(strict.seq_rollback_limit(0).unwrap(), 0);
    assert!(matches!(strict.seq_truncate(0, 1, Stream::DEFAULT), Err(Error::BadState(_))));
}

#[test]
fn a_fork_holds_what_its_source_holds_and_then_goes_its_own_way() {
    for method in [Method::Rkv, Method::H2o, Method::KeyDiff, Method::Full] {
        let mut cache = Cache::new(&params(method).max_len(64)).unwrap();
        let mut reference = Cache::new(&params(method).max_len(64)).unwrap();
        let mut position = 0;
        for count in [5, 7, 9] {
            feed(&mut cache, 0, position, count, 0).unwrap();
            feed(&mut reference, 2, position, count, 0).unwrap();
            position += count as i64;
        }
        let source = snapshot(&cache, 0);
        cache.seq_copy(0, 2, Stream::DEFAULT).unwrap();
        assert_eq!(snapshot(&cache, 0), source, "{method:?}: the source changed");
        assert_eq!(snapshot(&cache, 2), source, "{method:?}: the fork differs from its source");
        // both branches take the same tokens: they stay equal, and equal to a
        // sequence that took them all from the start
        for count in [4, 6, 1] {
            feed(&mut cache, 0, position, count, 0).unwrap();
            feed(&mut cache, 2, position, count, 0).unwrap();
            feed(&mut reference, 2, position, count, 0).unwrap();
            position += count as i64;
            assert_eq!(snapshot(&cache, 2), snapshot(&cache, 0), "{method:?}");
            assert_eq!(snapshot(&cache, 2), snapshot(&reference, 2), "{method:?}");
        }
        // then they diverge: another token on the fork leaves the source alone
        let source = snapshot(&cache, 0);
        feed(&mut cache, 2, position, 1, 5).unwrap();
        assert_eq!(snapshot(&cache, 0), source, "{method:?}: the fork is not independent");
        assert_ne!(snapshot(&cache, 2), source);
    }
}

#[test]
fn copying_onto_a_busy_or_the_same_slot_is_refused() {
    let mut cache = Cache::new(&params(Method::Rkv)).unwrap();
    feed(&mut cache, 0, 0, 8, 0).unwrap();
    feed(&mut cache, 1, 0, 1, 0).unwrap();
    let (zero, one) = (snapshot(&cache, 0), snapshot(&cache, 1));
    assert!(matches!(cache.seq_copy(0, 1, Stream::DEFAULT), Err(Error::BadState(_))), "onto a busy slot");
    assert!(matches!(cache.seq_copy(0, 0, Stream::DEFAULT), Err(Error::InvalidArgument(_))), "onto itself");
    assert!(matches!(cache.seq_copy(3, 3, Stream::DEFAULT), Err(Error::InvalidArgument(_))), "an empty slot onto itself");
    assert!(matches!(cache.seq_copy(0, SEQS, Stream::DEFAULT), Err(Error::OutOfRange(_))));
    assert!(matches!(cache.seq_copy(-1, 2, Stream::DEFAULT), Err(Error::OutOfRange(_))));
    assert!(matches!(cache.seq_copy(0, librkv::ALL, Stream::DEFAULT), Err(Error::OutOfRange(_))));
    assert_eq!((snapshot(&cache, 0), snapshot(&cache, 1)), (zero, one));
    assert_eq!(cache.seq_length(2, 0).unwrap(), (0, 0));
}

#[test]
fn a_sequence_compresses_to_its_own_budget() {
    let mut cache = Cache::new(&params(Method::Rkv)).unwrap();
    let small = WINDOW + 2;
    cache.seq_set_budget(1, small).unwrap();
    assert_eq!((cache.seq_budget(1).unwrap(), cache.seq_budget(0).unwrap()), (small, BUDGET));
    feed(&mut cache, 0, 0, small + BUFFER + 1, 0).unwrap();
    feed(&mut cache, 1, 0, small + BUFFER + 1, 0).unwrap();
    // sequence 1 was full at small + buffer and compressed to `small` first
    assert_eq!(cache.seq_length(1, 0).unwrap(), ((small + BUFFER + 1) as i64, small + 1));
    assert_eq!(cache.seq_length(0, 0).unwrap(), ((small + BUFFER + 1) as i64, small + BUFFER + 1));
    // a fork keeps its source's budget; a reset gives the cache's back
    cache.seq_copy(1, 2, Stream::DEFAULT).unwrap();
    assert_eq!(cache.seq_budget(2).unwrap(), small);
    cache.seq_reset(1, Stream::DEFAULT).unwrap();
    assert_eq!(cache.seq_budget(1).unwrap(), BUDGET);
}

#[test]
fn budgets_outside_their_bounds_or_on_a_busy_slot_are_refused() {
    let mut cache = Cache::new(&params(Method::Rkv)).unwrap();
    for budget in [BUDGET + 1, WINDOW, 0, -1] {
        match cache.seq_set_budget(0, budget) {
            Err(Error::OutOfRange(message)) => assert!(message.contains(&BUDGET.to_string()), "{message}"),
            other => panic!("budget {budget}: expected OutOfRange with the bounds, got {other:?}"),
        }
    }
    assert_eq!(cache.seq_budget(0).unwrap(), BUDGET);
    feed(&mut cache, 0, 0, 1, 0).unwrap();
    assert!(matches!(cache.seq_set_budget(0, BUDGET - 1), Err(Error::BadState(_))), "a busy slot");
    assert!(matches!(cache.seq_set_budget(SEQS, BUDGET - 1), Err(Error::OutOfRange(_))));
    assert!(matches!(cache.seq_budget(SEQS), Err(Error::OutOfRange(_))));
    assert_eq!(cache.seq_budget(0).unwrap(), BUDGET);
    let mut full = Cache::new(&params(Method::Full).max_len(32)).unwrap();
    assert!(matches!(full.seq_set_budget(0, 8), Err(Error::Unsupported(_))));
    assert_eq!(full.seq_budget(0).unwrap(), 32);
}
