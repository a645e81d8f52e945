//! Initial weights drawn from the run seed, so they never depend on torch's global generator.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::Tensor;

use crate::seeds::{STREAM_INIT, stream_seed};

/// Re-draw every variable of `named`, in its order, as torch's default layers would: uniform
/// in +-1/sqrt(fan_in), fan_in the product of the dims after the first of the layer's weight
/// (a bias takes its layer's); for the GRU (the layer `*.gru`, variables `[3D, ..]`)
/// 1/sqrt(D), as `torch.nn.GRUCell`.
pub fn initialise(named: &[(String, Tensor)], seed: u64) {
    let mut rng = ChaCha8Rng::seed_from_u64(stream_seed(seed, STREAM_INIT, 0));
    let shapes: HashMap<&str, Vec<i64>> =
        named.iter().map(|(n, t)| (n.as_str(), t.size())).collect();
    tch::no_grad(|| {
        for (name, tensor) in named {
            let (layer, _) = name.rsplit_once('.').unwrap_or(("", name));
            let fan_in = if layer.ends_with(".gru") {
                tensor.size()[0] / 3
            } else {
                let weight = shapes
                    .get(format!("{layer}.weight").as_str())
                    .cloned()
                    .unwrap_or_else(|| tensor.size());
                weight.iter().skip(1).product::<i64>().max(1)
            };
            let bound = 1.0 / (fan_in as f64).sqrt();
            let n = tensor.numel();
            let values: Vec<f32> = (0..n)
                .map(|_| rng.random_range(-bound..bound) as f32)
                .collect();
            let mut target = tensor.shallow_clone();
            target.copy_(
                &Tensor::from_slice(&values)
                    .reshape(tensor.size())
                    .to_device(tensor.device()),
            );
        }
    });
}
