//! Firmware for a Dreamer-controlled robot and its host simulation.
//!
//! [`firmware`] is the microcontroller core: `no_std`, no allocation, generic over
//! embedded-hal 1.0 peripherals (I2C encoders, an SPI counter, a PWM motor with a direction
//! pin) and an `embedded-io` serial port. With the `host` feature (default), [`host`] runs
//! that same core against simulated peripherals backed by a `dreamer-tasks` plant stepped
//! in real time, talking over a real serial port or pseudo-terminal.
//!
//! The crate is `no_std` in every build; only the `host` module (and tests) link `std`, by
//! explicit paths, so the firmware core cannot use it by accident.
#![no_std]

#[cfg(any(test, feature = "host"))]
extern crate std;

pub mod firmware;
#[cfg(feature = "host")]
pub mod host;
