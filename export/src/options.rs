//! [`ExportOptions`]: how to export (batch, weight precision, graph form, verification).

use std::path::PathBuf;

use dreamer_bundle::GraphForm;

use crate::onnx::Precision;

/// How to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Static batch size of every graph (1 for a controller).
    pub batch: usize,
    /// Weight storage; computation is float32 either way.
    pub precision: Precision,
    /// Fewest nodes (the default) or elementary operators only.
    pub graph_form: GraphForm,
    /// Run the verification pass (needs `reference.safetensors` in the checkpoint).
    pub verify: bool,
    /// ONNX Runtime library for verification; `None` searches as `dreamer_ort` says.
    pub onnxruntime: Option<PathBuf>,
    /// Mean noise-free return measured at export time; overrides `eval_return` in `state.json`.
    pub eval_return: Option<f64>,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            batch: 1,
            precision: Precision::Float32,
            graph_form: GraphForm::Compact,
            verify: true,
            onnxruntime: None,
            eval_return: None,
        }
    }
}
