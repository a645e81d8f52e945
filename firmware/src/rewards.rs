//! The task's reward and episode boundaries as the robot measures them.
//!
//! What the reward is and when an episode ends belongs to the robot, not to the control loop:
//! a reward sensor or a function of the sensors, a limit switch that makes a state terminal,
//! the reset procedure between episodes. The integrator implements [`Rewards`] for its robot;
//! [`NoRewards`] is a robot that measures none (the runtime can act for it, but not record
//! experience to learn from).

use dreamer_wire::EpisodeStep;

/// A source of rewards and episode boundaries, read once per control tick right after the
/// sensors were sampled, so what it reports belongs to that observation.
pub trait Rewards {
    /// Whether this robot measures rewards at all; the handshake tells the runtime.
    const MEASURED: bool = true;

    /// The reward accrued and the episode boundary crossed since the previous call.
    fn since_last_sample(&mut self) -> EpisodeStep;
}

/// A robot that measures no reward: every observation carries the default step.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoRewards;

impl Rewards for NoRewards {
    const MEASURED: bool = false;

    fn since_last_sample(&mut self) -> EpisodeStep {
        EpisodeStep::default()
    }
}
