//! DeepMind Control Suite `cartpole` (`swingup`, `balance`): push a cart on a rail to swing
//! up and balance a hinged pole.
//!
//! The MuJoCo model reduces to a two-degree-of-freedom ODE, integrated with classic RK4 at
//! 0.01 s exactly as MuJoCo's RK4 integrator does. While |x| < 1.8 m this reproduces MuJoCo
//! to round-off. Beyond the rail limit the slider's soft joint limit is modelled as MuJoCo
//! formulates it (see [`SLIDER_LIMIT`] and `docs/tasks.md`).

use std::f64::consts::PI;
use std::sync::OnceLock;

use crate::error::TaskError;
use crate::plant::{Plant, Task, check_action, check_state, commit_step, tolerance_gaussian};
use crate::raster::{Canvas, FRAME_BYTES, Rgb, View, render_into};
use crate::rng::TaskRng;

pub const TIMESTEP: f64 = 0.01;
pub const GRAVITY: f64 = 9.81;
pub const CART_MASS: f64 = 1.0;
pub const POLE_MASS: f64 = 0.1;
pub const POLE_LENGTH: f64 = 1.0;
pub const POLE_RADIUS: f64 = 0.045;
/// Hinge to the pole's centre of mass.
pub const POLE_COM: f64 = 0.5;
pub const SLIDER_DAMPING: f64 = 5e-4;
pub const HINGE_DAMPING: f64 = 2e-6;
pub const MOTOR_GEAR: f64 = 10.0;
/// The slider's joint range is +-SLIDER_LIMIT metres.
pub const SLIDER_LIMIT: f64 = 1.8;
pub const EPISODE_STEPS: u32 = 1000;
/// Version of this task's definition; see [`crate::definition_version`] for when it is bumped.
pub const DEFINITION_VERSION: u32 = 1;

// MuJoCo soft-limit parameters: solreflimit = (0.08, 1), default solimp = (0.9, 0.95, 0.001, 0.5, 2).
const LIMIT_TIMECONST: f64 = 0.08;
const LIMIT_DAMPRATIO: f64 = 1.0;
const IMP_MIN: f64 = 0.9;
const IMP_MAX: f64 = 0.95;
const IMP_WIDTH: f64 = 0.001;
const IMP_MIDPOINT: f64 = 0.5;
const IMP_POWER: i32 = 2;

const STATE_FIELDS: &[&str] = &[
    "cart_position",
    "pole_angle",
    "cart_velocity",
    "pole_angular_velocity",
];
const OBSERVATION_FIELDS: &[&str] = &[
    "cart_position",
    "pole_angle_cos",
    "pole_angle_sin",
    "cart_velocity",
    "pole_angular_velocity",
];
const ACTION_LOW: &[f64] = &[-1.0];
const ACTION_HIGH: &[f64] = &[1.0];

/// MuJoCo's inertia of a capsule (cylinder of `length` plus two hemispherical caps, uniform
/// density) about an axis through its centre, perpendicular to its own axis.
pub const fn capsule_inertia(mass: f64, radius: f64, length: f64) -> f64 {
    let sphere_mass = mass * 4.0 * radius / (4.0 * radius + 3.0 * length);
    let cylinder_mass = mass - sphere_mass;
    cylinder_mass * (3.0 * radius * radius + length * length) / 12.0
        + 2.0 * sphere_mass * radius * radius / 5.0
        + sphere_mass * length * (3.0 * radius + 2.0 * length) / 8.0
}

/// The pole's inertia about its centre of mass (0.009424593 kg m^2).
pub const POLE_INERTIA: f64 = capsule_inertia(POLE_MASS, POLE_RADIUS, POLE_LENGTH);

/// Cart and pole state; `pole_angle = 0` is upright, positive tilts the tip towards +x.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CartpolePlant {
    pub cart_position: f64,
    pub pole_angle: f64,
    pub cart_velocity: f64,
    pub pole_angular_velocity: f64,
}

impl Default for CartpolePlant {
    /// Cart centred, pole hanging down, at rest.
    fn default() -> Self {
        Self {
            cart_position: 0.0,
            pole_angle: PI,
            cart_velocity: 0.0,
            pole_angular_velocity: 0.0,
        }
    }
}

type Derivative = [f64; 4]; // d/dt [x, theta, x', theta']

impl CartpolePlant {
    fn as_array(&self) -> [f64; 4] {
        [
            self.cart_position,
            self.pole_angle,
            self.cart_velocity,
            self.pole_angular_velocity,
        ]
    }

    /// One RK4 step of `TIMESTEP` with motor control `control` (clipped to [-1, 1], force =
    /// gear * control).
    pub fn step_control(&mut self, control: f64) {
        let force = MOTOR_GEAR * control.clamp(-1.0, 1.0);
        let y = self.as_array();
        let h = TIMESTEP;
        let offset = |k: &Derivative, scale: f64| -> [f64; 4] {
            std::array::from_fn(|i| y[i] + scale * k[i])
        };
        let k1 = derivative(&y, force);
        let k2 = derivative(&offset(&k1, h / 2.0), force);
        let k3 = derivative(&offset(&k2, h / 2.0), force);
        let k4 = derivative(&offset(&k3, h), force);
        let next: [f64; 4] =
            std::array::from_fn(|i| y[i] + h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]));
        *self = Self {
            cart_position: next[0],
            pole_angle: next[1],
            cart_velocity: next[2],
            pole_angular_velocity: next[3],
        };
    }
}

/// Accelerations of the cart-pole: the 2x2 mass-matrix system, plus the slider limit's
/// constraint force when the cart is past +-1.8 m.
fn derivative(y: &[f64; 4], force: f64) -> Derivative {
    let [x, theta, x_dot, theta_dot] = *y;
    let (sin, cos) = (libm::sin(theta), libm::cos(theta));
    let ml = POLE_MASS * POLE_COM;
    // Mass matrix [[m00, m01], [m01, m11]] and bias-free right-hand side.
    let m00 = CART_MASS + POLE_MASS;
    let m01 = ml * cos;
    let m11 = ml * POLE_COM + POLE_INERTIA;
    let rhs0 = force - SLIDER_DAMPING * x_dot + ml * sin * theta_dot * theta_dot;
    let rhs1 = ml * GRAVITY * sin - HINGE_DAMPING * theta_dot;
    let det = m00 * m11 - m01 * m01;
    let (inv00, inv01, inv11) = (m11 / det, -m01 / det, m00 / det);
    let mut x_ddot = inv00 * rhs0 + inv01 * rhs1;
    let mut theta_ddot = inv01 * rhs0 + inv11 * rhs1;

    if let Some(limit_force) = slider_limit_force(x, x_dot, x_ddot, inv00) {
        x_ddot += inv00 * limit_force;
        theta_ddot += inv01 * limit_force;
    }
    [x_dot, theta_dot, x_ddot, theta_ddot]
}

/// Generalised force along x from MuJoCo's soft joint limit, or None inside the rails.
///
/// MuJoCo treats a violated limit as a unilateral soft constraint. With distance `r < 0`,
/// constraint-space velocity `v` and unconstrained acceleration `a0`, the reference
/// acceleration is `aref = -b v - k imp r` (b = 2 / (dmax tc), k = 1 / (dmax tc dr)^2) and the
/// force is `f = max(0, (aref - a0) / (A + R))`, where `A` is the inverse inertia along the
/// constraint and `R = (1 - imp) / imp * A0` its regulariser (A0: inverse inertia at the
/// model's reference pose). MuJoCo recomputes this in every RK4 stage, as done here.
fn slider_limit_force(x: f64, x_dot: f64, x_ddot: f64, inverse_inertia: f64) -> Option<f64> {
    let (distance, direction) = if x > SLIDER_LIMIT {
        (SLIDER_LIMIT - x, -1.0)
    } else if x < -SLIDER_LIMIT {
        (x + SLIDER_LIMIT, 1.0)
    } else {
        return None;
    };
    let imp = impedance(distance.abs());
    let b = 2.0 / (IMP_MAX * LIMIT_TIMECONST);
    let k = 1.0
        / (IMP_MAX
            * IMP_MAX
            * LIMIT_TIMECONST
            * LIMIT_TIMECONST
            * LIMIT_DAMPRATIO
            * LIMIT_DAMPRATIO);
    let reference_acceleration = -b * (direction * x_dot) - k * imp * distance;
    let regulariser = (1.0 - imp) / imp * reference_inverse_inertia();
    let magnitude =
        ((reference_acceleration - direction * x_ddot) / (inverse_inertia + regulariser)).max(0.0);
    Some(direction * magnitude)
}

/// MuJoCo's solimp impedance curve, from IMP_MIN at zero violation to IMP_MAX at IMP_WIDTH.
fn impedance(violation: f64) -> f64 {
    if violation >= IMP_WIDTH {
        return IMP_MAX;
    }
    let x = violation / IMP_WIDTH;
    let y = if x <= IMP_MIDPOINT {
        libm::pow(x, IMP_POWER as f64) / libm::pow(IMP_MIDPOINT, (IMP_POWER - 1) as f64)
    } else {
        1.0 - libm::pow(1.0 - x, IMP_POWER as f64)
            / libm::pow(1.0 - IMP_MIDPOINT, (IMP_POWER - 1) as f64)
    };
    IMP_MIN + y * (IMP_MAX - IMP_MIN)
}

/// Inverse inertia of the slider at the reference pose (pole upright): MuJoCo's `dof_invweight0`.
fn reference_inverse_inertia() -> f64 {
    let ml = POLE_MASS * POLE_COM;
    let m00 = CART_MASS + POLE_MASS;
    let m11 = ml * POLE_COM + POLE_INERTIA;
    m11 / (m00 * m11 - ml * ml)
}

/// Reward after a step with raw (unclipped) control `control`; shared by swingup and balance.
pub fn reward(after: &CartpolePlant, control: f64) -> f64 {
    let upright = (libm::cos(after.pole_angle) + 1.0) / 2.0;
    let centered = (1.0 + tolerance_gaussian(after.cart_position, 0.0, 0.0, 2.0, 0.1)) / 2.0;
    let quadratic = if control.abs() < 1.0 {
        1.0 - control * control
    } else {
        0.0
    };
    let small_control = (4.0 + quadratic) / 5.0;
    let small_velocity =
        (1.0 + tolerance_gaussian(after.pole_angular_velocity, 0.0, 0.0, 5.0, 0.1)) / 2.0;
    upright * centered * small_control * small_velocity
}

impl Plant for CartpolePlant {
    fn domain(&self) -> &'static str {
        "cartpole"
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
            cart_position: state[0],
            pole_angle: state[1],
            cart_velocity: state[2],
            pole_angular_velocity: state[3],
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
    fn observation(&self) -> Vec<f64> {
        vec![
            self.cart_position,
            libm::cos(self.pole_angle),
            libm::sin(self.pole_angle),
            self.cart_velocity,
            self.pole_angular_velocity,
        ]
    }
    fn render(&self, out: &mut [u8]) {
        render_into(out, |frame| draw(self, frame));
    }
}

/// Which initial-state distribution an episode starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CartpoleVariant {
    /// Pole hanging down: x = 0.01 N, theta = pi + 0.01 N.
    Swingup,
    /// Pole nearly upright: x ~ U[-0.1, 0.1], theta ~ U[-0.034, 0.034].
    Balance,
}

#[derive(Debug, Clone, Copy)]
pub struct CartpoleTask {
    pub variant: CartpoleVariant,
}

impl Task for CartpoleTask {
    type Plant = CartpolePlant;
    fn name(&self) -> &'static str {
        match self.variant {
            CartpoleVariant::Swingup => "cartpole-swingup",
            CartpoleVariant::Balance => "cartpole-balance",
        }
    }
    fn max_env_steps(&self) -> u32 {
        EPISODE_STEPS
    }
    fn initial_plant(&self, rng: &mut TaskRng) -> CartpolePlant {
        let (cart_position, pole_angle) = match self.variant {
            CartpoleVariant::Swingup => (
                0.01 * rng.standard_normal(),
                PI + 0.01 * rng.standard_normal(),
            ),
            CartpoleVariant::Balance => (rng.uniform(-0.1, 0.1), rng.uniform(-0.034, 0.034)),
        };
        let cart_velocity = 0.01 * rng.standard_normal();
        let pole_angular_velocity = 0.01 * rng.standard_normal();
        CartpolePlant {
            cart_position,
            pole_angle,
            cart_velocity,
            pole_angular_velocity,
        }
    }
    fn reward(
        &self,
        _before: &CartpolePlant,
        physical_action: &[f64],
        after: &CartpolePlant,
    ) -> f64 {
        reward(after, physical_action[0])
    }
}

// Scene (x right, z up): rail at z = 1 spanning the cart's travel, floor at z = -0.05.
// The view is 4 m wide so the cart stays in frame across the whole rail.
const VIEW: View = View {
    center_x: 0.0,
    center_z: 1.0,
    half_extent: 2.0,
};
const RAIL_HEIGHT: f64 = 1.0;
const FLOOR_HEIGHT: f64 = -0.05;
const SKY_TOP: Rgb = [58, 92, 130];
const SKY_BOTTOM: Rgb = [20, 32, 48];
const FLOOR: Rgb = [36, 52, 70];
const RAIL: Rgb = [96, 140, 186];
const CART: Rgb = [178, 127, 76];
const POLE: Rgb = [250, 196, 110];
const HINGE: Rgb = [40, 26, 16];
/// Drawn radius of the pole: wider than the physical 0.045 m so it spans two pixels.
const POLE_DRAW_RADIUS: f64 = 0.07;

fn background() -> &'static [u8] {
    static BACKGROUND: OnceLock<Vec<u8>> = OnceLock::new();
    BACKGROUND.get_or_init(|| {
        let mut frame = vec![0u8; FRAME_BYTES];
        let mut canvas = Canvas::new(&mut frame, VIEW);
        canvas.vertical_gradient(SKY_TOP, SKY_BOTTOM);
        canvas.fill_below(FLOOR_HEIGHT, FLOOR);
        let rail_end = SLIDER_LIMIT + 0.2;
        canvas.capsule(
            (-rail_end, RAIL_HEIGHT),
            (rail_end, RAIL_HEIGHT),
            0.035,
            RAIL,
        );
        // End stops where the cart's edge is when the slider sits at its limit.
        for side in [-1.0, 1.0] {
            let post_x = side * (rail_end + 0.04);
            canvas.capsule(
                (post_x, RAIL_HEIGHT - 0.14),
                (post_x, RAIL_HEIGHT + 0.14),
                0.035,
                RAIL,
            );
        }
        frame
    })
}

fn draw(plant: &CartpolePlant, frame: &mut [u8]) {
    frame.copy_from_slice(background());
    let mut canvas = Canvas::new(frame, VIEW);
    let hinge = (plant.cart_position, RAIL_HEIGHT);
    canvas.rect(hinge, 0.2, 0.1, CART);
    let tip = (
        hinge.0 + POLE_LENGTH * libm::sin(plant.pole_angle),
        hinge.1 + POLE_LENGTH * libm::cos(plant.pole_angle),
    );
    canvas.capsule(hinge, tip, POLE_DRAW_RADIUS, POLE);
    canvas.disc(hinge, 0.045, HINGE);
}
