//! The firmware simulation's exit report: what a run of `firmware-host` did, printed as JSON
//! on stdout (and written to `--summary FILE`) when it exits, and read back by the HIL harness.

use serde::{Deserialize, Serialize};

use crate::{FirmwareStats, LatencyStats, LinkCounters, Mode};

/// What a run of the simulated robot did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FirmwareSummary {
    /// `dreamer-tasks` name of the simulated plant.
    pub task: String,
    pub rate_hz: f64,
    pub max_missed: u16,
    /// Wall-clock seconds the control loop ran.
    pub elapsed_s: f64,
    pub ticks: u32,
    pub deadline_misses: u32,
    pub faults: u32,
    pub recoveries: u32,
    pub clamped_actions: u32,
    /// Observation sampled -> action applied, per applied action, on the firmware clock.
    pub round_trip: LatencyStats,
    /// The same over every tick of a session, a missed deadline counted as one period late:
    /// percentiles that hide no miss (a p99 above the deadline means over 1 % missed).
    #[serde(default)]
    pub round_trip_every_tick: LatencyStats,
    /// |interval between consecutive samples - period|, per tick.
    pub period_jitter: LatencyStats,
    /// Seconds after start at which the first session opened (and, with
    /// `--episode-at-handshake`, the first episode began).
    pub session_opened_s: Option<f64>,
    /// Received frames per outcome (bad COBS, bad CRC, wrong length, ...).
    pub frame_errors: LinkCounters,
    pub final_mode: Mode,
    /// Reward summed over the episode in progress at exit.
    pub episode_return: f64,
    /// Returns of episodes that ran to their time limit during the run.
    pub completed_episode_returns: Vec<f64>,
    pub physics_steps: u64,
    /// Every firmware counter.
    pub firmware: FirmwareStats,
}
