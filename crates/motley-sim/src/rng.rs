//! One seeded generator for every random choice of the simulator (SplitMix64: small,
//! fast, and the same sequence on every machine).

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A shared seeded generator.
#[derive(Clone, Debug)]
pub struct Rng(Arc<Mutex<u64>>);

impl Rng {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(Arc::new(Mutex::new(seed)))
    }

    /// The next 64 random bits.
    pub fn next_u64(&self) -> u64 {
        motley_rt::splitmix64(&mut self.0.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// True with probability `p`.
    pub fn chance(&self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    /// Uniform in `0..=max`.
    pub fn duration(&self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64 + 1))
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&self, lo: Duration, hi: Duration) -> Duration {
        lo + self.duration(hi.saturating_sub(lo))
    }

    /// One of `items`.
    pub fn pick<'a, T>(&self, items: &'a [T]) -> Option<&'a T> {
        items.get(self.below(items.len() as u64) as usize)
    }

    /// A generator for a part of the world, drawn from this one.
    pub fn fork(&self) -> Rng {
        Rng::new(self.next_u64())
    }
}
