//! A small seeded generator (SplitMix64): the harness needs reproducible choices (which key,
//! which worker to kill, when), not cryptographic randomness, and the workspace has no `rand`.

use std::time::Duration;

/// SplitMix64: one `u64` of state, every output a bijective mix of it.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator whose whole sequence is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0). The modulo bias is irrelevant at these sizes.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// An index into a slice of `len` elements (0 when `len` is 0).
    pub(crate) fn index(&mut self, len: usize) -> usize {
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        usize::try_from(self.below(len)).unwrap_or(0)
    }

    /// `mean` jittered uniformly over `[mean/2, 3·mean/2]`, so that periodic faults do not fall
    /// into step with the workers' own rhythm.
    pub(crate) fn jitter(&mut self, mean: Duration) -> Duration {
        let ms = u64::try_from(mean.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(ms / 2 + self.below(ms + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence_and_bounds_hold() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        for _ in 0..1000 {
            assert_eq!(a.next_u64(), b.next_u64());
            assert!(a.below(10) < 10);
            b.below(10);
            let j = a.jitter(Duration::from_millis(300));
            b.jitter(Duration::from_millis(300));
            assert!(j >= Duration::from_millis(150) && j <= Duration::from_millis(450));
        }
        assert_eq!(a.below(0), 0);
        assert_eq!(a.index(0), 0);
    }
}
