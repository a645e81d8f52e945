//! The one error type of the crate, and what went wrong inside a worker.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// When a worker failed: the step number counts agent decisions since the last reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Starting the process, building the env, the spec handshake.
    Start,
    /// Resetting the env.
    Reset,
    /// The n-th decision since the last reset (1-based).
    Step(u32),
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stage::Start => f.write_str("at start-up"),
            Stage::Reset => f.write_str("at reset"),
            Stage::Step(n) => write!(f, "at step {n} (decisions since reset)"),
        }
    }
}

/// What a worker did wrong.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The worker sent an error frame: an exception in the env, or a check it made itself
    /// (bad observation, unsupported space, unknown id, missing package).
    Raised {
        message: String,
        /// The last lines of the Python traceback (empty for the worker's own checks).
        traceback: Vec<String>,
    },
    /// The process ended (or closed its output) without replying.
    Exited { status: String },
    /// No reply before the deadline.
    TimedOut {
        after: Duration,
        option: &'static str,
    },
    /// A frame that breaks the protocol (size, kind, JSON).
    Protocol { detail: String },
    /// A well-formed reply holding a value the bridge refuses (NaN, infinity, a bad flag).
    BadValue { detail: String },
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Raised { message, traceback } => {
                f.write_str(message)?;
                if !traceback.is_empty() {
                    f.write_str("\n  Python traceback (last lines):")?;
                    for line in traceback {
                        write!(f, "\n    {line}")?;
                    }
                }
                Ok(())
            }
            Fault::Exited { status } => {
                write!(f, "the worker process ended without replying ({status})")
            }
            Fault::TimedOut { after, option } => write!(
                f,
                "no reply within {:.3} s (BridgeOptions::{option}); the env hangs or is too slow",
                after.as_secs_f64()
            ),
            Fault::Protocol { detail } => write!(f, "protocol: {detail}"),
            Fault::BadValue { detail } => f.write_str(detail),
        }
    }
}

/// The last lines a worker wrote to stderr, shown under an error.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StderrTail(pub Vec<String>);

impl fmt::Display for StderrTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str("\n  worker stderr (last lines):")?;
        for line in &self.0 {
            write!(f, "\n    {line}")?;
        }
        Ok(())
    }
}

/// Everything that can go wrong when starting or driving bridged environments.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BridgeError {
    #[error("task `{task}`: {reason}")]
    InvalidTask { task: String, reason: String },
    #[error("invalid bridge option `{option}`: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
    #[error(
        "{task}: cannot start Python `{}` ({reason}); looked up as {lookup}. Run \
         scripts/fetch-deps (it installs .deps/envs with gymnasium and dm_control), or point \
         DREAMER_PYTHON or BridgeOptions::python at a Python 3 that has them",
        python.display()
    )]
    PythonNotFound {
        task: String,
        python: PathBuf,
        lookup: String,
        reason: String,
    },
    #[error("{task} worker {worker} {stage}: {fault}{stderr}")]
    Worker {
        task: String,
        worker: usize,
        stage: Stage,
        fault: Fault,
        stderr: StderrTail,
    },
    #[error("{task}: worker {worker} describes the env differently from worker 0: {difference}")]
    SpecMismatch {
        task: String,
        worker: usize,
        difference: String,
    },
    #[error("{task}: {reason}")]
    Batch { task: String, reason: String },
    #[error("{task}: the bridge stopped after an earlier error ({first}); build a new one")]
    Stopped { task: String, first: String },
    #[error("cannot write the worker script into a private temporary folder: {0}")]
    Script(String),
}
