//! The runtime's `run` and `serve` exit reports: what `dreamer-rt run --summary FILE` and
//! `dreamer-rt serve` (stdout, and `--summary FILE`) write as JSON.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{LinkCounters, Mode};

/// `dreamer-rt run`: the closed loop against a simulated task, one entry per episode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    pub task: String,
    /// In the order they ran.
    pub episodes: Vec<RunEpisode>,
    /// Mean of the episodes' returns (0 without episodes).
    pub mean_return: f64,
}

/// One episode of `dreamer-rt run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEpisode {
    /// The task's reset seed.
    pub seed: u64,
    /// Sum of the rewards.
    pub episode_return: f64,
    /// Decisions taken (the episode ends early when the task terminates it).
    pub decisions: u32,
    /// Policy steps that failed in this episode (the safe action was applied instead).
    pub faults: u64,
}

/// `dreamer-rt serve`: what serving the firmware did, from start to the end of the session,
/// however it ended ([`ServeSummary::end`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServeSummary {
    pub task: String,
    /// The serial device or pty served.
    pub port: PathBuf,
    pub elapsed_s: f64,
    pub hello_sent: u64,
    /// When the firmware accepted the handshake, from the start (`None`: it never did).
    pub session_opened_s: Option<f64>,
    /// Observations received in a session.
    pub observations: u64,
    /// Observations answered with an action.
    pub answered: u64,
    /// Observations skipped because a newer one was already waiting.
    pub stale_observations: u64,
    /// Observations received before the handshake completed (not answered).
    pub observations_before_session: u64,
    pub heartbeats: u64,
    /// The firmware's mode in its last heartbeat.
    pub last_mode: Option<Mode>,
    pub fault_reports: u64,
    /// Messages only the runtime sends (hello, action) that came from the firmware.
    pub unexpected_messages: u64,
    /// Every frame the runtime's decoder saw, by outcome.
    pub frame_errors: LinkCounters,
    /// Policy steps that failed (the safe action was sent instead).
    pub agent_faults: u64,
    /// The policy step alone.
    pub inference: LatencySummary,
    /// Observation read to action written.
    pub service: LatencySummary,
    /// Frames the simulated camera rendered (pixel policies only).
    pub camera_frames: Option<u64>,
    /// Camera reads that found no valid plant state (the previous frame was used again).
    pub camera_errors: Option<u64>,
    /// Whether the firmware measures rewards and episodes (its handshake answer).
    #[serde(default)]
    pub firmware_rewards: bool,
    /// Returns of the episodes that ended in the session, by the firmware's rewards (the
    /// episode in progress at the end is not among them).
    #[serde(default)]
    pub episode_returns: Vec<f64>,
    /// Policies switched to between episodes (`--follow-policies`).
    #[serde(default)]
    pub policy_switches: u64,
    /// How serving ended. Absent from summaries written before it existed, which were only
    /// written after a stop request.
    #[serde(default)]
    pub end: ServeEnd,
    /// What went wrong, for every end but [`ServeEnd::Stopped`].
    #[serde(default)]
    pub error: Option<String>,
}

/// How a `dreamer-rt serve` session ended (`snake_case` in JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServeEnd {
    /// A stop request (SIGINT, SIGTERM), after the port was drained: the normal end.
    #[default]
    Stopped,
    /// The firmware closed the link (the pty's other end closed, the USB device went away)
    /// before a stop request.
    HungUp,
    /// The firmware refused the handshake (protocol, task or layout mismatch).
    Refused,
    /// No handshake answer within the configured time.
    HandshakeTimeout,
    /// Anything else: the port could not be opened or failed, the bundle could not be
    /// loaded, the camera could not be set up.
    Error,
}

/// Percentiles of the runtime's latency histograms, in microseconds (all 0 when nothing was
/// recorded): the step latencies of `run`, `bench` and `serve`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl fmt::Display for LatencySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "n={} mean={:.1}us p50={:.1}us p90={:.1}us p99={:.1}us p99.9={:.1}us max={:.1}us",
            self.count,
            self.mean_us,
            self.p50_us,
            self.p90_us,
            self.p99_us,
            self.p999_us,
            self.max_us
        )
    }
}
