//! The latent state (h, s) and the previous action, kept between steps in the input tensors
//! of the graph that reads them next, so a step copies only what changed.

use super::graphs::Latent;
use super::shared::same_size;
use crate::error::LoadError;
use crate::graph::GraphRunner;

/// Indices of the latent-state inputs of one graph.
#[derive(Debug)]
pub(crate) struct LatentInputs {
    /// Input `h` `[1, D]`.
    pub h: usize,
    /// Input `s` `[1, S]`.
    pub s: usize,
    /// The previous action `[1, A]`: input `prev_action`, or `action` in `rssm_img_step`.
    pub prev_action: usize,
}

impl LatentInputs {
    /// Finds `h`, `s` and the previous action (the input named `prev_action_name`) among
    /// `graph`'s inputs; the previous action must hold `action_size` values.
    pub fn find(
        graph: &GraphRunner,
        prev_action_name: &str,
        action_size: usize,
    ) -> Result<Self, LoadError> {
        let inputs = LatentInputs {
            h: graph.require_input(dreamer_bundle::names::H)?,
            s: graph.require_input(dreamer_bundle::names::S)?,
            prev_action: graph.require_input(prev_action_name)?,
        };
        same_size(
            &graph.role,
            &format!("{prev_action_name} against the manifest's action size"),
            graph.input_len(inputs.prev_action),
            action_size,
        )?;
        Ok(inputs)
    }

    /// Zeroes h, s and the previous action: the initial state.
    pub fn reset(&self, graph: &mut GraphRunner) {
        for index in [self.h, self.s, self.prev_action] {
            graph.input_f32(index).fill(0.0);
        }
    }

    /// Makes `action` `[A]` the previous action.
    pub fn set_previous_action(&self, graph: &mut GraphRunner, action: &[f32]) {
        graph.input_f32(self.prev_action).copy_from_slice(action);
    }

    /// Views of h `[D]` and s `[S]`.
    pub fn latent<'g>(&self, graph: &'g GraphRunner) -> Latent<'g> {
        Latent {
            h: graph.input_f32_ref(self.h),
            s: graph.input_f32_ref(self.s),
        }
    }
}
