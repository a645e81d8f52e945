//! The on-device Dreamer policy: a lean ONNX Runtime agent for real-time latent-state control.
//!
//! [`Agent`] loads a model bundle (see `dreamer-bundle`), keeps the recurrent latent state
//! (h, s, previous action) inside, and turns one observation into one action per control step
//! without heap allocation. [`control`] drives it at a fixed rate with latency statistics. [`serve`] answers a
//! microcontroller's observations over a serial line (the wire protocol of `dreamer-wire`).
//!
//! Inside, module dependencies run one way: `options`, `error` <- `graph` (one bound ONNX
//! session) <- `step` (the fused, separate and split step modes behind one trait) <- `agent`.
//!
//! This crate never links libtorch: ONNX Runtime is loaded at run time (`load-dynamic`), see
//! `dreamer-ort` for where the library is looked for.

pub mod agent;
pub mod control;
mod error;
pub mod explore;
mod graph;
mod options;
pub mod provider;
pub mod record;
pub mod serve;
mod step;

pub use agent::{Agent, Latent, Observation, StepCounters};
pub use control::{LatencySummary, LoopOptions, RateDriver, RealtimeReport};
pub use error::{LoadError, StepError};
pub use graph::GraphBench;
pub use options::{AgentOptions, GraphMode, Noise, SafeAction};
pub use provider::{DeviceOptions, GraphPlacement, Provider};
