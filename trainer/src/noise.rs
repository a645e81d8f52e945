//! The standard-normal noise of one update, drawn on the host from the run seed and the
//! update index (never from torch's global generator, which other threads share).

use dreamer_config::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::{Device, Tensor};

use crate::networks::Dims;
use crate::seeds::{STREAM_UPDATE, stream_seed};

/// `shape` standard-normal values from `rng` as an f32 tensor on `device`.
fn normal_tensor(rng: &mut ChaCha8Rng, shape: &[i64], device: Device) -> Tensor {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    Tensor::from_slice(&values).reshape(shape).to_device(device)
}

/// The noise one update uses, in the order it is drawn.
#[derive(Debug)]
pub struct UpdateNoise {
    /// [B, T, S]: posterior samples of the batch.
    pub posterior: Tensor,
    /// [H, B*T, S]: imagined stochastic states.
    pub imag_state: Tensor,
    /// [H, B*T, A]: imagined actions (before tanh).
    pub imag_action: Tensor,
}

impl UpdateNoise {
    /// The noise of update `update_index`, sized by `config.train` (batch B, length T,
    /// horizon H), the width of the stochastic state (S, [`dreamer_config::ModelConfig::stoch_width`])
    /// and `dims.action` (A).
    pub fn draw(config: &Config, dims: Dims, update_index: u64, device: Device) -> UpdateNoise {
        let mut rng =
            ChaCha8Rng::seed_from_u64(stream_seed(config.run.seed, STREAM_UPDATE, update_index));
        let (b, t, h) = (
            config.train.batch,
            config.train.length,
            config.train.horizon,
        );
        let s = config.model.stoch_width();
        UpdateNoise {
            posterior: normal_tensor(&mut rng, &[b, t, s], device),
            imag_state: normal_tensor(&mut rng, &[h, b * t, s], device),
            imag_action: normal_tensor(&mut rng, &[h, b * t, dims.action], device),
        }
    }
}
