//! The agent's training losses: the world-model loss on replayed sequences, and the actor and
//! value losses from an imagination rollout, with lambda-returns as the value target.

use tch::{Kind, Tensor};

use crate::agent::Agent;
use crate::networks::{pixels_to_float, symlog, unit_normal_log_prob};
use crate::replay::Batch;
use crate::rssm::{Rssm, State, kl_divergence};

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

/// The KL term of the world-model loss from `kl`, the mean over `[B, T]` of
/// `KL(post || prior)`, at least `free_nats`. With `balance` 0 it is DreamerV1's; with
/// `balance` in (0, 1) the same value, but the prior is trained towards the stopped
/// posterior with weight `balance` and the posterior towards the stopped prior with
/// `1 - balance`, each term held at `free_nats` on its own.
/// `classes`: of the latents' categoricals (0: Gaussian).
pub fn kl_loss(
    kl: &Tensor,
    (post, prior, classes): (&State, &State, i64),
    free_nats: f64,
    balance: f64,
) -> Tensor {
    if balance == 0.0 {
        return kl.clamp_min(free_nats);
    }
    let train_prior = kl_divergence(&post.detach(), prior, classes)
        .mean(Kind::Float)
        .clamp_min(free_nats);
    let train_post = kl_divergence(post, &prior.detach(), classes)
        .mean(Kind::Float)
        .clamp_min(free_nats);
    train_prior * balance + train_post * (1.0 - balance)
}

impl Agent {
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
            let state = obs.state.as_ref().expect("state");
            let target = if self.config.model.symlog_obs {
                symlog(state)
            } else {
                state.shallow_clone()
            };
            unit_normal_log_prob(&mean, &target, 1).mean(Kind::Float)
        });
        let reward_target = batch.reward.flatten(0, 1) * t.reward_scale; // [B*T]
        let reward_loglik = self
            .reward
            .log_prob(&feat, &reward_target)
            .mean(Kind::Float);
        let pcont_loglik = self.pcont.as_ref().map(|head| {
            let logits = head.forward(&feat).squeeze_dim(-1);
            -logits.binary_cross_entropy_with_logits::<Tensor>(
                &batch.discount.flatten(0, 1),
                None,
                None,
                tch::Reduction::Mean,
            )
        });
        let classes = self.rssm.classes();
        let kl = kl_divergence(&post, &prior, classes).mean(Kind::Float);
        let kl_loss = kl_loss(&kl, (&post, &prior, classes), t.free_nats, t.kl_balance);
        let mut terms = vec![kl_loss * t.kl_scale, -&reward_loglik];
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
        let reward = self.reward.mean(&feat); // [H, N]
        // What the returns bootstrap from: the slow copy when there is one.
        let bootstrap = self
            .slow_value
            .as_ref()
            .map_or(&self.value, |slow| &slow.net);
        let value = bootstrap.mean(&feat); // [H, N]
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
        let actor_loss = -(&weight * &returns).mean(Kind::Float) / self.return_divisor()
            - entropy.mean(Kind::Float) * self.entropy_scale;
        let value_target = returns.detach();
        let value_loglik = self
            .value
            .log_prob(&feat.narrow(0, 0, horizon - 1).detach(), &value_target); // [H-1, N]
        let value_loss = -(&weight * value_loglik).mean(Kind::Float);
        BehaviourLoss {
            actor_loss,
            value_loss,
            returns,
            value_target,
            imag_reward: reward.mean(Kind::Float).detach(),
            entropy: entropy.mean(Kind::Float).detach(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state whose mean and std are leaves that record gradients. [2, 3] each.
    fn state(mean: &[f32], std: &[f32]) -> State {
        let leaf = |v: &[f32]| {
            Tensor::from_slice(v)
                .reshape([2, 3])
                .set_requires_grad(true)
        };
        let (mean, std) = (leaf(mean), leaf(std));
        State {
            h: Tensor::zeros([2, 4], (Kind::Float, tch::Device::Cpu)),
            s: mean.detach(),
            mean,
            std,
        }
    }

    fn grads(balance: f64) -> (f64, [Vec<f32>; 4]) {
        let post = state(
            &[0.1, -0.4, 0.3, 1.0, 0.0, -0.2],
            &[0.5, 0.9, 1.2, 0.7, 1.0, 0.3],
        );
        let prior = state(
            &[0.0, 0.2, -0.1, 0.5, 0.4, 0.1],
            &[1.0, 0.8, 1.1, 0.6, 1.3, 0.9],
        );
        let kl = kl_divergence(&post, &prior, 0).mean(Kind::Float);
        let loss = kl_loss(&kl, (&post, &prior, 0), 0.0, balance);
        loss.backward();
        let g = |t: &Tensor| Vec::<f32>::try_from(t.grad().flatten(0, -1)).unwrap();
        (
            loss.double_value(&[]),
            [g(&post.mean), g(&post.std), g(&prior.mean), g(&prior.std)],
        )
    }

    #[test]
    fn kl_balancing_keeps_the_value_and_splits_the_gradient() {
        let (plain, plain_grads) = grads(0.0);
        let (balanced, balanced_grads) = grads(0.8);
        assert!((plain - balanced).abs() < 1e-6, "{plain} vs {balanced}");
        // The posterior gets 1 - 0.8 of DreamerV1's gradient, the prior 0.8 of it.
        for (i, share) in [(0, 0.2), (1, 0.2), (2, 0.8), (3, 0.8)] {
            for (b, p) in balanced_grads[i].iter().zip(&plain_grads[i]) {
                assert!(
                    (b - p * share).abs() < 1e-6,
                    "tensor {i}: {b} vs {share} x {p}"
                );
            }
        }
    }

    #[test]
    fn free_nats_hold_each_balanced_term() {
        let post = state(&[0.0; 6], &[1.0; 6]);
        let prior = state(&[0.01; 6], &[1.0; 6]);
        for balance in [0.0, 0.8] {
            let kl = kl_divergence(&post, &prior, 0).mean(Kind::Float);
            let loss = kl_loss(&kl, (&post, &prior, 0), 1.0, balance);
            assert!((loss.double_value(&[]) - 1.0).abs() < 1e-9, "{balance}");
            loss.backward();
            // Below the free nats nothing is trained.
            assert_eq!(
                post.mean.grad().abs().sum(Kind::Float).double_value(&[]),
                0.0
            );
        }
    }
}
