//! Facts about the task a checkpoint was trained on, from `dreamer-tasks`.

use dreamer_config::ObsMode;

use crate::error::ExportError;

/// What the manifest says about the task beyond the checkpoint's own configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFacts {
    /// Seconds per policy decision (physics period times action repeat).
    pub control_period_s: f64,
    /// Seconds per physics step.
    pub physics_step_s: f64,
    /// Where the task is defined (`dreamer-tasks`) and the version of its definition there.
    pub definition_source: &'static str,
    pub definition_version: u32,
    /// Policy decisions per episode.
    pub episode_decisions: u32,
    pub state_size: usize,
    /// Names of the state observation entries, in order.
    pub state_fields: Vec<String>,
    pub action_size: usize,
    /// Actuator range that the normalised action `[-1, 1]` maps onto.
    pub physical_action_low: Vec<f32>,
    pub physical_action_high: Vec<f32>,
}

/// Looks the task up in `dreamer-tasks` with the checkpoint's observation mode and action
/// repeat.
pub fn task_facts(name: &str, obs: ObsMode, action_repeat: u32) -> Result<TaskFacts, ExportError> {
    let task_err = |e: dreamer_tasks::TaskError| ExportError::Task {
        name: name.to_string(),
        message: e.to_string(),
    };
    let env = dreamer_tasks::make(
        name,
        dreamer_tasks::EnvOptions {
            obs_mode: obs,
            action_repeat,
        },
    )
    .map_err(task_err)?;
    let spec = env.spec();
    let definition_version =
        dreamer_tasks::definition_version(name).ok_or_else(|| ExportError::Task {
            name: name.to_string(),
            message: "dreamer-tasks builds it but gives no definition version".to_string(),
        })?;
    Ok(TaskFacts {
        control_period_s: spec.control_period_s,
        physics_step_s: spec.physics_dt,
        definition_source: dreamer_tasks::DEFINITION_SOURCE,
        definition_version,
        episode_decisions: spec.max_decisions,
        state_size: spec.state_size,
        state_fields: spec.state_fields.clone(),
        action_size: spec.action_size,
        physical_action_low: spec.physical_action_low.clone(),
        physical_action_high: spec.physical_action_high.clone(),
    })
}
