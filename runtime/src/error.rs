//! Why an agent did not load, and why a step did not produce a policy action.

use std::path::PathBuf;

use dreamer_bundle::BundleError;
use dreamer_ort::OrtLibError;

use crate::provider::Provider;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Bundle(#[from] BundleError),
    #[error(transparent)]
    OrtLibrary(#[from] OrtLibError),
    #[error("graph `{graph}` ({file}): ONNX Runtime cannot create the session: {message}")]
    Session {
        graph: String,
        file: PathBuf,
        message: String,
    },
    #[error("graph `{graph}`: {message}")]
    Manifest { graph: String, message: String },
    #[error(
        "graph `{graph}`: execution provider {provider} is not available: {message} \
         (allow fallback to run on CPU instead)"
    )]
    Provider {
        graph: String,
        provider: Provider,
        message: String,
    },
    #[error("invalid option: {0}")]
    Options(String),
    #[error("warm-up step failed: {0}")]
    Warmup(StepError),
}

/// Why a step did not produce a policy action. The agent has then put its safe action in
/// [`Agent::action`] and left the latent state as it was.
///
/// [`Agent::action`]: crate::Agent::action
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    #[error("observation `{input}` is missing (the policy needs it)")]
    MissingInput { input: &'static str },
    #[error("observation `{input}` has {got} values, the policy needs {expected}")]
    WrongSize {
        input: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("observation `{input}` entry {index} is not finite")]
    NonFinite { input: &'static str, index: usize },
    #[error("ONNX Runtime failed in graph `{graph}`: {message}")]
    Runtime { graph: String, message: String },
    #[error("the policy produced a non-finite {output}")]
    NonFiniteOutput { output: &'static str },
    #[error(
        "the action to send has {got} values (the policy's has {expected}) or one is not \
         finite; the policy's action stands"
    )]
    InvalidAction { expected: usize, got: usize },
}
