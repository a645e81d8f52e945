//! The trainer's one vectorised environment: the built-in tasks on threads (`VecEnv`) or
//! Gymnasium / DeepMind Control envs in Python workers (`BridgeVecEnv`), chosen by the task
//! name (`gym:` and `dmc:` go to the bridge).

use dreamer_bridge::{BridgeError, BridgeOptions, BridgeVecEnv, EnvRecord, WorkerSpec};
use dreamer_config::{Config, ObsMode};
use dreamer_tasks::{EnvOptions, EnvSpec, Observation, Step, TaskError, VecEnv};

use crate::networks::Dims;

/// A failure of either kind of environment, or envs whose sizes do not fit the networks.
#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Bridge(#[from] BridgeError),
    #[error(
        "{task}: the env gives {found}, but the networks were built for {expected} (the env \
         changed since the checkpoint was made?)"
    )]
    Sizes {
        task: String,
        found: String,
        expected: String,
    },
}

/// `n` environments of one task, stepped together.
#[expect(
    clippy::large_enum_variant,
    reason = "a run holds two of them at most, built once and never copied"
)]
pub enum Envs {
    Native(VecEnv),
    Bridge(BridgeVecEnv),
}

impl Envs {
    /// `n` envs of `config.run.task` with observations `obs_mode`. Bridged workers start here
    /// (an unknown env id or a missing Python is an error now, before anything is written).
    pub fn new(config: &Config, n: usize, obs_mode: ObsMode) -> Result<Envs, EnvError> {
        let options = EnvOptions {
            obs_mode,
            action_repeat: config.run.action_repeat,
        };
        let task = &config.run.task;
        if dreamer_config::is_bridged(task) {
            let bridge = bridge_options(config)?;
            return Ok(Envs::Bridge(BridgeVecEnv::new(task, options, n, &bridge)?));
        }
        Ok(Envs::Native(VecEnv::new(task, options, n, n.min(2))?))
    }

    pub fn spec(&self) -> &EnvSpec {
        match self {
            Envs::Native(envs) => envs.spec(),
            Envs::Bridge(envs) => envs.spec(),
        }
    }

    /// What the bridge's workers reported (layout, versions); None for built-in tasks.
    pub fn worker_spec(&self) -> Option<&WorkerSpec> {
        match self {
            Envs::Native(_) => None,
            Envs::Bridge(envs) => Some(envs.worker_spec()),
        }
    }

    /// What a checkpoint records about a bridged env (`state.json` `env`), with the kwargs
    /// of `config`; None for a built-in task, which dreamer-tasks describes without running
    /// anything.
    pub fn record(&self, config: &Config) -> Option<EnvRecord> {
        let worker = self.worker_spec()?;
        // The config validated the kwargs; a bridge running means they parsed.
        let kwargs = dreamer_config::parse_env_kwargs(&config.run.env_kwargs).unwrap_or_default();
        Some(EnvRecord::new(kwargs, self.spec(), worker))
    }

    /// Process ids of a bridge's workers (empty for built-in tasks).
    pub fn worker_pids(&self) -> Vec<u32> {
        match self {
            Envs::Native(_) => Vec::new(),
            Envs::Bridge(envs) => envs.worker_pids(),
        }
    }

    pub fn num_envs(&self) -> usize {
        match self {
            Envs::Native(envs) => envs.num_envs(),
            Envs::Bridge(envs) => envs.num_envs(),
        }
    }

    pub fn needs_reset(&self, index: usize) -> bool {
        match self {
            Envs::Native(envs) => envs.needs_reset(index),
            Envs::Bridge(envs) => envs.needs_reset(index),
        }
    }

    /// Resets every env, env `i` with `seeds[i]`; `[n]` observations.
    pub fn reset_all(&mut self, seeds: &[u64]) -> Result<Vec<Observation>, EnvError> {
        Ok(match self {
            Envs::Native(envs) => envs.reset_all(seeds)?,
            Envs::Bridge(envs) => envs.reset_all(seeds)?,
        })
    }

    pub fn reset_one(&mut self, index: usize, seed: u64) -> Result<Observation, EnvError> {
        Ok(match self {
            Envs::Native(envs) => envs.reset_one(index, seed)?,
            Envs::Bridge(envs) => envs.reset_one(index, seed)?,
        })
    }

    /// `actions` is `[n, action_size]` flattened, in [-1, 1]; `[n]` steps.
    pub fn step_all(&mut self, actions: &[f32]) -> Result<Vec<Step>, EnvError> {
        Ok(match self {
            Envs::Native(envs) => envs.step_all(actions)?,
            Envs::Bridge(envs) => envs.step_all(actions)?,
        })
    }

    /// An error unless these envs give the sizes `expected` (what the networks of a loaded
    /// checkpoint take): a bridged env may have changed since, and a wrong size would
    /// otherwise fail deep inside libtorch.
    pub fn check_dims(&self, config: &Config, expected: Dims) -> Result<(), EnvError> {
        let found = crate::env_loop::dims_of(config, self.spec());
        if found == expected {
            return Ok(());
        }
        Err(EnvError::Sizes {
            task: config.run.task.clone(),
            found: describe_dims(found),
            expected: describe_dims(expected),
        })
    }
}

/// Sizes written out for a message: "action size 1, state size 3, no pixels".
pub fn describe_dims(dims: Dims) -> String {
    format!(
        "action size {}, state size {}, {}",
        dims.action,
        dims.state.unwrap_or(0),
        if dims.pixels { "pixels" } else { "no pixels" }
    )
}

/// The bridge's options from `run.env_kwargs` and `run.python` (default deadlines).
pub fn bridge_options(config: &Config) -> Result<BridgeOptions, EnvError> {
    let kwargs = dreamer_bridge::parse_kwargs(&config.run.env_kwargs)?;
    let python = (!config.run.python.is_empty()).then(|| config.run.python.clone().into());
    Ok(BridgeOptions {
        python,
        kwargs,
        ..BridgeOptions::default()
    })
}
