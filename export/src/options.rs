//! [`ExportOptions`]: how to export (batch, weight precision, graph form, verification).

use std::path::PathBuf;

use dreamer_bundle::GraphForm;

use crate::onnx::Precision;

/// How to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Static batch size of every graph (1 for a controller).
    pub batch: usize,
    /// Weight storage (float32, float16) or int8 layers.
    pub precision: Precision,
    /// Fewest nodes (the default) or elementary operators only.
    pub graph_form: GraphForm,
    /// Run the verification pass (needs `reference.safetensors` in the checkpoint).
    pub verify: bool,
    /// ONNX Runtime library for verification; `None` searches as `dreamer_ort` says.
    pub onnxruntime: Option<PathBuf>,
    /// Mean noise-free return measured at export time; overrides `eval_return` in `state.json`.
    pub eval_return: Option<f64>,
    /// Int8: the episodes to calibrate on; `None` is the run's own replay
    /// (`<checkpoint>/../replay`).
    pub calibration_replay: Option<PathBuf>,
    /// Int8: at most this many replay steps are calibrated on (the newest episodes first).
    pub calibration_steps: usize,
    /// float16 and int8: noise-free episodes over which the bundle's return is compared with
    /// the float32 bundle's.
    pub return_episodes: usize,
    /// float16 and int8: largest accepted drop of that mean return, relative to
    /// `max(|float32 mean|, 1)` (a negative value demands an improvement).
    pub max_return_drop: f64,
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
            calibration_replay: None,
            calibration_steps: 5000,
            return_episodes: 20,
            max_return_drop: 0.05,
        }
    }
}
