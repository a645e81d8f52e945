//! ONNX Runtime for the whole workspace: where the shared library is looked for, loading it
//! once per process with the process-wide environment, and the small C-API helpers (status
//! conversion, execution provider list) that `ort` does not wrap.
//!
//! The runtime, the exporter's verification, the trainer's `doctor` and the tests all load
//! ONNX Runtime through [`load`], so they agree on which library a process uses.
//!
//! Search order ([`candidates`]):
//! 1. an explicit path (the `--ort-lib` flag of `dreamer-rt`, `dreamer-export` and
//!    `dreamer export`, `AgentOptions::ort_lib`, `ExportOptions::onnxruntime`);
//! 2. the `ORT_DYLIB_PATH` environment variable;
//! 3. a `libonnxruntime.so` next to the executable;
//! 4. the path baked in at build time from `DREAMER_ORT_DYLIB` (set by the workspace's
//!    `.cargo/config.toml` to the library `scripts/fetch-deps` downloads).
//!
//! An explicit path or a set environment variable is authoritative: when given, later places
//! are not consulted.

mod capi;
mod load;
mod locate;

pub use capi::{available_providers, check_status};
pub use load::{OrtRuntime, load};
pub use locate::{BUILD_DEFAULT, Candidate, ENV_VAR, LIB_FILE, candidates, resolve};

use std::path::PathBuf;

/// Why ONNX Runtime could not be made ready.
#[derive(Debug, thiserror::Error)]
pub enum OrtLibError {
    #[error("{}", locate::not_found_message(.tried))]
    NotFound { tried: Vec<Candidate> },
    #[error("cannot load ONNX Runtime from {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(String),
}
