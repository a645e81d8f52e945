//! Everything that can go wrong in an export: [`ExportError`], the per-tensor
//! [`TensorProblem`] it lists, and the small helpers that build it.

use std::fmt;
use std::path::{Path, PathBuf};

use dreamer_bundle::BundleError;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot access {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid safetensors file: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{path}: tensor `{name}` has dtype {found}, expected {expected}")]
    TensorDtype {
        path: PathBuf,
        name: String,
        found: String,
        expected: &'static str,
    },
    #[error(
        "{path} does not match the checkpoint contract (docs/checkpoint-format.md): {}",
        join(problems)
    )]
    Tensors {
        path: PathBuf,
        problems: Vec<TensorProblem>,
    },
    #[error("{path}: cannot derive the network sizes: {message}")]
    Sizes { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("unsupported option `{option}` = {value}: supported is {supported}")]
    Unsupported {
        option: String,
        value: String,
        supported: String,
    },
    #[error("task `{name}`: {message}")]
    Task { name: String, message: String },
    #[error(
        "the checkpoint has no reference file {path}: it is needed to verify the bundle (a checkpoint from `dreamer export` always has one); export with --no-verify to skip verification"
    )]
    NoReference { path: PathBuf },
    #[error("reference file {path}: {}", join(problems))]
    Reference {
        path: PathBuf,
        problems: Vec<TensorProblem>,
    },
    #[error("cannot serialise graph `{graph}`: {message}")]
    Serialize { graph: String, message: String },
    #[error("ONNX Runtime{}: {message}", file.as_ref().map(|f| format!(" ({})", f.display())).unwrap_or_default())]
    OnnxRuntime {
        file: Option<PathBuf>,
        message: String,
    },
    #[error("verification failed: {what}: max error {err:e} is not below the goal {goal:e}")]
    Verification { what: String, err: f64, goal: f64 },
    #[error("output folder {path}: {message}")]
    OutDir { path: PathBuf, message: String },
    #[error("calibration replay {path}: {message}")]
    Calibration { path: PathBuf, message: String },
    #[error(
        "refused: the {precision} bundle's mean return over {episodes} noise-free episodes is \
         {bundle:.3} against the float32 bundle's {float32:.3} on the same episodes, a drop of \
         {:.2} % (tolerance {:.2} %)",
        drop * 100.0,
        tolerance * 100.0
    )]
    ReturnDrop {
        precision: String,
        episodes: usize,
        float32: f64,
        bundle: f64,
        drop: f64,
        tolerance: f64,
    },
    #[error("evaluation episode {episode} in task `{task}`: {message}")]
    Evaluation {
        task: String,
        episode: usize,
        message: String,
    },
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

impl ExportError {
    /// For `map_err`: an I/O error on `path`.
    pub(crate) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + use<> {
        let path = path.to_path_buf();
        move |source| ExportError::Io { path, source }
    }
}

/// What is wrong with one tensor of a checkpoint (or of a reference file).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorProblem {
    Missing {
        name: String,
        expected: Vec<usize>,
    },
    Extra {
        name: String,
        shape: Vec<usize>,
    },
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    NonFinite {
        name: String,
        index: usize,
        value: f32,
    },
}

impl fmt::Display for TensorProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TensorProblem::Missing { name, expected } => {
                write!(f, "missing tensor `{name}` (expected shape {expected:?})")
            }
            TensorProblem::Extra { name, shape } => {
                write!(f, "unexpected tensor `{name}` with shape {shape:?}")
            }
            TensorProblem::Shape {
                name,
                expected,
                found,
            } => write!(
                f,
                "tensor `{name}` has shape {found:?}, expected {expected:?}"
            ),
            TensorProblem::NonFinite { name, index, value } => {
                write!(f, "tensor `{name}` holds {value} at flat index {index}")
            }
        }
    }
}

/// Every problem of a list on one line, for an error message.
fn join(problems: &[TensorProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}
