//! The model bundle: a folder of ONNX graphs plus `manifest.json`, the contract between the
//! exporter (which writes it) and every runtime (which only reads it).
//!
//! The manifest names every graph's inputs and outputs by role, so a runtime in any language
//! can drive the policy from the bundle alone. Every file is listed with its sha256 and a
//! loader refuses a bundle whose files do not match.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the manifest schema written by this crate. Bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 1;
/// File name of the manifest inside a bundle folder.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Graph roles and their file names.
pub const ENCODER: &str = "encoder";
pub const RSSM_OBS_STEP: &str = "rssm_obs_step";
pub const RSSM_IMG_STEP: &str = "rssm_img_step";
pub const ACTOR: &str = "actor";
pub const POLICY_STEP: &str = "policy_step";
/// `policy_step` after a prepared transition (split steps). Bundles from before it existed
/// lack it; they still load for the fused and separate steps.
pub const POLICY_OBSERVE: &str = "policy_observe";
pub const GRAPH_ROLES: [&str; 6] = [
    ENCODER,
    RSSM_OBS_STEP,
    RSSM_IMG_STEP,
    ACTOR,
    POLICY_STEP,
    POLICY_OBSERVE,
];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: manifest format version {found} is not supported (this build reads {FORMAT_VERSION})"
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{file}: sha256 is {actual}, the manifest says {expected}: the bundle was modified or is incomplete"
    )]
    Checksum {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("manifest {path} has no graph `{role}`")]
    MissingGraph { path: PathBuf, role: String },
    #[error("graph `{graph}` has no {kind} named `{name}` in the manifest")]
    MissingTensor {
        graph: String,
        kind: &'static str,
        name: String,
    },
}

/// Element type of a graph input or output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    Float32,
    Float16,
    Uint8,
}

/// One named input or output of a graph, with its static shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorInfo {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<i64>,
}

/// One ONNX graph of the bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphInfo {
    /// File name relative to the bundle folder.
    pub file: String,
    pub inputs: Vec<TensorInfo>,
    pub outputs: Vec<TensorInfo>,
}

impl GraphInfo {
    pub fn input(&self, graph: &str, name: &str) -> Result<&TensorInfo, BundleError> {
        find(&self.inputs, graph, "input", name)
    }
    pub fn output(&self, graph: &str, name: &str) -> Result<&TensorInfo, BundleError> {
        find(&self.outputs, graph, "output", name)
    }
}

fn find<'a>(
    list: &'a [TensorInfo],
    graph: &str,
    kind: &'static str,
    name: &str,
) -> Result<&'a TensorInfo, BundleError> {
    list.iter()
        .find(|t| t.name == name)
        .ok_or_else(|| BundleError::MissingTensor {
            graph: graph.to_string(),
            kind,
            name: name.to_string(),
        })
}

/// The task the policy was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Task name in `dreamer-tasks` (e.g. `cartpole-swingup`).
    pub name: String,
    /// Seconds between two policy decisions (physics period times action repeat).
    pub control_period_s: f64,
    /// Environment steps per policy decision; rewards are summed over them.
    pub action_repeat: u32,
    /// Policy decisions per episode.
    pub episode_decisions: u32,
}

/// Pixel observation layout. The graph does the preprocessing: feed raw u8 pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PixelInfo {
    pub height: u32,
    pub width: u32,
    pub channels: u32,
    /// Always `HWC` (row-major, RGB interleaved).
    pub layout: String,
    /// What the graph computes from the raw bytes, e.g. `x / 255 - 0.5`.
    pub preprocess: String,
}

/// State observation layout: raw float32 values, in this order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateInfo {
    pub size: u32,
    /// Names of the entries, e.g. `["cos_theta", "sin_theta", "theta_dot"]`.
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationInfo {
    pub pixels: Option<PixelInfo>,
    pub state: Option<StateInfo>,
}

/// Policy actions are normalised to `[low, high]` = `[-1, 1]`; the task maps them to
/// physical units (`physical_low..physical_high`, linearly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionInfo {
    pub size: u32,
    pub low: Vec<f32>,
    pub high: Vec<f32>,
    pub physical_low: Vec<f32>,
    pub physical_high: Vec<f32>,
}

/// Latent state sizes and the state to start (and reset) from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatentInfo {
    pub deter: u32,
    pub stoch: u32,
    pub embed: u32,
    /// `zeros`: h, s and the previous action all start at zero.
    pub initial: String,
    pub min_std: f32,
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingInfo {
    pub env_steps: u64,
    pub updates: u64,
    /// Mean noise-free return measured at export time, when one was measured.
    pub eval_return: Option<f64>,
    /// Resolved training configuration, as key -> value strings.
    pub config: BTreeMap<String, String>,
}

/// Export-time comparison of the bundle (ONNX Runtime) against the trainer's forward pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VerificationInfo {
    /// Largest absolute difference of any output on random single-step inputs, per graph.
    pub random_max_abs_err: BTreeMap<String, f64>,
    /// Largest absolute per-step difference along the recorded closed-loop trajectory, each
    /// step taken from the trainer's previous latent by `policy_step` and by the split step
    /// (`rssm_img_step`, then `policy_observe`, where the bundle has it).
    pub trajectory_step_max_abs_err: Option<f64>,
    /// Largest absolute difference of the latent state at the end of that trajectory.
    pub trajectory_final_latent_max_abs_err: Option<f64>,
    /// Largest difference of the per-step surprise along that trajectory, absolute below
    /// magnitude 1 and relative above (`|a - b| / max(1, |b|)`): a sum of `S` KL terms.
    #[serde(default)]
    pub trajectory_surprise_max_rel_err: Option<f64>,
    pub trajectory_steps: u32,
    pub onnxruntime_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub task: TaskInfo,
    pub observation: ObservationInfo,
    pub action: ActionInfo,
    pub latent: LatentInfo,
    /// Static batch size of every graph.
    pub batch: u32,
    /// `float32` or `float16` (weights).
    pub precision: String,
    pub opset: i64,
    pub ir_version: i64,
    /// Graphs by role (see [`GRAPH_ROLES`]).
    pub graphs: BTreeMap<String, GraphInfo>,
    pub training: TrainingInfo,
    pub verification: Option<VerificationInfo>,
    /// sha256 (lowercase hex) of every other file of the bundle, by file name.
    pub files: BTreeMap<String, String>,
}

impl Manifest {
    pub fn graph(&self, role: &str) -> Result<&GraphInfo, BundleError> {
        self.graphs
            .get(role)
            .ok_or_else(|| BundleError::MissingGraph {
                path: PathBuf::from(MANIFEST_FILE),
                role: role.to_string(),
            })
    }
}

/// Reads `dir/manifest.json` and checks its format version. Does not check file hashes.
pub fn read_manifest(dir: &Path) -> Result<Manifest, BundleError> {
    let path = dir.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).map_err(|source| BundleError::Io {
        path: path.clone(),
        source,
    })?;
    // Check the version first, so an old or future bundle gets the version error and not a
    // field-level parse error.
    #[derive(Deserialize)]
    struct VersionOnly {
        format_version: u32,
    }
    let version: VersionOnly =
        serde_json::from_str(&text).map_err(|source| BundleError::Parse {
            path: path.clone(),
            source,
        })?;
    if version.format_version != FORMAT_VERSION {
        return Err(BundleError::Version {
            path,
            found: version.format_version,
        });
    }
    serde_json::from_str(&text).map_err(|source| BundleError::Parse { path, source })
}

/// Reads the manifest and checks the sha256 of every file it lists.
pub fn open(dir: &Path) -> Result<Manifest, BundleError> {
    let manifest = read_manifest(dir)?;
    for (file, expected) in &manifest.files {
        let path = dir.join(file);
        let actual = sha256_file(&path)?;
        if &actual != expected {
            return Err(BundleError::Checksum {
                file: path,
                expected: expected.clone(),
                actual,
            });
        }
    }
    Ok(manifest)
}

/// Lowercase hex sha256 of a file's contents.
pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let io_err = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Input and output names of the graphs. Every name is also listed in the manifest with its
/// shape and dtype; these constants exist so the exporter and the runtime cannot disagree.
///
/// | graph | inputs | outputs |
/// |---|---|---|
/// | `encoder` | `obs_pixels` u8 `[B,64,64,3]` and/or `obs_state` `[B,O]` | `embed` `[B,E]` |
/// | `rssm_obs_step` | `h` `[B,D]`, `s` `[B,S]`, `prev_action` `[B,A]`, `embed` `[B,E]`, `noise` `[B,S]` | `h_next`, `s_next`, `mean`, `std`, `prior_mean`, `prior_std` |
/// | `rssm_img_step` | `h`, `s`, `action` `[B,A]`, `noise` `[B,S]` | `h_next`, `s_next`, `mean`, `std` |
/// | `actor` | `feat` `[B,D+S]`, `action_noise` `[B,A]` | `action`, `mean`, `std` `[B,A]` |
/// | `policy_step` | `obs_pixels` and/or `obs_state`, `h`, `s`, `prev_action`, `noise`, `action_noise` | `action` `[B,A]`, `h_next`, `s_next`, `surprise` `[B]` |
/// | `policy_observe` | `obs_pixels` and/or `obs_state`, `h_next` `[B,D]`, `prior_mean`, `prior_std` `[B,S]`, `noise`, `action_noise` | `action`, `s_next`, `surprise` |
///
/// `policy_observe` is `policy_step` split after the transition: `h_next`, `prior_mean` and
/// `prior_std` are `rssm_img_step`'s `h_next`, `mean` and `std` on (h, s, previous action)
/// with zero noise, so they can be computed before the observation arrives.
///
/// `noise` is the posterior/prior sampling noise and `action_noise` the actor's; feeding zeros
/// gives the deterministic policy (posterior mean, action mode `tanh(mean)`).
pub mod names {
    pub const OBS_PIXELS: &str = "obs_pixels";
    pub const OBS_STATE: &str = "obs_state";
    pub const EMBED: &str = "embed";
    pub const H: &str = "h";
    pub const S: &str = "s";
    pub const PREV_ACTION: &str = "prev_action";
    pub const ACTION: &str = "action";
    pub const NOISE: &str = "noise";
    pub const ACTION_NOISE: &str = "action_noise";
    pub const FEAT: &str = "feat";
    pub const H_NEXT: &str = "h_next";
    pub const S_NEXT: &str = "s_next";
    pub const MEAN: &str = "mean";
    pub const STD: &str = "std";
    pub const PRIOR_MEAN: &str = "prior_mean";
    pub const PRIOR_STD: &str = "prior_std";
    pub const SURPRISE: &str = "surprise";
}
