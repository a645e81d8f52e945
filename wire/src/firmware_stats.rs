//! The plain records the firmware keeps about itself: its event counters and the percentiles
//! of its latency histograms. They live with the wire protocol, `no_std` like it, so the
//! firmware fills them and every reader of a firmware report (the host simulation's exit
//! summary, the HIL harness) shares one definition.

use serde::{Deserialize, Serialize};

/// What the firmware counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareStats {
    pub ticks: u32,
    pub observations_sent: u32,
    pub actions_applied: u32,
    /// Ticks in a session whose observation got no valid action before the deadline.
    pub deadline_misses: u32,
    /// Actions for the current observation that arrived after its deadline.
    pub late_actions: u32,
    /// Actions for another observation than the current one.
    pub stale_actions: u32,
    /// Actions of the wrong length or with non-finite values (not applied).
    pub invalid_actions: u32,
    /// Applied actions that had a value outside [-1, 1] (clamped).
    pub clamped_actions: u32,
    /// Entries into the safe state.
    pub faults: u32,
    /// Returns from the safe state.
    pub recoveries: u32,
    pub sensor_errors: u32,
    pub actuator_errors: u32,
    /// Failed serial writes, plus runs of failed reads (a dead port counts once per run).
    pub serial_errors: u32,
    /// Ticks that started late by more than a period (the loop skipped ahead).
    pub overruns: u32,
    pub handshakes_accepted: u32,
    pub handshakes_rejected: u32,
    /// Messages only the firmware sends (observations, acks, heartbeats, faults) received.
    pub unexpected_messages: u32,
}

/// Percentiles of a latency histogram (microseconds; each at most 3.1 % above the true value
/// and never above the maximum). All zero when nothing was recorded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u32,
    pub min_us: u32,
    pub mean_us: f64,
    pub p50_us: u32,
    pub p90_us: u32,
    pub p99_us: u32,
    pub p999_us: u32,
    pub max_us: u32,
}
