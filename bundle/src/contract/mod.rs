//! The manifest's `contract`: how to drive the graphs, stated as data a program follows
//! without reading any documentation.
//!
//! - `steps`: for each way of computing one action per control step (`fused`, `separate`,
//!   `split`), the graphs to run in order and, for every input of every one of them, where
//!   its value comes from: the observation, an output of an earlier graph of the same step,
//!   an output of the previous step (the recurrence), fresh noise, or zeros.
//! - `initial_state`: what a previous-step input holds before the first step of an episode.
//! - `noise`: the distribution of the noise inputs, and what to feed instead for the
//!   deterministic policy.
//! - `action_mapping`: from the graph's action to the physical command.
//! - `timing`: the physics step, and how a command is held over `task.action_repeat` of them.
//! - `task_definition`: where `task.name` is defined, and which version of it.
//! - `observation_encoding`: how sensor readings are fed.
//!
//! Values the manifest states elsewhere (bounds, sizes, action repeat, control period, field
//! order) are not repeated here; [`Contract::validate`] checks that the two agree.

mod check;
mod wiring;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use wiring::standard_steps;

/// The documented formula of [`MappingKind::Linear`], with the bounds of the manifest's
/// `action` section.
pub const LINEAR_FORMULA: &str = "physical = physical_low + (clip(action, low, high) - low) \
                                  * (physical_high - physical_low) / (high - low)";

/// Step scheme names.
pub const FUSED: &str = "fused";
pub const SEPARATE: &str = "separate";
pub const SPLIT: &str = "split";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Contract {
    /// Ways to compute one action per control step, by name. Every scheme gives the same
    /// actions from the same observations and noise.
    pub steps: BTreeMap<String, StepScheme>,
    pub initial_state: InitialState,
    pub noise: NoiseSpec,
    pub action_mapping: ActionMapping,
    pub timing: Timing,
    pub task_definition: TaskDefinition,
    pub observation_encoding: ObservationEncoding,
}

impl Contract {
    /// The contract of the standard graphs (what the exporter writes) for a bundle whose
    /// graphs take `observations`: every step scheme wired as [`standard_steps`], the zero
    /// state at each episode start, N(0,1) noise with zeros for the deterministic policy,
    /// the linear action map with clipping, the command held for `physics_step_s` times the
    /// action repeat, raw observation values.
    pub fn standard(
        observations: &[ObservationKind],
        physics_step_s: f64,
        task_definition: TaskDefinition,
    ) -> Contract {
        let uses = |kind| observations.contains(&kind);
        Contract {
            steps: standard_steps(observations),
            initial_state: InitialState {
                value: Fill::Zeros,
                reset: ResetRule::EveryEpisode,
            },
            noise: NoiseSpec {
                distribution: Distribution::StandardNormal,
                deterministic: Fill::Zeros,
            },
            action_mapping: ActionMapping {
                kind: MappingKind::Linear,
                clip: ClipRule::ToBounds,
                formula: LINEAR_FORMULA.to_string(),
            },
            timing: Timing {
                physics_step_s,
                hold: Hold::ZeroOrder,
            },
            task_definition,
            observation_encoding: ObservationEncoding {
                state: uses(ObservationKind::State).then_some(StateEncoding {
                    values: Values::Raw,
                }),
                pixels: uses(ObservationKind::Pixels).then_some(PixelEncoding {
                    values: Values::Raw,
                    channel_order: ChannelOrder::Rgb,
                }),
            },
        }
    }
}

/// One control step as graph runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepScheme {
    /// Graph roles, run once per step in this order.
    pub runs: Vec<String>,
    /// For every graph of `runs`, every one of its inputs (by name) and its source.
    pub inputs: BTreeMap<String, BTreeMap<String, Source>>,
    /// The output holding the step's action `[B, A]`, in `[action.low, action.high]`.
    pub action: OutputRef,
    /// The output holding the step's surprise `[B]`, when a graph computes it.
    pub surprise: Option<OutputRef>,
}

/// A named output of a graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct OutputRef {
    pub graph: String,
    pub output: String,
}

/// Where a graph input's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum Source {
    /// This step's reading of the sensor `observation` (see `observation_encoding`).
    Observation { observation: ObservationKind },
    /// Outputs of graphs run earlier in the same step, concatenated along the last axis in
    /// this order (one entry: passed as is).
    ThisStep { concat: Vec<OutputRef> },
    /// That output as the previous step produced it; `initial_state` before the first step.
    PreviousStep { graph: String, output: String },
    /// Fresh noise at every step (see `noise`).
    Noise,
    /// Always zeros: the input affects no output the scheme uses.
    Zeros,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObservationKind {
    State,
    Pixels,
}

impl ObservationKind {
    /// The name in the manifest: `state` or `pixels`.
    pub fn name(self) -> &'static str {
        match self {
            ObservationKind::State => "state",
            ObservationKind::Pixels => "pixels",
        }
    }
}

/// A value filling a whole tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fill {
    Zeros,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InitialState {
    /// What every `previous_step` input holds before the first step of an episode.
    pub value: Fill,
    /// When the inputs return to `value`: `every_episode` (each batch row on its own).
    pub reset: ResetRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetRule {
    EveryEpisode,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseSpec {
    /// Distribution of every `noise` input, drawn independently for every element at every
    /// step: `standard_normal` (mean 0, standard deviation 1).
    pub distribution: Distribution,
    /// Fed to every `noise` input instead, it gives the deterministic policy (posterior
    /// mean, action mode `tanh(mean)`): `zeros`.
    pub deterministic: Fill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    StandardNormal,
}

/// From the graph's action (in `action.low..action.high`) to the actuator command (in
/// `action.physical_low..action.physical_high`), per component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionMapping {
    pub kind: MappingKind,
    /// Applied before mapping: `to_bounds` clips each component to `[low, high]`.
    pub clip: ClipRule,
    /// The mapping as a formula, for people; [`LINEAR_FORMULA`] for `linear`.
    pub formula: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingKind {
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipRule {
    ToBounds,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Seconds one physics step of the task advances; `task.control_period_s` is
    /// `physics_step_s * task.action_repeat`.
    pub physics_step_s: f64,
    /// How a command is applied: `zero_order` holds it unchanged for `task.action_repeat`
    /// physics steps, then the next observation is read.
    pub hold: Hold,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    ZeroOrder,
}

/// The definition of the task `task.name` that the policy was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskDefinition {
    /// Where the task is defined: `dreamer-tasks`.
    pub source: String,
    /// The definition's version there (bumped whenever the physics, observations, actuator
    /// range, reset distribution, reward or episode length change).
    pub version: u32,
}

/// How the sensor readings are fed; present exactly for the observations of `observation`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObservationEncoding {
    /// The readings of `observation.state.fields`, in that order, as float32.
    pub state: Option<StateEncoding>,
    /// One camera frame `[height, width, channels]`, row-major (HWC), as uint8.
    pub pixels: Option<PixelEncoding>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateEncoding {
    /// `raw`: the values as measured, unscaled; the graph does any scaling.
    pub values: Values,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PixelEncoding {
    /// `raw`: the camera's bytes; the graph does the preprocessing
    /// (`observation.pixels.preprocess`).
    pub values: Values,
    pub channel_order: ChannelOrder,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Values {
    Raw,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    Rgb,
}
