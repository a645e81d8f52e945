//! What a checkpoint's `state.json` records about a bridged environment (`env`,
//! docs/checkpoint-format.md "Environment record"): enough for later commands (resume, eval,
//! export) to know the sizes, bounds, timing and layout without starting Python, and to
//! notice when the env changed. The exporter copies it into the bundle's manifest.

use std::collections::{BTreeMap, BTreeSet};

use dreamer_tasks::{EnvSpec, ObsMode};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::spec::{LayoutField, WorkerSpec};

/// A bridged env as its workers described it when the run started (or last resumed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvRecord {
    /// `gym:<id>` or `dmc:<domain>-<task>`.
    pub task: String,
    /// `run.env_kwargs` as a JSON object.
    pub kwargs: Map<String, Value>,
    pub obs_mode: ObsMode,
    pub action_repeat: u32,
    /// The env's whole state vector (also in pixel mode, where the agent does not see it).
    pub state_size: usize,
    /// One name per state component (`obs[0]`, `position[2]`, `state.pos`).
    pub state_fields: Vec<String>,
    /// The observation's arrays in flatten order.
    pub state_layout: Vec<LayoutField>,
    pub action_size: usize,
    /// The Box bounds the normalised action [-1, 1] maps onto, per component.
    pub action_low: Vec<f32>,
    pub action_high: Vec<f32>,
    /// The action space as Python printed it.
    pub action_space: String,
    /// Where frames come from (`render:rgb_array`, `observation:<field>`, ...); None without
    /// pixels.
    pub pixels: Option<String>,
    /// Seconds per env step, and per decision (`physics_dt * action_repeat`).
    pub physics_dt: f64,
    pub control_period_s: f64,
    /// Env steps and decisions per episode.
    pub max_env_steps: u32,
    pub max_decisions: u32,
    /// Python and package versions of the workers (`python`, `numpy`, `gymnasium`, ...).
    pub versions: BTreeMap<String, String>,
}

impl EnvRecord {
    /// The record of envs whose consumer view is `spec` and whose workers said `worker`,
    /// built with `kwargs`.
    pub fn new(kwargs: Map<String, Value>, spec: &EnvSpec, worker: &WorkerSpec) -> EnvRecord {
        EnvRecord {
            task: spec.task.clone(),
            kwargs,
            obs_mode: spec.obs_mode,
            action_repeat: spec.action_repeat,
            state_size: spec.state_size,
            state_fields: spec.state_fields.clone(),
            state_layout: worker.state_layout.clone(),
            action_size: spec.action_size,
            action_low: spec.physical_action_low.clone(),
            action_high: spec.physical_action_high.clone(),
            action_space: worker.action_space.clone(),
            pixels: worker.pixels.clone(),
            physics_dt: spec.physics_dt,
            control_period_s: spec.control_period_s,
            max_env_steps: spec.max_env_steps,
            max_decisions: spec.max_decisions,
            versions: worker.versions.clone(),
        }
    }

    /// The Python package that builds the env (`gymnasium` or `dm_control`) and the id it
    /// is given (`Pendulum-v1`, `cartpole-swingup`); None for a task of neither kind.
    pub fn package_and_id(&self) -> Option<(&'static str, &str)> {
        if let Some(id) = self.task.strip_prefix("gym:") {
            return Some(("gymnasium", id));
        }
        self.task.strip_prefix("dmc:").map(|id| ("dm_control", id))
    }

    /// How `now` describes the env differently, one `field: recorded -> now` each; `versions`
    /// are left out (see [`EnvRecord::version_changes`]).
    pub fn differences(&self, now: &EnvRecord) -> Vec<String> {
        let (Ok(Value::Object(old)), Ok(Value::Object(new))) =
            (serde_json::to_value(self), serde_json::to_value(now))
        else {
            return vec!["the records do not serialise".into()];
        };
        old.iter()
            .filter(|(field, _)| field.as_str() != "versions")
            .filter_map(|(field, value)| {
                let other = new.get(field).unwrap_or(&Value::Null);
                (other != value).then(|| format!("{field}: {value} -> {other}"))
            })
            .collect()
    }

    /// Packages whose version differs in `now`, as `name recorded -> now`.
    pub fn version_changes(&self, now: &EnvRecord) -> Vec<String> {
        let missing = String::from("absent");
        let names: BTreeSet<&String> = self.versions.keys().chain(now.versions.keys()).collect();
        names
            .into_iter()
            .filter_map(|name| {
                let old = self.versions.get(name).unwrap_or(&missing);
                let new = now.versions.get(name).unwrap_or(&missing);
                (old != new).then(|| format!("{name} {old} -> {new}"))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pendulum() -> EnvRecord {
        EnvRecord {
            task: "gym:Pendulum-v1".into(),
            kwargs: Map::new(),
            obs_mode: ObsMode::State,
            action_repeat: 2,
            state_size: 3,
            state_fields: vec!["obs[0]".into(), "obs[1]".into(), "obs[2]".into()],
            state_layout: vec![LayoutField {
                name: "obs".into(),
                shape: vec![3],
                dtype: "float32".into(),
            }],
            action_size: 1,
            action_low: vec![-2.0],
            action_high: vec![2.0],
            action_space: "Box(-2.0, 2.0, (1,), float32)".into(),
            pixels: None,
            physics_dt: 0.05,
            control_period_s: 0.1,
            max_env_steps: 200,
            max_decisions: 100,
            versions: [("gymnasium".to_string(), "1.4.0".to_string())].into(),
        }
    }

    #[test]
    fn differences_name_each_field_and_leave_versions_apart() {
        let old = pendulum();
        let mut new = pendulum();
        assert!(old.differences(&new).is_empty());
        new.action_high = vec![3.0];
        new.max_env_steps = 500;
        new.versions.insert("gymnasium".into(), "1.5.0".into());
        new.versions.insert("mujoco".into(), "3.17.0".into());
        assert_eq!(
            old.differences(&new),
            ["action_high: [2.0] -> [3.0]", "max_env_steps: 200 -> 500"]
        );
        assert_eq!(
            old.version_changes(&new),
            ["gymnasium 1.4.0 -> 1.5.0", "mujoco absent -> 3.17.0"]
        );
    }

    #[test]
    fn the_record_reads_back_and_names_its_package() {
        let record = pendulum();
        let text = serde_json::to_string(&record).unwrap();
        assert!(text.contains(r#""obs_mode":"state""#), "{text}");
        assert_eq!(serde_json::from_str::<EnvRecord>(&text).unwrap(), record);
        assert_eq!(record.package_and_id(), Some(("gymnasium", "Pendulum-v1")));
        let dmc = EnvRecord {
            task: "dmc:cartpole-swingup".into(),
            ..pendulum()
        };
        assert_eq!(
            dmc.package_and_id(),
            Some(("dm_control", "cartpole-swingup"))
        );
        let other = EnvRecord {
            task: "pendulum".into(),
            ..pendulum()
        };
        assert_eq!(other.package_and_id(), None);
    }
}
