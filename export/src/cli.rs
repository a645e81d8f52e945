//! The export options both command lines take, `dreamer-export` and the trainer's
//! `dreamer export`, defined once.

use std::path::{Path, PathBuf};

use dreamer_bundle::{GraphForm, SecretKey};

use crate::error::ExportError;
use crate::onnx::Precision;
use crate::options::ExportOptions;
use crate::pipeline::{ExportReport, export_signed};

/// `--precision` (see [`Precision`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrecisionArg {
    Float32,
    Float16,
    Int8,
}

/// `--graph-form` (see [`GraphForm`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GraphFormArg {
    Compact,
    Decomposed,
}

/// Where the bundle goes and how it is built.
#[derive(Debug, Clone, clap::Args)]
pub struct BundleArgs {
    /// Bundle folder to write; an existing bundle there is replaced once the new one verified.
    #[arg(long)]
    pub out: PathBuf,
    /// Static batch size of every graph.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// `float32`; `float16` (weights stored as float16, computation float32); `int8` (the
    /// convolutions, hidden dense layers and the GRU's matrix products quantized, calibrated
    /// on the run's replay). A
    /// float16 or int8 bundle is refused when its return over noise-free episodes falls
    /// short of the float32 bundle's by more than --max-return-drop.
    #[arg(long, value_enum, default_value = "float32")]
    pub precision: PrecisionArg,
    /// Same as `--precision float16`.
    #[arg(long, conflicts_with = "precision")]
    pub fp16: bool,
    /// int8: the replay folder (episode files `ep*.npz`) to calibrate on [default: the
    /// `replay` folder of the checkpoint's run, `CHECKPOINT/../replay`].
    #[arg(long, value_name = "DIR")]
    pub calibration_replay: Option<PathBuf>,
    /// int8: calibrate on at most this many replay steps, newest episodes first.
    #[arg(long, default_value_t = 5000, value_name = "N")]
    pub calibration_steps: usize,
    /// float16 / int8: noise-free episodes over which the return is compared with the float32
    /// bundle's.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub return_episodes: usize,
    /// float16 / int8: largest accepted drop of the mean return, as a fraction of
    /// max(|float32 mean|, 1).
    #[arg(long, default_value_t = 0.05, value_name = "FRACTION")]
    pub max_return_drop: f64,
    /// How the graphs express the model: `compact` (ONNX's GRU operator, one Softplus node,
    /// constants folded: fewest nodes) or `decomposed` (elementary operators only, for an
    /// execution provider that needs them).
    #[arg(long, value_enum, default_value = "compact")]
    pub graph_form: GraphFormArg,
    /// ONNX Runtime library for the verification (default: $ORT_DYLIB_PATH, next to this
    /// executable, then the build-time default).
    #[arg(long, visible_alias = "onnxruntime", value_name = "FILE")]
    pub ort_lib: Option<PathBuf>,
    /// Secret key file (from `dreamer-export keygen`) to sign the bundle with: writes
    /// `manifest.json.sig`, which runtimes given the matching public key require.
    #[arg(long, value_name = "FILE")]
    pub sign_key: Option<PathBuf>,
}

impl BundleArgs {
    /// The export options these arguments ask for, verified, with no evaluation return.
    pub fn options(&self) -> ExportOptions {
        ExportOptions {
            batch: self.batch,
            precision: match (self.fp16, self.precision) {
                (true, _) | (false, PrecisionArg::Float16) => Precision::Float16,
                (false, PrecisionArg::Float32) => Precision::Float32,
                (false, PrecisionArg::Int8) => Precision::Int8,
            },
            graph_form: match self.graph_form {
                GraphFormArg::Compact => GraphForm::Compact,
                GraphFormArg::Decomposed => GraphForm::Decomposed,
            },
            verify: true,
            onnxruntime: self.ort_lib.clone(),
            eval_return: None,
            calibration_replay: self.calibration_replay.clone(),
            calibration_steps: self.calibration_steps,
            return_episodes: self.return_episodes,
            max_return_drop: self.max_return_drop,
        }
    }

    /// The signing key `--sign-key` names, read before any work so a bad key fails fast.
    pub fn signing_key(&self) -> Result<Option<SecretKey>, ExportError> {
        Ok(self.sign_key.as_deref().map(SecretKey::read).transpose()?)
    }

    /// Exports `checkpoint_dir` to `--out` with `options`, signed when `--sign-key` is given.
    pub fn export(
        &self,
        checkpoint_dir: &Path,
        options: &ExportOptions,
    ) -> Result<ExportReport, ExportError> {
        let key = self.signing_key()?;
        export_signed(checkpoint_dir, &self.out, options, key.as_ref())
    }
}
