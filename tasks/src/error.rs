//! The one error type of the crate.

use thiserror::Error;

/// Everything that can go wrong when building or driving a task.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum TaskError {
    #[error("unknown task `{name}`; available tasks: {}", crate::TASK_NAMES.join(", "))]
    UnknownTask { name: String },
    #[error("invalid option `{option}`: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    #[error("{task}: action has {got} components, expected {expected}")]
    ActionLength {
        task: String,
        expected: usize,
        got: usize,
    },
    #[error("{task}: action component {index} is {value}, expected a finite number")]
    NonFiniteAction {
        task: String,
        index: usize,
        value: f64,
    },
    #[error("{task}: physical state has {got} values, expected {expected} ({fields})")]
    StateLength {
        task: String,
        expected: usize,
        got: usize,
        fields: String,
    },
    #[error("{task}: physical state field `{field}` is {value}, expected a finite number")]
    NonFiniteState {
        task: String,
        field: &'static str,
        value: f64,
    },
    #[error("{task}: the physics step from state {state:?} did not give finite values; state kept")]
    Diverged { task: String, state: Vec<f64> },
    #[error("{task}: step called before reset")]
    NotReset { task: String },
    #[error("{task}: episode is over (truncated or terminated); call reset first")]
    EpisodeOver { task: String },
    #[error("vectorised env: {0}")]
    Batch(String),
}
