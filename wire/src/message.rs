//! Message types. Field order is the wire order (postcard encodes fields in declaration
//! order, integers as varints, `f32` as 4 little-endian bytes).

use heapless::{String, Vec};
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

/// Missed control periods in a row after which the firmware enters its safe state, unless
/// configured otherwise: 20, as Franka's FCI stops a robot after 20 consecutive missed
/// command packets.
pub const DEFAULT_MAX_MISSED: u16 = 20;

/// Bumped on any change to the messages or the frame format.
/// Version 2: observations carry the reward and episode flags ([`EpisodeStep`]), the
/// handshake answer says whether the firmware measures them.
pub const PROTOCOL_VERSION: u16 = 2;
/// Largest observation vector a frame can carry.
pub const MAX_OBSERVATION: usize = 16;
/// Largest action vector a frame can carry.
pub const MAX_ACTION: usize = 4;
/// Longest task name in a handshake, in bytes.
pub const MAX_TASK_NAME: usize = 32;

/// What the model expects on the wire: observation and action sizes plus a fingerprint of
/// the observation field names, so a reordered layout of the same size is also refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Layout {
    pub observation_size: u8,
    pub action_size: u8,
    /// [`fields_fingerprint`] of the observation field names, in order.
    pub observation_fields: u32,
}

impl Layout {
    /// The layout of a model whose observation has these field names, in order (a bundle
    /// manifest's `observation.state.fields`, a task's `state_fields`).
    pub fn from_fields<S: AsRef<str>>(observation_fields: &[S], action_size: u8) -> Self {
        Self {
            observation_size: u8::try_from(observation_fields.len()).unwrap_or(u8::MAX),
            action_size,
            observation_fields: fields_fingerprint(observation_fields),
        }
    }
}

/// CRC-32 (ISO-HDLC) over the field names, each followed by a `\n`.
pub fn fields_fingerprint<S: AsRef<str>>(fields: impl IntoIterator<Item = S>) -> u32 {
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let mut digest = crc.digest();
    for field in fields {
        digest.update(field.as_ref().as_bytes());
        digest.update(b"\n");
    }
    digest.finalize()
}

/// Runtime -> firmware: opens a session for one model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Hello {
    pub protocol_version: u16,
    /// Task name as in `dreamer-tasks`, e.g. `cartpole-swingup`.
    pub task: String<MAX_TASK_NAME>,
    pub layout: Layout,
}

/// Outcome of a handshake, as judged by the firmware.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum HandshakeResult {
    Accepted,
    VersionMismatch,
    TaskMismatch,
    LayoutMismatch,
}

/// Firmware -> runtime: answer to [`Hello`], with the firmware's own version, task and layout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct HelloAck {
    pub result: HandshakeResult,
    pub protocol_version: u16,
    pub task: String<MAX_TASK_NAME>,
    pub layout: Layout,
    /// Whether the firmware measures the task's reward and episode boundaries; without them
    /// every [`Observation::step`] is the default (no reward, one endless episode).
    pub rewards: bool,
}

/// What happened on the robot between the previous observation and this one, as the firmware
/// measures it (its reward sensor, its limit switches, its reset procedure).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, MaxSize)]
pub struct EpisodeStep {
    /// Reward accrued since the previous observation of the same episode (the transition the
    /// previous action caused).
    pub reward: f32,
    /// This observation starts a new episode: the plant was reset since the previous one,
    /// which ended the episode before it (cut at its last observation); `reward` is what the
    /// new episode accrued so far.
    pub first: bool,
    /// This observation is a terminal state: the episode ends here, and the answer to it no
    /// longer matters to the task.
    pub terminal: bool,
}

impl EpisodeStep {
    /// This step followed by `later`, as one step (what a receiver that skipped an
    /// observation, or a sender that could not send one, reports): rewards add up within an
    /// episode, a new episode starts from its own reward, and neither a boundary nor a
    /// terminal state is lost.
    pub fn followed_by(self, later: EpisodeStep) -> EpisodeStep {
        EpisodeStep {
            reward: if later.first {
                later.reward
            } else {
                self.reward + later.reward
            },
            first: self.first || later.first,
            terminal: later.terminal || (self.terminal && !later.first),
        }
    }
}

/// Firmware -> runtime: one sample of the sensors, in the task's state vector layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, MaxSize)]
pub struct Observation {
    /// Increments by one per control tick while a session is open.
    pub seq: u32,
    /// When the sensors were read, microseconds since firmware start.
    pub timestamp_us: u64,
    pub values: Vec<f32, MAX_OBSERVATION>,
    /// Reward and episode boundary since the previous observation.
    pub step: EpisodeStep,
}

/// Runtime -> firmware: the policy's answer to observation `seq`, normalised to `[-1, 1]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, MaxSize)]
pub struct Action {
    pub seq: u32,
    pub values: Vec<f32, MAX_ACTION>,
}

/// Firmware operating mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum Mode {
    /// No session yet: motor off, no observations, heartbeats only.
    AwaitingHandshake,
    /// Session open, actions applied.
    Running,
    /// Fault active: motor off, observations still sent; a valid on-time action recovers.
    Safe,
}

/// Firmware -> runtime, periodically: liveness and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct Heartbeat {
    pub tick: u32,
    pub mode: Mode,
    pub deadline_misses: u32,
    pub faults: u32,
    pub clamped_actions: u32,
    pub frame_errors: u32,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub enum FaultKind {
    /// K control ticks in a row without an on-time action.
    DeadlineMissed,
    /// A sensor read failed.
    SensorRead,
    /// The motor driver refused a command.
    Actuator,
}

/// Firmware -> runtime: a fault was raised (`active`) or cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
pub struct FaultReport {
    /// Observation sequence number current when the fault changed.
    pub seq: u32,
    pub kind: FaultKind,
    pub active: bool,
    pub consecutive_misses: u16,
}

/// Every message. The postcard enum tag (a varint, one byte here) is the variant index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, MaxSize)]
pub enum Message {
    Hello(Hello),
    HelloAck(HelloAck),
    Observation(Observation),
    Action(Action),
    Heartbeat(Heartbeat),
    Fault(FaultReport),
}

/// Number of [`Message`] variants; a tag at or above this is an unknown message.
pub const MESSAGE_KINDS: u8 = 6;
