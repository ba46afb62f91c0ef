//! The sampler seed of each generation attempt, from core's stable hashes
//! ([`tailforge_core::hash`], [`tailforge_core::rng`]; never std's
//! `DefaultHasher`, whose output may change between Rust releases).

use tailforge_core::hash::fnv1a64;
use tailforge_core::rng::splitmix64;

/// The sampler seed of one attempt at one item.
pub fn item_seed(run_seed: u64, item_key: &str, attempt: u32) -> u32 {
    let h = splitmix64(run_seed ^ fnv1a64(item_key.as_bytes()));
    let h = splitmix64(h ^ u64::from(attempt).wrapping_mul(0xd1b5_4a32_d192_ed03));
    (h >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_values() {
        assert_eq!(item_seed(42, "1", 0), item_seed(42, "1", 0));
        assert_ne!(item_seed(42, "1", 0), item_seed(42, "1", 1));
        assert_ne!(item_seed(42, "1", 0), item_seed(43, "1", 0));
    }
}
