//! Independent, reproducible random streams for every randomised step of a run. Each stream is
//! keyed by the run's seed, the step and its position (fit, bag, repeat), so results do not
//! depend on the thread schedule or on which other methods ran.
//! Must not: be keyed by anything derived from labels or predictions; the nested fits must draw
//! the same bags whatever the held-out fold's labels are.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy)]
pub(crate) enum Tag {
    Caruana = 1,
    FoldBagged = 2,
    Bootstrap = 3,
    ShakeUp = 4,
}

/// SplitMix64's finaliser: spreads nearby inputs over the whole 64-bit range.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

pub(crate) fn rng(seed: u64, tag: Tag, a: usize, b: usize) -> ChaCha8Rng {
    let mut z = mix(seed ^ 0x9e37_79b9_7f4a_7c15);
    for part in [tag as u64, a as u64, b as u64] {
        z = mix(z.wrapping_add(part).wrapping_add(0x9e37_79b9_7f4a_7c15));
    }
    ChaCha8Rng::seed_from_u64(z)
}
