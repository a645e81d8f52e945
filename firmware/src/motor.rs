//! The motor driver: PWM magnitude plus a direction pin.

use embedded_hal::digital::OutputPin;
use embedded_hal::pwm::SetDutyCycle;

/// A failed motor driver command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActuatorError;

/// H-bridge style motor: `|command|` as PWM duty, the sign on the direction pin (high =
/// positive). Commands are normalised to [-1, 1]; the caller clamps.
#[derive(Debug)]
pub struct Motor<PWM, DIR> {
    pwm: PWM,
    direction: DIR,
}

impl<PWM: SetDutyCycle, DIR: OutputPin> Motor<PWM, DIR> {
    pub fn new(pwm: PWM, direction: DIR) -> Self {
        Self { pwm, direction }
    }

    /// Drives the motor at `command` in [-1, 1]. The direction is set before the duty so a
    /// reversal never runs full duty the wrong way.
    pub fn apply(&mut self, command: f32) -> Result<(), ActuatorError> {
        let magnitude = command.abs().min(1.0);
        let max = self.pwm.max_duty_cycle();
        let duty = libm::roundf(magnitude * f32::from(max)) as u16;
        if command >= 0.0 {
            self.direction.set_high().map_err(|_| ActuatorError)?;
        } else {
            self.direction.set_low().map_err(|_| ActuatorError)?;
        }
        self.pwm
            .set_duty_cycle(duty.min(max))
            .map_err(|_| ActuatorError)
    }

    /// Zero duty: the motor coasts.
    pub fn off(&mut self) -> Result<(), ActuatorError> {
        self.pwm
            .set_duty_cycle_fully_off()
            .map_err(|_| ActuatorError)
    }

    pub fn release(self) -> (PWM, DIR) {
        (self.pwm, self.direction)
    }
}
