//! Adam in TensorFlow's form, implemented here so its moments can be checkpointed.

use std::collections::HashMap;

use tch::{Kind, Tensor};

/// A tensor of the optimiser state that a checkpoint lacks or holds in the wrong shape.
#[derive(Debug, thiserror::Error)]
pub enum OptimStateError {
    #[error("optimiser state: tensor `{name}` is missing")]
    Missing { name: String },
    #[error("optimiser state: tensor `{name}` has shape {found:?}, the model needs {expected:?}")]
    Shape {
        name: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
}

/// Adam in TensorFlow's form (epsilon added to sqrt(v), bias correction folded into the step
/// size) with global-norm gradient clipping, over a fixed list of variables.
#[derive(Debug)]
pub struct Adam {
    pub names: Vec<String>,
    pub params: Vec<Tensor>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    pub step: i64,
    pub lr: f64,
    eps: f64,
    clip: f64,
}

const BETA1: f64 = 0.9;
const BETA2: f64 = 0.999;

impl Adam {
    pub fn new(named: Vec<(String, Tensor)>, lr: f64, eps: f64, clip: f64) -> Adam {
        let (names, params): (Vec<_>, Vec<_>) = named.into_iter().unzip();
        let zeros = |p: &Tensor| p.zeros_like().detach();
        Adam {
            m: params.iter().map(zeros).collect(),
            v: params.iter().map(zeros).collect(),
            names,
            params,
            step: 0,
            lr,
            eps,
            clip,
        }
    }

    /// The gradients of scalar `loss` with respect to this optimiser's variables, one per
    /// parameter (undefined for a variable outside the loss's graph).
    pub fn gradients(&self, loss: &Tensor) -> Vec<Tensor> {
        Tensor::run_backward(&[loss], &self.params, false, false)
    }

    /// Apply one step with `grads` (one per parameter). Returns the gradient norm before
    /// clipping.
    pub fn apply(&mut self, grads: &[Tensor]) -> f64 {
        tch::no_grad(|| {
            // A variable outside the loss's graph has an undefined gradient: it is skipped,
            // as TensorFlow skips `None` gradients.
            let norm = grads
                .iter()
                .filter(|g| g.defined())
                .map(|g| g.square().sum(Kind::Float))
                .fold(
                    Tensor::zeros([], (Kind::Float, self.params[0].device())),
                    |a, b| a + b,
                )
                .sqrt();
            let norm_value = norm.double_value(&[]);
            let scale = self.clip / norm_value.max(self.clip);
            self.step += 1;
            let t = self.step as f64;
            let lr_t = self.lr * (1.0 - BETA2.powf(t)).sqrt() / (1.0 - BETA1.powf(t));
            let slots = self.params.iter_mut().zip(&mut self.m).zip(&mut self.v);
            for (((param, m), v), grad) in slots.zip(grads) {
                if !grad.defined() {
                    continue;
                }
                let g = grad * scale;
                let _ = m.g_mul_scalar_(BETA1);
                let _ = m.g_add_(&(&g * (1.0 - BETA1)));
                let _ = v.g_mul_scalar_(BETA2);
                let _ = v.g_add_(&(g.square() * (1.0 - BETA2)));
                let _ = param.g_sub_(&(&*m / (v.sqrt() + self.eps) * lr_t));
            }
            norm_value
        })
    }

    /// Moments and step count, named `<prefix>.m.<var>`, `<prefix>.v.<var>`, `<prefix>.step`.
    pub fn state(&self, prefix: &str) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.names.len() + 1);
        for (i, name) in self.names.iter().enumerate() {
            out.push((format!("{prefix}.m.{name}"), self.m[i].shallow_clone()));
            out.push((format!("{prefix}.v.{name}"), self.v[i].shallow_clone()));
        }
        out.push((format!("{prefix}.step"), Tensor::from_slice(&[self.step])));
        out
    }

    /// Restore what [`Adam::state`] wrote; names the missing or mis-shaped tensor.
    pub fn load_state(
        &mut self,
        prefix: &str,
        tensors: &HashMap<String, Tensor>,
    ) -> Result<(), OptimStateError> {
        let get = |name: String, like: Option<&Tensor>| -> Result<Tensor, OptimStateError> {
            let Some(t) = tensors.get(&name) else {
                return Err(OptimStateError::Missing { name });
            };
            if let Some(like) = like
                && t.size() != like.size()
            {
                return Err(OptimStateError::Shape {
                    name,
                    found: t.size(),
                    expected: like.size(),
                });
            }
            Ok(t.shallow_clone())
        };
        tch::no_grad(|| {
            for i in 0..self.names.len() {
                let m = get(format!("{prefix}.m.{}", self.names[i]), Some(&self.m[i]))?;
                let v = get(format!("{prefix}.v.{}", self.names[i]), Some(&self.v[i]))?;
                self.m[i].copy_(&m);
                self.v[i].copy_(&v);
            }
            let step = get(format!("{prefix}.step"), None)?;
            self.step = step.int64_value(&[0]);
            Ok(())
        })
    }
}
