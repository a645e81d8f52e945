//! The Gymnasium-like environment API: normalised actions, action repeat, time limit and
//! state / pixel observations over any [`Task`].

pub use dreamer_config::ObsMode;

use crate::error::TaskError;
use crate::plant::{Plant, Task};
use crate::raster::FRAME_BYTES;
use crate::rng::TaskRng;

/// One observation; a part not selected by the [`ObsMode`] is an empty Vec.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    /// `[state_size]`, the Gymnasium / DMC observation vector.
    pub state: Vec<f32>,
    /// `[64, 64, 3]` RGB, row-major (HWC).
    pub pixels: Vec<u8>,
}

/// Result of one agent decision (`action_repeat` physics steps).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub obs: Observation,
    /// Sum of the rewards of the physics steps taken.
    pub reward: f64,
    /// The task reached a terminal state (none of the built-in tasks has one).
    pub terminated: bool,
    /// The time limit (`max_env_steps` physics steps) was reached.
    pub truncated: bool,
}

/// Everything a consumer needs to know about an environment.
#[derive(Debug, Clone, PartialEq)]
pub struct EnvSpec {
    pub task: String,
    pub obs_mode: ObsMode,
    /// Length of `Observation::state`.
    pub state_size: usize,
    pub state_fields: Vec<String>,
    pub action_size: usize,
    /// Actuator range that the normalised action [-1, 1] maps onto, per component.
    pub physical_action_low: Vec<f32>,
    pub physical_action_high: Vec<f32>,
    /// Seconds per physics step.
    pub physics_dt: f64,
    pub action_repeat: u32,
    /// Seconds per agent decision: `physics_dt * action_repeat`.
    pub control_period_s: f64,
    /// Physics steps per episode.
    pub max_env_steps: u32,
    /// Agent decisions per episode: `ceil(max_env_steps / action_repeat)`.
    pub max_decisions: u32,
    /// Names of the physical state variables (`Env::physical_state` order).
    pub physical_state_fields: Vec<String>,
}

/// Per-run environment options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvOptions {
    pub obs_mode: ObsMode,
    /// Physics steps per agent decision (at least 1).
    pub action_repeat: u32,
}

impl Default for EnvOptions {
    fn default() -> Self {
        Self {
            obs_mode: ObsMode::State,
            action_repeat: 1,
        }
    }
}

/// A control environment with normalised actions.
pub trait Env: Send {
    fn spec(&self) -> &EnvSpec;
    /// Starts a new episode whose initial state is drawn from `seed` alone.
    fn reset(&mut self, seed: u64) -> Observation;
    /// Applies `action` (normalised, `[action_size]`) for `action_repeat` physics steps, or
    /// fewer when the time limit is reached first. Finite values outside [-1, 1] are clipped;
    /// a wrong length, NaN or infinity is an error and the state is not touched, as is a
    /// physics step that would produce non-finite numbers (`TaskError::Diverged`).
    fn step(&mut self, action: &[f32]) -> Result<Step, TaskError>;
    /// The physical state (`spec().physical_state_fields`), SI units.
    fn physical_state(&self) -> Vec<f64>;
    /// Overwrites the physical state (episode clock unchanged); validated like the plant's.
    fn set_physical_state(&mut self, state: &[f64]) -> Result<(), TaskError>;
    /// Draws the current state into `out` (`[64, 64, 3]`, `FRAME_BYTES` long).
    fn render(&self, out: &mut [u8]);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    NotReset,
    Running,
    Over,
}

/// A [`Task`] behind the [`Env`] interface.
pub struct TaskEnv<T: Task> {
    task: T,
    spec: EnvSpec,
    plant: T::Plant,
    /// Per component: physical = centre + half_range * normalised.
    action_centre: Vec<f64>,
    action_half_range: Vec<f64>,
    env_steps: u32,
    phase: Phase,
}

impl<T: Task> TaskEnv<T> {
    pub fn new(task: T, plant: T::Plant, options: EnvOptions) -> Result<Self, TaskError> {
        if options.action_repeat == 0 {
            return Err(TaskError::InvalidOption {
                option: "action_repeat",
                reason: "must be at least 1".into(),
            });
        }
        let low = plant.action_low();
        let high = plant.action_high();
        let max_env_steps = task.max_env_steps();
        let physics_dt = plant.physics_dt();
        let spec = EnvSpec {
            task: task.name().to_string(),
            obs_mode: options.obs_mode,
            state_size: plant.observation_fields().len(),
            state_fields: plant
                .observation_fields()
                .iter()
                .map(|s| s.to_string())
                .collect(),
            action_size: low.len(),
            physical_action_low: low.iter().map(|&v| v as f32).collect(),
            physical_action_high: high.iter().map(|&v| v as f32).collect(),
            physics_dt,
            action_repeat: options.action_repeat,
            control_period_s: physics_dt * options.action_repeat as f64,
            max_env_steps,
            max_decisions: max_env_steps.div_ceil(options.action_repeat),
            physical_state_fields: plant.state_fields().iter().map(|s| s.to_string()).collect(),
        };
        Ok(Self {
            action_centre: low.iter().zip(high).map(|(l, h)| (l + h) / 2.0).collect(),
            action_half_range: low.iter().zip(high).map(|(l, h)| (h - l) / 2.0).collect(),
            task,
            spec,
            plant,
            env_steps: 0,
            phase: Phase::NotReset,
        })
    }

    /// Physics steps taken in the current episode.
    pub fn env_steps(&self) -> u32 {
        self.env_steps
    }

    pub fn plant(&self) -> &T::Plant {
        &self.plant
    }

    /// Normalised action to actuator command, after checking it.
    fn physical_action(&self, action: &[f32]) -> Result<Vec<f64>, TaskError> {
        if action.len() != self.spec.action_size {
            return Err(TaskError::ActionLength {
                task: self.spec.task.clone(),
                expected: self.spec.action_size,
                got: action.len(),
            });
        }
        if let Some((index, &value)) = action.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(TaskError::NonFiniteAction {
                task: self.spec.task.clone(),
                index,
                value: value as f64,
            });
        }
        Ok(action
            .iter()
            .zip(self.action_centre.iter().zip(&self.action_half_range))
            .map(|(&a, (&centre, &half))| centre + half * (a as f64).clamp(-1.0, 1.0))
            .collect())
    }

    fn observe(&self) -> Observation {
        let mode = self.spec.obs_mode;
        let state = if mode.uses_state() {
            self.plant
                .observation()
                .into_iter()
                .map(|v| v as f32)
                .collect()
        } else {
            Vec::new()
        };
        let pixels = if mode.uses_pixels() {
            let mut frame = vec![0u8; FRAME_BYTES];
            self.plant.render(&mut frame);
            frame
        } else {
            Vec::new()
        };
        Observation { state, pixels }
    }
}

impl<T: Task> Env for TaskEnv<T> {
    fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    fn reset(&mut self, seed: u64) -> Observation {
        let mut rng = TaskRng::new(seed);
        self.plant = self.task.initial_plant(&mut rng);
        self.env_steps = 0;
        self.phase = Phase::Running;
        self.observe()
    }

    fn step(&mut self, action: &[f32]) -> Result<Step, TaskError> {
        match self.phase {
            Phase::NotReset => {
                return Err(TaskError::NotReset {
                    task: self.spec.task.clone(),
                });
            }
            Phase::Over => {
                return Err(TaskError::EpisodeOver {
                    task: self.spec.task.clone(),
                });
            }
            Phase::Running => {}
        }
        let physical = self.physical_action(action)?;
        let start = (self.plant.clone(), self.env_steps);
        let mut reward = 0.0;
        let mut truncated = false;
        for _ in 0..self.spec.action_repeat {
            let before = self.plant.clone();
            if let Err(error) = self.plant.step_physics(&physical) {
                // A diverging step undoes the whole decision.
                (self.plant, self.env_steps) = start;
                self.phase = Phase::Running;
                return Err(error);
            }
            reward += self.task.reward(&before, &physical, &self.plant);
            self.env_steps += 1;
            if self.env_steps >= self.spec.max_env_steps {
                truncated = true;
                self.phase = Phase::Over;
                break;
            }
        }
        Ok(Step {
            obs: self.observe(),
            reward,
            terminated: false,
            truncated,
        })
    }

    fn physical_state(&self) -> Vec<f64> {
        self.plant.state()
    }

    fn set_physical_state(&mut self, state: &[f64]) -> Result<(), TaskError> {
        self.plant.set_state(state)
    }

    fn render(&self, out: &mut [u8]) {
        self.plant.render(out);
    }
}
