//! Exploration on the device, as the trainer's collection explores: Gaussian noise of a
//! fixed standard deviation on each action sent, clipped to the action range, from a seeded
//! generator so a run can be repeated.

use rand::{Rng, SeedableRng};

/// Gaussian noise on the actions sent.
pub struct Exploration {
    std: f64,
    rng: rand_chacha::ChaCha8Rng,
    /// The noisy action, `[A]` (preallocated: applying it allocates nothing).
    noisy: Vec<f32>,
}

#[derive(Debug, thiserror::Error)]
#[error("exploration noise {0} is not a standard deviation (a finite number >= 0)")]
pub struct BadNoise(pub f64);

impl Exploration {
    /// Noise of standard deviation `std` on actions of `action_size` values, drawn from a
    /// generator seeded with `seed`.
    pub fn new(std: f64, seed: u64, action_size: usize) -> Result<Self, BadNoise> {
        if !(std.is_finite() && std >= 0.0) {
            return Err(BadNoise(std));
        }
        Ok(Self {
            std,
            rng: rand_chacha::ChaCha8Rng::seed_from_u64(seed),
            noisy: vec![0.0; action_size],
        })
    }

    /// `action` (`[A]`, normalised) with noise added, clipped to [-1, 1].
    pub fn apply(&mut self, action: &[f32]) -> &[f32] {
        for (noisy, &a) in self.noisy.iter_mut().zip(action) {
            let n: f64 = self.rng.sample(rand_distr::StandardNormal);
            *noisy = (f64::from(a) + self.std * n).clamp(-1.0, 1.0) as f32;
        }
        &self.noisy
    }
}
