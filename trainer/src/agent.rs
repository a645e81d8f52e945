//! The Dreamer agent: the world model (encoder, RSSM, decoder, reward and continuation heads),
//! the actor and the value, initialised from the run seed, each part with its own Adam
//! optimiser; one training update of all three (its losses are in `losses.rs`) and one
//! decision of the policy.

use dreamer_config::Config;
use tch::nn::{self};
use tch::{Device, Kind, Tensor};

use crate::heads::ScalarHead;
use crate::init::initialise;
use crate::networks::{Actor, Decoder, Dims, Encoder, Mlp, Obs};
use crate::noise::UpdateNoise;
use crate::optim::Adam;
use crate::replay::Batch;
use crate::rssm::{Rssm, State};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(
        "{loss} is {value} at update {update}: training stopped (the last checkpoint is intact)"
    )]
    NonFinite {
        loss: &'static str,
        update: u64,
        value: f64,
    },
}

/// Named scalar metrics of one update.
pub type Metrics = Vec<(&'static str, f64)>;

/// Which optimiser owns a variable, by the first component of its name.
pub fn group_of(name: &str) -> &'static str {
    match name.split('.').next() {
        Some("actor") => "actor",
        Some("value") => "value",
        _ => "model",
    }
}

/// Set to zero every variable of `named` whose name starts with one of `prefixes`.
fn zero_layers(named: &[(String, Tensor)], prefixes: &[&str]) {
    tch::no_grad(|| {
        for (name, tensor) in named {
            if prefixes.iter().any(|p| name.starts_with(p)) {
                let _ = tensor.shallow_clone().zero_();
            }
        }
    });
}

/// Every variable of `vs` by name, sorted: the order of initialisation, of the optimisers'
/// variables and of checkpoints.
fn sorted_variables(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[derive(Debug)]
pub struct Agent {
    pub vs: nn::VarStore,
    pub config: Config,
    pub dims: Dims,
    pub encoder: Encoder,
    pub rssm: Rssm,
    pub decoder: Decoder,
    pub reward: ScalarHead,
    pub pcont: Option<Mlp>,
    pub actor: Actor,
    pub value: ScalarHead,
    /// The value network the lambda-returns bootstrap from when `train.slow_value_rate` is
    /// above 0.
    pub slow_value: Option<SlowValue>,
    pub model_opt: Adam,
    pub actor_opt: Adam,
    pub value_opt: Adam,
    /// Weight of the entropy bonus in the actor loss: `train.actor_entropy`, adapted after
    /// every update when `train.entropy_lr` is above 0.
    pub entropy_scale: f64,
    /// The EMA of the imagined returns' 5th-95th percentile range that the actor divides
    /// them by (at least 1); stays 0 without `train.return_norm_rate`.
    pub return_scale: f64,
}

impl Agent {
    /// Build the networks (initialised from the run seed) and their optimisers.
    pub fn new(config: &Config, dims: Dims, device: Device) -> Agent {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let m = &config.model;
        let feat = m.deter + m.stoch_width();
        let embed = dims.embed(m.units, m.cnn_depth);
        let encoder = Encoder::new(
            &(&root / "encoder"),
            &dims,
            m.units,
            m.cnn_depth,
            m.symlog_obs,
        );
        let rssm = Rssm::new(&(&root / "rssm"), m, dims.action, embed);
        let decoder = Decoder::new(&(&root / "decoder"), &dims, feat, m.units, m.cnn_depth);
        let bins = m.two_hot_bins;
        let reward = ScalarHead::new(&(&root / "reward"), feat, m.units, 2, bins);
        let pcont = m
            .pcont
            .then(|| Mlp::new(&(&root / "pcont"), feat, m.units, 3, Some(1)));
        let actor = Actor::new(&(&root / "actor"), feat, m.units, dims.action);
        let value = ScalarHead::new(&(&root / "value"), feat, m.units, 3, bins);

        let named = sorted_variables(&vs);
        initialise(&named, config.run.seed);
        if bins > 0 {
            // DreamerV3 starts both two-hot heads at zero logits: a prediction of 0.
            zero_layers(&named, &["reward.out.", "value.out."]);
        }
        let t = &config.train;
        let take = |group: &str| -> Vec<(String, Tensor)> {
            named
                .iter()
                .filter(|(name, _)| group_of(name) == group)
                .map(|(name, tensor)| (name.clone(), tensor.shallow_clone()))
                .collect()
        };
        let slow_value = (t.slow_value_rate > 0.0).then(|| {
            SlowValue::new(
                device,
                |path| ScalarHead::new(path, feat, m.units, 3, bins),
                &take("value"),
                t.slow_value_rate,
            )
        });
        let model_opt = Adam::new(take("model"), t.model_lr, t.adam_eps, t.grad_clip);
        let actor_opt = Adam::new(take("actor"), t.actor_lr, t.adam_eps, t.grad_clip);
        let value_opt = Adam::new(take("value"), t.value_lr, t.adam_eps, t.grad_clip);
        Agent {
            vs,
            config: config.clone(),
            dims,
            encoder,
            rssm,
            decoder,
            reward,
            pcont,
            actor,
            value,
            slow_value,
            model_opt,
            actor_opt,
            value_opt,
            entropy_scale: t.actor_entropy,
            return_scale: 0.0,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// One training step of all three parts from `batch`. Its noise is drawn from the seed
    /// of `update_index`, so the same update on the same state gives the same result.
    pub fn update(&mut self, batch: &Batch, update_index: u64) -> Result<Metrics, TrainError> {
        let size = batch.action.size();
        let mut config = self.config.clone();
        (config.train.batch, config.train.length) = (size[0], size[1]);
        let noise = UpdateNoise::draw(&config, self.dims, update_index, self.device());
        let mixed = self.config.train.mixed_precision && self.device().is_cuda();
        let (wm, behaviour) = tch::autocast(mixed, || {
            let wm = self.world_model_loss(batch, &noise.posterior);
            let behaviour = self.behaviour_loss(&wm.post, &noise.imag_state, &noise.imag_action);
            (wm, behaviour)
        });
        let losses = [
            ("model_loss", &wm.loss),
            ("actor_loss", &behaviour.actor_loss),
            ("value_loss", &behaviour.value_loss),
        ];
        let mut values = [0.0; 3];
        for (i, (name, loss)) in losses.iter().enumerate() {
            let value = loss.double_value(&[]);
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    loss: name,
                    update: update_index,
                    value,
                });
            }
            values[i] = value;
        }
        // Every gradient is taken before any optimiser changes the weights in place.
        let model_grads = self.model_opt.gradients(&wm.loss);
        let actor_grads = self.actor_opt.gradients(&behaviour.actor_loss);
        let value_grads = self.value_opt.gradients(&behaviour.value_loss);
        let model_norm = self.model_opt.apply(&model_grads);
        let actor_norm = self.actor_opt.apply(&actor_grads);
        let value_norm = self.value_opt.apply(&value_grads);
        let entropy = behaviour.entropy.double_value(&[]);
        self.adapt_entropy_scale(entropy);
        if let Some(slow) = &mut self.slow_value {
            slow.track(&self.value_opt.names, &self.value_opt.params);
        }
        let rate = self.config.train.return_norm_rate;
        if rate > 0.0 {
            self.return_scale = next_return_scale(self.return_scale, &behaviour.returns, rate);
        }

        let mut metrics: Metrics = vec![
            ("model_loss", values[0]),
            ("actor_loss", values[1]),
            ("value_loss", values[2]),
            ("kl", wm.kl.double_value(&[])),
            ("reward_loss", -wm.reward_loglik.double_value(&[])),
        ];
        if let Some(t) = &wm.pixels_loglik {
            metrics.push(("pixels_loss", -t.double_value(&[])));
        }
        if let Some(t) = &wm.state_loglik {
            metrics.push(("state_loss", -t.double_value(&[])));
        }
        if let Some(t) = &wm.pcont_loglik {
            metrics.push(("pcont_loss", -t.double_value(&[])));
        }
        metrics.extend([
            ("model_grad_norm", model_norm),
            ("actor_grad_norm", actor_norm),
            ("value_grad_norm", value_norm),
            ("imag_reward", behaviour.imag_reward.double_value(&[])),
            ("actor_entropy", entropy),
            ("entropy_scale", self.entropy_scale),
            ("return_scale", self.return_scale),
            (
                "imag_return",
                behaviour.value_target.mean(Kind::Float).double_value(&[]),
            ),
        ]);
        Ok(metrics)
    }

    /// What the actor divides imagined returns by: 1, or the return scale above 1.
    pub fn return_divisor(&self) -> f64 {
        self.return_scale.max(1.0)
    }

    /// Move the entropy weight towards the value that holds the policy's entropy at
    /// `train.entropy_target` per action dimension: up when the imagined actions' mean
    /// entropy `entropy` is below it, down when above, in log space (so it stays positive).
    fn adapt_entropy_scale(&mut self, entropy: f64) {
        let t = &self.config.train;
        if t.entropy_lr > 0.0 {
            let shortfall = t.entropy_target * self.dims.action as f64 - entropy;
            self.entropy_scale = (self.entropy_scale.ln() + t.entropy_lr * shortfall).exp();
        }
    }

    /// One decision: filter the new observation into the latent and choose an action.
    /// `noise = None` is the deterministic policy of docs/checkpoint-format.md (posterior
    /// mean, action `tanh(mean)`); otherwise (latent noise `[N, S]`, action noise `[N, A]`).
    /// latent `[N, ..]`, prev_action `[N, A]`, obs `[N, ..]` -> (latent, action `[N, A]`).
    pub fn policy_step(
        &self,
        latent: &State,
        prev_action: &Tensor,
        obs: &Obs,
        noise: Option<(&Tensor, &Tensor)>,
    ) -> (State, Tensor) {
        tch::no_grad(|| {
            let embed = self.encoder.forward(obs);
            let zeros;
            let latent_noise = match noise {
                Some((n, _)) => n,
                None => {
                    zeros = latent.s.zeros_like();
                    &zeros
                }
            };
            let (post, _) = self
                .rssm
                .obs_step(latent, prev_action, &embed, latent_noise);
            let feat = Rssm::get_feat(&post);
            let action = match noise {
                Some((_, action_noise)) => self.actor.sample(&feat, action_noise),
                None => self.actor.mode(&feat),
            };
            (post, action)
        })
    }

    /// All network weights by name, sorted.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        sorted_variables(&self.vs)
    }
}

/// A copy of the value network that follows it slowly: after every update each weight moves
/// `rate` of the way towards the value network's (an EMA of its weights). It has its own
/// variable store, so no optimiser trains it and the exported model does not hold it; its
/// weights are training state, saved beside the optimisers'.
#[derive(Debug)]
pub struct SlowValue {
    vs: nn::VarStore,
    pub net: ScalarHead,
    rate: f64,
}

impl SlowValue {
    /// `build` makes the value network's layers under a path; the copy starts equal to
    /// `value`, the value network's variables by name.
    fn new(
        device: Device,
        build: impl FnOnce(&nn::Path) -> ScalarHead,
        value: &[(String, Tensor)],
        rate: f64,
    ) -> SlowValue {
        let mut vs = nn::VarStore::new(device);
        let net = build(&(&vs.root() / "value"));
        vs.freeze();
        let slow = SlowValue { vs, net, rate };
        // Built by the same code under the same names, both sorted: pairwise equal layers.
        tch::no_grad(|| {
            for ((name, mut copy), (value_name, weight)) in
                slow.named_weights().into_iter().zip(value)
            {
                debug_assert_eq!(&name, value_name);
                copy.copy_(weight);
            }
        });
        slow
    }

    /// The slow weights by name (the value network's names), sorted.
    pub fn named_weights(&self) -> Vec<(String, Tensor)> {
        sorted_variables(&self.vs)
    }

    /// Move every slow weight `rate` of the way towards the value network's (its variables
    /// `params` named `names`).
    fn track(&mut self, names: &[String], params: &[Tensor]) {
        let value: std::collections::HashMap<&str, &Tensor> =
            names.iter().map(String::as_str).zip(params).collect();
        tch::no_grad(|| {
            for (name, mut slow) in self.named_weights() {
                let fast = value[name.as_str()];
                let _ = slow.g_mul_scalar_(1.0 - self.rate);
                let _ = slow.g_add_(&(fast * self.rate));
            }
        });
    }
}

/// The return scale after one update: an EMA with `rate` of the 95th minus the 5th
/// percentile of `returns` (any shape; nearest-rank percentiles over all elements).
pub fn next_return_scale(scale: f64, returns: &Tensor, rate: f64) -> f64 {
    let sorted = returns
        .detach()
        .flatten(0, -1)
        .to_kind(Kind::Double)
        .sort(0, false)
        .0;
    let n = sorted.size()[0];
    if n == 0 {
        return scale;
    }
    let at = |p: f64| sorted.double_value(&[(p * (n - 1) as f64).round() as i64]);
    (1.0 - rate) * scale + rate * (at(0.95) - at(0.05))
}
