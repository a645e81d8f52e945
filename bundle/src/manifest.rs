//! The manifest schema (`manifest.json`) and its parsing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{BundleError, FORMAT_VERSION, MANIFEST_FILE};

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
    /// Width of the stochastic state `s` (and of its noise and statistics).
    pub stoch: u32,
    /// The stochastic state's kind: 0 (absent) Gaussian; otherwise `stoch / classes`
    /// categoricals of this many classes, `s` their one-hots.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub classes: u32,
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

/// The Python environment of a bridged task (`gym:` / `dmc:`), as the trainer's workers built
/// it: enough to build it again and feed the bundle what the agent saw in training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentInfo {
    /// `gymnasium` (`gym:` tasks, built by `gymnasium.make`) or `dm_control` (`dmc:` tasks,
    /// built by `dm_control.suite.load`).
    pub package: String,
    /// The id given to it: `Pendulum-v1`, `my_pkg.envs:MyRobot-v0`, `cartpole-swingup`.
    pub id: String,
    /// Keyword arguments (`gymnasium.make(id, **kwargs)`, dm_control's `task_kwargs`).
    pub kwargs: serde_json::Map<String, serde_json::Value>,
    /// The observation's arrays in the order they are flattened (C order each) into the
    /// state vector, also in pixel mode.
    pub state_layout: Vec<LayoutInfo>,
    /// The action space as Python printed it; its bounds are `action.physical_low/high`.
    pub action_space: String,
    /// Where frames come from (`render:rgb_array`, `observation:<field>`, dm_control's
    /// `physics.render(...)`), area-resized to `observation.pixels`; null without pixels.
    pub pixels: Option<String>,
    /// Env steps per episode (the env's time limit).
    pub episode_env_steps: u32,
    /// Python and package versions the policy was trained with (`python`, `numpy`,
    /// `gymnasium` or `dm-control`, `mujoco`).
    pub versions: BTreeMap<String, String>,
}

/// One array of an observation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayoutInfo {
    /// Its path in the observation: `obs` for a plain Box, `a.b` for nested dict keys.
    pub name: String,
    pub shape: Vec<usize>,
    /// The env's numpy dtype; the bundle takes every value as float32.
    pub dtype: String,
}

/// `contract.task_definition.source` of a bridged task: the manifest's `environment`.
pub const ENVIRONMENT_SOURCE: &str = "environment";
/// `contract.task_definition.version` of a bridged task: the `environment` section's format.
pub const ENVIRONMENT_VERSION: u32 = 1;

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
    /// Largest absolute difference of the action along that trajectory (included in
    /// `trajectory_step_max_abs_err`; on its own for reduced-precision bundles, whose
    /// latent errors are larger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trajectory_action_max_abs_err: Option<f64>,
    pub trajectory_steps: u32,
    pub onnxruntime_version: String,
    /// Closed-loop returns of a reduced-precision bundle next to the float32 bundle's on the
    /// same episodes; absent for a float32 bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<ReturnCheck>,
}

/// A reduced-precision bundle's return over noise-free evaluation episodes (zero noise
/// inputs, the environment seeded `first_seed`, `first_seed + 1`, ...) against the float32
/// bundle of the same checkpoint on the same episodes. The export is refused when `drop`
/// exceeds `tolerance`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReturnCheck {
    pub episodes: u32,
    pub first_seed: u64,
    pub float32_returns: Vec<f64>,
    pub bundle_returns: Vec<f64>,
    pub float32_mean: f64,
    pub bundle_mean: f64,
    /// `(float32_mean - bundle_mean) / max(|float32_mean|, 1)`: positive when the bundle
    /// does worse.
    pub drop: f64,
    pub tolerance: f64,
}

/// How an int8 bundle was quantized (QDQ form: `QuantizeLinear` / `DequantizeLinear` around
/// float operators).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationInfo {
    /// Activations uint8 per tensor, weights int8 symmetric per output channel, biases int32.
    pub scheme: String,
    /// The quantized layers (checkpoint tensor prefixes); every other weight is float32.
    pub layers: Vec<String>,
    pub calibration: CalibrationInfo,
}

/// Where the activation ranges of an int8 bundle came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CalibrationInfo {
    /// The replay folder, as given to the exporter.
    pub replay: String,
    pub episodes: u32,
    pub steps: u32,
    /// How the ranges were measured.
    pub method: String,
    /// [min, max] of each quantized activation, by probe key (`<layer>.input`,
    /// `<conv>.output`).
    pub ranges: BTreeMap<String, [f32; 2]>,
}

/// How a bundle's graphs are written. Both compute the same function and are verified
/// against the same float64 reference with the same bounds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphForm {
    /// Fewest nodes: ONNX's own `GRU` operator, one `Softplus` node, constants folded into
    /// the weights.
    Compact,
    /// Every step an elementary operator (the GRU as Gemm, Split, Sigmoid, Tanh, Mul, Add;
    /// softplus as `relu(x) + softplus(-|x|)`), for execution providers without a fused GRU
    /// or with a `Softplus` that overflows. Bundles written before the field existed.
    #[default]
    Decomposed,
}

impl GraphForm {
    pub fn name(self) -> &'static str {
        match self {
            GraphForm::Compact => "compact",
            GraphForm::Decomposed => "decomposed",
        }
    }
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
    /// `float32`, `float16` (weights) or `int8` (QDQ layers, see `quantization`).
    pub precision: String,
    /// How the int8 layers were quantized; absent unless `precision` is `int8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<QuantizationInfo>,
    /// How the graphs express the model (the same function either way).
    #[serde(default)]
    pub graph_form: GraphForm,
    pub opset: i64,
    pub ir_version: i64,
    /// Graphs by role (see [`GRAPH_ROLES`]).
    pub graphs: BTreeMap<String, GraphInfo>,
    pub training: TrainingInfo,
    pub verification: Option<VerificationInfo>,
    /// sha256 (lowercase hex) of every other file of the bundle, by file name.
    pub files: BTreeMap<String, String>,
    /// How to drive the graphs, as data (see [`crate::contract`]).
    pub contract: crate::contract::Contract,
    /// The Python environment of a bridged task; absent for a built-in task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentInfo>,
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

/// Parses manifest bytes, checks the format version and validates every value against the
/// others and against the graphs' declared shapes. Opens no file: `origin` only names the
/// manifest in errors.
pub fn parse_manifest(bytes: &[u8], origin: &Path) -> Result<Manifest, BundleError> {
    // Check the version first, so an old or future bundle gets the version error and not a
    // field-level parse error.
    #[derive(Deserialize)]
    struct VersionOnly {
        format_version: u32,
    }
    check_depth(bytes, origin)?;
    let parse_err = |source| BundleError::Parse {
        path: origin.to_path_buf(),
        source,
    };
    let version: VersionOnly = serde_json::from_slice(bytes).map_err(parse_err)?;
    if version.format_version != FORMAT_VERSION {
        return Err(BundleError::Version {
            path: origin.to_path_buf(),
            found: version.format_version,
        });
    }
    let manifest: Manifest = serde_json::from_slice(bytes).map_err(parse_err)?;
    crate::validate::validate(&manifest, origin)?;
    Ok(manifest)
}

/// Deepest nesting of JSON arrays and objects a manifest may have (a real one has 7).
const MAX_DEPTH: usize = 32;

/// Refuses documents nested deeper than [`MAX_DEPTH`] before serde sees them: deserializing
/// (internally tagged enums buffer their content) recurses once per level, and a deep
/// document could exhaust a small thread stack well inside serde_json's own limit of 128.
fn check_depth(bytes: &[u8], origin: &Path) -> Result<(), BundleError> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(BundleError::Invalid {
                        path: origin.to_path_buf(),
                        field: "(document)".to_string(),
                        message: format!("nests arrays and objects deeper than {MAX_DEPTH} levels"),
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}
