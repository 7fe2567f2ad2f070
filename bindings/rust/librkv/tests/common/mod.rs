//! Helpers shared by the tests of sequences and batches: deterministic tokens
//! and a snapshot of everything a sequence holds.
#![allow(dead_code)] // each test file uses its own part

use librkv::Cache;

/// Deterministic values in [-1, 1) for one token of `heads` x `dim`: its
/// position, layer, which tensor (0 K, 1 V, 2 Q) and stream (0 the real
/// tokens, others drafts or noise).
pub fn token(position: i64, layer: i32, which: u64, stream: u64, heads: i32, dim: i32) -> Vec<f32> {
    let mut state = (position as u64 * 1_000_003 + layer as u64 * 7919 + which * 131 + stream * 17 + 1)
        .wrapping_mul(6364136223846793005);
    (0..heads * dim)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// What one layer of a sequence holds: lengths, then per head K, V and
/// positions (f32 storage).
#[derive(Debug, PartialEq)]
pub struct LayerSnapshot {
    logical: i64,
    physical: i32,
    keys: Vec<Vec<f32>>,
    values: Vec<Vec<f32>>,
    positions: Vec<Vec<i32>>,
}

/// Everything a sequence holds, per layer.
#[derive(Debug, PartialEq)]
pub struct Snapshot(Vec<LayerSnapshot>);

pub fn snapshot(cache: &Cache, seq: i32) -> Snapshot {
    let p = cache.params().unwrap();
    let (layers, heads) = (p.as_raw().num_layers, p.as_raw().num_kv_heads as usize);
    Snapshot(
        (0..layers)
            .map(|layer| {
                let (logical, physical) = cache.seq_length(seq, layer).unwrap();
                let view = cache.view(seq, layer).unwrap();
                LayerSnapshot {
                    logical,
                    physical,
                    keys: (0..heads).map(|h| view.keys::<f32>(h).unwrap().to_vec()).collect(),
                    values: (0..heads).map(|h| view.values::<f32>(h).unwrap().to_vec()).collect(),
                    positions: (0..heads).map(|h| view.positions(h).unwrap().to_vec()).collect(),
                }
            })
            .collect(),
    )
}
