//! The Dreamer run configuration: TOML presets embedded in the binary, overrides
//! (`section.key=value`) applied on top, and the fully resolved [`Config`] that a checkpoint
//! stores as `config.toml`.
//!
//! Every preset is a complete configuration; an override may only replace an existing key with
//! a value of the same TOML type (an integer is accepted where a float is expected). An unknown
//! or ill-typed key is an error that lists the valid keys.

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub mod checkpoint;
mod env_task;
mod obs_mode;
pub mod resume;

pub use checkpoint::CONFIG_FILE;
pub use env_task::{BRIDGED_PREFIXES, NO_KWARGS, is_bridged, parse_env_kwargs, same_env_kwargs};
pub use obs_mode::{OBS_MODE_NAMES, ObsMode, UnknownObsMode};

/// Preset names and their TOML text, embedded from `presets/`.
pub const PRESETS: [(&str, &str); 3] = [
    ("paper", include_str!("../../presets/paper.toml")),
    ("cpu-state", include_str!("../../presets/cpu-state.toml")),
    ("cpu-pixels", include_str!("../../presets/cpu-pixels.toml")),
];

/// The preset `dreamer train` uses when none is named.
pub const DEFAULT_PRESET: &str = "cpu-state";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("unknown preset `{name}`; presets: {}", PRESETS.map(|p| p.0).join(", "))]
    UnknownPreset { name: String },
    #[error("cannot read config file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: invalid TOML: {message}")]
    Syntax {
        source_name: String,
        message: String,
    },
    #[error("override `{text}` is not of the form section.key=value")]
    OverrideSyntax { text: String },
    #[error("{source_name}: unknown key `{key}`; valid keys: {}", valid.join(", "))]
    UnknownKey {
        source_name: String,
        key: String,
        valid: Vec<String>,
    },
    #[error(
        "{source_name}: key `{key}` must be of type {expected}, got {found}; valid keys: {valid}"
    )]
    WrongType {
        source_name: String,
        key: String,
        expected: String,
        /// The type and the value given.
        found: String,
        /// Every valid key, comma-separated.
        valid: String,
    },
    #[error("{source_name}: {message}; valid keys: {}", valid.join(", "))]
    Schema {
        source_name: String,
        message: String,
        valid: Vec<String>,
    },
    #[error("invalid value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

/// The task and the length of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// A built-in task of `dreamer_tasks::make`, or an env of the Python bridge:
    /// `gym:<id>` (Gymnasium) or `dmc:<domain>-<task>` (DeepMind Control).
    pub task: String,
    pub obs_mode: ObsMode,
    /// Environment steps per agent decision (rewards summed).
    pub action_repeat: u32,
    pub seed: u64,
    /// Total environment steps of training (prefill included).
    pub steps: u64,
    /// Environments stepped in parallel for collection.
    pub envs: usize,
    /// Keyword arguments of a bridged task's env (`gymnasium.make(id, **kwargs)`,
    /// dm_control's `task_kwargs`), a JSON object as text; `{}` for built-in tasks.
    #[serde(default = "no_kwargs")]
    pub env_kwargs: String,
    /// The Python that runs a bridged task's workers; empty: `$DREAMER_PYTHON`, else the
    /// workspace's `.deps/envs/bin/python`, else `python3`. Ignored by built-in tasks.
    #[serde(default)]
    pub python: String,
}

fn no_kwargs() -> String {
    NO_KWARGS.to_string()
}

/// Keys a preset may leave out, with the value they then take (checkpoints written before
/// the key existed read with the same value, through serde's defaults above).
const PRESET_DEFAULTS: [(&str, &str, &str); 2] =
    [("run", "env_kwargs", NO_KWARGS), ("run", "python", "")];

/// Data collection and the training schedule, in environment steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectConfig {
    /// Environment steps of uniform random actions before training starts.
    pub prefill: u64,
    /// Updates run once right after the prefill.
    pub pretrain: u64,
    /// Run `train_steps` updates after every `train_every` environment steps.
    pub train_every: u64,
    pub train_steps: u64,
    /// Std of the Gaussian noise added to the actions while collecting.
    pub expl_noise: f64,
}

/// Network sizes (symbols of docs/checkpoint-format.md in the comments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// D: GRU state.
    pub deter: i64,
    /// S: stochastic state.
    pub stoch: i64,
    /// H: RSSM hidden width.
    pub hidden: i64,
    /// U: MLP width of heads and of the state encoder/decoder.
    pub units: i64,
    /// C: conv depth multiplier.
    pub cnn_depth: i64,
    pub min_std: f64,
    /// Learn a continuation (discount) head.
    pub pcont: bool,
    /// DreamerV3's symlog on vector observations: the state encoder sees `sign(x) ln(1 +
    /// |x|)` and the state decoder learns to reconstruct it (false: DreamerV1's raw values).
    #[serde(default)]
    pub symlog_obs: bool,
    /// DreamerV3's reward and value heads: logits over this many bins evenly spaced in symlog
    /// space on [-20, 20], trained by cross-entropy against the two-hot target and read as
    /// the symexp of their expectation (0: DreamerV1's unit-variance Gaussian heads;
    /// DreamerV3: 255).
    #[serde(default)]
    pub two_hot_bins: i64,
    /// DreamerV2/V3's discrete stochastic state: `stoch` categorical variables of this many
    /// classes each (1 % uniform mix, one-hot samples with straight-through gradients), the
    /// state `s` their concatenated one-hots `[S * classes]` (0: DreamerV1's Gaussian state;
    /// DreamerV3: 32 of 32).
    #[serde(default)]
    pub classes: i64,
}

/// Share of the uniform distribution mixed into every categorical of a discrete stochastic
/// state (DreamerV3's 1 %): no class has probability 0, so the KL stays finite and every
/// class keeps a gradient. The trainer and the exported graphs share it.
pub const UNIFORM_MIX: f64 = 0.01;
/// The uniforms `u = Phi(noise)` behind a categorical's Gumbel noise `-ln(-ln u)` stay in
/// [GUMBEL_EPS, 1 - GUMBEL_EPS], so the noise is finite for every float32 input.
pub const GUMBEL_EPS: f64 = 1e-6;

impl ModelConfig {
    /// Width of the stochastic state `s` (and of its noise and statistics): `S`, or
    /// `S * classes` with discrete latents.
    pub fn stoch_width(&self) -> i64 {
        self.stoch * self.classes.max(1)
    }
}

/// Losses and optimisation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Sequences per batch.
    pub batch: i64,
    /// Steps per sequence.
    pub length: i64,
    /// Imagination horizon.
    pub horizon: i64,
    pub gamma: f64,
    pub lambda: f64,
    pub free_nats: f64,
    pub kl_scale: f64,
    /// KL balancing (DreamerV2/V3): 0 is DreamerV1's KL, whose gradient moves posterior and
    /// prior alike; `a` in (0, 1) trains the prior towards the stopped posterior with weight
    /// `a` and the posterior towards the stopped prior with `1 - a` (the value is the same KL;
    /// free nats apply to each term).
    #[serde(default)]
    pub kl_balance: f64,
    pub pcont_scale: f64,
    /// Factor applied to environment rewards before the model learns them.
    pub reward_scale: f64,
    pub model_lr: f64,
    pub value_lr: f64,
    pub actor_lr: f64,
    /// Weight of the policy-entropy bonus in the actor loss (0: DreamerV1's actor loss); the
    /// starting weight when `entropy_lr` adapts it.
    #[serde(default)]
    pub actor_entropy: f64,
    /// Step size of the adaptation of the entropy weight, in log space per update and per nat
    /// of entropy below `entropy_target` (0: the weight stays `actor_entropy`).
    #[serde(default)]
    pub entropy_lr: f64,
    /// Policy entropy per action dimension, in nats, that an adapted weight holds the
    /// imagined actions at.
    #[serde(default)]
    pub entropy_target: f64,
    /// Return normalisation (DreamerV3): the actor maximises imagined returns divided by
    /// `max(1, S)`, where `S` follows the 5th-95th percentile range of the returns of each
    /// update as an EMA with this rate (0: off, DreamerV1's actor loss; DreamerV3: 0.01).
    #[serde(default)]
    pub return_norm_rate: f64,
    /// A slow value network (DreamerV2's target critic as an EMA): the lambda-returns that
    /// train the actor and the value bootstrap from a copy of the value network that moves
    /// this fraction of the way towards it after every update (0: off, DreamerV1's returns
    /// from the value being trained).
    #[serde(default)]
    pub slow_value_rate: f64,
    /// Adam epsilon, added to sqrt(v) as in TensorFlow's Adam.
    pub adam_eps: f64,
    /// Global gradient-norm clip, per optimiser.
    pub grad_clip: f64,
    /// Half-precision autocast of the forward passes on CUDA (ignored on CPU).
    pub mixed_precision: bool,
}

/// Noise-free evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Environment steps between evaluations (0: only at the end).
    pub every: u64,
    pub episodes: usize,
    /// Every evaluation of a run starts its episodes from the same states (the reset seeds of
    /// the run's first evaluation draw), so two evaluations differ only by the policy; false:
    /// each evaluation draws new start states, and on a task whose return depends on the
    /// start (pendulum) two evaluations of one policy differ by tens of percent.
    #[serde(default)]
    pub same_starts: bool,
}

/// Logging and checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Environment steps between checkpoints (0: only at the end).
    pub checkpoint_every: u64,
    /// Environment steps between open-loop video predictions on pixel tasks (0: never).
    pub openloop_every: u64,
}

/// A complete run configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub run: RunConfig,
    pub collect: CollectConfig,
    pub model: ModelConfig,
    pub train: TrainConfig,
    pub eval: EvalConfig,
    pub log: LogConfig,
}

impl Config {
    /// A named preset, unmodified.
    pub fn preset(name: &str) -> Result<Config, ConfigError> {
        let table = preset_table(name)?;
        from_table(table, &format!("preset {name}"))
    }

    /// Resolve a configuration: `preset`, then the keys of an optional TOML file, then the
    /// `section.key=value` overrides, in that order. Every key must exist in the preset.
    pub fn resolve(
        preset: &str,
        file: Option<&Path>,
        overrides: &[String],
    ) -> Result<Config, ConfigError> {
        let mut table = preset_table(preset)?;
        if let Some(path) = file {
            let text = read(path)?;
            apply_file(&mut table, &text, &path.display().to_string())?;
        }
        apply_overrides(&mut table, overrides)?;
        from_table(table, "configuration")
    }

    /// Parse a complete configuration (e.g. a checkpoint's `config.toml`).
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            source_name: source_name.to_string(),
            message: e.to_string(),
        })?;
        check_keys(&table, source_name)?;
        from_table(table, source_name)
    }

    /// Read a complete configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = read(path)?;
        Config::from_toml_str(&text, &path.display().to_string())
    }

    /// This configuration with `section.key=value` overrides applied.
    pub fn with_overrides(&self, overrides: &[String]) -> Result<Config, ConfigError> {
        let mut table = self.to_table();
        apply_overrides(&mut table, overrides)?;
        from_table(table, "configuration")
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a Config always serialises to TOML")
    }

    fn to_table(&self) -> toml::Table {
        toml::Table::try_from(self).expect("a Config always serialises to a TOML table")
    }

    /// Check value ranges that the types alone do not express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| {
            Err(ConfigError::Invalid {
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        let positive = [
            ("model.deter", self.model.deter),
            ("model.stoch", self.model.stoch),
            ("model.hidden", self.model.hidden),
            ("model.units", self.model.units),
            ("model.cnn_depth", self.model.cnn_depth),
            ("train.batch", self.train.batch),
            ("train.horizon", self.train.horizon),
        ];
        for (key, value) in positive {
            if value < 1 {
                return invalid(key, &format!("must be at least 1, got {value}"));
            }
        }
        if self.train.length < 2 {
            return invalid("train.length", "must be at least 2");
        }
        if self.train.horizon < 2 {
            return invalid("train.horizon", "must be at least 2");
        }
        if self.run.action_repeat < 1 {
            return invalid("run.action_repeat", "must be at least 1");
        }
        if self.run.envs < 1 {
            return invalid("run.envs", "must be at least 1");
        }
        if is_bridged(&self.run.task) {
            env_task::check_bridged_name(&self.run.task)
                .or_else(|message| invalid("run.task", &message))?;
        }
        let kwargs =
            parse_env_kwargs(&self.run.env_kwargs).map_err(|message| ConfigError::Invalid {
                key: "run.env_kwargs".to_string(),
                message,
            })?;
        if !kwargs.is_empty() && !is_bridged(&self.run.task) {
            return invalid(
                "run.env_kwargs",
                &format!(
                    "`{}` is for gym:<id> and dmc:<domain>-<task> tasks; the built-in task `{}` \
                     takes no keyword arguments",
                    self.run.env_kwargs, self.run.task
                ),
            );
        }
        if self.collect.train_every < 1 {
            return invalid("collect.train_every", "must be at least 1");
        }
        if self.eval.episodes < 1 {
            return invalid("eval.episodes", "must be at least 1");
        }
        for (key, value) in [
            ("train.gamma", self.train.gamma),
            ("train.lambda", self.train.lambda),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return invalid(key, &format!("must lie in [0, 1], got {value}"));
            }
        }
        for (key, value) in [
            ("train.model_lr", self.train.model_lr),
            ("train.value_lr", self.train.value_lr),
            ("train.actor_lr", self.train.actor_lr),
            ("train.adam_eps", self.train.adam_eps),
            ("train.grad_clip", self.train.grad_clip),
            ("model.min_std", self.model.min_std),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return invalid(key, &format!("must be a positive number, got {value}"));
            }
        }
        for (key, value) in [
            ("collect.expl_noise", self.collect.expl_noise),
            ("train.free_nats", self.train.free_nats),
            ("train.kl_scale", self.train.kl_scale),
            ("train.pcont_scale", self.train.pcont_scale),
            ("train.actor_entropy", self.train.actor_entropy),
            ("train.entropy_lr", self.train.entropy_lr),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return invalid(key, &format!("must be a non-negative number, got {value}"));
            }
        }
        if !self.train.entropy_target.is_finite() {
            return invalid("train.entropy_target", "must be a finite number");
        }
        if !(0.0..=1.0).contains(&self.train.return_norm_rate) {
            return invalid(
                "train.return_norm_rate",
                &format!(
                    "must be in [0, 1] (0: off), got {}",
                    self.train.return_norm_rate
                ),
            );
        }
        if self.model.two_hot_bins == 1 || self.model.two_hot_bins < 0 {
            return invalid(
                "model.two_hot_bins",
                &format!(
                    "must be 0 (Gaussian heads) or at least 2, got {}",
                    self.model.two_hot_bins
                ),
            );
        }
        if self.model.classes == 1 || self.model.classes < 0 {
            return invalid(
                "model.classes",
                &format!(
                    "must be 0 (Gaussian latents) or at least 2, got {}",
                    self.model.classes
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.train.slow_value_rate) {
            return invalid(
                "train.slow_value_rate",
                &format!(
                    "must be in [0, 1] (0: off), got {}",
                    self.train.slow_value_rate
                ),
            );
        }
        if !(0.0..1.0).contains(&self.train.kl_balance) {
            return invalid(
                "train.kl_balance",
                &format!(
                    "must be 0 (off) or in (0, 1) (the prior's share), got {}",
                    self.train.kl_balance
                ),
            );
        }
        if self.train.entropy_lr > 0.0 && self.train.actor_entropy <= 0.0 {
            return invalid(
                "train.actor_entropy",
                "must be above 0 when train.entropy_lr adapts it (it is the starting weight)",
            );
        }
        if !self.train.reward_scale.is_finite() || self.train.reward_scale == 0.0 {
            return invalid("train.reward_scale", "must be a finite non-zero number");
        }
        Ok(())
    }
}

/// Every `section.key` of the configuration, sorted.
pub fn valid_keys() -> Vec<String> {
    let table = preset_table(DEFAULT_PRESET).expect("the default preset exists");
    let mut keys = Vec::new();
    for (section, value) in &table {
        if let toml::Value::Table(inner) = value {
            for key in inner.keys() {
                keys.push(format!("{section}.{key}"));
            }
        }
    }
    keys.sort();
    keys
}

fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn preset_table(name: &str) -> Result<toml::Table, ConfigError> {
    let text = PRESETS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
        .ok_or_else(|| ConfigError::UnknownPreset {
            name: name.to_string(),
        })?;
    let mut table: toml::Table = toml::from_str(text).expect("embedded presets are valid TOML");
    for (section, key, value) in PRESET_DEFAULTS {
        if let Some(toml::Value::Table(inner)) = table.get_mut(section) {
            inner
                .entry(key)
                .or_insert_with(|| toml::Value::String(value.to_string()));
        }
    }
    Ok(table)
}

fn from_table(table: toml::Table, source_name: &str) -> Result<Config, ConfigError> {
    let config: Config = toml::Value::Table(table)
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Schema {
            source_name: source_name.to_string(),
            message: e.message().to_string(),
            valid: valid_keys(),
        })?;
    config.validate()?;
    Ok(config)
}

/// Reject keys that are not `section.key` of the schema (missing keys are caught when the
/// table is deserialised).
fn check_keys(table: &toml::Table, source_name: &str) -> Result<(), ConfigError> {
    let valid = valid_keys();
    for (section, value) in table {
        let toml::Value::Table(inner) = value else {
            return Err(ConfigError::UnknownKey {
                source_name: source_name.to_string(),
                key: section.clone(),
                valid,
            });
        };
        for key in inner.keys() {
            let full = format!("{section}.{key}");
            if !valid.contains(&full) {
                return Err(ConfigError::UnknownKey {
                    source_name: source_name.to_string(),
                    key: full,
                    valid,
                });
            }
        }
    }
    Ok(())
}

fn apply_file(base: &mut toml::Table, text: &str, source_name: &str) -> Result<(), ConfigError> {
    let table: toml::Table = toml::from_str(text).map_err(|e| ConfigError::Syntax {
        source_name: source_name.to_string(),
        message: e.to_string(),
    })?;
    check_keys(&table, source_name)?;
    for (section, value) in table {
        let toml::Value::Table(inner) = value else {
            unreachable!("check_keys accepts only tables at the top level")
        };
        for (key, value) in inner {
            set_key(base, &format!("{section}.{key}"), value, source_name)?;
        }
    }
    Ok(())
}

fn apply_overrides(base: &mut toml::Table, overrides: &[String]) -> Result<(), ConfigError> {
    for text in overrides {
        let (key, raw) = text
            .split_once('=')
            .ok_or_else(|| ConfigError::OverrideSyntax { text: text.clone() })?;
        let key = key.trim();
        let raw = raw.trim();
        // A TOML literal (number, bool, quoted string); anything else is a bare string. A
        // string key takes a bare text that happens to read as TOML (`{"x": 1}` is an inline
        // table) as the text itself.
        let literal = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"));
        let value = match literal {
            Some(toml::Value::String(text)) => toml::Value::String(text),
            Some(other) if !slot_is_string(base, key) => other,
            _ => toml::Value::String(raw.to_string()),
        };
        set_key(base, key, value, &format!("override `{text}`"))?;
    }
    Ok(())
}

/// True when `section.key` of `base` holds a string.
fn slot_is_string(base: &toml::Table, key: &str) -> bool {
    key.split_once('.')
        .and_then(|(section, name)| base.get(section)?.get(name))
        .is_some_and(toml::Value::is_str)
}

/// Replace `section.key` in `base` with `value`, which must have the existing value's type.
fn set_key(
    base: &mut toml::Table,
    key: &str,
    value: toml::Value,
    source_name: &str,
) -> Result<(), ConfigError> {
    let unknown = || ConfigError::UnknownKey {
        source_name: source_name.to_string(),
        key: key.to_string(),
        valid: valid_keys(),
    };
    let (section, name) = key.split_once('.').ok_or_else(unknown)?;
    let slot = base
        .get_mut(section)
        .and_then(|s| s.as_table_mut())
        .and_then(|s| s.get_mut(name))
        .ok_or_else(unknown)?;
    let value = match (&*slot, value) {
        (toml::Value::Float(_), toml::Value::Integer(i)) => toml::Value::Float(i as f64),
        (old, new) if old.same_type(&new) => new,
        (old, new) => {
            return Err(ConfigError::WrongType {
                source_name: source_name.to_string(),
                key: key.to_string(),
                expected: old.type_str().to_string(),
                found: format!("{} `{new}`", new.type_str()),
                valid: valid_keys().join(", "),
            });
        }
    };
    *slot = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_validates() {
        for (name, _) in PRESETS {
            let config = Config::preset(name).unwrap();
            let text = config.to_toml_string();
            assert_eq!(Config::from_toml_str(&text, name).unwrap(), config);
        }
    }

    #[test]
    fn overrides_replace_values() {
        let sets = vec![
            "train.batch=4".to_string(),
            "train.model_lr=1".to_string(),
            "run.task=cartpole-balance".to_string(),
            "run.obs_mode=\"both\"".to_string(),
        ];
        let config = Config::resolve("cpu-state", None, &sets).unwrap();
        assert_eq!(config.train.batch, 4);
        assert_eq!(config.train.model_lr, 1.0);
        assert_eq!(config.run.task, "cartpole-balance");
        assert_eq!(config.run.obs_mode, ObsMode::Both);
    }

    #[test]
    fn unknown_key_lists_valid_keys() {
        let err = Config::resolve("paper", None, &["train.batchsize=3".to_string()]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("train.batchsize"), "{text}");
        assert!(text.contains("train.batch,"), "{text}");
        assert!(text.contains("model.deter"), "{text}");
    }

    #[test]
    fn ill_typed_key_is_an_error() {
        let err = Config::resolve("paper", None, &["train.batch=many".to_string()]).unwrap_err();
        assert!(
            matches!(err, ConfigError::WrongType { ref key, .. } if key == "train.batch"),
            "{err}"
        );
        let err = Config::resolve("paper", None, &["train.batch=1.5".to_string()]).unwrap_err();
        assert!(err.to_string().contains("must be of type integer"), "{err}");
        let err = Config::resolve("paper", None, &["run.obs_mode=rgb".to_string()]).unwrap_err();
        assert!(err.to_string().contains("rgb"), "{err}");
    }

    #[test]
    fn out_of_range_value_is_an_error() {
        let err = Config::resolve("paper", None, &["train.gamma=2".to_string()]).unwrap_err();
        assert!(err.to_string().contains("train.gamma"), "{err}");
        assert!(Config::resolve("nope", None, &[]).is_err());
        assert!(Config::resolve("paper", None, &["batch".to_string()]).is_err());
        // An adapted entropy weight needs a positive starting value.
        let err =
            Config::resolve("paper", None, &["train.entropy_lr=0.01".to_string()]).unwrap_err();
        assert!(err.to_string().contains("train.actor_entropy"), "{err}");
        for classes in ["1", "-2"] {
            let err = Config::resolve("paper", None, &[format!("model.classes={classes}")])
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("model.classes") && err.contains("at least 2"),
                "{err}"
            );
        }
    }

    #[test]
    fn the_stochastic_state_is_as_wide_as_its_categoricals() {
        let gaussian = Config::resolve("cpu-state", None, &[]).unwrap();
        assert_eq!(gaussian.model.stoch_width(), gaussian.model.stoch);
        let sets = ["model.stoch=32".to_string(), "model.classes=32".to_string()];
        let discrete = Config::resolve("cpu-state", None, &sets).unwrap();
        assert_eq!(discrete.model.stoch_width(), 1024);
    }

    #[test]
    fn bridged_tasks_and_their_kwargs() {
        let resolve = |sets: &[&str]| {
            let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
            Config::resolve("cpu-state", None, &sets)
        };
        // Every preset has the keys, with their defaults.
        for (name, _) in PRESETS {
            let config = Config::preset(name).unwrap();
            assert_eq!(
                (config.run.env_kwargs.as_str(), config.run.python.as_str()),
                ("{}", "")
            );
        }
        // A JSON object given bare on the command line reads as TOML (an inline table): the
        // string key keeps the text.
        let config = resolve(&[
            "run.task=gym:my_pkg.envs:MyRobotEnv-v0",
            r#"run.env_kwargs={"x":1}"#,
            "run.python=/opt/venv/bin/python",
        ])
        .unwrap();
        assert_eq!(config.run.task, "gym:my_pkg.envs:MyRobotEnv-v0");
        assert_eq!(config.run.env_kwargs, r#"{"x":1}"#);
        assert_eq!(config.run.python, "/opt/venv/bin/python");
        let text = config.to_toml_string();
        assert_eq!(Config::from_toml_str(&text, "saved").unwrap(), config);
        assert!(resolve(&["run.task=dmc:cartpole-swingup"]).is_ok());
        // Syntax only is checked here; the bridge checks that the env exists.
        assert!(resolve(&["run.task=gym:NoSuchEnv-v9"]).is_ok());

        for (sets, key, needle) in [
            (&["run.task=dmc:cartpole"][..], "run.task", "dmc:cartpole"),
            (&["run.task=gym:"][..], "run.task", "gym:"),
            (
                &["run.task=gym:Pendulum-v1", "run.env_kwargs=[1, 2]"][..],
                "run.env_kwargs",
                "`[1, 2]` is an array",
            ),
            (
                &["run.task=gym:Pendulum-v1", "run.env_kwargs={x: 1}"][..],
                "run.env_kwargs",
                "`{x: 1}` is not JSON",
            ),
            (
                &[r#"run.env_kwargs={"g": 9.81}"#][..],
                "run.env_kwargs",
                "built-in task `pendulum`",
            ),
        ] {
            let err = resolve(sets).unwrap_err();
            let text = err.to_string();
            assert!(
                matches!(&err, ConfigError::Invalid { key: k, .. } if k == key),
                "{sets:?}: {text}"
            );
            assert!(text.contains(key) && text.contains(needle), "{text}");
        }
        // A checkpoint's config.toml from before the keys existed reads with the defaults.
        let mut old = Config::preset("cpu-state").unwrap().to_toml_string();
        old = old
            .replace("env_kwargs = \"{}\"\n", "")
            .replace("python = \"\"\n", "");
        assert!(!old.contains("env_kwargs"), "{old}");
        assert_eq!(
            Config::from_toml_str(&old, "old").unwrap(),
            Config::preset("cpu-state").unwrap()
        );
    }

    #[test]
    fn incomplete_or_unknown_file_is_an_error() {
        let err = Config::from_toml_str("[run]\ntask = \"pendulum\"\n", "x.toml").unwrap_err();
        assert!(err.to_string().contains("x.toml"), "{err}");
        let mut text = Config::preset("paper").unwrap().to_toml_string();
        text.push_str("\n[extra]\nfoo = 1\n");
        let err = Config::from_toml_str(&text, "y.toml").unwrap_err();
        assert!(err.to_string().contains("extra"), "{err}");
    }
}
