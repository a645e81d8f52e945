//! The Dreamer agent: the world model (encoder, RSSM, decoder, reward and continuation heads)
//! learned from replayed sequences, and the actor and value learned in imagination, each
//! with its own Adam optimiser.

use std::collections::HashMap;

use dreamer_config::Config;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use tch::nn::{self};
use tch::{Device, Kind, Tensor};

use crate::networks::{
    Actor, Decoder, Dims, Encoder, Mlp, Obs, pixels_to_float, unit_normal_log_prob,
};
use crate::rssm::{Rssm, State, kl_divergence};

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
    #[error("optimiser state: {0}")]
    OptimiserState(String),
}

/// Named scalar metrics of one update.
pub type Metrics = Vec<(&'static str, f64)>;

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

/// `shape` standard-normal values from `rng` as an f32 tensor on `device`.
pub fn normal_tensor(rng: &mut ChaCha8Rng, shape: &[i64], device: Device) -> Tensor {
    let n: i64 = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
    Tensor::from_slice(&values).reshape(shape).to_device(device)
}

/// The standard-normal noise one update uses, drawn on the host from the run seed and the
/// update index (never from torch's global generator, which other threads share).
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
    pub fn draw(config: &Config, dims: Dims, update_index: u64, device: Device) -> UpdateNoise {
        let mut rng =
            ChaCha8Rng::seed_from_u64(stream_seed(config.run.seed, STREAM_UPDATE, update_index));
        let (b, t, h) = (
            config.train.batch,
            config.train.length,
            config.train.horizon,
        );
        let s = config.model.stoch;
        UpdateNoise {
            posterior: normal_tensor(&mut rng, &[b, t, s], device),
            imag_state: normal_tensor(&mut rng, &[h, b * t, s], device),
            imag_action: normal_tensor(&mut rng, &[h, b * t, dims.action], device),
        }
    }
}

/// Re-draw every variable as torch's default layers would (uniform in +-1/sqrt(fan_in),
/// fan_in from dim 1 of the layer's weight; 1/sqrt(D) for the GRU), from the run seed, so the
/// initial weights never depend on torch's global generator.
fn initialise(named: &[(String, Tensor)], seed: u64) {
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
    ) -> Result<(), TrainError> {
        let get = |key: String, like: Option<&Tensor>| -> Result<Tensor, TrainError> {
            let t = tensors
                .get(&key)
                .ok_or_else(|| TrainError::OptimiserState(format!("tensor `{key}` is missing")))?;
            if let Some(like) = like
                && t.size() != like.size()
            {
                return Err(TrainError::OptimiserState(format!(
                    "tensor `{key}` has shape {:?}, the model needs {:?}",
                    t.size(),
                    like.size()
                )));
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

/// Replayed sequences, `[B, T, ..]`. `action[t]` is the action taken before `obs[t]` and
/// `reward[t]` the reward received with it.
#[derive(Debug)]
pub struct Batch {
    pub obs: Obs,
    /// [B, T, A]
    pub action: Tensor,
    /// [B, T]
    pub reward: Tensor,
    /// [B, T]: 0 after a terminal transition, else 1.
    pub discount: Tensor,
}

/// World-model loss terms; `post` is the posterior of the batch `[B, T, ..]`.
#[derive(Debug)]
pub struct WorldModelLoss {
    pub loss: Tensor,
    pub pixels_loglik: Option<Tensor>,
    pub state_loglik: Option<Tensor>,
    pub reward_loglik: Tensor,
    pub pcont_loglik: Option<Tensor>,
    /// Mean KL before free nats.
    pub kl: Tensor,
    pub post: State,
}

/// Behaviour losses from an imagination rollout.
#[derive(Debug)]
pub struct BehaviourLoss {
    pub actor_loss: Tensor,
    pub value_loss: Tensor,
    /// The lambda-returns `[H-1, N]` (the value target; carries gradient for the actor).
    pub returns: Tensor,
    /// What the value head regresses on: the stopped returns `[H-1, N]`.
    pub value_target: Tensor,
    pub imag_reward: Tensor,
    /// Mean single-sample estimate of the policy's entropy over the imagined actions.
    pub entropy: Tensor,
}

/// `V_t = r_t + pcont_t * ((1 - lambda) * v_{t+1} + lambda * V_{t+1})`, computed backwards
/// from `V_T = bootstrap`. reward, value, pcont `[T, N]`, bootstrap `[N]` -> `[T, N]`.
pub fn lambda_return(
    reward: &Tensor,
    value: &Tensor,
    pcont: &Tensor,
    bootstrap: &Tensor,
    lambda: f64,
) -> Tensor {
    let steps = reward.size()[0];
    let next_values = Tensor::cat(&[value.narrow(0, 1, steps - 1), bootstrap.unsqueeze(0)], 0);
    let inputs = reward + pcont * next_values * (1.0 - lambda);
    let mut last = bootstrap.shallow_clone();
    let mut returns = Vec::with_capacity(steps as usize);
    for t in (0..steps).rev() {
        last = inputs.get(t) + pcont.get(t) * lambda * last;
        returns.push(last.shallow_clone());
    }
    returns.reverse();
    Tensor::stack(&returns, 0)
}

/// Which optimiser owns a variable, by the first component of its name.
pub fn group_of(name: &str) -> &'static str {
    match name.split('.').next() {
        Some("actor") => "actor",
        Some("value") => "value",
        _ => "model",
    }
}

#[derive(Debug)]
pub struct Agent {
    pub vs: nn::VarStore,
    pub config: Config,
    pub dims: Dims,
    pub encoder: Encoder,
    pub rssm: Rssm,
    pub decoder: Decoder,
    pub reward: Mlp,
    pub pcont: Option<Mlp>,
    pub actor: Actor,
    pub value: Mlp,
    pub model_opt: Adam,
    pub actor_opt: Adam,
    pub value_opt: Adam,
    /// Weight of the entropy bonus in the actor loss: `train.actor_entropy`, adapted after
    /// every update when `train.entropy_lr` is above 0.
    pub entropy_scale: f64,
}

impl Agent {
    /// Build the networks (initialised from the run seed) and their optimisers.
    pub fn new(config: &Config, dims: Dims, device: Device) -> Agent {
        let vs = nn::VarStore::new(device);
        let root = vs.root();
        let m = &config.model;
        let feat = m.deter + m.stoch;
        let embed = dims.embed(m.units, m.cnn_depth);
        let encoder = Encoder::new(&(&root / "encoder"), &dims, m.units, m.cnn_depth);
        let rssm = Rssm::new(&(&root / "rssm"), m, dims.action, embed);
        let decoder = Decoder::new(&(&root / "decoder"), &dims, feat, m.units, m.cnn_depth);
        let reward = Mlp::new(&(&root / "reward"), feat, m.units, 2, Some(1));
        let pcont = m
            .pcont
            .then(|| Mlp::new(&(&root / "pcont"), feat, m.units, 3, Some(1)));
        let actor = Actor::new(&(&root / "actor"), feat, m.units, dims.action);
        let value = Mlp::new(&(&root / "value"), feat, m.units, 3, Some(1));

        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        initialise(&named, config.run.seed);
        let t = &config.train;
        let take = |group: &str| -> Vec<(String, Tensor)> {
            named
                .iter()
                .filter(|(name, _)| group_of(name) == group)
                .map(|(name, tensor)| (name.clone(), tensor.shallow_clone()))
                .collect()
        };
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
            model_opt,
            actor_opt,
            value_opt,
            entropy_scale: t.actor_entropy,
        }
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    /// Reconstruction, reward (and continuation) log-likelihoods and KL with free nats.
    /// `noise`: posterior noise `[B, T, S]`.
    pub fn world_model_loss(&self, batch: &Batch, noise: &Tensor) -> WorldModelLoss {
        let t = &self.config.train;
        let size = batch.action.size();
        let (b, steps) = (size[0], size[1]);
        let obs = batch.obs.flatten_time();
        let embed = self.encoder.forward(&obs).reshape([b, steps, -1]); // [B, T, E]
        let (post, prior) = self.rssm.observe(&embed, &batch.action, noise);
        let feat = Rssm::get_feat(&post).flatten(0, 1); // [B*T, F]

        let pixels_loglik = self.decoder.pixels.as_ref().map(|dec| {
            let mean = dec.forward(&feat); // [B*T, 3, 64, 64]
            let target = pixels_to_float(obs.pixels.as_ref().expect("pixels"), Kind::Float)
                .permute([0, 3, 1, 2]);
            unit_normal_log_prob(&mean, &target, 3).mean(Kind::Float)
        });
        let state_loglik = self.decoder.state.as_ref().map(|dec| {
            let mean = dec.forward(&feat); // [B*T, O]
            unit_normal_log_prob(&mean, obs.state.as_ref().expect("state"), 1).mean(Kind::Float)
        });
        let reward_pred = self.reward.forward(&feat).squeeze_dim(-1); // [B*T]
        let reward_target = batch.reward.flatten(0, 1) * t.reward_scale;
        let reward_loglik = unit_normal_log_prob(&reward_pred, &reward_target, 0).mean(Kind::Float);
        let pcont_loglik = self.pcont.as_ref().map(|head| {
            let logits = head.forward(&feat).squeeze_dim(-1);
            -logits.binary_cross_entropy_with_logits::<Tensor>(
                &batch.discount.flatten(0, 1),
                None,
                None,
                tch::Reduction::Mean,
            )
        });
        let kl = kl_divergence(&post, &prior).mean(Kind::Float);
        let mut terms = vec![kl.clamp_min(t.free_nats) * t.kl_scale, -&reward_loglik];
        terms.extend(
            [&pixels_loglik, &state_loglik]
                .into_iter()
                .flatten()
                .map(|ll| -ll),
        );
        terms.extend(pcont_loglik.as_ref().map(|ll| -ll * t.pcont_scale));
        let loss = Tensor::stack(&terms, 0).sum(Kind::Float);
        WorldModelLoss {
            loss,
            pixels_loglik,
            state_loglik,
            reward_loglik,
            pcont_loglik,
            kl,
            post,
        }
    }

    /// Imagine `horizon` steps from every posterior state (gradients stopped at the start) and
    /// form the actor loss (through the learned dynamics) and the value loss (on stopped
    /// features and targets). `state_noise` `[H, N, S]`, `action_noise` `[H, N, A]`.
    pub fn behaviour_loss(
        &self,
        post: &State,
        state_noise: &Tensor,
        action_noise: &Tensor,
    ) -> BehaviourLoss {
        let t = &self.config.train;
        let start = post.detach().flatten_time(); // [N, ..]
        let mut entropy = Vec::with_capacity(t.horizon as usize); // H x [N]
        let imag = self.rssm.imagine(start, state_noise, |feat, step| {
            let (action, step_entropy) = self
                .actor
                .sample_with_entropy(&feat.detach(), &action_noise.get(step));
            entropy.push(step_entropy);
            action
        });
        let entropy = Tensor::stack(&entropy, 0); // [H, N]
        let feat = Rssm::get_feat(&imag); // [H, N, F]
        let horizon = t.horizon;
        let reward = self.reward.forward(&feat).squeeze_dim(-1); // [H, N]
        let value = self.value.forward(&feat).squeeze_dim(-1); // [H, N]
        let pcont = match &self.pcont {
            Some(head) => head.forward(&feat).squeeze_dim(-1).sigmoid() * t.gamma,
            None => reward.ones_like() * t.gamma,
        };
        let returns = lambda_return(
            &reward.narrow(0, 0, horizon - 1),
            &value.narrow(0, 0, horizon - 1),
            &pcont.narrow(0, 0, horizon - 1),
            &value.get(horizon - 1),
            t.lambda,
        ); // [H-1, N]
        let weight = Tensor::cat(
            &[
                pcont.narrow(0, 0, 1).ones_like(),
                pcont.narrow(0, 0, horizon - 2),
            ],
            0,
        )
        .cumprod(0, Kind::Float)
        .detach(); // [H-1, N]
        let actor_loss = -(&weight * &returns).mean(Kind::Float)
            - entropy.mean(Kind::Float) * self.entropy_scale;
        let value_pred = self
            .value
            .forward(&feat.narrow(0, 0, horizon - 1).detach())
            .squeeze_dim(-1);
        let value_target = returns.detach();
        let value_loss =
            -(&weight * unit_normal_log_prob(&value_pred, &value_target, 0)).mean(Kind::Float);
        BehaviourLoss {
            actor_loss,
            value_loss,
            returns,
            value_target,
            imag_reward: reward.mean(Kind::Float).detach(),
            entropy: entropy.mean(Kind::Float).detach(),
        }
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
        let model_grads = Tensor::run_backward(&[&wm.loss], &self.model_opt.params, false, false);
        let actor_grads = Tensor::run_backward(
            &[&behaviour.actor_loss],
            &self.actor_opt.params,
            false,
            false,
        );
        let value_grads = Tensor::run_backward(
            &[&behaviour.value_loss],
            &self.value_opt.params,
            false,
            false,
        );
        let model_norm = self.model_opt.apply(&model_grads);
        let actor_norm = self.actor_opt.apply(&actor_grads);
        let value_norm = self.value_opt.apply(&value_grads);
        let entropy = behaviour.entropy.double_value(&[]);
        self.adapt_entropy_scale(entropy);

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
            (
                "imag_return",
                behaviour.value_target.mean(Kind::Float).double_value(&[]),
            ),
        ]);
        Ok(metrics)
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
        let mut named: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        named
    }
}
