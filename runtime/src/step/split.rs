//! The split step: the fused step taken apart where the observation first matters.
//! `rssm_img_step` (zero noise) computes the transition and prior from the latent state and
//! previous action once the action is out; the step then runs only `policy_observe`.

use dreamer_bundle::{self as bundle, Bundle, names};
use rand_chacha::ChaCha8Rng;

use super::graphs::StepGraphs;
use super::latent::LatentInputs;
use super::observation::{ObsInputs, Observation};
use super::shared::{action_output, check_finite, fill_noise, run, same_size, surprise_output};
use crate::error::{LoadError, StepError};
use crate::graph::GraphRunner;
use crate::options::AgentOptions;
use crate::provider::GraphPlacement;

/// The split step's graphs and the indices of their tensors.
#[derive(Debug)]
pub(super) struct Split {
    /// `rssm_img_step`: its inputs h, s and action hold the latent state and the previous
    /// action; its noise input stays zero.
    img_step: GraphRunner,
    latent: LatentInputs,
    /// Prepare output `h_next` `[1, D]`: the transition.
    prep_h: usize,
    /// Prepare outputs `mean`, `std` `[1, S]`: the prior.
    prep_mean: usize,
    prep_std: usize,
    /// `policy_observe`: its inputs h_next and prior hold the prepared transition.
    observe: GraphRunner,
    obs: ObsInputs,
    /// Observe input `h_next` `[1, D]`.
    h_next: usize,
    /// Observe inputs `prior_mean`, `prior_std` `[1, S]`.
    prior_mean: usize,
    prior_std: usize,
    /// Observe input `noise` `[1, S]`: posterior sampling noise.
    noise: usize,
    /// Observe input `action_noise` `[1, A]`.
    action_noise: usize,
    /// Observe output `action` `[1, A]`.
    out_action: usize,
    /// Observe output `s_next` `[1, S]`: the posterior sample.
    out_s: usize,
    /// Observe output `surprise` `[1]`.
    out_surprise: usize,
    /// Whether `observe`'s h_next and prior are the transition from the current latent and
    /// previous action.
    prepared: bool,
}

impl Split {
    pub fn open(bundle: &Bundle, options: &AgentOptions) -> Result<Self, LoadError> {
        let manifest = &bundle.manifest;
        if !manifest.graphs.contains_key(bundle::POLICY_OBSERVE) {
            return Err(LoadError::Manifest {
                graph: bundle::POLICY_OBSERVE.to_string(),
                message: "the bundle has no such graph (it was exported before split steps \
                          existed): re-export it for the split step, or use the fused or \
                          separate step"
                    .to_string(),
            });
        }
        let img_step = GraphRunner::open(bundle, bundle::RSSM_IMG_STEP, options)?;
        let observe = GraphRunner::open(bundle, bundle::POLICY_OBSERVE, options)?;
        let a = manifest.action.size as usize;
        let split = Split {
            latent: LatentInputs::find(&img_step, names::ACTION, a)?,
            prep_h: img_step.require_output(names::H_NEXT)?,
            prep_mean: img_step.require_output(names::MEAN)?,
            prep_std: img_step.require_output(names::STD)?,
            obs: ObsInputs::find(&observe),
            h_next: observe.require_input(names::H_NEXT)?,
            prior_mean: observe.require_input(names::PRIOR_MEAN)?,
            prior_std: observe.require_input(names::PRIOR_STD)?,
            noise: observe.require_input(names::NOISE)?,
            action_noise: observe.require_input(names::ACTION_NOISE)?,
            out_action: action_output(&observe, a)?,
            out_s: observe.require_output(names::S_NEXT)?,
            out_surprise: surprise_output(&observe)?,
            img_step,
            observe,
            prepared: false,
        };
        let (img, obs) = (&split.img_step, &split.observe);
        same_size(
            bundle::RSSM_IMG_STEP,
            "h_next against h",
            img.output_len(split.prep_h),
            img.input_len(split.latent.h),
        )?;
        // (what, size in policy_observe, size in rssm_img_step)
        let handed_over = [
            (
                "h_next against rssm_img_step's h_next",
                obs.input_len(split.h_next),
                img.output_len(split.prep_h),
            ),
            (
                "prior_mean against rssm_img_step's mean",
                obs.input_len(split.prior_mean),
                img.output_len(split.prep_mean),
            ),
            (
                "prior_std against rssm_img_step's std",
                obs.input_len(split.prior_std),
                img.output_len(split.prep_std),
            ),
            (
                "s_next against rssm_img_step's s",
                obs.output_len(split.out_s),
                img.input_len(split.latent.s),
            ),
        ];
        for (what, x, y) in handed_over {
            same_size(bundle::POLICY_OBSERVE, what, x, y)?;
        }
        split.obs.check(&split.observe, manifest)?;
        Ok(split)
    }
}

impl StepGraphs for Split {
    /// Runs only `policy_observe` when prepared since the last step, and prepares first
    /// otherwise.
    fn step(
        &mut self,
        obs: &Observation<'_>,
        mut rng: Option<&mut ChaCha8Rng>,
        action: &mut [f32],
    ) -> Result<f32, StepError> {
        self.obs.write(&mut self.observe, obs)?;
        self.prepare()?;
        let g = &mut self.observe;
        fill_noise(g.input_f32(self.noise), rng.as_deref_mut());
        fill_noise(g.input_f32(self.action_noise), rng);
        run(g)?;
        check_finite(g.output_f32(self.out_action), names::ACTION)?;
        check_finite(g.output_f32(self.out_s), names::S_NEXT)?;
        // Commit: the prepared h' and the posterior sample become the state, the action the
        // previous action; the transition is now stale.
        self.img_step
            .input_f32(self.latent.h)
            .copy_from_slice(self.observe.input_f32_ref(self.h_next));
        self.img_step
            .input_f32(self.latent.s)
            .copy_from_slice(self.observe.output_f32(self.out_s));
        action.copy_from_slice(self.observe.output_f32(self.out_action));
        self.set_previous_action(action);
        Ok(self.observe.output_f32(self.out_surprise)[0])
    }

    /// Runs the transition and prior on the latent state and previous action and hands them
    /// to `policy_observe`; nothing when already prepared.
    fn prepare(&mut self) -> Result<(), StepError> {
        if self.prepared {
            return Ok(());
        }
        run(&mut self.img_step)?;
        check_finite(self.img_step.output_f32(self.prep_h), names::H_NEXT)?;
        check_finite(self.img_step.output_f32(self.prep_mean), names::PRIOR_MEAN)?;
        check_finite(self.img_step.output_f32(self.prep_std), names::PRIOR_STD)?;
        let pairs = [
            (self.prep_h, self.h_next),
            (self.prep_mean, self.prior_mean),
            (self.prep_std, self.prior_std),
        ];
        for (output, input) in pairs {
            self.observe
                .input_f32(input)
                .copy_from_slice(self.img_step.output_f32(output));
        }
        self.prepared = true;
        Ok(())
    }

    /// The observation half only: `prepare` runs right after each action anyway.
    fn prime(&mut self) -> Result<(), StepError> {
        run(&mut self.observe)
    }

    fn latent_inputs(&self) -> (&LatentInputs, &GraphRunner) {
        (&self.latent, &self.img_step)
    }

    fn latent_inputs_mut(&mut self) -> (&LatentInputs, &mut GraphRunner) {
        (&self.latent, &mut self.img_step)
    }

    /// Also drops the prepared transition.
    fn reset(&mut self) {
        self.latent.reset(&mut self.img_step);
        self.prepared = false;
    }

    /// The transition must then be recomputed with this action.
    fn set_previous_action(&mut self, action: &[f32]) {
        self.latent.set_previous_action(&mut self.img_step, action);
        self.prepared = false;
    }

    fn placements(&self) -> Vec<&GraphPlacement> {
        vec![&self.observe.placement, &self.img_step.placement]
    }
}
