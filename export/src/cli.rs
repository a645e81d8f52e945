//! The export options both command lines take, `dreamer-export` and the trainer's
//! `dreamer export`, defined once.

use std::path::PathBuf;

use crate::onnx::Precision;
use crate::options::ExportOptions;

/// Where the bundle goes and how it is built.
#[derive(Debug, Clone, clap::Args)]
pub struct BundleArgs {
    /// Bundle folder to write; an existing bundle there is replaced once the new one verified.
    #[arg(long)]
    pub out: PathBuf,
    /// Static batch size of every graph.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Store the weights as float16 (computation stays float32).
    #[arg(long)]
    pub fp16: bool,
    /// ONNX Runtime library for the verification (default: $ORT_DYLIB_PATH, next to this
    /// executable, then the build-time default).
    #[arg(long, visible_alias = "onnxruntime", value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
}

impl BundleArgs {
    /// The export options these arguments ask for, verified, with no evaluation return.
    pub fn options(&self) -> ExportOptions {
        ExportOptions {
            batch: self.batch,
            precision: if self.fp16 {
                Precision::Float16
            } else {
                Precision::Float32
            },
            verify: true,
            onnxruntime: self.ort_lib.clone(),
            eval_return: None,
        }
    }
}
