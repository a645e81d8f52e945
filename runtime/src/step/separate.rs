//! The separate step: `encoder`, then `rssm_obs_step`, then `actor`, for devices or providers
//! that cannot take the fused graph. The surprise is computed here from the posterior and
//! prior statistics.

use dreamer_bundle::{self as bundle, Bundle, names};
use rand_chacha::ChaCha8Rng;

use super::graphs::StepGraphs;
use super::latent::LatentInputs;
use super::observation::{ObsInputs, Observation};
use super::shared::{action_output, check_finite, fill_noise, run, same_size};
use crate::error::{LoadError, StepError};
use crate::graph::GraphRunner;
use crate::options::AgentOptions;
use crate::provider::GraphPlacement;

/// The three graphs and the indices of their tensors. `rssm`'s inputs h, s and prev_action
/// hold the latent state and the previous action between steps.
#[derive(Debug)]
pub(super) struct Separate {
    encoder: GraphRunner,
    obs: ObsInputs,
    /// Encoder output `embed` `[1, E]`.
    enc_embed: usize,
    rssm: GraphRunner,
    latent: LatentInputs,
    /// RSSM input `embed` `[1, E]`.
    embed: usize,
    /// RSSM input `noise` `[1, S]`: posterior sampling noise.
    noise: usize,
    /// RSSM output `h_next` `[1, D]`.
    out_h: usize,
    /// RSSM output `s_next` `[1, S]`: the posterior sample.
    out_s: usize,
    /// RSSM outputs `mean`, `std` `[1, S]`: the posterior.
    out_mean: usize,
    out_std: usize,
    /// RSSM outputs `prior_mean`, `prior_std` `[1, S]`.
    out_prior_mean: usize,
    out_prior_std: usize,
    actor: GraphRunner,
    /// Actor input `feat` `[1, D + S]`: h' then s'.
    feat: usize,
    /// Actor input `action_noise` `[1, A]`.
    action_noise: usize,
    /// Actor output `action` `[1, A]`.
    out_action: usize,
}

impl Separate {
    pub fn open(bundle: &Bundle, options: &AgentOptions) -> Result<Self, LoadError> {
        let manifest = &bundle.manifest;
        let encoder = GraphRunner::open(bundle, bundle::ENCODER, options)?;
        let rssm = GraphRunner::open(bundle, bundle::RSSM_OBS_STEP, options)?;
        let actor = GraphRunner::open(bundle, bundle::ACTOR, options)?;
        let a = manifest.action.size as usize;
        let separate = Separate {
            obs: ObsInputs::find(&encoder),
            enc_embed: encoder.require_output(names::EMBED)?,
            latent: LatentInputs::find(&rssm, names::PREV_ACTION, a)?,
            embed: rssm.require_input(names::EMBED)?,
            noise: rssm.require_input(names::NOISE)?,
            out_h: rssm.require_output(names::H_NEXT)?,
            out_s: rssm.require_output(names::S_NEXT)?,
            out_mean: rssm.require_output(names::MEAN)?,
            out_std: rssm.require_output(names::STD)?,
            out_prior_mean: rssm.require_output(names::PRIOR_MEAN)?,
            out_prior_std: rssm.require_output(names::PRIOR_STD)?,
            feat: actor.require_input(names::FEAT)?,
            action_noise: actor.require_input(names::ACTION_NOISE)?,
            out_action: action_output(&actor, a)?,
            encoder,
            rssm,
            actor,
        };
        let g = &separate;
        let d = g.rssm.input_len(g.latent.h);
        let s = g.rssm.input_len(g.latent.s);
        let f = g.actor.input_len(g.feat);
        if d + s != f {
            return Err(LoadError::Manifest {
                graph: bundle::ACTOR.to_string(),
                message: format!("input `feat` holds {f} values, h and s hold {d} + {s}"),
            });
        }
        same_size(
            bundle::ENCODER,
            "embed against rssm_obs_step's embed",
            g.encoder.output_len(g.enc_embed),
            g.rssm.input_len(g.embed),
        )?;
        let next = [
            ("h_next against h", g.out_h, g.latent.h),
            ("s_next against s", g.out_s, g.latent.s),
        ];
        for (what, output, input) in next {
            same_size(
                bundle::RSSM_OBS_STEP,
                what,
                g.rssm.output_len(output),
                g.rssm.input_len(input),
            )?;
        }
        separate.obs.check(&separate.encoder, manifest)?;
        Ok(separate)
    }
}

impl StepGraphs for Separate {
    fn step(
        &mut self,
        obs: &Observation<'_>,
        mut rng: Option<&mut ChaCha8Rng>,
        action: &mut [f32],
    ) -> Result<f32, StepError> {
        self.obs.write(&mut self.encoder, obs)?;
        run(&mut self.encoder)?;
        self.rssm
            .input_f32(self.embed)
            .copy_from_slice(self.encoder.output_f32(self.enc_embed));
        fill_noise(self.rssm.input_f32(self.noise), rng.as_deref_mut());
        run(&mut self.rssm)?;
        check_finite(self.rssm.output_f32(self.out_h), names::H_NEXT)?;
        check_finite(self.rssm.output_f32(self.out_s), names::S_NEXT)?;
        {
            let h_next = self.rssm.output_f32(self.out_h);
            let s_next = self.rssm.output_f32(self.out_s);
            let feat = self.actor.input_f32(self.feat);
            feat[..h_next.len()].copy_from_slice(h_next);
            feat[h_next.len()..].copy_from_slice(s_next);
        }
        fill_noise(self.actor.input_f32(self.action_noise), rng);
        run(&mut self.actor)?;
        check_finite(self.actor.output_f32(self.out_action), names::ACTION)?;
        let surprise = gaussian_kl(
            self.rssm.output_f32(self.out_mean),
            self.rssm.output_f32(self.out_std),
            self.rssm.output_f32(self.out_prior_mean),
            self.rssm.output_f32(self.out_prior_std),
        );
        // Commit only after every graph succeeded.
        self.rssm.copy_output_to_input(self.out_h, self.latent.h);
        self.rssm.copy_output_to_input(self.out_s, self.latent.s);
        action.copy_from_slice(self.actor.output_f32(self.out_action));
        self.set_previous_action(action);
        Ok(surprise)
    }

    fn prime(&mut self) -> Result<(), StepError> {
        run(&mut self.encoder)?;
        run(&mut self.rssm)?;
        run(&mut self.actor)
    }

    fn latent_inputs(&self) -> (&LatentInputs, &GraphRunner) {
        (&self.latent, &self.rssm)
    }

    fn latent_inputs_mut(&mut self) -> (&LatentInputs, &mut GraphRunner) {
        (&self.latent, &mut self.rssm)
    }

    fn placements(&self) -> Vec<&GraphPlacement> {
        vec![
            &self.encoder.placement,
            &self.rssm.placement,
            &self.actor.placement,
        ]
    }
}

/// KL(N(mean_q, std_q) || N(mean_p, std_p)) summed over dimensions (docs/checkpoint-format.md).
/// All four `[S]`.
fn gaussian_kl(mean_q: &[f32], std_q: &[f32], mean_p: &[f32], std_p: &[f32]) -> f32 {
    mean_q
        .iter()
        .zip(std_q)
        .zip(mean_p.iter().zip(std_p))
        .map(|((&mq, &sq), (&mp, &sp))| {
            (sp / sq).ln() + (sq * sq + (mq - mp) * (mq - mp)) / (2.0 * sp * sp) - 0.5
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::gaussian_kl;

    #[test]
    fn kl_of_identical_gaussians_is_zero_and_grows_with_distance() {
        let m = [0.3f32, -1.0];
        let s = [0.5f32, 2.0];
        assert!(gaussian_kl(&m, &s, &m, &s).abs() < 1e-6);
        // One dimension, unit std, means 1 apart: KL = 1/2.
        assert!((gaussian_kl(&[1.0], &[1.0], &[0.0], &[1.0]) - 0.5).abs() < 1e-6);
    }
}
