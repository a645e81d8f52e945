//! Turns a trainer checkpoint into a model bundle: six static-shape ONNX graphs (opset 17,
//! IR version 8) and `manifest.json` (schema in `dreamer-bundle`), verified with ONNX Runtime
//! against the trainer's recorded forward pass. Reads safetensors directly; no libtorch.
//!
//! ```no_run
//! # use std::path::Path;
//! let report = dreamer_export::export(
//!     Path::new("runs/pendulum/checkpoint"),
//!     Path::new("bundles/pendulum"),
//!     &dreamer_export::ExportOptions::default(),
//! )?;
//! println!("{:?}", report.manifest.verification);
//! # Ok::<(), dreamer_export::ExportError>(())
//! ```
//!
//! The modules, in the order the data flows: `checkpoint` reads and checks the checkpoint,
//! `task` looks the task up, `graphs` builds the graphs with the protobuf writer of `onnx`,
//! `manifest` describes them, `staging` writes the bundle beside its destination, `verify`
//! checks it with ONNX Runtime, and `pipeline` runs these steps as `options` say; `error` is
//! what they fail with; `cli` holds the options both command lines take. This file only
//! declares and re-exports.

mod calibrate;
mod checkpoint;
mod cli;
mod error;
mod graphs;
mod manifest;
mod onnx;
mod options;
mod pipeline;
mod quantize;
mod staging;
mod task;
mod verify;

pub use calibrate::{Calibration, default_replay};
pub use checkpoint::{
    CONFIG_FILE, Checkpoint, MODEL_FILE, ObsMode, REFERENCE_FILE, STATE_FILE, Sizes, Tensor,
    contract,
};
pub use cli::{BundleArgs, GraphFormArg, PrecisionArg};
pub use error::{ExportError, TensorProblem};
pub use onnx::{IR_VERSION, OPSET, Precision};
pub use options::ExportOptions;
pub use pipeline::{ExportReport, export, export_signed};
pub use task::{TaskFacts, task_facts};
pub use verify::{Goals, goals, init_onnxruntime, verify};
