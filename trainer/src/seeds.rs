//! Counter-based random streams: every random draw of a run (initial weights, update noise,
//! replay samples, collection, evaluation, videos) is seeded from the run seed, a stream and a
//! counter, so any draw can be reproduced after a restart.

/// Independent random streams derived from the run seed.
pub const STREAM_UPDATE: u64 = 1;
pub const STREAM_REPLAY: u64 = 2;
pub const STREAM_COLLECT: u64 = 3;
pub const STREAM_EVAL: u64 = 4;
pub const STREAM_INIT: u64 = 5;
pub const STREAM_VIDEO: u64 = 6;

/// A seed for draw `counter` of random stream `stream` of a run with seed `seed`
/// (splitmix64 over the three values), so any draw can be reproduced after a restart.
pub fn stream_seed(seed: u64, stream: u64, counter: u64) -> u64 {
    let mut x = seed;
    for v in [stream, counter] {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15).wrapping_add(v);
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
    }
    x
}
