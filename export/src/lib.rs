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

mod checkpoint;
mod graphs;
mod onnx;
mod task;
mod verify;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dreamer_bundle::{
    ActionInfo, BundleError, DType, GraphInfo, LatentInfo, MANIFEST_FILE, Manifest,
    ObservationInfo, PixelInfo, StateInfo, TaskInfo, TensorInfo, TrainingInfo,
};

pub use checkpoint::{
    CONFIG_FILE, Checkpoint, MODEL_FILE, ObsMode, REFERENCE_FILE, STATE_FILE, Sizes, Tensor,
    TensorProblem, contract,
};
pub use onnx::{IR_VERSION, OPSET, Precision};
pub use task::{TaskFacts, task_facts};
pub use verify::{Goals, goals, init_onnxruntime, verify};

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
    #[error(transparent)]
    Bundle(#[from] BundleError),
}

fn join(problems: &[TensorProblem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// How to export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportOptions {
    /// Static batch size of every graph (1 for a controller).
    pub batch: usize,
    /// Weight storage; computation is float32 either way.
    pub precision: Precision,
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
            verify: true,
            onnxruntime: None,
            eval_return: None,
        }
    }
}

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

/// Exports `checkpoint_dir` to the bundle folder `out_dir`.
///
/// The bundle is written to a temporary folder beside `out_dir`, verified there, and renamed
/// into place; an existing `out_dir` (which must be a bundle or empty) is replaced only then,
/// so a failed export leaves it untouched.
pub fn export(
    checkpoint_dir: &Path,
    out_dir: &Path,
    options: &ExportOptions,
) -> Result<ExportReport, ExportError> {
    if options.batch == 0 {
        return Err(ExportError::Unsupported {
            option: "batch".to_string(),
            value: "0".to_string(),
            supported: "an integer >= 1".to_string(),
        });
    }
    let start = Instant::now();
    let ckpt = Checkpoint::load(checkpoint_dir)?;
    let facts = task_facts(&ckpt.task_name, ckpt.obs, ckpt.action_repeat)?;
    check_task(&ckpt, &facts)?;
    let reference = checkpoint_dir.join(REFERENCE_FILE);
    if options.verify && !reference.is_file() {
        return Err(ExportError::NoReference { path: reference });
    }
    check_out_dir(out_dir)?;

    let graphs = graphs::build_all(&ckpt, options.batch, options.precision).map_err(|e| {
        ExportError::Serialize {
            graph: "bundle".to_string(),
            message: e.to_string(),
        }
    })?;
    let staging = Staging::create(out_dir)?;
    let mut manifest = manifest(&ckpt, &facts, options, &graphs);
    for graph in &graphs {
        let file = format!("{}.onnx", graph.role);
        let path = staging.dir.join(&file);
        fs::write(&path, &graph.bytes).map_err(|source| ExportError::Io {
            path: path.clone(),
            source,
        })?;
        manifest
            .files
            .insert(file, dreamer_bundle::sha256_file(&path)?);
    }
    write_manifest(&staging.dir, &manifest)?;
    let build_time = start.elapsed();

    let verify_start = Instant::now();
    if options.verify {
        init_onnxruntime(options.onnxruntime.as_deref())?;
        manifest.verification = Some(verify(&staging.dir, &reference)?);
        write_manifest(&staging.dir, &manifest)?;
    }
    let verify_time = verify_start.elapsed();

    let file_bytes = file_sizes(&staging.dir)?;
    staging.commit(out_dir)?;
    Ok(ExportReport {
        out_dir: out_dir.to_path_buf(),
        manifest,
        file_bytes,
        build_time,
        verify_time,
    })
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

fn manifest(
    ckpt: &Checkpoint,
    facts: &TaskFacts,
    options: &ExportOptions,
    graphs: &[graphs::BuiltGraph],
) -> Manifest {
    let a = ckpt.sizes.action;
    let tensor_info = |p: &onnx::Port| TensorInfo {
        name: p.name.clone(),
        dtype: match p.elem {
            onnx::ElemType::Float32 => DType::Float32,
            onnx::ElemType::Uint8 => DType::Uint8,
        },
        shape: p.shape.clone(),
    };
    Manifest {
        format_version: dreamer_bundle::FORMAT_VERSION,
        task: TaskInfo {
            name: ckpt.task_name.clone(),
            control_period_s: facts.control_period_s,
            action_repeat: ckpt.action_repeat,
            episode_decisions: facts.episode_decisions,
        },
        observation: ObservationInfo {
            pixels: ckpt.obs.uses_pixels().then(|| PixelInfo {
                height: checkpoint::PIXEL_HW as u32,
                width: checkpoint::PIXEL_HW as u32,
                channels: checkpoint::PIXEL_CHANNELS as u32,
                layout: "HWC".to_string(),
                preprocess: "x / 255 - 0.5, then HWC -> CHW (inside the graph, the scaling \
                             folded into the first convolution; feed raw uint8)"
                    .to_string(),
            }),
            state: ckpt.sizes.obs_state.map(|o| StateInfo {
                size: o as u32,
                fields: facts.state_fields.clone(),
            }),
        },
        action: ActionInfo {
            size: a as u32,
            low: vec![-1.0; a],
            high: vec![1.0; a],
            physical_low: facts.physical_action_low.clone(),
            physical_high: facts.physical_action_high.clone(),
        },
        latent: LatentInfo {
            deter: ckpt.sizes.deter as u32,
            stoch: ckpt.sizes.stoch as u32,
            embed: ckpt.sizes.embed() as u32,
            initial: "zeros".to_string(),
            min_std: ckpt.min_std,
        },
        batch: options.batch as u32,
        precision: options.precision.name().to_string(),
        opset: OPSET,
        ir_version: IR_VERSION,
        graphs: graphs
            .iter()
            .map(|g| {
                let info = GraphInfo {
                    file: format!("{}.onnx", g.role),
                    inputs: g.inputs.iter().map(tensor_info).collect(),
                    outputs: g.outputs.iter().map(tensor_info).collect(),
                };
                (g.role.to_string(), info)
            })
            .collect(),
        training: TrainingInfo {
            env_steps: ckpt.env_steps,
            updates: ckpt.updates,
            eval_return: options.eval_return.or(ckpt.eval_return),
            config: ckpt.config_summary.clone(),
        },
        verification: None,
        files: BTreeMap::new(),
    }
}

fn write_manifest(dir: &Path, manifest: &Manifest) -> Result<(), ExportError> {
    let path = dir.join(MANIFEST_FILE);
    let text = serde_json::to_string_pretty(manifest).map_err(|e| ExportError::Serialize {
        graph: MANIFEST_FILE.to_string(),
        message: e.to_string(),
    })?;
    fs::write(&path, text + "\n").map_err(|source| ExportError::Io { path, source })
}

fn file_sizes(dir: &Path) -> Result<BTreeMap<String, u64>, ExportError> {
    let io = |source| ExportError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut sizes = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let len = entry.metadata().map_err(io)?.len();
        sizes.insert(entry.file_name().to_string_lossy().into_owned(), len);
    }
    Ok(sizes)
}

/// An existing output folder is replaced only if it is a bundle (has a manifest) or empty,
/// so a mistyped `--out` cannot delete unrelated files.
fn check_out_dir(out_dir: &Path) -> Result<(), ExportError> {
    let err = |message: &str| ExportError::OutDir {
        path: out_dir.to_path_buf(),
        message: message.to_string(),
    };
    if !out_dir.exists() {
        return Ok(());
    }
    if !out_dir.is_dir() {
        return Err(err("exists and is not a folder"));
    }
    let empty = fs::read_dir(out_dir)
        .map_err(|source| ExportError::Io {
            path: out_dir.to_path_buf(),
            source,
        })?
        .next()
        .is_none();
    if empty || out_dir.join(MANIFEST_FILE).is_file() {
        Ok(())
    } else {
        Err(err(
            "exists, is not empty and holds no manifest.json: refusing to replace it",
        ))
    }
}

/// A temporary folder beside the output folder, removed on drop unless committed.
struct Staging {
    dir: PathBuf,
    committed: bool,
}

impl Staging {
    fn create(out_dir: &Path) -> Result<Staging, ExportError> {
        let (parent, name) = split_out_dir(out_dir)?;
        fs::create_dir_all(&parent).map_err(|source| ExportError::Io {
            path: parent.clone(),
            source,
        })?;
        let dir = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|source| ExportError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        fs::create_dir(&dir).map_err(|source| ExportError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Staging {
            dir,
            committed: false,
        })
    }

    /// Moves the staged bundle to `out_dir`, replacing an existing one.
    fn commit(mut self, out_dir: &Path) -> Result<(), ExportError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| ExportError::Io { path, source }
        };
        if out_dir.exists() {
            let (parent, name) = split_out_dir(out_dir)?;
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            if old.exists() {
                fs::remove_dir_all(&old).map_err(io(&old))?;
            }
            fs::rename(out_dir, &old).map_err(io(out_dir))?;
            if let Err(source) = fs::rename(&self.dir, out_dir) {
                // Put the previous bundle back before reporting.
                let _ = fs::rename(&old, out_dir);
                return Err(ExportError::Io {
                    path: out_dir.to_path_buf(),
                    source,
                });
            }
            // The new bundle is in place; a leftover previous one only wastes space.
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.dir, out_dir).map_err(io(out_dir))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// (parent folder, last component) of the output folder.
fn split_out_dir(out_dir: &Path) -> Result<(PathBuf, String), ExportError> {
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ExportError::OutDir {
            path: out_dir.to_path_buf(),
            message: "has no folder name".to_string(),
        })?;
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}
