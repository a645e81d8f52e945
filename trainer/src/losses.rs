//! The agent's training losses: the world-model loss on replayed sequences, and the actor and
//! value losses from an imagination rollout, with lambda-returns as the value target.

use tch::{Kind, Tensor};

use crate::agent::Agent;
use crate::networks::{pixels_to_float, unit_normal_log_prob};
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
}
