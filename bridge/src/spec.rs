//! The spec a worker sends after building its env, checked, and the [`EnvSpec`] made from it.

use std::collections::BTreeMap;

use dreamer_tasks::{EnvOptions, EnvSpec};
use serde::{Deserialize, Serialize};

use crate::error::Fault;
use crate::protocol::PROTOCOL_VERSION;

/// One array of the state vector, in flatten order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayoutField {
    /// Its path in the observation (`obs` for a plain Box, `a.b` for nested dict keys).
    pub name: String,
    pub shape: Vec<usize>,
    /// The declared numpy dtype (the bridge sends float32 whatever it is).
    pub dtype: String,
}

impl LayoutField {
    pub fn size(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What a worker says about its env (the handshake reply).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct WorkerSpec {
    pub protocol: u32,
    pub state_layout: Vec<LayoutField>,
    /// One name per state component: `name` for a scalar, `name[i]` (C order) otherwise.
    pub state_fields: Vec<String>,
    pub state_size: usize,
    pub action_size: usize,
    pub action_low: Vec<f64>,
    pub action_high: Vec<f64>,
    /// Where frames come from (`observation:<field>`, `render:rgb_array`,
    /// `physics.render(64, 64, camera_id=0)`), None when the mode has no pixels.
    pub pixels: Option<String>,
    /// Seconds per env step (gym `unwrapped.dt` or `1 / render_fps`, dmc control timestep).
    pub physics_dt: f64,
    /// Env steps per episode (gym TimeLimit, dmc time limit / control timestep).
    pub max_env_steps: u64,
    /// The action space as Python prints it.
    pub action_space: String,
    /// Python and package versions (`python`, `numpy`, `gymnasium` or `dm-control`, `mujoco`).
    pub versions: BTreeMap<String, String>,
}

impl WorkerSpec {
    /// Parses and checks the spec JSON; a worker cannot hand over an inconsistent spec.
    pub(crate) fn parse(payload: &[u8], options: EnvOptions) -> Result<Self, Fault> {
        let spec: WorkerSpec = serde_json::from_slice(payload).map_err(|e| Fault::Protocol {
            detail: format!("spec is not the expected JSON: {e}"),
        })?;
        spec.check(options)?;
        Ok(spec)
    }

    fn check(&self, options: EnvOptions) -> Result<(), Fault> {
        let bad = |detail: String| Err(Fault::BadValue { detail });
        if self.protocol != PROTOCOL_VERSION {
            return bad(format!(
                "spec: protocol {} but the bridge speaks {PROTOCOL_VERSION}",
                self.protocol
            ));
        }
        let layout_size: usize = self.state_layout.iter().map(LayoutField::size).sum();
        if self.state_fields.len() != self.state_size || layout_size != self.state_size {
            return bad(format!(
                "spec: state_size {} but {} field names and a layout of {layout_size} values",
                self.state_size,
                self.state_fields.len()
            ));
        }
        if options.obs_mode.uses_state() && self.state_size == 0 {
            return bad("spec: state observations asked for, but the state vector is empty".into());
        }
        if self.action_size == 0
            || self.action_low.len() != self.action_size
            || self.action_high.len() != self.action_size
        {
            return bad(format!(
                "spec: action_size {} with {} low and {} high bounds",
                self.action_size,
                self.action_low.len(),
                self.action_high.len()
            ));
        }
        for (index, (&low, &high)) in self.action_low.iter().zip(&self.action_high).enumerate() {
            let fits = |v: f64| v.is_finite() && (v as f32).is_finite();
            if !fits(low) || !fits(high) || low > high {
                return bad(format!(
                    "spec: action component {index} has bounds [{low}, {high}], expected finite \
                     float32 numbers with low <= high"
                ));
            }
        }
        if !(self.physics_dt.is_finite() && self.physics_dt > 0.0) {
            return bad(format!(
                "spec: physics_dt {} is not a positive number of seconds",
                self.physics_dt
            ));
        }
        if self.max_env_steps == 0 || self.max_env_steps > u64::from(u32::MAX) {
            return bad(format!(
                "spec: max_env_steps {} is outside 1..=4294967295",
                self.max_env_steps
            ));
        }
        if options.obs_mode.uses_pixels() != self.pixels.is_some() {
            return bad(format!(
                "spec: obs_mode {} but pixel source {:?}",
                options.obs_mode, self.pixels
            ));
        }
        Ok(())
    }

    /// The consumer's view: physical action bounds, repeat, time limit; no physical state.
    pub(crate) fn env_spec(&self, task: &str, options: EnvOptions) -> EnvSpec {
        // check() bounded max_env_steps to u32.
        let max_env_steps = u32::try_from(self.max_env_steps).unwrap_or(u32::MAX);
        EnvSpec {
            task: task.to_string(),
            obs_mode: options.obs_mode,
            state_size: self.state_size,
            state_fields: self.state_fields.clone(),
            action_size: self.action_size,
            physical_action_low: self.action_low.iter().map(|&v| v as f32).collect(),
            physical_action_high: self.action_high.iter().map(|&v| v as f32).collect(),
            physics_dt: self.physics_dt,
            action_repeat: options.action_repeat,
            control_period_s: self.physics_dt * f64::from(options.action_repeat),
            max_env_steps,
            max_decisions: max_env_steps.div_ceil(options.action_repeat),
            physical_state_fields: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use dreamer_tasks::ObsMode;

    use super::*;

    const PENDULUM: &str = r#"{"protocol": 1,
        "state_layout": [{"name": "obs", "shape": [3], "dtype": "float32"}],
        "state_fields": ["obs[0]", "obs[1]", "obs[2]"], "state_size": 3,
        "action_size": 1, "action_low": [-2.0], "action_high": [2.0], "pixels": null,
        "physics_dt": 0.05, "max_env_steps": 200, "action_space": "Box(-2.0, 2.0, (1,), float32)",
        "versions": {"python": "3.11.7"}}"#;

    fn options(repeat: u32) -> EnvOptions {
        EnvOptions {
            obs_mode: ObsMode::State,
            action_repeat: repeat,
        }
    }

    #[test]
    fn a_spec_gives_the_env_spec() {
        let spec = WorkerSpec::parse(PENDULUM.as_bytes(), options(3)).unwrap();
        let env = spec.env_spec("gym:Pendulum-v1", options(3));
        assert_eq!(env.task, "gym:Pendulum-v1");
        assert_eq!(env.state_size, 3);
        assert_eq!(env.physical_action_low, [-2.0]);
        assert_eq!(env.max_env_steps, 200);
        assert_eq!(env.max_decisions, 67);
        assert!((env.control_period_s - 0.15).abs() < 1e-12);
        assert!(env.physical_state_fields.is_empty());
    }

    #[test]
    fn inconsistent_specs_are_refused() {
        for (from, to, expect) in [
            (r#""state_size": 3"#, r#""state_size": 4"#, "state_size 4"),
            (
                r#""action_high": [2.0]"#,
                r#""action_high": [-3.0]"#,
                "bounds [-2, -3]",
            ),
            (
                r#""action_high": [2.0]"#,
                r#""action_high": [1e300]"#,
                "float32",
            ),
            (
                r#""physics_dt": 0.05"#,
                r#""physics_dt": 0"#,
                "physics_dt 0",
            ),
            (
                r#""max_env_steps": 200"#,
                r#""max_env_steps": 0"#,
                "max_env_steps 0",
            ),
            (r#""protocol": 1"#, r#""protocol": 7"#, "protocol 7"),
            (
                r#""pixels": null"#,
                r#""pixels": "render:rgb_array""#,
                "pixel source",
            ),
            (
                r#""action_size": 1"#,
                r#""action_size": "one""#,
                "expected usize",
            ),
        ] {
            let text = PENDULUM.replace(from, to);
            assert_ne!(text, PENDULUM, "{from}");
            let error = WorkerSpec::parse(text.as_bytes(), options(1))
                .unwrap_err()
                .to_string();
            assert!(error.contains(expect), "{expect}: {error}");
        }
    }
}
