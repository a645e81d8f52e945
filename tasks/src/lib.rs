//! Native control tasks for Dreamer: Gymnasium `Pendulum-v1` and DeepMind Control Suite
//! `cartpole` (swingup, balance) and `acrobot` (swingup), with state-vector and 64x64 RGB
//! observations from a built-in software rasteriser.
//!
//! Three layers:
//! - [`Plant`]: physics only (state, one physics step from a physical actuator command,
//!   sensors, a picture); what a hardware-in-the-loop plant simulator drives in real time.
//! - [`Task`]: reset distribution, reward and episode length over a plant.
//! - [`Env`] (from [`make`]) and [`VecEnv`]: the agent's view with normalised actions,
//!   action repeat, time limit and the chosen observations.

pub mod acrobot;
pub mod cartpole;
mod env;
mod error;
pub mod pendulum;
mod plant;
pub mod policy;
pub mod raster;
mod rng;
mod vec_env;

pub use env::{Env, EnvOptions, EnvSpec, ObsMode, Observation, Step, TaskEnv};
pub use error::TaskError;
pub use plant::{Plant, Task, tolerance_gaussian};
pub use raster::{FRAME_BYTES, FRAME_SIZE};
pub use rng::TaskRng;
pub use vec_env::VecEnv;

use acrobot::{AcrobotPlant, AcrobotTask};
use cartpole::{CartpolePlant, CartpoleTask, CartpoleVariant};
use pendulum::{PendulumPlant, PendulumTask};

/// Every task [`make`] knows.
pub const TASK_NAMES: &[&str] = &[
    "pendulum",
    "cartpole-swingup",
    "cartpole-balance",
    "acrobot-swingup",
];

/// A one-line description of a task, or None for an unknown name.
pub fn task_description(task: &str) -> Option<&'static str> {
    Some(match task {
        "pendulum" => {
            "Gymnasium Pendulum-v1: swing up and hold a torque-limited pendulum (200 steps of 0.05 s)"
        }
        "cartpole-swingup" => {
            "DMC cartpole swingup: swing the hanging pole up and balance it (1000 steps of 0.01 s)"
        }
        "cartpole-balance" => {
            "DMC cartpole balance: keep the nearly upright pole balanced (1000 steps of 0.01 s)"
        }
        "acrobot-swingup" => {
            "DMC acrobot swingup: bring the two-link tip to the target above (1000 steps of 0.01 s)"
        }
        _ => return None,
    })
}

/// Where the tasks are defined, as a bundle's manifest names it.
pub const DEFINITION_SOURCE: &str = "dreamer-tasks";

/// The definition version of `task` (a name from [`TASK_NAMES`]), or None for an unknown
/// name. A policy is trained against one definition, so a bundle records it. Bump a task's
/// `DEFINITION_VERSION` whenever what a policy sees or acts on changes: the physics (equations,
/// constants, physics step, integrator), the observation fields, their order or scaling, the
/// picture, the actuator range, the reset distribution, the reward or the episode length. A
/// change of `cartpole.rs` that touches only one variant still bumps the file's version.
pub fn definition_version(task: &str) -> Option<u32> {
    Some(match task {
        "pendulum" => pendulum::DEFINITION_VERSION,
        "cartpole-swingup" | "cartpole-balance" => cartpole::DEFINITION_VERSION,
        "acrobot-swingup" => acrobot::DEFINITION_VERSION,
        _ => return None,
    })
}

/// Builds the environment for `task`; an unknown name is an error listing [`TASK_NAMES`].
pub fn make(task: &str, options: EnvOptions) -> Result<Box<dyn Env>, TaskError> {
    Ok(match task {
        "pendulum" => Box::new(TaskEnv::new(
            PendulumTask,
            PendulumPlant::default(),
            options,
        )?),
        "cartpole-swingup" => Box::new(TaskEnv::new(
            CartpoleTask {
                variant: CartpoleVariant::Swingup,
            },
            CartpolePlant::default(),
            options,
        )?),
        "cartpole-balance" => Box::new(TaskEnv::new(
            CartpoleTask {
                variant: CartpoleVariant::Balance,
            },
            CartpolePlant::default(),
            options,
        )?),
        "acrobot-swingup" => Box::new(TaskEnv::new(AcrobotTask, AcrobotPlant::default(), options)?),
        _ => {
            return Err(TaskError::UnknownTask {
                name: task.to_string(),
            });
        }
    })
}

/// The plant behind `task` (a task name from [`TASK_NAMES`]) in its rest state (hanging down),
/// for a plant simulator that sets the state itself.
pub fn make_plant(task: &str) -> Result<Box<dyn Plant>, TaskError> {
    Ok(match task {
        "pendulum" => Box::new(PendulumPlant::default()),
        "cartpole-swingup" | "cartpole-balance" => Box::new(CartpolePlant::default()),
        "acrobot-swingup" => Box::new(AcrobotPlant::default()),
        _ => {
            return Err(TaskError::UnknownTask {
                name: task.to_string(),
            });
        }
    })
}
