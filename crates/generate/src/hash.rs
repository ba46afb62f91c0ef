//! Stable hashes for seeds (never std's `DefaultHasher`, whose output may
//! change between Rust releases).

/// 64-bit FNV-1a.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// SplitMix64 finalizer: spreads the bits of `x`.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

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
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(item_seed(42, "1", 0), item_seed(42, "1", 0));
        assert_ne!(item_seed(42, "1", 0), item_seed(42, "1", 1));
        assert_ne!(item_seed(42, "1", 0), item_seed(43, "1", 0));
    }
}
