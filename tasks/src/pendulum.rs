//! Gymnasium `Pendulum-v1`: swing a torque-limited pendulum up and hold it there.

use std::f64::consts::PI;
use std::sync::OnceLock;

use crate::error::TaskError;
use crate::plant::{Plant, Task, check_action, check_state, commit_step};
use crate::raster::{Canvas, FRAME_BYTES, Rgb, View, render_into};
use crate::rng::TaskRng;

pub const GRAVITY: f64 = 10.0;
pub const MASS: f64 = 1.0;
pub const LENGTH: f64 = 1.0;
pub const DT: f64 = 0.05;
pub const MAX_SPEED: f64 = 8.0;
pub const MAX_TORQUE: f64 = 2.0;
pub const EPISODE_STEPS: u32 = 200;
/// Version of this task's definition; see [`crate::definition_version`] for when it is bumped.
pub const DEFINITION_VERSION: u32 = 1;

const STATE_FIELDS: &[&str] = &["theta", "theta_dot"];
const OBSERVATION_FIELDS: &[&str] = &["cos_theta", "sin_theta", "theta_dot"];
const ACTION_LOW: &[f64] = &[-MAX_TORQUE];
const ACTION_HIGH: &[f64] = &[MAX_TORQUE];

/// Pendulum state; `theta = 0` is upright, positive counter-clockwise, not wrapped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PendulumPlant {
    pub theta: f64,
    pub theta_dot: f64,
}

impl Default for PendulumPlant {
    /// Hanging straight down, at rest.
    fn default() -> Self {
        Self {
            theta: PI,
            theta_dot: 0.0,
        }
    }
}

impl PendulumPlant {
    /// One semi-implicit Euler step of `Pendulum-v1` with torque `torque` (clipped to +-2).
    pub fn step_torque(&mut self, torque: f64) {
        let u = torque.clamp(-MAX_TORQUE, MAX_TORQUE);
        let acceleration = 3.0 * GRAVITY / (2.0 * LENGTH) * libm::sin(self.theta)
            + 3.0 / (MASS * LENGTH * LENGTH) * u;
        let theta_dot = (self.theta_dot + acceleration * DT).clamp(-MAX_SPEED, MAX_SPEED);
        self.theta += theta_dot * DT;
        self.theta_dot = theta_dot;
    }
}

/// `((x + pi) mod 2pi) - pi` with Python's floor modulo.
pub fn normalize_angle(x: f64) -> f64 {
    (x + PI).rem_euclid(2.0 * PI) - PI
}

/// Reward of a step taken from `before` with torque `torque` (clipped to +-2 first).
pub fn reward(before: &PendulumPlant, torque: f64) -> f64 {
    let u = torque.clamp(-MAX_TORQUE, MAX_TORQUE);
    let angle = normalize_angle(before.theta);
    -(angle * angle + 0.1 * before.theta_dot * before.theta_dot + 0.001 * (u * u))
}

impl Plant for PendulumPlant {
    fn domain(&self) -> &'static str {
        "pendulum"
    }
    fn physics_dt(&self) -> f64 {
        DT
    }
    fn state_fields(&self) -> &'static [&'static str] {
        STATE_FIELDS
    }
    fn state(&self) -> Vec<f64> {
        vec![self.theta, self.theta_dot]
    }
    fn set_state(&mut self, state: &[f64]) -> Result<(), TaskError> {
        check_state(self.domain(), state, STATE_FIELDS)?;
        *self = Self {
            theta: state[0],
            theta_dot: state[1],
        };
        Ok(())
    }
    fn action_low(&self) -> &'static [f64] {
        ACTION_LOW
    }
    fn action_high(&self) -> &'static [f64] {
        ACTION_HIGH
    }
    fn step_physics(&mut self, physical_action: &[f64]) -> Result<(), TaskError> {
        check_action(self.domain(), physical_action, 1)?;
        let mut next = *self;
        next.step_torque(physical_action[0]);
        commit_step(self, next)
    }
    fn observation_fields(&self) -> &'static [&'static str] {
        OBSERVATION_FIELDS
    }
    fn observation(&self) -> Vec<f64> {
        vec![libm::cos(self.theta), libm::sin(self.theta), self.theta_dot]
    }
    fn render(&self, out: &mut [u8]) {
        render_into(out, |frame| draw(self, frame));
    }
}

/// `Pendulum-v1`: theta ~ U[-pi, pi], theta_dot ~ U[-1, 1], 200 steps, reward on the state
/// before the step.
#[derive(Debug, Clone, Copy, Default)]
pub struct PendulumTask;

impl Task for PendulumTask {
    type Plant = PendulumPlant;
    fn name(&self) -> &'static str {
        "pendulum"
    }
    fn max_env_steps(&self) -> u32 {
        EPISODE_STEPS
    }
    fn initial_plant(&self, rng: &mut TaskRng) -> PendulumPlant {
        let theta = rng.uniform(-PI, PI);
        let theta_dot = rng.uniform(-1.0, 1.0);
        PendulumPlant { theta, theta_dot }
    }
    fn reward(
        &self,
        before: &PendulumPlant,
        physical_action: &[f64],
        _after: &PendulumPlant,
    ) -> f64 {
        reward(before, physical_action[0])
    }
}

// Scene: pivot at the origin, rod of length 1; the view shows the full swing circle.
const VIEW: View = View {
    center_x: 0.0,
    center_z: 0.0,
    half_extent: 1.3,
};
const BACKDROP: Rgb = [232, 232, 224];
const ROD: Rgb = [204, 64, 64];
const ROD_RADIUS: f64 = 0.11;
const PIVOT: Rgb = [30, 30, 30];

fn background() -> &'static [u8] {
    static BACKGROUND: OnceLock<Vec<u8>> = OnceLock::new();
    BACKGROUND.get_or_init(|| {
        let mut frame = vec![0u8; FRAME_BYTES];
        let mut canvas = Canvas::new(&mut frame, VIEW);
        canvas.vertical_gradient(BACKDROP, BACKDROP);
        // Faint circle of the tip's path, so the angle reads against a fixed reference.
        canvas.disc((0.0, 0.0), LENGTH + 0.02, [205, 205, 196]);
        canvas.disc((0.0, 0.0), LENGTH - 0.02, BACKDROP);
        frame
    })
}

fn draw(plant: &PendulumPlant, frame: &mut [u8]) {
    frame.copy_from_slice(background());
    let mut canvas = Canvas::new(frame, VIEW);
    // Tip at (-sin theta, cos theta): theta grows counter-clockwise from upright.
    let tip = (
        -LENGTH * libm::sin(plant.theta),
        LENGTH * libm::cos(plant.theta),
    );
    canvas.capsule((0.0, 0.0), tip, ROD_RADIUS, ROD);
    canvas.disc((0.0, 0.0), 0.06, PIVOT);
}
