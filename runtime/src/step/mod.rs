//! The agent's step modes behind one interface: which graphs turn an observation into an
//! action, and where the latent state and previous action live between steps.
//!
//! Sizes in the step modes: `D` deterministic state, `S` stochastic state, `A` action, `E`
//! encoder embedding. The batch is 1, so a `[1, D]` tensor is a slice of `D` values.

mod fused;
mod graphs;
mod latent;
mod observation;
mod separate;
mod shared;
mod split;

use dreamer_bundle::Bundle;

use crate::error::LoadError;
use crate::options::{AgentOptions, GraphMode};

pub use graphs::Latent;
pub(crate) use graphs::StepGraphs;
pub use observation::Observation;
pub(crate) use observation::ObservationSizes;

/// Opens the graphs of `options.mode` from the opened `bundle` and checks that the tensors
/// copied between them, and the observation inputs, agree with each other and the manifest.
pub(crate) fn open(
    bundle: &Bundle,
    options: &AgentOptions,
) -> Result<Box<dyn StepGraphs>, LoadError> {
    Ok(match options.mode {
        GraphMode::Fused => Box::new(fused::Fused::open(bundle, options)?),
        GraphMode::Separate => Box::new(separate::Separate::open(bundle, options)?),
        GraphMode::Split => Box::new(split::Split::open(bundle, options)?),
    })
}
