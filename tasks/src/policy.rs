//! Simple policies for looking at a task before training: zero, uniform random, and a
//! hand-written controller per task that acts on the physical state.

use std::str::FromStr;

use crate::acrobot::AcrobotPlant;
use crate::env::EnvSpec;
use crate::error::TaskError;
use crate::pendulum::normalize_angle;
use crate::rng::TaskRng;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyKind {
    Zero,
    Random,
    Scripted,
}

impl FromStr for PolicyKind {
    type Err = TaskError;
    fn from_str(text: &str) -> Result<Self, TaskError> {
        match text {
            "zero" => Ok(PolicyKind::Zero),
            "random" => Ok(PolicyKind::Random),
            "scripted" => Ok(PolicyKind::Scripted),
            other => Err(TaskError::InvalidOption {
                option: "policy",
                reason: format!("unknown policy `{other}`; expected zero, random or scripted"),
            }),
        }
    }
}

/// A policy producing normalised actions for one task.
#[derive(Debug, Clone)]
pub struct Policy {
    kind: PolicyKind,
    task: String,
    action_size: usize,
    rng: TaskRng,
}

impl Policy {
    pub fn new(kind: PolicyKind, spec: &EnvSpec, seed: u64) -> Self {
        Self {
            kind,
            task: spec.task.clone(),
            action_size: spec.action_size,
            rng: TaskRng::new(seed),
        }
    }

    /// Normalised action `[action_size]` for the given physical state.
    pub fn act(&mut self, physical_state: &[f64]) -> Vec<f32> {
        match self.kind {
            PolicyKind::Zero => vec![0.0; self.action_size],
            PolicyKind::Random => (0..self.action_size)
                .map(|_| self.rng.uniform(-1.0, 1.0) as f32)
                .collect(),
            PolicyKind::Scripted => {
                let action = match self.task.as_str() {
                    "pendulum" => pendulum_controller(physical_state),
                    "cartpole-swingup" | "cartpole-balance" => cartpole_controller(physical_state),
                    "acrobot-swingup" => acrobot_controller(physical_state),
                    _ => 0.0,
                };
                vec![action.clamp(-1.0, 1.0) as f32; self.action_size]
            }
        }
    }
}

/// Energy pumping, then a PD hold near upright. State [theta, theta_dot]; output in [-1, 1]
/// (times 2 N·m).
fn pendulum_controller(state: &[f64]) -> f64 {
    let (theta, theta_dot) = (normalize_angle(state[0]), state[1]);
    if theta.abs() < 0.6 {
        return -(8.0 * theta + 1.6 * theta_dot) / 2.0;
    }
    // Energy per unit inertia with theta_ddot = 15 sin(theta): E = theta_dot^2 / 2 + 15 cos(theta).
    let energy = 0.5 * theta_dot * theta_dot + 15.0 * libm::cos(theta);
    let pump = (15.0 - energy) * theta_dot;
    if pump.abs() < 1e-6 {
        1.0
    } else {
        pump.signum()
    }
}

/// Energy pumping (Astrom-Furuta) far from upright, linear state feedback near it.
/// State [x, theta, x_dot, theta_dot]; output is the motor control.
fn cartpole_controller(state: &[f64]) -> f64 {
    let (x, theta, x_dot, theta_dot) = (state[0], normalize_angle(state[1]), state[2], state[3]);
    if theta.abs() < 0.35 {
        return 0.3 * x + 0.5 * x_dot + 6.0 * theta + 1.0 * theta_dot;
    }
    // Pole energy relative to upright rest (m l^2 + I = 0.0344, m g l = 0.4905).
    let energy = 0.5 * 0.0344 * theta_dot * theta_dot + 0.4905 * (libm::cos(theta) - 1.0);
    let pump = energy * theta_dot * libm::cos(theta);
    // Keep the cart near the centre while pumping.
    20.0 * pump.signum() * pump.abs().min(0.05) - 0.3 * x - 0.2 * x_dot
}

/// Regulates the total energy to that of the upright rest pose (elbow power is torque times
/// elbow velocity), so the arm keeps sweeping through the target.
/// State [q1, q2, q1_dot, q2_dot]; output is the elbow control.
fn acrobot_controller(state: &[f64]) -> f64 {
    let plant = AcrobotPlant {
        shoulder_angle: state[0],
        elbow_angle: state[1],
        shoulder_velocity: state[2],
        elbow_velocity: state[3],
    };
    let upright = AcrobotPlant {
        shoulder_angle: 0.0,
        elbow_angle: 0.0,
        shoulder_velocity: 0.0,
        elbow_velocity: 0.0,
    };
    let energy_gap = upright.energy() - plant.energy();
    (2.0 * energy_gap * state[3]).clamp(-1.0, 1.0)
}
