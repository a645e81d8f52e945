//! What the agent asks of a step mode: the interface the fused, separate and split steps
//! implement, and the latent state views they hand out.

use std::fmt;

use rand_chacha::ChaCha8Rng;

use super::latent::LatentInputs;
use super::observation::Observation;
use crate::error::StepError;
use crate::graph::GraphRunner;
use crate::provider::GraphPlacement;

/// Latent state views.
#[derive(Debug, Clone, Copy)]
pub struct Latent<'a> {
    /// Deterministic state `[D]`.
    pub h: &'a [f32],
    /// Stochastic state `[S]`.
    pub s: &'a [f32],
}

/// One step mode's graphs with their bound tensors. The latent state and the previous action
/// live in the graphs' own input tensors, so a step copies nothing but the observation in and
/// h', s' and the action back; no method allocates except [`StepGraphs::placements`].
pub(crate) trait StepGraphs: Send + fmt::Debug {
    /// Runs the step on `obs` and returns the surprise (KL(posterior || prior) summed over
    /// `S`). On success the action `[A]` is in `action` and the new latent state and previous
    /// action are committed; on failure nothing is committed and `action` is untouched.
    fn step(
        &mut self,
        obs: &Observation<'_>,
        rng: Option<&mut ChaCha8Rng>,
        action: &mut [f32],
    ) -> Result<f32, StepError>;

    /// Work that depends only on the latent state and previous action, done ahead of the next
    /// observation. Nothing to do in modes that run everything in [`StepGraphs::step`].
    fn prepare(&mut self) -> Result<(), StepError> {
        Ok(())
    }

    /// Runs the graphs of a step on the current inputs and discards the results.
    fn prime(&mut self) -> Result<(), StepError>;

    /// The graph whose inputs hold the latent state and previous action, with their indices.
    fn latent_inputs(&self) -> (&LatentInputs, &GraphRunner);

    /// [`StepGraphs::latent_inputs`], for writing.
    fn latent_inputs_mut(&mut self) -> (&LatentInputs, &mut GraphRunner);

    /// Zeroes h, s and the previous action.
    fn reset(&mut self) {
        let (latent, graph) = self.latent_inputs_mut();
        latent.reset(graph);
    }

    /// Makes `action` `[A]` the previous action the next step sees (after a failed step,
    /// the safe action).
    fn set_previous_action(&mut self, action: &[f32]) {
        let (latent, graph) = self.latent_inputs_mut();
        latent.set_previous_action(graph, action);
    }

    /// The posterior latent state of the last successful step.
    fn latent(&self) -> Latent<'_> {
        let (latent, graph) = self.latent_inputs();
        latent.latent(graph)
    }

    /// Which provider runs each graph.
    fn placements(&self) -> Vec<&GraphPlacement>;
}
