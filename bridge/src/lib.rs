//! Gymnasium and DeepMind Control environments for dreamer-rs: each env runs in its own Python
//! worker process (`python/dreamer_worker.py`, embedded), N of them stepped in parallel and
//! exposed with the API of `dreamer_tasks::VecEnv` and its types.
//!
//! Task names: `gym:<id>` (any id `gymnasium.make` knows, `module:Id` included) and
//! `dmc:<domain>-<task>` (`dm_control.suite.load`). The protocol, the observation layout and
//! the error cases are in docs/bridge.md.
//!
//! - [`BridgeVecEnv`]: `new`, `spec`, `num_envs`, `needs_reset`, `reset_all`, `reset_one`,
//!   `step_all`, like `dreamer_tasks::VecEnv`.
//! - [`BridgeOptions`]: the Python ([`resolve_python`]), the env's kwargs, the deadlines.
//! - [`EnvRecord`]: what a checkpoint and a bundle record about the env.
//! - [`BridgeError`]: every failure names the env, the worker, the step and the value.

mod error;
mod options;
mod poll;
mod pool;
mod process;
mod protocol;
mod record;
mod spec;
mod vec_env;

pub use error::{BridgeError, Fault, Stage, StderrTail};
pub use options::{
    BridgeOptions, PYTHON_ENV_VAR, PythonChoice, TASK_PREFIXES, is_bridge_task, parse_kwargs,
    resolve_python,
};
pub use record::EnvRecord;
pub use spec::{LayoutField, WorkerSpec};
pub use vec_env::BridgeVecEnv;
