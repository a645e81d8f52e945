//! The fused step: `policy_step`, one ONNX Runtime call from observation to action.

use std::path::Path;

use dreamer_bundle::{self as bundle, Manifest, names};
use rand_chacha::ChaCha8Rng;

use super::graphs::{Latent, StepGraphs};
use super::observation::{ObsInputs, Observation};
use super::shared::{check_finite, fill_noise, run, same_size};
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
    /// Input `h` `[1, D]`.
    h: usize,
    /// Input `s` `[1, S]`.
    s: usize,
    /// Input `prev_action` `[1, A]`.
    prev_action: usize,
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
    pub fn open(
        dir: &Path,
        manifest: &Manifest,
        options: &AgentOptions,
    ) -> Result<Self, LoadError> {
        let graph = GraphRunner::open(dir, manifest, bundle::POLICY_STEP, options)?;
        let fused = Fused {
            obs: ObsInputs::find(&graph),
            h: graph.require_input(names::H)?,
            s: graph.require_input(names::S)?,
            prev_action: graph.require_input(names::PREV_ACTION)?,
            noise: graph.require_input(names::NOISE)?,
            action_noise: graph.require_input(names::ACTION_NOISE)?,
            out_action: graph.require_output(names::ACTION)?,
            out_h: graph.require_output(names::H_NEXT)?,
            out_s: graph.require_output(names::S_NEXT)?,
            out_surprise: graph.require_output(names::SURPRISE)?,
            graph,
        };
        let (g, role) = (&fused.graph, bundle::POLICY_STEP);
        let a = manifest.action.size as usize;
        let checks = [
            (
                "h_next against h",
                g.output_len(fused.out_h),
                g.input_len(fused.h),
            ),
            (
                "s_next against s",
                g.output_len(fused.out_s),
                g.input_len(fused.s),
            ),
            (
                "action against the manifest's action size",
                g.output_len(fused.out_action),
                a,
            ),
            (
                "prev_action against the manifest's action size",
                g.input_len(fused.prev_action),
                a,
            ),
            ("surprise (batch 1)", g.output_len(fused.out_surprise), 1),
        ];
        for (what, x, y) in checks {
            same_size(role, what, x, y)?;
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
        g.copy_output_to_input(self.out_h, self.h);
        g.copy_output_to_input(self.out_s, self.s);
        g.copy_output_to_input(self.out_action, self.prev_action);
        action.copy_from_slice(g.output_f32(self.out_action));
        Ok(g.output_f32(self.out_surprise)[0])
    }

    fn prime(&mut self) -> Result<(), StepError> {
        run(&mut self.graph)
    }

    fn reset(&mut self) {
        for index in [self.h, self.s, self.prev_action] {
            self.graph.input_f32(index).fill(0.0);
        }
    }

    fn set_previous_action(&mut self, action: &[f32]) {
        self.graph
            .input_f32(self.prev_action)
            .copy_from_slice(action);
    }

    fn latent(&self) -> Latent<'_> {
        Latent {
            h: self.graph.input_f32_ref(self.h),
            s: self.graph.input_f32_ref(self.s),
        }
    }

    fn placements(&self) -> Vec<&GraphPlacement> {
        vec![&self.graph.placement]
    }
}
