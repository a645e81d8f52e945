//! The fused step: `policy_step`, one ONNX Runtime call from observation to action.

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

/// `policy_step` and the indices of its tensors. Its inputs h, s and prev_action hold the
/// latent state and the previous action between steps.
#[derive(Debug)]
pub(super) struct Fused {
    graph: GraphRunner,
    obs: ObsInputs,
    latent: LatentInputs,
    /// Input `noise` `[1, S]`: posterior sampling noise.
    noise: usize,
    /// Input `action_noise` `[1, A]`.
    action_noise: usize,
    /// Output `action` `[1, A]`.
    out_action: usize,
    /// Output `h_next` `[1, D]`.
    out_h: usize,
    /// Output `s_next` `[1, S]`: the posterior sample.
    out_s: usize,
    /// Output `surprise` `[1]`.
    out_surprise: usize,
}

impl Fused {
    pub fn open(bundle: &Bundle, options: &AgentOptions) -> Result<Self, LoadError> {
        let manifest = &bundle.manifest;
        let graph = GraphRunner::open(bundle, bundle::POLICY_STEP, options)?;
        let a = manifest.action.size as usize;
        let fused = Fused {
            obs: ObsInputs::find(&graph),
            latent: LatentInputs::find(&graph, names::PREV_ACTION, a)?,
            noise: graph.require_input(names::NOISE)?,
            action_noise: graph.require_input(names::ACTION_NOISE)?,
            out_action: action_output(&graph, a)?,
            out_h: graph.require_output(names::H_NEXT)?,
            out_s: graph.require_output(names::S_NEXT)?,
            out_surprise: surprise_output(&graph)?,
            graph,
        };
        let (g, role) = (&fused.graph, bundle::POLICY_STEP);
        let next = [
            ("h_next against h", fused.out_h, fused.latent.h),
            ("s_next against s", fused.out_s, fused.latent.s),
        ];
        for (what, output, input) in next {
            same_size(role, what, g.output_len(output), g.input_len(input))?;
        }
        fused.obs.check(&fused.graph, manifest)?;
        Ok(fused)
    }
}

impl StepGraphs for Fused {
    fn step(
        &mut self,
        obs: &Observation<'_>,
        mut rng: Option<&mut ChaCha8Rng>,
        action: &mut [f32],
    ) -> Result<f32, StepError> {
        let g = &mut self.graph;
        self.obs.write(g, obs)?;
        fill_noise(g.input_f32(self.noise), rng.as_deref_mut());
        fill_noise(g.input_f32(self.action_noise), rng);
        run(g)?;
        check_finite(g.output_f32(self.out_action), names::ACTION)?;
        check_finite(g.output_f32(self.out_h), names::H_NEXT)?;
        check_finite(g.output_f32(self.out_s), names::S_NEXT)?;
        // Commit: the posterior becomes the state, the action the previous action.
        g.copy_output_to_input(self.out_h, self.latent.h);
        g.copy_output_to_input(self.out_s, self.latent.s);
        g.copy_output_to_input(self.out_action, self.latent.prev_action);
        action.copy_from_slice(g.output_f32(self.out_action));
        Ok(g.output_f32(self.out_surprise)[0])
    }

    fn prime(&mut self) -> Result<(), StepError> {
        run(&mut self.graph)
    }

    fn latent_inputs(&self) -> (&LatentInputs, &GraphRunner) {
        (&self.latent, &self.graph)
    }

    fn latent_inputs_mut(&mut self) -> (&LatentInputs, &mut GraphRunner) {
        (&self.latent, &mut self.graph)
    }

    fn placements(&self) -> Vec<&GraphPlacement> {
        vec![&self.graph.placement]
    }
}
