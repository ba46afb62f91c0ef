//! The one random generator of tailforge: SplitMix64 (Steele, Lea & Flood,
//! "Fast splittable pseudorandom number generators", OOPSLA 2014), written out
//! here so that eval-v1's sampled negatives, SASRec's initial weights and
//! batch order, and generate's sampler seeds do not depend on a crate's
//! version. Every stream is derived from a run seed with [`mix64`]; the
//! evaluator's negatives are pinned by EVAL.md's check figures, so this code
//! must not change its outputs.

/// SplitMix64's state increment γ (the odd integer nearest 2⁶⁴/φ).
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function (a bijective 64-bit mixer).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first output of `SplitMix64::new(x)`: spreads the bits of `x`
/// (`mix64(x + γ)`), so that 0 does not map to 0.
pub fn splitmix64(x: u64) -> u64 {
    SplitMix64::output_at(x, 0)
}

/// SplitMix64: a tiny, well-mixed 64-bit generator.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN_GAMMA);
        mix64(self.state)
    }

    /// The `index`-th output (from 0) of `SplitMix64::new(seed)`, reached
    /// directly: the state after `index + 1` steps is `seed + (index + 1)·γ`,
    /// so a stream can be read at any position, in parallel.
    pub fn output_at(seed: u64, index: u64) -> u64 {
        mix64(seed.wrapping_add(index.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA)))
    }

    /// Uniform in `0..n` (`n > 0`), without modulo bias: Lemire's
    /// multiply-and-reject method on [`SplitMix64::next_u64`].
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let mut m = u128::from(self.next_u64()) * u128::from(n);
        if (m as u64) < n {
            let threshold = n.wrapping_neg() % n;
            while (m as u64) < threshold {
                m = u128::from(self.next_u64()) * u128::from(n);
            }
        }
        (m >> 64) as u64
    }

    /// Uniform in [0, 1), from the top 53 bits.
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_at_reads_the_stream_at_any_position() {
        let mut stream = SplitMix64::new(0xDEAD_BEEF);
        for index in 0..100 {
            assert_eq!(SplitMix64::output_at(0xDEAD_BEEF, index), stream.next_u64(), "output {index}");
        }
    }

    #[test]
    fn lemire_below_stays_in_range() {
        let mut rng = SplitMix64::new(7);
        for n in [1u64, 2, 3, 10, 1682, u64::MAX] {
            for _ in 0..1000 {
                assert!(rng.below(n) < n);
            }
        }
    }

    #[test]
    fn reference_stream() {
        // The reference SplitMix64 stream for seed 0 starts 0xE220A8397B1DCDAF.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }
}
