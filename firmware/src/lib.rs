//! Firmware core for a Dreamer-controlled robot: a fixed-rate control loop ([`Firmware`])
//! over embedded-hal 1.0 peripherals (I2C encoders, an SPI counter, a PWM motor with a
//! direction pin) and a [`Link`] to the runtime that speaks the `dreamer-wire` protocol: an
//! `embedded-io` serial port ([`StreamLink`], COBS-framed) or an `embedded-nal` UDP stack
//! ([`DatagramLink`], one message per datagram). What the robot measures of its task, the
//! reward and the episode boundaries, comes from its [`Rewards`].
//!
//! The crate is `no_std` in every build, tests included, and allocates nothing: every buffer
//! is a fixed array or a `heapless` container, so a use of `std` or `alloc` here is a compile
//! error. Tests that need `std` (mock peripherals, scripted serial ports) are integration
//! tests under `tests/`. `firmware-host` runs this core against a simulated plant on a PC.
#![no_std]

mod control;
mod latency;
mod link;
mod motor;
mod rewards;
mod sensors;

pub use control::{Clock, Config, Firmware};
pub use latency::LatencyHistogram;
pub use link::{DatagramLink, Link, LinkFailed, StreamLink};
pub use motor::{ActuatorError, Motor};
pub use rewards::{NoRewards, Rewards};
pub use sensors::{
    COUNTER_READ, ENCODER_ANGLE_REGISTER, ENCODER_BASE_ADDRESS, ENCODER_COUNTS, SensorError,
    Sensors, TaskLayout,
};
