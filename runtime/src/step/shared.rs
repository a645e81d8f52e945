//! What every step mode does the same way: run a graph, refuse non-finite outputs, draw
//! noise, and check at load that tensors copied into each other agree in size.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use dreamer_bundle::names;

use crate::error::{LoadError, StepError};
use crate::graph::GraphRunner;

/// Runs the graph on its bound inputs, naming it in the error.
pub fn run(graph: &mut GraphRunner) -> Result<(), StepError> {
    graph.run().map_err(|message| StepError::Runtime {
        graph: graph.role.clone(),
        message,
    })
}

pub fn check_finite(values: &[f32], output: &'static str) -> Result<(), StepError> {
    if values.iter().all(|x| x.is_finite()) {
        Ok(())
    } else {
        Err(StepError::NonFiniteOutput { output })
    }
}

/// Fills a noise input with standard normal values; with no generator (zero noise) the
/// input keeps the zeros it was allocated with.
pub fn fill_noise(target: &mut [f32], rng: Option<&mut ChaCha8Rng>) {
    if let Some(rng) = rng {
        target
            .iter_mut()
            .for_each(|x| *x = rng.sample(StandardNormal));
    }
}

/// Tensors copied into each other must agree in size; checked once at load.
pub fn same_size(graph: &str, what: &str, a: usize, b: usize) -> Result<(), LoadError> {
    if a == b {
        Ok(())
    } else {
        Err(LoadError::Manifest {
            graph: graph.to_string(),
            message: format!("{what}: {a} values against {b}"),
        })
    }
}

/// Finds the output `action` `[1, A]` of `graph` and checks it holds `action_size` values.
pub fn action_output(graph: &GraphRunner, action_size: usize) -> Result<usize, LoadError> {
    let index = graph.require_output(names::ACTION)?;
    same_size(
        &graph.role,
        "action against the manifest's action size",
        graph.output_len(index),
        action_size,
    )?;
    Ok(index)
}

/// Finds the output `surprise` `[1]` of `graph` (batch 1).
pub fn surprise_output(graph: &GraphRunner) -> Result<usize, LoadError> {
    let index = graph.require_output(names::SURPRISE)?;
    same_size(
        &graph.role,
        "surprise (batch 1)",
        graph.output_len(index),
        1,
    )?;
    Ok(index)
}
