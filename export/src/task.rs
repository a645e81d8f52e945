//! Facts about the task a checkpoint was trained on: from `dreamer-tasks` for a built-in
//! task, from the checkpoint's environment record for a bridged one (`gym:` / `dmc:`).

use dreamer_bridge::EnvRecord;
use dreamer_bundle::{ENVIRONMENT_SOURCE, ENVIRONMENT_VERSION, EnvironmentInfo, LayoutInfo};

use crate::checkpoint::Checkpoint;
use crate::error::ExportError;

/// What the manifest says about the task beyond the checkpoint's own configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskFacts {
    /// Seconds per policy decision (physics period times action repeat).
    pub control_period_s: f64,
    /// Seconds per physics step.
    pub physics_step_s: f64,
    /// Where the task is defined (`dreamer-tasks`, or the manifest's `environment`) and the
    /// version of its definition there.
    pub definition_source: String,
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
    /// The Python environment of a bridged task; None for a built-in task.
    pub environment: Option<EnvironmentInfo>,
}

/// The facts of the checkpoint's task with its observation mode and action repeat.
pub fn task_facts(ckpt: &Checkpoint) -> Result<TaskFacts, ExportError> {
    match &ckpt.env {
        Some(record) => bridged_facts(ckpt, record),
        None if dreamer_config::is_bridged(&ckpt.task_name) => Err(ExportError::Task {
            name: ckpt.task_name.clone(),
            message: "state.json has no `env` record (written by `dreamer train` with the \
                      env's sizes, bounds and layout); was this file edited?"
                .to_string(),
        }),
        None => built_in_facts(ckpt),
    }
}

/// Looks the task up in `dreamer-tasks`.
fn built_in_facts(ckpt: &Checkpoint) -> Result<TaskFacts, ExportError> {
    let name = &ckpt.task_name;
    let task_err = |e: dreamer_tasks::TaskError| ExportError::Task {
        name: name.to_string(),
        message: e.to_string(),
    };
    let env = dreamer_tasks::make(
        name,
        dreamer_tasks::EnvOptions {
            obs_mode: ckpt.obs,
            action_repeat: ckpt.action_repeat,
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
        definition_source: dreamer_tasks::DEFINITION_SOURCE.to_string(),
        definition_version,
        episode_decisions: spec.max_decisions,
        state_size: spec.state_size,
        state_fields: spec.state_fields.clone(),
        action_size: spec.action_size,
        physical_action_low: spec.physical_action_low.clone(),
        physical_action_high: spec.physical_action_high.clone(),
        environment: None,
    })
}

/// The facts as the bridge's workers reported them in training (`state.json` `env`), which
/// must describe the checkpoint's own task, observations and action repeat.
fn bridged_facts(ckpt: &Checkpoint, record: &EnvRecord) -> Result<TaskFacts, ExportError> {
    let bad = |message: String| ExportError::Task {
        name: ckpt.task_name.clone(),
        message: format!("state.json `env` record: {message}"),
    };
    if record.task != ckpt.task_name {
        return Err(bad(format!(
            "describes `{}`, not the config's run.task",
            record.task
        )));
    }
    if record.obs_mode != ckpt.obs || record.action_repeat != ckpt.action_repeat {
        return Err(bad(format!(
            "was made with obs_mode {} and action_repeat {}, the config says {} and {}",
            record.obs_mode, record.action_repeat, ckpt.obs, ckpt.action_repeat
        )));
    }
    let (package, id) = record
        .package_and_id()
        .ok_or_else(|| bad("the task is neither gym: nor dmc:".to_string()))?;
    Ok(TaskFacts {
        control_period_s: record.control_period_s,
        physics_step_s: record.physics_dt,
        definition_source: ENVIRONMENT_SOURCE.to_string(),
        definition_version: ENVIRONMENT_VERSION,
        episode_decisions: record.max_decisions,
        state_size: record.state_size,
        state_fields: record.state_fields.clone(),
        action_size: record.action_size,
        physical_action_low: record.action_low.clone(),
        physical_action_high: record.action_high.clone(),
        environment: Some(EnvironmentInfo {
            package: package.to_string(),
            id: id.to_string(),
            kwargs: record.kwargs.clone(),
            state_layout: record
                .state_layout
                .iter()
                .map(|leaf| LayoutInfo {
                    name: leaf.name.clone(),
                    shape: leaf.shape.clone(),
                    dtype: leaf.dtype.clone(),
                })
                .collect(),
            action_space: record.action_space.clone(),
            pixels: record.pixels.clone(),
            episode_env_steps: record.max_env_steps,
            versions: record.versions.clone(),
        }),
    })
}
