//! The physics layer shared by the environments and the hardware-in-the-loop plant simulator.
//!
//! A [`Plant`] is a physical system: state, one fixed physics step driven by a physical
//! actuator command, sensor readings (the observation vector) and a picture of the current
//! state. A [`Task`] adds what an episode needs on top: the reset distribution, the reward
//! and the episode length.

use crate::error::TaskError;
use crate::rng::TaskRng;

/// A physical system stepped at a fixed physics period.
pub trait Plant: Send {
    /// Domain name: "pendulum", "cartpole" or "acrobot".
    fn domain(&self) -> &'static str;
    /// Seconds advanced by one [`Plant::step_physics`].
    fn physics_dt(&self) -> f64;
    /// Names of the physical state variables, in [`Plant::state`] order (SI units, radians).
    fn state_fields(&self) -> &'static [&'static str];
    fn state(&self) -> Vec<f64>;
    /// Replaces the whole state. Wrong length or a non-finite value is an error and leaves
    /// the state as it was.
    fn set_state(&mut self, state: &[f64]) -> Result<(), TaskError>;
    /// Actuator range in physical units (N·m, or MuJoCo control units for the DMC tasks).
    fn action_low(&self) -> &'static [f64];
    fn action_high(&self) -> &'static [f64];
    /// Advances one physics period with the actuator command `physical_action`. Values outside
    /// the actuator range are clipped, as the actuator itself does. Wrong length or a
    /// non-finite value is an error and the state is not touched.
    fn step_physics(&mut self, physical_action: &[f64]) -> Result<(), TaskError>;
    /// Names of the sensor readings, in [`Plant::observation`] order.
    fn observation_fields(&self) -> &'static [&'static str];
    /// Sensor readings in the Gymnasium / DeepMind Control layout.
    fn observation(&self) -> Vec<f64>;
    /// Draws the current state into `out` (`[64, 64, 3]` RGB, `FRAME_BYTES` long; a buffer of
    /// another length receives the overlapping prefix of the frame).
    fn render(&self, out: &mut [u8]);
}

/// What an episode adds to a plant: reset distribution, reward and length.
pub trait Task: Send + 'static {
    type Plant: Plant + Clone;
    /// Task name as listed in [`crate::TASK_NAMES`].
    fn name(&self) -> &'static str;
    /// Physics steps per episode; the episode is truncated after that many.
    fn max_env_steps(&self) -> u32;
    /// A plant in a freshly drawn initial state.
    fn initial_plant(&self, rng: &mut TaskRng) -> Self::Plant;
    /// Reward of one physics step from `before` to `after` under `physical_action` (as sent,
    /// before the actuator's own clipping).
    fn reward(&self, before: &Self::Plant, physical_action: &[f64], after: &Self::Plant) -> f64;
}

/// Checks an actuator command: right length and finite values.
pub(crate) fn check_action(domain: &str, action: &[f64], expected: usize) -> Result<(), TaskError> {
    if action.len() != expected {
        return Err(TaskError::ActionLength {
            task: domain.to_string(),
            expected,
            got: action.len(),
        });
    }
    if let Some((index, &value)) = action.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(TaskError::NonFiniteAction {
            task: domain.to_string(),
            index,
            value,
        });
    }
    Ok(())
}

/// Accepts a physics step's result only when every value is finite, so that an absurd state
/// set by a caller can never turn the plant's state into NaN or infinity.
pub(crate) fn commit_step<P: Plant>(plant: &mut P, next: P) -> Result<(), TaskError> {
    if next.state().iter().all(|v| v.is_finite()) {
        *plant = next;
        Ok(())
    } else {
        Err(TaskError::Diverged {
            task: plant.domain().to_string(),
            state: plant.state(),
        })
    }
}

/// Checks a physical state: right length and finite values.
pub(crate) fn check_state(
    domain: &str,
    state: &[f64],
    fields: &'static [&'static str],
) -> Result<(), TaskError> {
    if state.len() != fields.len() {
        return Err(TaskError::StateLength {
            task: domain.to_string(),
            expected: fields.len(),
            got: state.len(),
            fields: fields.join(", "),
        });
    }
    if let Some((field, &value)) = fields.iter().zip(state).find(|(_, v)| !v.is_finite()) {
        return Err(TaskError::NonFiniteState {
            task: domain.to_string(),
            field,
            value,
        });
    }
    Ok(())
}

/// DeepMind Control's `rewards.tolerance` with the Gaussian sigmoid: 1 inside
/// `[lower, upper]`, falling to `value_at_margin` at `margin` outside the bounds.
pub fn tolerance_gaussian(
    x: f64,
    lower: f64,
    upper: f64,
    margin: f64,
    value_at_margin: f64,
) -> f64 {
    if (lower..=upper).contains(&x) {
        return 1.0;
    }
    if margin == 0.0 {
        return 0.0;
    }
    let d = if x < lower { lower - x } else { x - upper } / margin;
    let scale = libm::sqrt(-2.0 * libm::log(value_at_margin));
    libm::exp(-0.5 * (d * scale) * (d * scale))
}
