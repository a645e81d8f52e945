//! The export options both command lines take, `dreamer-export` and the trainer's
//! `dreamer export`, defined once.

use std::path::{Path, PathBuf};

use dreamer_bundle::{GraphForm, SecretKey};

use crate::error::ExportError;
use crate::onnx::Precision;
use crate::options::ExportOptions;
use crate::pipeline::{ExportReport, export_signed};

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
    /// Store the weights as float16 (computation stays float32).
    #[arg(long)]
    pub fp16: bool,
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
            precision: if self.fp16 {
                Precision::Float16
            } else {
                Precision::Float32
            },
            graph_form: match self.graph_form {
                GraphFormArg::Compact => GraphForm::Compact,
                GraphFormArg::Decomposed => GraphForm::Decomposed,
            },
            verify: true,
            onnxruntime: self.ort_lib.clone(),
            eval_return: None,
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
