//! The export pipeline: checkpoint and task checked, graphs built and staged with their
//! manifest, verified, and moved into place; [`ExportReport`] is what it produced.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dreamer_bundle::{MANIFEST_FILE, Manifest, SIGNATURE_FILE, SecretKey};

use crate::calibrate::{calibrate, default_replay};
use crate::checkpoint::{Checkpoint, REFERENCE_FILE};
use crate::error::ExportError;
use crate::graphs;
use crate::manifest::{manifest, quantization_info, write_manifest};
use crate::onnx::Precision;
use crate::options::ExportOptions;
use crate::staging::{Staging, check_out_dir};
use crate::task::{TaskFacts, task_facts};
use crate::verify::{ReturnSpec, goals, init_onnxruntime, verify};

/// What an export produced.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub out_dir: PathBuf,
    pub manifest: Manifest,
    /// Bytes of every file of the bundle, by file name (manifest included).
    pub file_bytes: BTreeMap<String, u64>,
    /// Time spent building and writing the graphs.
    pub build_time: Duration,
    /// Time spent in verification (zero when skipped).
    pub verify_time: Duration,
}

impl ExportReport {
    pub fn bundle_bytes(&self) -> u64 {
        self.file_bytes.values().sum()
    }

    /// What a user wants to see after an export: where, how big, how long, how close.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut text = format!(
            "wrote {} ({} files, {} bytes) in {:.2} s (+{:.2} s verification)",
            self.out_dir.display(),
            self.file_bytes.len(),
            self.bundle_bytes(),
            self.build_time.as_secs_f64(),
            self.verify_time.as_secs_f64()
        );
        match &self.manifest.verification {
            Some(v) => {
                for (graph, err) in &v.random_max_abs_err {
                    let _ = write!(text, "\n  random cases  {graph:<14} max abs err {err:.2e}");
                }
                if let (Some(step), Some(last)) = (
                    v.trajectory_step_max_abs_err,
                    v.trajectory_final_latent_max_abs_err,
                ) {
                    let _ = write!(
                        text,
                        "\n  trajectory    {} steps: per step {step:.2e}, final latent {last:.2e}",
                        v.trajectory_steps
                    );
                    // Only a latent-sized error fails the export; between the two the bundle
                    // is valid and the trained policy amplifies float32 rounding.
                    let goal = goals(&self.manifest.precision).step;
                    if step >= goal {
                        let _ = write!(
                            text,
                            "\n  note          per step is above the {goal:.0e} goal: this policy \
                             amplifies float32 rounding (steep or saturated actor, docs/export.md)"
                        );
                    }
                }
                let _ = write!(text, "\n  ONNX Runtime {}", v.onnxruntime_version);
            }
            None => text.push_str("\n  not verified"),
        }
        text
    }
}

/// Exports `checkpoint_dir` to the bundle folder `out_dir`, unsigned (see [`export_signed`]).
pub fn export(
    checkpoint_dir: &Path,
    out_dir: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    export_signed(checkpoint_dir, out_dir, options, None)
}

/// Exports `checkpoint_dir` to the bundle folder `out_dir`, and with `sign_key` signs the
/// exact bytes of the final `manifest.json` into `manifest.json.sig` (the manifest lists
/// every file's sha256, so the signature covers the graphs).
///
/// The bundle is written to a temporary folder beside `out_dir`, verified there, and renamed
/// into place; an existing `out_dir` (which must be a bundle or empty) is replaced only then,
/// so a failed export leaves it untouched.
pub fn export_signed(
    checkpoint_dir: &Path,
    out_dir: &Path,
    options: &ExportOptions,
    sign_key: Option<&SecretKey>,
) -> Result<ExportReport, ExportError> {
    if options.batch == 0 {
        return Err(ExportError::Unsupported {
            option: "batch".to_string(),
            value: "0".to_string(),
            supported: "an integer >= 1".to_string(),
        });
    }
    let unsupported = |option: &str, value: String, supported: &str| {
        Err(ExportError::Unsupported {
            option: option.to_string(),
            value,
            supported: supported.to_string(),
        })
    };
    if options.precision == Precision::Int8 && options.calibration_steps == 0 {
        return unsupported("calibration_steps", "0".into(), "an integer >= 1");
    }
    if options.precision != Precision::Float32 && options.verify {
        if options.return_episodes == 0 {
            return unsupported("return_episodes", "0".into(), "an integer >= 1");
        }
        if !options.max_return_drop.is_finite() {
            return unsupported(
                "max_return_drop",
                options.max_return_drop.to_string(),
                "a finite fraction",
            );
        }
    }
    let start = Instant::now();
    let ckpt = Checkpoint::load(checkpoint_dir)?;
    let facts = task_facts(&ckpt)?;
    check_task(&ckpt, &facts)?;
    let reference = checkpoint_dir.join(REFERENCE_FILE);
    if options.verify && !reference.is_file() {
        return Err(ExportError::NoReference { path: reference });
    }
    check_out_dir(out_dir)?;

    let calibration = match options.precision {
        Precision::Int8 => {
            let replay = options
                .calibration_replay
                .clone()
                .unwrap_or_else(|| default_replay(checkpoint_dir));
            Some(calibrate(
                &ckpt,
                options.graph_form,
                &replay,
                options.calibration_steps,
                options.onnxruntime.as_deref(),
            )?)
        }
        Precision::Float32 | Precision::Float16 => None,
    };
    let serialize = |e: protobuf::Error| ExportError::Serialize {
        graph: "bundle".to_string(),
        message: e.to_string(),
    };
    let graphs = graphs::build_all(&ckpt, options, calibration.as_ref()).map_err(serialize)?;
    let staging = Staging::create(out_dir)?;
    let mut manifest = manifest(&ckpt, &facts, options, &graphs);
    manifest.quantization = calibration.as_ref().map(quantization_info);
    for graph in &graphs {
        let file = format!("{}.onnx", graph.role);
        let path = staging.dir.join(&file);
        fs::write(&path, &graph.bytes).map_err(ExportError::io(&path))?;
        // The bytes just written, so the hash is of exactly what the loader must find.
        manifest
            .files
            .insert(file, dreamer_bundle::sha256_hex(&graph.bytes));
    }
    write_manifest(&staging.dir, &manifest)?;
    let build_time = start.elapsed();

    let verify_start = Instant::now();
    if options.verify {
        init_onnxruntime(options.onnxruntime.as_deref())?;
        // A reduced-precision bundle is also judged by its return against the float32 one.
        let float32 = ExportOptions {
            precision: Precision::Float32,
            ..options.clone()
        };
        let float32_policy = match options.precision {
            Precision::Float32 => None,
            Precision::Float16 | Precision::Int8 => graphs::build_all(&ckpt, &float32, None)
                .map_err(serialize)?
                .into_iter()
                .find(|g| g.role == dreamer_bundle::POLICY_STEP),
        };
        let returns = float32_policy.as_ref().map(|policy| ReturnSpec {
            ckpt: &ckpt,
            float32_policy: policy,
            episodes: options.return_episodes,
            tolerance: options.max_return_drop,
        });
        manifest.verification = Some(verify(&staging.dir, &reference, returns)?);
        write_manifest(&staging.dir, &manifest)?;
    }
    let verify_time = verify_start.elapsed();
    if let Some(key) = sign_key {
        sign_manifest(&staging.dir, key)?;
    }

    let file_bytes = staging.file_sizes()?;
    staging.commit(out_dir)?;
    Ok(ExportReport {
        out_dir: out_dir.to_path_buf(),
        manifest,
        file_bytes,
        build_time,
        verify_time,
    })
}

/// Signs the manifest as written in `dir` (read back, so the signature covers the bytes on
/// disk) into the detached signature file beside it.
fn sign_manifest(dir: &Path, key: &SecretKey) -> Result<(), ExportError> {
    let manifest_path = dir.join(MANIFEST_FILE);
    let bytes = fs::read(&manifest_path).map_err(ExportError::io(&manifest_path))?;
    let sig_path = dir.join(SIGNATURE_FILE);
    fs::write(&sig_path, key.sign_manifest(&bytes)).map_err(ExportError::io(&sig_path))
}

/// The task's action and state sizes must be the checkpoint's.
fn check_task(ckpt: &Checkpoint, facts: &TaskFacts) -> Result<(), ExportError> {
    let mismatch = |what: &str, task: usize, ckpt_size: usize, tensor: &str| ExportError::Task {
        name: ckpt.task_name.clone(),
        message: format!(
            "the task's {what} is {task} but the checkpoint's is {ckpt_size} (from tensor `{tensor}`)"
        ),
    };
    if facts.action_size != ckpt.sizes.action {
        return Err(mismatch(
            "action size",
            facts.action_size,
            ckpt.sizes.action,
            "rssm.img_in.weight",
        ));
    }
    if let Some(o) = ckpt.sizes.obs_state
        && o != facts.state_size
    {
        return Err(mismatch(
            "state size",
            facts.state_size,
            o,
            "encoder.state.l0.weight",
        ));
    }
    Ok(())
}
