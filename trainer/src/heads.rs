//! Scalar heads (reward, value): DreamerV1's unit-variance Gaussian, or DreamerV3's two-hot
//! distribution over bins spaced evenly in symlog space, which learns rewards and returns of
//! any magnitude with the same step sizes.

use tch::nn;
use tch::{Kind, Tensor};

use crate::networks::{Mlp, symlog, unit_normal_log_prob};

/// The bins span `[-LIMIT, LIMIT]` in symlog space: magnitudes up to `e^20`.
const LIMIT: f64 = 20.0;

/// `sign(x) (e^|x| - 1)`, the inverse of [`symlog`], elementwise.
pub fn symexp(x: &Tensor) -> Tensor {
    x.sign() * x.abs().expm1()
}

/// An MLP predicting one scalar per input: with `bins` = 0 the mean of a unit-variance
/// Gaussian (one output), otherwise logits over `bins` values evenly spaced in symlog space.
#[derive(Debug)]
pub struct ScalarHead {
    net: Mlp,
    bins: i64,
}

impl ScalarHead {
    /// `layers` hidden layers of `units` on `input` features; `bins` 0 or at least 2.
    pub fn new(path: &nn::Path, input: i64, units: i64, layers: usize, bins: i64) -> ScalarHead {
        let net = Mlp::new(path, input, units, layers, Some(bins.max(1)));
        ScalarHead { net, bins }
    }

    /// The bin values in symlog space, `[K]`.
    fn bin_values(&self, like: &Tensor) -> Tensor {
        Tensor::linspace(-LIMIT, LIMIT, self.bins, (Kind::Float, like.device()))
    }

    /// The prediction: feat `[.., F]` -> `[..]`.
    pub fn mean(&self, feat: &Tensor) -> Tensor {
        let out = self.net.forward(feat);
        if self.bins == 0 {
            return out.squeeze_dim(-1);
        }
        let probs = out.softmax(-1, Kind::Float);
        symexp(&(probs * self.bin_values(feat)).sum_dim_intlist(-1, false, Kind::Float))
    }

    /// Log-likelihood of `target` `[..]` under the head's distribution at feat `[.., F]` ->
    /// `[..]`. Two-hot: the target's symlog, clamped to the bins' range, is split between its
    /// two nearest bins in proportion to its closeness, and scored by cross-entropy.
    pub fn log_prob(&self, feat: &Tensor, target: &Tensor) -> Tensor {
        let out = self.net.forward(feat);
        if self.bins == 0 {
            return unit_normal_log_prob(&out.squeeze_dim(-1), target, 0);
        }
        let two_hot = two_hot(&symlog(target), self.bins);
        (two_hot * out.log_softmax(-1, Kind::Float)).sum_dim_intlist(-1, false, Kind::Float)
    }
}

/// `y` `[..]` (symlog space) as weights over `bins` evenly spaced bins on `[-LIMIT, LIMIT]`
/// `[.., K]`: `1 - f` on the bin below and `f` on the one above, `f` the fraction of the way.
fn two_hot(y: &Tensor, bins: i64) -> Tensor {
    let step = 2.0 * LIMIT / (bins - 1) as f64;
    let position = (y.detach().clamp(-LIMIT, LIMIT) + LIMIT) / step; // [..] in [0, K-1]
    let below = position.floor().clamp(0.0, (bins - 2) as f64);
    let above_weight = (&position - &below).unsqueeze(-1);
    let below_hot = below
        .to_kind(Kind::Int64)
        .one_hot(bins)
        .to_kind(Kind::Float);
    let above_hot = below_hot.roll([1], [-1]);
    &below_hot * (1.0 - &above_weight) + above_hot * above_weight
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_hot_splits_between_the_nearest_bins_and_keeps_the_value() {
        // 41 bins: one per symlog unit.
        let y = Tensor::from_slice(&[0.0f32, 2.25, -19.5, 25.0, -30.0]);
        let hot = two_hot(&y, 41);
        let at = |i: i64, k: i64| hot.double_value(&[i, k]);
        assert_eq!(at(0, 20), 1.0);
        assert!((at(1, 22) - 0.75).abs() < 1e-6 && (at(1, 23) - 0.25).abs() < 1e-6);
        assert!((at(2, 0) - 0.5).abs() < 1e-6 && (at(2, 1) - 0.5).abs() < 1e-6);
        // Outside the range: all weight on the end bin.
        assert_eq!(at(3, 40), 1.0);
        assert_eq!(at(4, 0), 1.0);
        let sums = hot.sum_dim_intlist(-1, false, Kind::Float);
        assert!(sums.allclose(&sums.ones_like(), 1e-6, 1e-6, false));
        // The weighted bins give back the value (inside the range).
        let values = Tensor::linspace(-LIMIT, LIMIT, 41, (Kind::Float, tch::Device::Cpu));
        let back = (&hot * values).sum_dim_intlist(-1, false, Kind::Float);
        let expected = Tensor::from_slice(&[0.0f32, 2.25, -19.5, 20.0, -20.0]);
        assert!(back.allclose(&expected, 1e-5, 1e-5, false), "{back}");
    }

    #[test]
    fn symexp_inverts_symlog() {
        let x = Tensor::from_slice(&[-1000.0f32, -3.0, 0.0, 0.5, 1e4]);
        assert!(symexp(&symlog(&x)).allclose(&x, 1e-4, 1e-4, false));
    }
}
