//! Seeded random numbers whose every bit is fixed by the seed, on every platform.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// ChaCha8 stream plus uniform and standard-normal samplers built only from IEEE arithmetic
/// and the pure-Rust `libm`, so a seed gives the same episode everywhere.
#[derive(Debug, Clone)]
pub struct TaskRng {
    stream: ChaCha8Rng,
}

impl TaskRng {
    pub fn new(seed: u64) -> Self {
        Self {
            stream: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn uniform01(&mut self) -> f64 {
        (self.stream.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [low, high).
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.uniform01()
    }

    /// Standard normal by the Box-Muller transform (one draw per call, the sine branch unused,
    /// so the stream position depends only on the number of calls).
    pub fn standard_normal(&mut self) -> f64 {
        // 1 - U lies in (0, 1], keeping the logarithm finite.
        let radius_source = 1.0 - self.uniform01();
        let angle = std::f64::consts::TAU * self.uniform01();
        libm::sqrt(-2.0 * libm::log(radius_source)) * libm::cos(angle)
    }
}
