//! Simulated peripherals backed by [`SimWorld`]: they speak the same bus protocols as the
//! real parts, so the firmware core cannot tell them apart.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{self, OutputPin};
use embedded_hal::i2c::{self, I2c, NoAcknowledgeSource};
use embedded_hal::pwm::{self, SetDutyCycle};
use embedded_hal::spi::{self, Operation, SpiDevice};

use dreamer_firmware::{
    COUNTER_READ, Clock, ENCODER_ANGLE_REGISTER, ENCODER_BASE_ADDRESS, Rewards,
};
use dreamer_wire::EpisodeStep;

use crate::world::{MAX_DUTY, SimWorld};

/// The world shared by all peripherals of one simulated robot.
pub type SharedWorld = Arc<Mutex<SimWorld>>;

fn lock(world: &SharedWorld) -> MutexGuard<'_, SimWorld> {
    // A panic elsewhere leaves the plant state itself consistent; keep using it.
    world
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The task's reward and episode boundaries, straight from the simulated plant: the reward
/// sensor of a robot whose reward is its task's.
#[derive(Clone)]
pub struct SimRewards {
    world: SharedWorld,
}

impl SimRewards {
    pub fn new(world: SharedWorld) -> Self {
        Self { world }
    }
}

impl Rewards for SimRewards {
    fn since_last_sample(&mut self) -> EpisodeStep {
        lock(&self.world).take_episode_step()
    }
}

/// The wall clock, from the same origin as the world's physics time.
#[derive(Debug, Clone, Copy)]
pub struct HostClock {
    start: Instant,
}

impl HostClock {
    pub fn new(start: Instant) -> Self {
        Self { start }
    }
}

impl Clock for HostClock {
    fn now_us(&mut self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }
}

impl DelayNs for HostClock {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(u64::from(ns)));
    }
}

/// The I2C bus with the angle encoders (AS5048B register map: `0xFE` = angle bits 13..6,
/// `0xFF` = bits 5..0, auto-incrementing register pointer).
pub struct SimI2c {
    world: SharedWorld,
    register: u8,
}

impl SimI2c {
    pub fn new(world: SharedWorld) -> Self {
        Self { world, register: 0 }
    }
}

impl i2c::ErrorType for SimI2c {
    type Error = i2c::ErrorKind;
}

impl I2c for SimI2c {
    fn transaction(
        &mut self,
        address: u8,
        operations: &mut [i2c::Operation<'_>],
    ) -> Result<(), Self::Error> {
        let index = usize::from(address.wrapping_sub(ENCODER_BASE_ADDRESS));
        let count = lock(&self.world)
            .encoder_count(index)
            .ok_or(i2c::ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address))?;
        for operation in operations {
            match operation {
                i2c::Operation::Write(bytes) => {
                    if let Some(&register) = bytes.first() {
                        self.register = register;
                    }
                }
                i2c::Operation::Read(buffer) => {
                    for byte in buffer.iter_mut() {
                        *byte = match self.register {
                            ENCODER_ANGLE_REGISTER => (count >> 6) as u8,
                            0xFF => (count & 0x3F) as u8,
                            _ => 0,
                        };
                        self.register = self.register.wrapping_add(1);
                    }
                }
            }
        }
        Ok(())
    }
}

/// The SPI quadrature counter on the cart (LS7366R: command `0x60` then the 32-bit count,
/// big-endian). The count is latched when the transaction starts.
pub struct SimSpi {
    world: SharedWorld,
}

impl SimSpi {
    pub fn new(world: SharedWorld) -> Self {
        Self { world }
    }
}

impl spi::ErrorType for SimSpi {
    type Error = spi::ErrorKind;
}

impl SpiDevice for SimSpi {
    fn transaction(&mut self, operations: &mut [Operation<'_, u8>]) -> Result<(), Self::Error> {
        let latched = lock(&self.world).cart_count().to_be_bytes();
        let mut command = None;
        let mut position = 0usize;
        // Byte `position` of the transaction: the first is the command, the next four the count.
        let mut exchange = |out: u8| -> u8 {
            let reply = match (position, command) {
                (0, _) => {
                    command = Some(out);
                    0
                }
                (1..=4, Some(COUNTER_READ)) => latched[position - 1],
                _ => 0,
            };
            position += 1;
            reply
        };
        for operation in operations {
            match operation {
                Operation::Write(bytes) => bytes.iter().for_each(|&b| {
                    exchange(b);
                }),
                Operation::Read(buffer) => buffer.iter_mut().for_each(|b| *b = exchange(0)),
                Operation::Transfer(read, write) => {
                    for i in 0..read.len().max(write.len()) {
                        let reply = exchange(write.get(i).copied().unwrap_or(0));
                        if let Some(slot) = read.get_mut(i) {
                            *slot = reply;
                        }
                    }
                }
                Operation::TransferInPlace(buffer) => {
                    buffer.iter_mut().for_each(|b| *b = exchange(*b))
                }
                Operation::DelayNs(_) => {}
            }
        }
        Ok(())
    }
}

/// The motor driver's PWM channel.
pub struct SimPwm {
    world: SharedWorld,
}

impl SimPwm {
    pub fn new(world: SharedWorld) -> Self {
        Self { world }
    }
}

impl pwm::ErrorType for SimPwm {
    type Error = core::convert::Infallible;
}

impl SetDutyCycle for SimPwm {
    fn max_duty_cycle(&self) -> u16 {
        MAX_DUTY
    }
    fn set_duty_cycle(&mut self, duty: u16) -> Result<(), Self::Error> {
        lock(&self.world).set_duty(duty);
        Ok(())
    }
}

/// The motor driver's direction input (high = positive).
pub struct SimDirection {
    world: SharedWorld,
}

impl SimDirection {
    pub fn new(world: SharedWorld) -> Self {
        Self { world }
    }
}

impl digital::ErrorType for SimDirection {
    type Error = core::convert::Infallible;
}

impl OutputPin for SimDirection {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        lock(&self.world).set_forward(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        lock(&self.world).set_forward(true);
        Ok(())
    }
}
