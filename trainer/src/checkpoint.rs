//! Checkpoint folders as in docs/checkpoint-format.md: `model.safetensors`,
//! `optim.safetensors`, `state.json` and `config.toml`, staged in `.<dir>.tmp`, synced and
//! swapped into place (the sequence and its recovery are `dreamer_persist`'s).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use dreamer_bridge::EnvRecord;
use dreamer_config::Config;
pub use dreamer_config::checkpoint::{
    CONFIG_FILE, FORMAT_VERSION, MODEL_FILE, OPTIM_FILE, REFERENCE_FILE, STATE_FILE,
};
use dreamer_persist::StagedDir;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::agent::Agent;
use crate::envs::describe_dims;
use crate::networks::Dims;

/// The entropy weight in `optim.safetensors` (f64 `[1]`).
const ENTROPY_SCALE: &str = "entropy.scale";
const RETURN_SCALE: &str = "return.scale";
/// Before the value network's names for the slow value network's weights in
/// `optim.safetensors` (`slow.value.l0.weight`, ...).
const SLOW_VALUE_PREFIX: &str = "slow.";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a checkpoint folder (missing {file})")]
    NotCheckpoint { path: PathBuf, file: &'static str },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: format_version {found} is not supported (this build reads {FORMAT_VERSION})")]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{path}: tensor `{name}` is missing from the file (the model has it with shape {shape:?})"
    )]
    Missing {
        path: PathBuf,
        name: String,
        shape: Vec<i64>,
    },
    #[error("{path}: tensor `{name}` in the file is not part of this model (shape {shape:?})")]
    Extra {
        path: PathBuf,
        name: String,
        shape: Vec<i64>,
    },
    #[error(
        "{path}: tensor `{name}` has shape {found:?} in the file, the model needs {expected:?}"
    )]
    Shape {
        path: PathBuf,
        name: String,
        found: Vec<i64>,
        expected: Vec<i64>,
    },
    #[error("{path}: {source}")]
    Torch {
        path: PathBuf,
        #[source]
        source: tch::TchError,
    },
    #[error(transparent)]
    Config(#[from] dreamer_config::ConfigError),
    #[error(transparent)]
    Persist(#[from] dreamer_persist::PersistError),
    /// `config.toml` describes another task (or observation mode) than the one the weights
    /// were trained on; building the networks from it would fail deep inside libtorch.
    #[error(transparent)]
    TaskMismatch(Box<TaskMismatch>),
    #[error("{path}: run.task: {source}")]
    Task {
        path: PathBuf,
        #[source]
        source: dreamer_tasks::TaskError,
    },
    #[error(
        "{path}: tensor `{name}` holds {value} at flat index {index}: the weights are not finite"
    )]
    NonFinite {
        path: PathBuf,
        name: String,
        index: usize,
        value: f64,
    },
}

/// What [`CheckpointError::TaskMismatch`] reports: the task and sizes `config.toml` gives
/// against those `state.json` records (which the weights' shapes are checked against).
#[derive(Debug, thiserror::Error)]
#[error(
    "{config}: run.task = \"{config_task}\", run.obs_mode = \"{obs_mode}\" gives {config_dims}, \
     but the weights were trained on \"{state_task}\" with {state_dims} (recorded in {state}, \
     model.safetensors has those shapes): set run.task and run.obs_mode in {config} back to \
     what state.json records"
)]
pub struct TaskMismatch {
    pub config: PathBuf,
    pub config_task: String,
    pub obs_mode: String,
    pub config_dims: String,
    pub state: PathBuf,
    pub state_task: String,
    pub state_dims: String,
}

/// Counters and what the networks were built for; `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pub format_version: u32,
    pub task: String,
    /// A
    pub action_size: usize,
    /// O (0 when state observations are not used)
    pub state_size: usize,
    pub pixels: bool,
    /// Environment steps taken for training (prefill included).
    pub env_steps: u64,
    pub updates: u64,
    /// Episodes stored in the replay folder.
    pub episodes: u64,
    /// Random draws made by the collection and evaluation streams so far.
    pub collect_draws: u64,
    pub eval_draws: u64,
    /// Mean noise-free return of the last evaluation.
    pub eval_return: Option<f64>,
    /// The highest evaluation return so far and the env step it was reached at (the agent
    /// then is saved in the run's `best/` folder).
    #[serde(default)]
    pub best_eval: Option<(u64, f64)>,
    /// A bridged task (`gym:` / `dmc:`): the env as its workers described it, so that later
    /// commands know its sizes, bounds and timing without starting Python. Absent for the
    /// built-in tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<EnvRecord>,
    /// A learner (`dreamer learn`): ids of the episodes taken from its inbox into replay
    /// whose inbox files were not yet confirmed when this was saved (they are confirmed
    /// right after; a learner killed in between confirms them on restart).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub taken: Vec<String>,
}

impl RunState {
    pub fn new(task: &str, dims: Dims) -> RunState {
        RunState {
            format_version: FORMAT_VERSION,
            task: task.to_string(),
            action_size: dims.action as usize,
            state_size: dims.state.unwrap_or(0) as usize,
            pixels: dims.pixels,
            env_steps: 0,
            updates: 0,
            episodes: 0,
            collect_draws: 0,
            eval_draws: 0,
            eval_return: None,
            best_eval: None,
            env: None,
            taken: Vec::new(),
        }
    }

    pub fn dims(&self) -> Dims {
        Dims {
            action: self.action_size as i64,
            state: (self.state_size > 0).then_some(self.state_size as i64),
            pixels: self.pixels,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CheckpointError + '_ {
    move |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn torch(path: &Path) -> impl FnOnce(tch::TchError) -> CheckpointError + '_ {
    move |source| CheckpointError::Torch {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `agent` and `state` to the folder `dir`, replacing it whole: staged beside it,
/// synced and swapped in by `dreamer_persist::StagedDir` (a kill at any step leaves a state
/// that [`recover`] turns back into one complete checkpoint).
pub fn save(dir: &Path, agent: &Agent, state: &RunState) -> Result<(), CheckpointError> {
    let staged = StagedDir::create(dir)?;
    let tmp = staged.path();
    let weights = agent.named_weights();
    let model_path = tmp.join(MODEL_FILE);
    Tensor::write_safetensors(&weights, &model_path).map_err(torch(&model_path))?;
    let mut optim = agent.model_opt.state("model");
    optim.extend(agent.actor_opt.state("actor"));
    optim.extend(agent.value_opt.state("value"));
    optim.push((
        ENTROPY_SCALE.to_string(),
        Tensor::from_slice(&[agent.entropy_scale]),
    ));
    if let Some(slow) = &agent.slow_value {
        optim.extend(
            slow.named_weights()
                .into_iter()
                .map(|(name, w)| (format!("{SLOW_VALUE_PREFIX}{name}"), w)),
        );
    }
    optim.push((
        RETURN_SCALE.to_string(),
        Tensor::from_slice(&[agent.return_scale]),
    ));
    let optim_path = tmp.join(OPTIM_FILE);
    Tensor::write_safetensors(&optim, &optim_path).map_err(torch(&optim_path))?;
    let state_path = tmp.join(STATE_FILE);
    let json = serde_json::to_string_pretty(state).expect("RunState serialises");
    fs::write(&state_path, json).map_err(io(&state_path))?;
    let config_path = tmp.join(CONFIG_FILE);
    fs::write(&config_path, agent.config.to_toml_string()).map_err(io(&config_path))?;
    staged.commit()?;
    Ok(())
}

/// Repair what a save killed midway left beside the checkpoint folder `dir` (see
/// `dreamer_persist::recover`): afterwards `dir` is one complete checkpoint, or absent when
/// no save ever completed. Returns what was repaired, for the user.
pub fn recover(dir: &Path) -> Result<Vec<dreamer_persist::Repair>, CheckpointError> {
    Ok(dreamer_persist::recover(dir)?)
}

/// The complete checkpoint folder a reader should use for `dir` without changing anything:
/// `dir`, or the copy a killed save left complete beside it (None when there is none).
pub fn readable(dir: &Path) -> Option<PathBuf> {
    dreamer_persist::complete_copy(dir)
}

/// Read `config.toml` and `state.json` of a checkpoint folder, checking the format version.
pub fn read_meta(dir: &Path) -> Result<(Config, RunState), CheckpointError> {
    for file in [MODEL_FILE, OPTIM_FILE, STATE_FILE, CONFIG_FILE] {
        if !dir.join(file).is_file() {
            return Err(CheckpointError::NotCheckpoint {
                path: dir.to_path_buf(),
                file,
            });
        }
    }
    let state_path = dir.join(STATE_FILE);
    let text = fs::read_to_string(&state_path).map_err(io(&state_path))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| CheckpointError::Invalid {
            path: state_path.clone(),
            message: e.to_string(),
        })?;
    let found = value
        .get("format_version")
        .and_then(|v| v.as_u64())
        .unwrap_or(0) as u32;
    if found != FORMAT_VERSION {
        return Err(CheckpointError::Version {
            path: state_path,
            found,
        });
    }
    let state: RunState = serde_json::from_value(value).map_err(|e| CheckpointError::Invalid {
        path: state_path.clone(),
        message: e.to_string(),
    })?;
    let config = Config::load(&dir.join(CONFIG_FILE))?;
    Ok((config, state))
}

/// Copy the tensors of `file` into `targets` (name -> variable): every name must match and
/// every shape agree.
fn load_named(path: &Path, targets: &[(String, Tensor)]) -> Result<(), CheckpointError> {
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(path)
        .map_err(torch(path))?
        .into_iter()
        .collect();
    let wanted: HashMap<&str, &Tensor> = targets.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut extra: Vec<&String> = tensors
        .keys()
        .filter(|n| !wanted.contains_key(n.as_str()))
        .collect();
    extra.sort();
    if let Some(name) = extra.first() {
        return Err(CheckpointError::Extra {
            path: path.to_path_buf(),
            name: (*name).clone(),
            shape: tensors[*name].size(),
        });
    }
    copy_named(path, &tensors, targets)
}

/// Copy `tensors` (read from `path`) into `targets` by name: every target must be there, in
/// its shape.
fn copy_named(
    path: &Path,
    tensors: &HashMap<String, Tensor>,
    targets: &[(String, Tensor)],
) -> Result<(), CheckpointError> {
    tch::no_grad(|| {
        for (name, target) in targets {
            let source = tensors.get(name).ok_or_else(|| CheckpointError::Missing {
                path: path.to_path_buf(),
                name: name.clone(),
                shape: target.size(),
            })?;
            if source.size() != target.size() {
                return Err(CheckpointError::Shape {
                    path: path.to_path_buf(),
                    name: name.clone(),
                    found: source.size(),
                    expected: target.size(),
                });
            }
            let mut target = target.shallow_clone();
            target.copy_(&source.to_kind(target.kind()));
        }
        Ok(())
    })
}

/// Load network weights and optimiser state of checkpoint `dir` into `agent`.
pub fn load_into(dir: &Path, agent: &mut Agent) -> Result<(), CheckpointError> {
    load_named(&dir.join(MODEL_FILE), &agent.named_weights())?;
    let optim_path = dir.join(OPTIM_FILE);
    let tensors: HashMap<String, Tensor> = Tensor::read_safetensors(&optim_path)
        .map_err(torch(&optim_path))?
        .into_iter()
        .collect();
    for (prefix, opt) in [
        ("model", &mut agent.model_opt),
        ("actor", &mut agent.actor_opt),
        ("value", &mut agent.value_opt),
    ] {
        opt.load_state(prefix, &tensors)
            .map_err(|e| CheckpointError::Invalid {
                path: optim_path.clone(),
                message: e.to_string(),
            })?;
    }
    // Absent from checkpoints of runs that never adapted it: the config's weight then holds.
    if let Some(scale) = tensors.get(ENTROPY_SCALE) {
        agent.entropy_scale = scale.double_value(&[0]);
    }
    // Absent from checkpoints written before return normalisation existed: 0, as it starts.
    if let Some(scale) = tensors.get(RETURN_SCALE) {
        agent.return_scale = scale.double_value(&[0]);
    }
    if let Some(slow) = &agent.slow_value {
        let targets: Vec<(String, Tensor)> = slow
            .named_weights()
            .into_iter()
            .map(|(name, w)| (format!("{SLOW_VALUE_PREFIX}{name}"), w))
            .collect();
        copy_named(&optim_path, &tensors, &targets)?;
    }
    Ok(())
}

/// Check that `config` (read from `<dir>/config.toml`) names the task and observation mode
/// that `state` (`<dir>/state.json`, whose sizes the weights are checked against) was
/// trained on. An edited or copied `config.toml` otherwise builds environments whose
/// observations do not fit the networks, and libtorch panics on the first forward pass.
/// A bridged task's sizes come from the env record of `state.json` (no Python starts here).
pub fn check_task(dir: &Path, config: &Config, state: &RunState) -> Result<(), CheckpointError> {
    let config_path = dir.join(CONFIG_FILE);
    let dims = if dreamer_config::is_bridged(&config.run.task) {
        bridged_dims(dir, config, state)?
    } else {
        let options = dreamer_tasks::EnvOptions {
            obs_mode: config.run.obs_mode,
            action_repeat: config.run.action_repeat,
        };
        let env = dreamer_tasks::make(&config.run.task, options).map_err(|source| {
            CheckpointError::Task {
                path: config_path.clone(),
                source,
            }
        })?;
        crate::env_loop::dims_of(config, env.spec())
    };
    if config.run.task != state.task || dims != state.dims() {
        return Err(CheckpointError::TaskMismatch(Box::new(TaskMismatch {
            config: config_path,
            config_task: config.run.task.clone(),
            obs_mode: config.run.obs_mode.to_string(),
            config_dims: describe_dims(dims),
            state: dir.join(STATE_FILE),
            state_task: state.task.clone(),
            state_dims: describe_dims(state.dims()),
        })));
    }
    Ok(())
}

/// The sizes `config` gives for a bridged task, from the env `state.json` records; its
/// `run.env_kwargs` must be the recorded ones (other arguments make another env).
fn bridged_dims(dir: &Path, config: &Config, state: &RunState) -> Result<Dims, CheckpointError> {
    let state_path = dir.join(STATE_FILE);
    let Some(record) = state.env.as_ref().filter(|r| r.task == config.run.task) else {
        return Err(CheckpointError::Invalid {
            path: state_path,
            message: format!(
                "no `env` record of the bridged task {} (written by `dreamer train` with \
                 the env's sizes and bounds); was this file edited?",
                config.run.task
            ),
        });
    };
    let recorded = serde_json::Value::Object(record.kwargs.clone()).to_string();
    if !dreamer_config::same_env_kwargs(&config.run.env_kwargs, &recorded) {
        return Err(CheckpointError::Invalid {
            path: dir.join(CONFIG_FILE),
            message: format!(
                "run.env_kwargs = '{}', but the weights were trained on {} with the keyword \
                 arguments {recorded} (recorded in {}): set run.env_kwargs back",
                config.run.env_kwargs,
                config.run.task,
                state_path.display()
            ),
        });
    }
    Ok(crate::env_loop::dims_for(
        config,
        record.action_size,
        record.state_size,
    ))
}

/// The first non-finite value among the network weights of `agent`, named as in
/// `<dir>/model.safetensors`: a diverged run's NaN otherwise surfaces only as a NaN action
/// far downstream, with nothing saying which tensor holds it.
pub fn check_finite(dir: &Path, agent: &Agent) -> Result<(), CheckpointError> {
    for (name, tensor) in agent.named_weights() {
        let flat = tensor
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Double)
            .flatten(0, -1);
        let values = Vec::<f64>::try_from(&flat).map_err(torch(&dir.join(MODEL_FILE)))?;
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(CheckpointError::NonFinite {
                path: dir.join(MODEL_FILE),
                name,
                index,
                value: values[index],
            });
        }
    }
    Ok(())
}

/// Build the agent a checkpoint describes on `device` and load it.
pub fn load(dir: &Path, device: Device) -> Result<(Agent, RunState), CheckpointError> {
    let (config, state) = read_meta(dir)?;
    check_task(dir, &config, &state)?;
    let mut agent = Agent::new(&config, state.dims(), device);
    load_into(dir, &mut agent)?;
    Ok((agent, state))
}

/// All weights of an agent as f32 CPU tensors by name (for comparisons).
pub fn weights_on_cpu(agent: &Agent) -> Vec<(String, Tensor)> {
    agent
        .named_weights()
        .into_iter()
        .map(|(n, t)| (n, t.to_device(Device::Cpu).to_kind(Kind::Float).detach()))
        .collect()
}
