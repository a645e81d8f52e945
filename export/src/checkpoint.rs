//! Reads a trainer checkpoint folder (see docs/checkpoint-format.md) without libtorch:
//! `model.safetensors` for the weights, `config.toml` and `state.json` read generically.
//!
//! Sizes come from the tensor shapes; the configuration's size keys, when present, must agree.
//! Every tensor of the contract is checked (names and shapes), so a checkpoint from a trainer
//! whose layers differ from the documented equations is refused instead of exported wrong.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use dreamer_bridge::EnvRecord;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::error::{ExportError, TensorProblem};

pub use dreamer_config::ObsMode;
pub use dreamer_config::checkpoint::{
    CONFIG_FILE, FORMAT_VERSION, MODEL_FILE, REFERENCE_FILE, STATE_FILE,
};

/// Pixel observations are `[64, 64, 3]` u8 HWC by contract.
pub const PIXEL_HW: usize = 64;
pub const PIXEL_CHANNELS: usize = 3;

/// A float32 tensor in torch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Network sizes, named as in docs/checkpoint-format.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// `A`
    pub action: usize,
    /// `O`, when the state observation is used.
    pub obs_state: Option<usize>,
    /// `D`
    pub deter: usize,
    /// `S`: the width of the stochastic state (with discrete latents, `model.stoch`
    /// categoricals times `classes`).
    pub stoch: usize,
    /// Classes per categorical of a discrete stochastic state (`model.classes`); 0 for the
    /// Gaussian state.
    pub classes: usize,
    /// `H`
    pub hidden: usize,
    /// `U`
    pub units: usize,
    /// `C`, when pixels are used.
    pub cnn_depth: Option<usize>,
    /// `K`: outputs of the reward and value heads (1; the bins with `model.two_hot_bins`).
    pub head_outputs: usize,
}

impl Sizes {
    /// `E`: `32 C` for pixels plus `U` for the state encoder.
    pub fn embed(&self) -> usize {
        self.cnn_depth.map_or(0, |c| 32 * c) + self.obs_state.map_or(0, |_| self.units)
    }

    /// `F = D + S`
    pub fn feat(&self) -> usize {
        self.deter + self.stoch
    }

    /// Rows of the distribution layers `rssm.{img,obs}_dist`: mean and std of each
    /// Gaussian (`2S`), or one logit per class (`S`).
    pub fn dist_outputs(&self) -> usize {
        if self.classes == 0 {
            2 * self.stoch
        } else {
            self.stoch
        }
    }
}

/// A checkpoint, loaded and checked against the contract.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub dir: PathBuf,
    pub weights: BTreeMap<String, Tensor>,
    pub sizes: Sizes,
    pub obs: ObsMode,
    pub task_name: String,
    pub action_repeat: u32,
    pub min_std: f32,
    /// The state encoder sees `sign(x) ln(1 + |x|)` of the observation (`model.symlog_obs`;
    /// absent: false).
    pub symlog_obs: bool,
    /// Every leaf of `config.toml` as `section.key -> value`.
    pub config_summary: BTreeMap<String, String>,
    pub env_steps: u64,
    pub updates: u64,
    pub eval_return: Option<f64>,
    /// A bridged task's environment as the trainer's workers described it (`state.json`
    /// `env`); None for a built-in task.
    pub env: Option<EnvRecord>,
}

impl Checkpoint {
    pub fn load(dir: &Path) -> Result<Checkpoint, ExportError> {
        let config = Config::read(&dir.join(CONFIG_FILE))?;
        let task_name = config.string("run.task")?;
        let obs_name = config.string("run.obs_mode")?;
        let obs = obs_name
            .parse::<ObsMode>()
            .map_err(|_| ExportError::Unsupported {
                option: "run.obs_mode".to_string(),
                value: obs_name.clone(),
                supported: dreamer_config::OBS_MODE_NAMES.join(", "),
            })?;
        let action_repeat = config.integer("run.action_repeat")?;
        let action_repeat = u32::try_from(action_repeat)
            .ok()
            .filter(|&r| r >= 1)
            .ok_or_else(|| ExportError::Unsupported {
                option: "run.action_repeat".to_string(),
                value: action_repeat.to_string(),
                supported: "an integer >= 1".to_string(),
            })?;
        let min_std = config.float("model.min_std")?;
        // The graphs compute in float32: a finite float64 beyond its range would become inf.
        if !((min_std as f32).is_finite() && min_std >= 0.0) {
            return Err(ExportError::Unsupported {
                option: "model.min_std".to_string(),
                value: min_std.to_string(),
                supported: "a number >= 0 that float32 holds (at most 3.4e38)".to_string(),
            });
        }
        config.check_model_keys()?;
        let symlog_obs = config.flag("model.symlog_obs")?;

        let classes = config.classes()?;

        let model_path = dir.join(MODEL_FILE);
        let weights = read_f32_tensors(&model_path)?;
        let sizes = derive_sizes(&weights, obs, classes, &model_path)?;
        check_tensors(&weights, &sizes, obs, &model_path)?;
        config.check_sizes(&sizes)?;
        config.check_pcont(&weights)?;

        let state = State::read(&dir.join(STATE_FILE))?;
        Ok(Checkpoint {
            dir: dir.to_path_buf(),
            weights,
            sizes,
            obs,
            task_name,
            action_repeat,
            min_std: min_std as f32,
            symlog_obs,
            config_summary: config.summary(),
            env_steps: state.counter("env_steps")?,
            updates: state.counter("updates")?,
            eval_return: state.eval_return(),
            env: state.env_record()?,
        })
    }

    /// A weight checked by [`Checkpoint::load`] to exist with its contract shape.
    pub fn tensor(&self, name: &str) -> &Tensor {
        // Every name the graph builders ask for is in the contract list that `check_tensors`
        // verified, so a miss here is a bug in this crate, not bad input.
        self.weights
            .get(name)
            .unwrap_or_else(|| panic!("tensor `{name}` was not checked against the contract"))
    }
}

/// Reads every tensor of a safetensors file as float32.
pub fn read_f32_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>, ExportError> {
    read_tensors(path, |name, view| {
        if view.dtype() != Dtype::F32 {
            return Err(ExportError::TensorDtype {
                path: path.to_path_buf(),
                name: name.to_string(),
                found: format!("{:?}", view.dtype()),
                expected: "F32",
            });
        }
        Ok(Tensor {
            shape: view.shape().to_vec(),
            data: f32_from_le(view.data()),
        })
    })
}

/// Every tensor of a safetensors file, by name, as `decode` turns its view into a `T`.
pub(crate) fn read_tensors<T>(
    path: &Path,
    mut decode: impl FnMut(&str, &TensorView<'_>) -> Result<T, ExportError>,
) -> Result<BTreeMap<String, T>, ExportError> {
    let bytes = fs::read(path).map_err(ExportError::io(path))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| ExportError::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let value = decode(&name, &view)?;
            Ok((name, value))
        })
        .collect()
}

/// Little-endian float32 data, as safetensors stores it.
pub(crate) fn f32_from_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// A text file parsed by `parse`; a parse error is a configuration error of `path`.
fn read_parsed<T, E: std::fmt::Display>(
    path: &Path,
    parse: impl FnOnce(&str) -> Result<T, E>,
) -> Result<T, ExportError> {
    let text = fs::read_to_string(path).map_err(ExportError::io(path))?;
    parse(&text).map_err(|e| ExportError::Config {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// One dimension of an anchor tensor that a size is read from.
///
/// Every dimension of the anchor must be positive: a tensor with a zero dimension holds no
/// data, so safetensors accepts any value in its other dimensions, and a size of `2^63`
/// taken from one would overflow the contract's arithmetic. With data behind every element,
/// each size is bounded by the file's length.
fn dim(
    weights: &BTreeMap<String, Tensor>,
    path: &Path,
    name: &str,
    axis: usize,
    symbolic: &str,
) -> Result<usize, ExportError> {
    let problem = match weights.get(name) {
        Some(t) if t.shape.len() == symbolic.split(',').count() && !t.shape.contains(&0) => {
            return Ok(t.shape[axis]);
        }
        Some(t) => format!(
            "tensor `{name}` has shape {:?}, expected {symbolic}",
            t.shape
        ),
        None => format!("missing tensor `{name}` (expected shape {symbolic})"),
    };
    Err(ExportError::Sizes {
        path: path.to_path_buf(),
        message: problem,
    })
}

/// `classes`: of the discrete stochastic state, 0 for the Gaussian one.
fn derive_sizes(
    weights: &BTreeMap<String, Tensor>,
    obs: ObsMode,
    classes: usize,
    path: &Path,
) -> Result<Sizes, ExportError> {
    let deter = dim(weights, path, "rssm.gru.weight_hh", 1, "[3D, D]")?;
    let stoch = if classes == 0 {
        dim(weights, path, "rssm.img_dist.weight", 0, "[2S, H]")? / 2
    } else {
        let rows = dim(weights, path, "rssm.img_dist.weight", 0, "[S, H]")?;
        if !rows.is_multiple_of(classes) {
            return Err(ExportError::Sizes {
                path: path.to_path_buf(),
                message: format!(
                    "`rssm.img_dist.weight` has {rows} rows, not a whole number of categoricals of `model.classes` = {classes}"
                ),
            });
        }
        rows
    };
    let hidden = dim(weights, path, "rssm.img_in.weight", 0, "[H, S + A]")?;
    let img_in_cols = dim(weights, path, "rssm.img_in.weight", 1, "[H, S + A]")?;
    let units = dim(weights, path, "actor.l0.weight", 0, "[U, D + S]")?;
    let head_outputs = dim(weights, path, "value.out.weight", 0, "[K, U]")?;
    if stoch == 0 || img_in_cols <= stoch {
        return Err(ExportError::Sizes {
            path: path.to_path_buf(),
            message: format!(
                "`rssm.img_in.weight` has {img_in_cols} columns for S + A with S = {stoch}: no room for an action"
            ),
        });
    }
    let cnn_depth = if obs.uses_pixels() {
        Some(dim(
            weights,
            path,
            "encoder.pixels.conv0.weight",
            0,
            "[C, 3, 4, 4]",
        )?)
    } else {
        None
    };
    let obs_state = if obs.uses_state() {
        Some(dim(weights, path, "encoder.state.l0.weight", 1, "[U, O]")?)
    } else {
        None
    };
    Ok(Sizes {
        action: img_in_cols - stoch,
        obs_state,
        deter,
        stoch,
        classes,
        hidden,
        units,
        cnn_depth,
        head_outputs,
    })
}

/// Every tensor of the contract with its shape, for these sizes.
pub fn contract(sizes: &Sizes, obs: ObsMode, with_pcont: bool) -> Vec<(String, Vec<usize>)> {
    let Sizes {
        action: a,
        deter: d,
        stoch: s,
        hidden: h,
        units: u,
        ..
    } = *sizes;
    let e = sizes.embed();
    let f = sizes.feat();
    let mut list = Vec::new();
    let mut linear = |name: &str, out: usize, inp: usize| {
        list.push((format!("{name}.weight"), vec![out, inp]));
        list.push((format!("{name}.bias"), vec![out]));
    };
    if let (true, Some(c)) = (obs.uses_state(), sizes.obs_state) {
        linear("encoder.state.l0", u, c);
        linear("encoder.state.l1", u, u);
        linear("decoder.state.l0", u, f);
        linear("decoder.state.l1", u, u);
        linear("decoder.state.out", c, u);
    }
    linear("rssm.img_in", h, s + a);
    linear("rssm.img_out", h, d);
    linear("rssm.img_dist", sizes.dist_outputs(), h);
    linear("rssm.obs_out", h, d + e);
    linear("rssm.obs_dist", sizes.dist_outputs(), h);
    let mut head = |name: &str, hidden_layers: usize, out: usize| {
        linear(&format!("{name}.l0"), u, f);
        for i in 1..hidden_layers {
            linear(&format!("{name}.l{i}"), u, u);
        }
        linear(&format!("{name}.out"), out, u);
    };
    head("reward", 2, sizes.head_outputs);
    head("value", 3, sizes.head_outputs);
    if with_pcont {
        head("pcont", 3, 1);
    }
    head("actor", 4, 2 * a);
    if obs.uses_pixels() {
        linear(
            "decoder.pixels.linear",
            32 * sizes.cnn_depth.unwrap_or(0),
            f,
        );
    }
    list.push(("rssm.gru.weight_ih".into(), vec![3 * d, h]));
    list.push(("rssm.gru.bias_ih".into(), vec![3 * d]));
    list.push(("rssm.gru.weight_hh".into(), vec![3 * d, d]));
    list.push(("rssm.gru.bias_hh".into(), vec![3 * d]));
    if let (true, Some(c)) = (obs.uses_pixels(), sizes.cnn_depth) {
        let depths = [PIXEL_CHANNELS, c, 2 * c, 4 * c, 8 * c];
        for i in 0..4 {
            let name = format!("encoder.pixels.conv{i}");
            list.push((
                format!("{name}.weight"),
                vec![depths[i + 1], depths[i], 4, 4],
            ));
            list.push((format!("{name}.bias"), vec![depths[i + 1]]));
        }
        // Transposed convolutions: weight [in, out, k, k].
        let deconv = [
            (32 * c, 4 * c, 5),
            (4 * c, 2 * c, 5),
            (2 * c, c, 6),
            (c, PIXEL_CHANNELS, 6),
        ];
        for (i, (inp, out, k)) in deconv.into_iter().enumerate() {
            let name = format!("decoder.pixels.deconv{i}");
            list.push((format!("{name}.weight"), vec![inp, out, k, k]));
            list.push((format!("{name}.bias"), vec![out]));
        }
    }
    list.sort();
    list
}

fn check_tensors(
    weights: &BTreeMap<String, Tensor>,
    sizes: &Sizes,
    obs: ObsMode,
    path: &Path,
) -> Result<(), ExportError> {
    let with_pcont = weights.keys().any(|k| k.starts_with("pcont."));
    let expected = contract(sizes, obs, with_pcont);
    let mut problems = Vec::new();
    for (name, shape) in &expected {
        match weights.get(name) {
            None => problems.push(TensorProblem::Missing {
                name: name.clone(),
                expected: shape.clone(),
            }),
            Some(t) if &t.shape != shape => problems.push(TensorProblem::Shape {
                name: name.clone(),
                expected: shape.clone(),
                found: t.shape.clone(),
            }),
            Some(t) => {
                if let Some(i) = t.data.iter().position(|x| !x.is_finite()) {
                    problems.push(TensorProblem::NonFinite {
                        name: name.clone(),
                        index: i,
                        value: t.data[i],
                    });
                }
            }
        }
    }
    for (name, t) in weights {
        if !expected.iter().any(|(n, _)| n == name) {
            problems.push(TensorProblem::Extra {
                name: name.clone(),
                shape: t.shape.clone(),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ExportError::Tensors {
            path: path.to_path_buf(),
            problems,
        })
    }
}

/// `config.toml`, read as a generic TOML tree.
struct Config {
    path: PathBuf,
    root: toml::Value,
}

/// The `[model]` options the exported graphs reproduce. Any other model option could change
/// the equations, so a configuration with one is refused rather than exported wrong.
const KNOWN_MODEL_KEYS: &[&str] = &[
    "deter",
    "stoch",
    "hidden",
    "units",
    "cnn_depth",
    "min_std",
    "pcont",
    "symlog_obs",
    // Only the reward and value heads, which no exported graph holds.
    "two_hot_bins",
    "classes",
];

impl Config {
    fn read(path: &Path) -> Result<Config, ExportError> {
        let root: toml::Value = read_parsed(path, |text| toml::from_str(text))?;
        Ok(Config {
            path: path.to_path_buf(),
            root,
        })
    }

    fn get(&self, key: &str) -> Option<&toml::Value> {
        key.split('.').try_fold(&self.root, |v, part| v.get(part))
    }

    fn require(&self, key: &str) -> Result<&toml::Value, ExportError> {
        self.get(key).ok_or_else(|| ExportError::Config {
            path: self.path.clone(),
            message: format!("missing key `{key}`"),
        })
    }

    fn type_error(&self, key: &str, expected: &str, found: &toml::Value) -> ExportError {
        ExportError::Config {
            path: self.path.clone(),
            message: format!("`{key}` must be {expected}, found `{found}`"),
        }
    }

    fn string(&self, key: &str) -> Result<String, ExportError> {
        let v = self.require(key)?;
        v.as_str()
            .map(str::to_string)
            .ok_or_else(|| self.type_error(key, "a string", v))
    }

    fn integer(&self, key: &str) -> Result<i64, ExportError> {
        let v = self.require(key)?;
        v.as_integer()
            .ok_or_else(|| self.type_error(key, "an integer", v))
    }

    fn float(&self, key: &str) -> Result<f64, ExportError> {
        let v = self.require(key)?;
        v.as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .ok_or_else(|| self.type_error(key, "a number", v))
    }

    /// A boolean key; absent: false.
    fn flag(&self, key: &str) -> Result<bool, ExportError> {
        match self.get(key) {
            None => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.type_error(key, "a boolean", v)),
        }
    }

    fn check_model_keys(&self) -> Result<(), ExportError> {
        let Some(model) = self.get("model").and_then(toml::Value::as_table) else {
            return Err(ExportError::Config {
                path: self.path.clone(),
                message: "missing table `[model]`".to_string(),
            });
        };
        match model
            .iter()
            .find(|(k, _)| !KNOWN_MODEL_KEYS.contains(&k.as_str()))
        {
            Some((key, value)) => Err(ExportError::Unsupported {
                option: format!("model.{key}"),
                value: value.to_string(),
                supported: format!(
                    "only the model options {} (the graphs would not reproduce this one)",
                    KNOWN_MODEL_KEYS.join(", ")
                ),
            }),
            None => Ok(()),
        }
    }

    /// `model.classes`: 0 (absent, as before the option existed) for the Gaussian state, or
    /// the classes of each categorical (at least 2).
    fn classes(&self) -> Result<usize, ExportError> {
        let Some(v) = self.get("model.classes") else {
            return Ok(0);
        };
        let classes = v
            .as_integer()
            .ok_or_else(|| self.type_error("model.classes", "an integer", v))?;
        match usize::try_from(classes) {
            Ok(k) if k != 1 => Ok(k),
            _ => Err(ExportError::Unsupported {
                option: "model.classes".to_string(),
                value: classes.to_string(),
                supported: "0 (Gaussian latents) or at least 2".to_string(),
            }),
        }
    }

    /// `model.pcont`, when present, says whether the checkpoint has the `pcont.*` head.
    fn check_pcont(&self, weights: &BTreeMap<String, Tensor>) -> Result<(), ExportError> {
        let Some(v) = self.get("model.pcont") else {
            return Ok(());
        };
        let configured = v
            .as_bool()
            .ok_or_else(|| self.type_error("model.pcont", "a boolean", v))?;
        let present = weights.keys().any(|k| k.starts_with("pcont."));
        if configured != present {
            return Err(ExportError::Config {
                path: self.path.clone(),
                message: format!(
                    "`model.pcont` = {configured} but the checkpoint {} `pcont.*` tensors",
                    if present { "has" } else { "has no" }
                ),
            });
        }
        Ok(())
    }

    /// The configuration's size keys, where present, must equal the sizes of the tensors.
    fn check_sizes(&self, sizes: &Sizes) -> Result<(), ExportError> {
        let checks = [
            ("model.deter", Some(sizes.deter), "rssm.gru.weight_hh"),
            (
                "model.stoch",
                Some(sizes.stoch / sizes.classes.max(1)),
                "rssm.img_dist.weight",
            ),
            ("model.hidden", Some(sizes.hidden), "rssm.img_in.weight"),
            ("model.units", Some(sizes.units), "actor.l0.weight"),
            (
                "model.cnn_depth",
                sizes.cnn_depth,
                "encoder.pixels.conv0.weight",
            ),
        ];
        for (key, derived, tensor) in checks {
            let (Some(derived), Some(v)) = (derived, self.get(key)) else {
                continue;
            };
            let configured = v
                .as_integer()
                .ok_or_else(|| self.type_error(key, "an integer", v))?;
            if configured != derived as i64 {
                return Err(ExportError::Config {
                    path: self.path.clone(),
                    message: format!(
                        "`{key}` = {configured} but tensor `{tensor}` implies {derived}"
                    ),
                });
            }
        }
        // Absent, as before the option existed: Gaussian heads.
        let bins = match self.get("model.two_hot_bins") {
            Some(v) => v
                .as_integer()
                .ok_or_else(|| self.type_error("model.two_hot_bins", "an integer", v))?,
            None => 0,
        };
        if bins.max(1) != sizes.head_outputs as i64 {
            return Err(ExportError::Config {
                path: self.path.clone(),
                message: format!(
                    "`model.two_hot_bins` = {bins} but tensor `value.out.weight` has {} outputs",
                    sizes.head_outputs
                ),
            });
        }
        Ok(())
    }

    /// Every leaf but `run.python`: a path on the training machine, which says nothing
    /// about the policy (the manifest's `environment.versions` say what ran).
    fn summary(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        flatten_toml("", &self.root, &mut out);
        out.remove("run.python");
        out
    }
}

fn flatten_toml(prefix: &str, value: &toml::Value, out: &mut BTreeMap<String, String>) {
    match value {
        toml::Value::Table(table) => {
            for (k, v) in table {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_toml(&key, v, out);
            }
        }
        toml::Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// `state.json`: format version and counters. Counters may sit at the top level or in a
/// `counters` object.
struct State {
    path: PathBuf,
    root: serde_json::Value,
}

impl State {
    fn read(path: &Path) -> Result<State, ExportError> {
        let root: serde_json::Value = read_parsed(path, |text| serde_json::from_str(text))?;
        let state = State {
            path: path.to_path_buf(),
            root,
        };
        let version = state
            .root
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ExportError::Config {
                path: path.to_path_buf(),
                message: "missing key `format_version` (an integer)".to_string(),
            })?;
        if version != u64::from(FORMAT_VERSION) {
            return Err(ExportError::Unsupported {
                option: format!("{STATE_FILE} format_version"),
                value: version.to_string(),
                supported: FORMAT_VERSION.to_string(),
            });
        }
        Ok(state)
    }

    fn lookup(&self, key: &str) -> Option<&serde_json::Value> {
        self.root
            .get(key)
            .or_else(|| self.root.get("counters").and_then(|c| c.get(key)))
    }

    fn counter(&self, key: &str) -> Result<u64, ExportError> {
        self.lookup(key)
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| ExportError::Config {
                path: self.path.clone(),
                message: format!(
                    "missing key `{key}` (a non-negative integer, top level or in `counters`)"
                ),
            })
    }

    /// The `env` record of a bridged task, if the state has one.
    fn env_record(&self) -> Result<Option<EnvRecord>, ExportError> {
        let Some(value) = self.root.get("env") else {
            return Ok(None);
        };
        serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|e| ExportError::Config {
                path: self.path.clone(),
                message: format!("key `env` (the bridged environment's record): {e}"),
            })
    }

    fn eval_return(&self) -> Option<f64> {
        self.lookup("eval_return")
            .and_then(serde_json::Value::as_f64)
    }
}
