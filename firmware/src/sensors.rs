//! Sensors and the mapping from raw counts to the task's observation vector.
//!
//! Joint angles come from AS5048B-style 14-bit magnetic encoders on I2C (register `0xFE`
//! holds bits 13..6 of the angle, `0xFF` bits 5..0). The cart position comes from an
//! LS7366R-style quadrature counter on SPI (`0x60` = read counter, then 4 bytes, big-endian,
//! two's complement). Velocities are finite differences of consecutive quantised samples
//! over the measured time between them; the first sample after start reports zero velocity.

use core::f32::consts::{PI, TAU};

use dreamer_wire::MAX_OBSERVATION;
use embedded_hal::i2c::I2c;
use embedded_hal::spi::SpiDevice;
use heapless::Vec;

/// Counts per encoder revolution (14 bits).
pub const ENCODER_COUNTS: u32 = 1 << 14;
/// First angle register of the encoder; the read continues into `0xFF`.
pub const ENCODER_ANGLE_REGISTER: u8 = 0xFE;
/// I2C address of the first encoder; a second one sits at the next address.
pub const ENCODER_BASE_ADDRESS: u8 = 0x40;
/// Counter chip command: read the 32-bit counter.
pub const COUNTER_READ: u8 = 0x60;

/// Which sensors a task has and how they form its observation vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskLayout {
    /// One encoder (pendulum angle, 0 = upright): `[cos, sin, theta_dot]`.
    Pendulum,
    /// Pole encoder (0 = upright) and cart counter: `[x, cos, sin, x_dot, theta_dot]`.
    Cartpole,
    /// Shoulder and elbow encoders (elbow relative to the upper arm):
    /// `[sin q1, sin(q1+q2), cos q1, cos(q1+q2), q1_dot, q2_dot]`.
    Acrobot,
}

impl TaskLayout {
    /// The layout of a `dreamer-tasks` task name, if the firmware knows its sensors.
    pub fn for_task(task: &str) -> Option<Self> {
        match task {
            "pendulum" => Some(TaskLayout::Pendulum),
            "cartpole-swingup" | "cartpole-balance" => Some(TaskLayout::Cartpole),
            "acrobot-swingup" => Some(TaskLayout::Acrobot),
            _ => None,
        }
    }

    /// Observation field names, identical to the task's state observation fields.
    pub fn fields(self) -> &'static [&'static str] {
        match self {
            TaskLayout::Pendulum => &["cos_theta", "sin_theta", "theta_dot"],
            TaskLayout::Cartpole => &[
                "cart_position",
                "pole_angle_cos",
                "pole_angle_sin",
                "cart_velocity",
                "pole_angular_velocity",
            ],
            TaskLayout::Acrobot => &[
                "upper_arm_horizontal",
                "lower_arm_horizontal",
                "upper_arm_vertical",
                "lower_arm_vertical",
                "shoulder_velocity",
                "elbow_velocity",
            ],
        }
    }

    /// Number of angle encoders on the I2C bus.
    pub fn encoders(self) -> usize {
        match self {
            TaskLayout::Pendulum | TaskLayout::Cartpole => 1,
            TaskLayout::Acrobot => 2,
        }
    }

    pub fn has_cart(self) -> bool {
        self == TaskLayout::Cartpole
    }

    /// Every supported task has one motor.
    pub fn action_size(self) -> usize {
        1
    }

    pub fn wire_layout(self) -> dreamer_wire::Layout {
        dreamer_wire::Layout::from_fields(self.fields(), self.action_size() as u8)
    }
}

/// A failed sensor transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensorError {
    Encoder { index: u8 },
    Counter,
}

/// One quantised reading of every sensor.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Reading {
    timestamp_us: u64,
    /// Angles in [0, 2pi), from the encoder counts.
    angles: [f32; 2],
    /// Metres, from the counter.
    cart_position: f32,
}

/// The sensor suite of one task: encoders on an I2C bus, the cart counter on an SPI device.
#[derive(Debug)]
pub struct Sensors<I2C, SPI> {
    layout: TaskLayout,
    i2c: I2C,
    spi: SPI,
    counts_per_metre: f32,
    previous: Option<Reading>,
}

impl<I2C: I2c, SPI: SpiDevice> Sensors<I2C, SPI> {
    pub fn new(layout: TaskLayout, i2c: I2C, spi: SPI, counts_per_metre: f32) -> Self {
        Self {
            layout,
            i2c,
            spi,
            counts_per_metre,
            previous: None,
        }
    }

    /// Forgets the previous reading, so the next sample reports zero velocities like the
    /// first one after start (for when the plant was moved by something else than its motion).
    pub fn forget_previous(&mut self) {
        self.previous = None;
    }

    pub fn layout(&self) -> TaskLayout {
        self.layout
    }

    /// Hands the buses back.
    pub fn release(self) -> (I2C, SPI) {
        (self.i2c, self.spi)
    }

    /// Reads every sensor and returns the observation vector, `[layout.fields().len()]`.
    pub fn sample(&mut self, timestamp_us: u64) -> Result<Vec<f32, MAX_OBSERVATION>, SensorError> {
        let mut angles = [0.0f32; 2];
        for (index, angle) in angles.iter_mut().take(self.layout.encoders()).enumerate() {
            let count = self.read_encoder(index as u8)?;
            *angle = count as f32 * (TAU / ENCODER_COUNTS as f32);
        }
        let cart_position = if self.layout.has_cart() {
            self.read_counter()? as f32 / self.counts_per_metre
        } else {
            0.0
        };
        let reading = Reading {
            timestamp_us,
            angles,
            cart_position,
        };
        let (angle_rates, cart_velocity) = match self.previous.replace(reading) {
            Some(before) if timestamp_us > before.timestamp_us => {
                let dt = (timestamp_us - before.timestamp_us) as f32 * 1e-6;
                (
                    [
                        wrap_angle(angles[0] - before.angles[0]) / dt,
                        wrap_angle(angles[1] - before.angles[1]) / dt,
                    ],
                    (cart_position - before.cart_position) / dt,
                )
            }
            _ => ([0.0; 2], 0.0),
        };
        let (c0, s0) = (libm::cosf(angles[0]), libm::sinf(angles[0]));
        let mut obs = Vec::new();
        let values: &[f32] = match self.layout {
            TaskLayout::Pendulum => &[c0, s0, angle_rates[0]],
            TaskLayout::Cartpole => &[cart_position, c0, s0, cart_velocity, angle_rates[0]],
            TaskLayout::Acrobot => {
                let lower = angles[0] + angles[1];
                &[
                    s0,
                    libm::sinf(lower),
                    c0,
                    libm::cosf(lower),
                    angle_rates[0],
                    angle_rates[1],
                ]
            }
        };
        obs.extend_from_slice(values)
            .expect("every layout fits MAX_OBSERVATION");
        Ok(obs)
    }

    /// Encoder `index`: a 14-bit count.
    fn read_encoder(&mut self, index: u8) -> Result<u16, SensorError> {
        let mut raw = [0u8; 2];
        self.i2c
            .write_read(
                ENCODER_BASE_ADDRESS + index,
                &[ENCODER_ANGLE_REGISTER],
                &mut raw,
            )
            .map_err(|_| SensorError::Encoder { index })?;
        Ok((u16::from(raw[0]) << 6) | u16::from(raw[1] & 0x3F))
    }

    /// Cart counter: signed counts.
    fn read_counter(&mut self) -> Result<i32, SensorError> {
        let mut buf = [COUNTER_READ, 0, 0, 0, 0];
        self.spi
            .transfer_in_place(&mut buf)
            .map_err(|_| SensorError::Counter)?;
        Ok(i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]))
    }
}

/// Wraps an angle difference into [-pi, pi).
fn wrap_angle(delta: f32) -> f32 {
    let mut shifted = libm::fmodf(delta + PI, TAU);
    if shifted < 0.0 {
        shifted += TAU;
    }
    // Adding TAU to a tiny negative remainder can round to TAU itself.
    let wrapped = shifted - PI;
    if wrapped >= PI {
        wrapped - TAU
    } else {
        wrapped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_angle_stays_in_range() {
        for delta in [-7.0f32, -PI, -1e-9, 0.0, 1.0, PI, 6.5] {
            let w = wrap_angle(delta);
            assert!((-PI..PI).contains(&w), "{delta} -> {w}");
        }
    }
}
