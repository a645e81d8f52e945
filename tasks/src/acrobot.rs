//! DeepMind Control Suite `acrobot` `swingup`: a two-link pendulum actuated only at the elbow
//! must bring its tip to a target above the shoulder.
//!
//! The MuJoCo model (two capsules of mass 1, length 1, joint damping 0.05, elbow motor gear 2,
//! constraints disabled) is a planar double pendulum; its exact equations of motion are
//! integrated with classic RK4 at 0.01 s as MuJoCo's RK4 integrator does.

use std::f64::consts::PI;
use std::sync::OnceLock;

use crate::cartpole::capsule_inertia;
use crate::error::TaskError;
use crate::plant::{Plant, Task, check_action, check_state, commit_step, tolerance_gaussian};
use crate::raster::{Canvas, FRAME_BYTES, Rgb, View, render_into};
use crate::rng::TaskRng;

pub const TIMESTEP: f64 = 0.01;
pub const GRAVITY: f64 = 9.81;
pub const LINK_MASS: f64 = 1.0;
pub const LINK_LENGTH: f64 = 1.0;
/// Joint to a link's centre of mass.
pub const LINK_COM: f64 = 0.5;
pub const UPPER_RADIUS: f64 = 0.05;
pub const LOWER_RADIUS: f64 = 0.049;
pub const JOINT_DAMPING: f64 = 0.05;
pub const MOTOR_GEAR: f64 = 2.0;
/// Height of the shoulder above the floor.
pub const SHOULDER_HEIGHT: f64 = 2.0;
/// Target centre (x, z) and radius; the reward is 1 while the tip is inside it.
pub const TARGET: (f64, f64) = (0.0, 4.0);
pub const TARGET_RADIUS: f64 = 0.2;
pub const EPISODE_STEPS: u32 = 1000;
/// Version of this task's definition; see [`crate::definition_version`] for when it is bumped.
pub const DEFINITION_VERSION: u32 = 1;

pub const UPPER_INERTIA: f64 = capsule_inertia(LINK_MASS, UPPER_RADIUS, LINK_LENGTH);
pub const LOWER_INERTIA: f64 = capsule_inertia(LINK_MASS, LOWER_RADIUS, LINK_LENGTH);

const STATE_FIELDS: &[&str] = &[
    "shoulder_angle",
    "elbow_angle",
    "shoulder_velocity",
    "elbow_velocity",
];
const OBSERVATION_FIELDS: &[&str] = &[
    "upper_arm_horizontal",
    "lower_arm_horizontal",
    "upper_arm_vertical",
    "lower_arm_vertical",
    "shoulder_velocity",
    "elbow_velocity",
];
const ACTION_LOW: &[f64] = &[-1.0];
const ACTION_HIGH: &[f64] = &[1.0];

/// Joint angles: both 0 is fully upright, the elbow angle is relative to the upper arm, and
/// positive angles tilt towards +x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AcrobotPlant {
    pub shoulder_angle: f64,
    pub elbow_angle: f64,
    pub shoulder_velocity: f64,
    pub elbow_velocity: f64,
}

impl Default for AcrobotPlant {
    /// Hanging straight down, at rest.
    fn default() -> Self {
        Self {
            shoulder_angle: PI,
            elbow_angle: 0.0,
            shoulder_velocity: 0.0,
            elbow_velocity: 0.0,
        }
    }
}

impl AcrobotPlant {
    fn as_array(&self) -> [f64; 4] {
        [
            self.shoulder_angle,
            self.elbow_angle,
            self.shoulder_velocity,
            self.elbow_velocity,
        ]
    }

    /// One RK4 step of `TIMESTEP` with elbow control `control` (clipped to [-1, 1], torque =
    /// gear * control).
    pub fn step_control(&mut self, control: f64) {
        let torque = MOTOR_GEAR * control.clamp(-1.0, 1.0);
        let y = self.as_array();
        let h = TIMESTEP;
        let offset =
            |k: &[f64; 4], scale: f64| -> [f64; 4] { std::array::from_fn(|i| y[i] + scale * k[i]) };
        let k1 = derivative(&y, torque);
        let k2 = derivative(&offset(&k1, h / 2.0), torque);
        let k3 = derivative(&offset(&k2, h / 2.0), torque);
        let k4 = derivative(&offset(&k3, h), torque);
        let next: [f64; 4] =
            std::array::from_fn(|i| y[i] + h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]));
        *self = Self {
            shoulder_angle: next[0],
            elbow_angle: next[1],
            shoulder_velocity: next[2],
            elbow_velocity: next[3],
        };
    }

    /// World (x, z) of the elbow and of the tip.
    pub fn elbow_and_tip(&self) -> ((f64, f64), (f64, f64)) {
        let absolute_lower = self.shoulder_angle + self.elbow_angle;
        let elbow = (
            LINK_LENGTH * libm::sin(self.shoulder_angle),
            SHOULDER_HEIGHT + LINK_LENGTH * libm::cos(self.shoulder_angle),
        );
        let tip = (
            elbow.0 + LINK_LENGTH * libm::sin(absolute_lower),
            elbow.1 + LINK_LENGTH * libm::cos(absolute_lower),
        );
        (elbow, tip)
    }

    /// Kinetic plus potential energy (potential zero at shoulder height).
    pub fn energy(&self) -> f64 {
        let [q1, q2, v1, v2] = self.as_array();
        let [[m11, m12], [_, m22]] = mass_matrix(q2);
        let kinetic = 0.5 * (m11 * v1 * v1 + 2.0 * m12 * v1 * v2 + m22 * v2 * v2);
        let potential = GRAVITY
            * LINK_MASS
            * (LINK_COM * libm::cos(q1)
                + LINK_LENGTH * libm::cos(q1)
                + LINK_COM * libm::cos(q1 + q2));
        kinetic + potential
    }
}

fn mass_matrix(elbow_angle: f64) -> [[f64; 2]; 2] {
    let coupling = LINK_MASS * LINK_LENGTH * LINK_COM * libm::cos(elbow_angle);
    let m22 = LOWER_INERTIA + LINK_MASS * LINK_COM * LINK_COM;
    let m12 = m22 + coupling;
    let m11 = UPPER_INERTIA
        + LINK_MASS * LINK_COM * LINK_COM
        + m22
        + LINK_MASS * LINK_LENGTH * LINK_LENGTH
        + 2.0 * coupling;
    [[m11, m12], [m12, m22]]
}

/// d/dt [q1, q2, q1', q2'] of the double pendulum with elbow torque `torque`.
fn derivative(y: &[f64; 4], torque: f64) -> [f64; 4] {
    let [q1, q2, v1, v2] = *y;
    let [[m11, m12], [_, m22]] = mass_matrix(q2);
    let h = LINK_MASS * LINK_LENGTH * LINK_COM * libm::sin(q2);
    let lower_gravity = GRAVITY * LINK_MASS * LINK_COM * libm::sin(q1 + q2);
    let upper_gravity = GRAVITY * (LINK_MASS * LINK_COM + LINK_MASS * LINK_LENGTH) * libm::sin(q1);
    let rhs1 = upper_gravity + lower_gravity + h * (2.0 * v1 * v2 + v2 * v2) - JOINT_DAMPING * v1;
    let rhs2 = lower_gravity - h * v1 * v1 - JOINT_DAMPING * v2 + torque;
    let det = m11 * m22 - m12 * m12;
    let a1 = (m22 * rhs1 - m12 * rhs2) / det;
    let a2 = (m11 * rhs2 - m12 * rhs1) / det;
    [v1, v2, a1, a2]
}

/// Reward after a step: DMC tolerance of the tip-to-target distance, bounds (0, 0.2), margin 1.
pub fn reward(after: &AcrobotPlant) -> f64 {
    let (_, tip) = after.elbow_and_tip();
    let distance = libm::hypot(TARGET.0 - tip.0, TARGET.1 - tip.1);
    tolerance_gaussian(distance, 0.0, TARGET_RADIUS, 1.0, 0.1)
}

impl Plant for AcrobotPlant {
    fn domain(&self) -> &'static str {
        "acrobot"
    }
    fn physics_dt(&self) -> f64 {
        TIMESTEP
    }
    fn state_fields(&self) -> &'static [&'static str] {
        STATE_FIELDS
    }
    fn state(&self) -> Vec<f64> {
        self.as_array().to_vec()
    }
    fn set_state(&mut self, state: &[f64]) -> Result<(), TaskError> {
        check_state(self.domain(), state, STATE_FIELDS)?;
        *self = Self {
            shoulder_angle: state[0],
            elbow_angle: state[1],
            shoulder_velocity: state[2],
            elbow_velocity: state[3],
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
        next.step_control(physical_action[0]);
        commit_step(self, next)
    }
    fn observation_fields(&self) -> &'static [&'static str] {
        OBSERVATION_FIELDS
    }
    /// DMC layout: orientations (x then z component of each link's axis) then velocities.
    fn observation(&self) -> Vec<f64> {
        let lower = self.shoulder_angle + self.elbow_angle;
        vec![
            libm::sin(self.shoulder_angle),
            libm::sin(lower),
            libm::cos(self.shoulder_angle),
            libm::cos(lower),
            self.shoulder_velocity,
            self.elbow_velocity,
        ]
    }
    fn render(&self, out: &mut [u8]) {
        render_into(out, |frame| draw(self, frame));
    }
}

/// `acrobot-swingup`: both joints ~ U[-pi, pi), at rest; 1000 steps; dense reward.
#[derive(Debug, Clone, Copy, Default)]
pub struct AcrobotTask;

impl Task for AcrobotTask {
    type Plant = AcrobotPlant;
    fn name(&self) -> &'static str {
        "acrobot-swingup"
    }
    fn max_env_steps(&self) -> u32 {
        EPISODE_STEPS
    }
    fn initial_plant(&self, rng: &mut TaskRng) -> AcrobotPlant {
        let shoulder_angle = rng.uniform(-PI, PI);
        let elbow_angle = rng.uniform(-PI, PI);
        AcrobotPlant {
            shoulder_angle,
            elbow_angle,
            shoulder_velocity: 0.0,
            elbow_velocity: 0.0,
        }
    }
    fn reward(
        &self,
        _before: &AcrobotPlant,
        _physical_action: &[f64],
        after: &AcrobotPlant,
    ) -> f64 {
        reward(after)
    }
}

// Scene: shoulder at (0, 2), reach circle of radius 2, target at the top, floor at z = 0.
const VIEW: View = View {
    center_x: 0.0,
    center_z: 2.0,
    half_extent: 2.3,
};
const SKY_TOP: Rgb = [58, 92, 130];
const SKY_BOTTOM: Rgb = [20, 32, 48];
const FLOOR: Rgb = [36, 52, 70];
const TARGET_COLOR: Rgb = [220, 60, 60];
const UPPER_ARM: Rgb = [214, 140, 70];
const LOWER_ARM: Rgb = [252, 204, 120];
const JOINT: Rgb = [40, 26, 16];
const SHOULDER_MOUNT: Rgb = [96, 140, 186];
/// Drawn link radius: wider than the physical 0.05 m so each link spans two pixels.
const LINK_DRAW_RADIUS: f64 = 0.09;

fn background() -> &'static [u8] {
    static BACKGROUND: OnceLock<Vec<u8>> = OnceLock::new();
    BACKGROUND.get_or_init(|| {
        let mut frame = vec![0u8; FRAME_BYTES];
        let mut canvas = Canvas::new(&mut frame, VIEW);
        canvas.vertical_gradient(SKY_TOP, SKY_BOTTOM);
        canvas.fill_below(0.0, FLOOR);
        canvas.disc(TARGET, TARGET_RADIUS, TARGET_COLOR);
        canvas.disc((0.0, SHOULDER_HEIGHT), 0.14, SHOULDER_MOUNT);
        frame
    })
}

fn draw(plant: &AcrobotPlant, frame: &mut [u8]) {
    frame.copy_from_slice(background());
    let mut canvas = Canvas::new(frame, VIEW);
    let shoulder = (0.0, SHOULDER_HEIGHT);
    let (elbow, tip) = plant.elbow_and_tip();
    canvas.capsule(shoulder, elbow, LINK_DRAW_RADIUS, UPPER_ARM);
    canvas.capsule(elbow, tip, LINK_DRAW_RADIUS, LOWER_ARM);
    canvas.disc(shoulder, 0.05, JOINT);
    canvas.disc(elbow, 0.05, JOINT);
}
