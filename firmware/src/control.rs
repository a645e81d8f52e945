//! The control loop: a fixed-rate tick over embedded-hal peripherals and a [`Link`] to the
//! runtime (a serial port or UDP).
//!
//! Each tick: sample the sensors, send an observation, wait until the deadline for the
//! action that answers it and apply it; without one, hold the previous action. After
//! `max_missed` missed deadlines in a row the motor is switched off and a fault is reported
//! (safe mode); the first on-time valid action afterwards clears the fault and drives again.

use dreamer_wire::{
    Action, EpisodeStep, FaultKind, FaultReport, FirmwareStats, HandshakeResult, Heartbeat, Hello,
    HelloAck, LinkCounters, MAX_ACTION, MAX_TASK_NAME, Message, Mode, Observation,
    PROTOCOL_VERSION,
};
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::OutputPin;
use embedded_hal::i2c::I2c;
use embedded_hal::pwm::SetDutyCycle;
use embedded_hal::spi::SpiDevice;
use heapless::{String, Vec};

use crate::latency::LatencyHistogram;
use crate::link::Link;
use crate::motor::Motor;
use crate::rewards::{NoRewards, Rewards};
use crate::sensors::Sensors;

/// A monotonic microsecond clock (a hardware timer on a microcontroller).
pub trait Clock {
    fn now_us(&mut self) -> u64;
}

/// Firmware settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Task name reported in the handshake (`dreamer-tasks` name).
    pub task: String<MAX_TASK_NAME>,
    /// Control tick period.
    pub period_us: u32,
    /// How long after the tick start an action still counts; at most `period_us`.
    pub deadline_us: u32,
    /// Missed deadlines in a row that trigger the safe state (at least 1).
    pub max_missed: u16,
    /// A heartbeat every this many ticks (0: never).
    pub heartbeat_every: u32,
    /// Link polling interval while waiting.
    pub poll_interval_us: u32,
}

/// The firmware: sensors, motor, link and reward source of one task.
pub struct Firmware<I2C, SPI, PWM, DIR, L, R = NoRewards> {
    config: Config,
    sensors: Sensors<I2C, SPI>,
    motor: Motor<PWM, DIR>,
    link: L,
    rewards: R,
    /// Measured since the last observation sent (a sensor failure sends none).
    unsent_step: EpisodeStep,
    mode: Mode,
    /// Sequence number of the latest observation.
    seq: u32,
    /// Action deadline of the current tick.
    deadline_us: u64,
    /// When the next tick starts, once the first one ran.
    next_tick_us: Option<u64>,
    /// The current observation went out and no valid action answered it yet.
    awaiting_action: bool,
    consecutive_misses: u16,
    /// The fault that put the firmware in safe mode.
    fault: Option<FaultKind>,
    /// The last link read failed (counted once until a read succeeds).
    read_failing: bool,
    /// Last applied command (held on a missed deadline); zero in safe mode.
    command: Vec<f32, MAX_ACTION>,
    stats: FirmwareStats,
    /// When the current tick's sensors were read.
    sampled_at_us: u64,
    /// When the previous tick's sensors were read.
    previous_sample_us: Option<u64>,
    /// Observation sampled -> its action applied, per applied action.
    round_trip: LatencyHistogram,
    /// The same per session tick, a miss recorded as one period.
    round_trip_every_tick: LatencyHistogram,
    /// |time between consecutive samples - period|, per tick.
    period_jitter: LatencyHistogram,
}

impl<I2C, SPI, PWM, DIR, L> Firmware<I2C, SPI, PWM, DIR, L, NoRewards>
where
    I2C: I2c,
    SPI: SpiDevice,
    PWM: SetDutyCycle,
    DIR: OutputPin,
    L: Link,
{
    /// Starts with the motor off, waiting for a handshake; measures no reward.
    pub fn new(
        config: Config,
        sensors: Sensors<I2C, SPI>,
        motor: Motor<PWM, DIR>,
        link: L,
    ) -> Self {
        Firmware::with_rewards(config, sensors, motor, link, NoRewards)
    }
}

impl<I2C, SPI, PWM, DIR, L, R> Firmware<I2C, SPI, PWM, DIR, L, R>
where
    I2C: I2c,
    SPI: SpiDevice,
    PWM: SetDutyCycle,
    DIR: OutputPin,
    L: Link,
    R: Rewards,
{
    /// Starts with the motor off, waiting for a handshake; each observation carries what
    /// `rewards` measured since the previous one.
    pub fn with_rewards(
        config: Config,
        sensors: Sensors<I2C, SPI>,
        motor: Motor<PWM, DIR>,
        link: L,
        rewards: R,
    ) -> Self {
        let mut firmware = Self {
            config,
            sensors,
            motor,
            link,
            rewards,
            unsent_step: EpisodeStep::default(),
            mode: Mode::AwaitingHandshake,
            seq: 0,
            deadline_us: 0,
            next_tick_us: None,
            awaiting_action: false,
            consecutive_misses: 0,
            fault: None,
            read_failing: false,
            command: Vec::new(),
            stats: FirmwareStats::default(),
            sampled_at_us: 0,
            previous_sample_us: None,
            round_trip: LatencyHistogram::new(),
            round_trip_every_tick: LatencyHistogram::new(),
            period_jitter: LatencyHistogram::new(),
        };
        firmware.motor_off();
        firmware
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn stats(&self) -> &FirmwareStats {
        &self.stats
    }

    /// Frame outcomes of everything received.
    pub fn link(&self) -> &LinkCounters {
        self.link.counters()
    }

    /// The link itself (its own counters, e.g. datagrams from strangers).
    pub fn link_mut(&mut self) -> &mut L {
        &mut self.link
    }

    /// The command the motor is driven with (empty before the first action and in safe mode).
    pub fn command(&self) -> &[f32] {
        &self.command
    }

    /// Time from each observation's sample to the application of the action answering it.
    pub fn round_trip(&self) -> &LatencyHistogram {
        &self.round_trip
    }

    /// [`Self::round_trip`] over every session tick, a missed deadline recorded as one whole
    /// period (the earliest a command could come is the next tick): its percentiles hide no
    /// miss.
    pub fn round_trip_every_tick(&self) -> &LatencyHistogram {
        &self.round_trip_every_tick
    }

    /// Deviation of the time between consecutive samples from the period.
    pub fn period_jitter(&self) -> &LatencyHistogram {
        &self.period_jitter
    }

    /// When the next tick is due (µs on the firmware clock), once the first one ran.
    pub fn next_tick_us(&self) -> Option<u64> {
        self.next_tick_us
    }

    pub fn sensors_mut(&mut self) -> &mut Sensors<I2C, SPI> {
        &mut self.sensors
    }

    pub fn motor_mut(&mut self) -> &mut Motor<PWM, DIR> {
        &mut self.motor
    }

    /// Runs one control tick: waits for its start, samples, sends, waits for the action
    /// until the deadline, then keeps serving the link until the next tick is due.
    pub fn tick(&mut self, clock: &mut impl Clock, delay: &mut impl DelayNs) {
        let now = clock.now_us();
        let start = match self.next_tick_us {
            Some(due) if now > due + u64::from(self.config.period_us) => {
                // More than a whole period late: skip ahead instead of bursting.
                bump(&mut self.stats.overruns);
                now
            }
            Some(due) => {
                self.serve_until(due, clock, delay);
                due
            }
            None => now,
        };
        self.next_tick_us = Some(start + u64::from(self.config.period_us));
        // The schedule stays on the fixed grid; the sample is stamped with when it was taken.
        let sampled_at = clock.now_us();
        if let Some(previous) = self.previous_sample_us {
            let interval = sampled_at.saturating_sub(previous);
            self.period_jitter
                .record(interval.abs_diff(u64::from(self.config.period_us)));
        }
        self.previous_sample_us = Some(sampled_at);
        self.sampled_at_us = sampled_at;
        self.begin_tick(sampled_at);
        self.deadline_us = start + u64::from(self.config.deadline_us.min(self.config.period_us));
        while self.awaiting_action {
            let now = self.poll(clock);
            if !self.awaiting_action || now >= self.deadline_us {
                break;
            }
            delay.delay_us(self.config.poll_interval_us);
        }
        self.end_tick();
    }

    /// Serves the link (handshakes, actions) until `until_us` without starting a tick.
    pub fn serve_until(&mut self, until_us: u64, clock: &mut impl Clock, delay: &mut impl DelayNs) {
        loop {
            let now = self.poll(clock);
            if now >= until_us {
                return;
            }
            let wait = (until_us - now).min(u64::from(self.config.poll_interval_us));
            delay.delay_us(wait as u32);
        }
    }

    /// Samples the sensors and sends the observation (in a session) and the heartbeat.
    fn begin_tick(&mut self, now: u64) {
        bump(&mut self.stats.ticks);
        // Sampled in every mode so velocity estimates are valid right after a handshake.
        let sample = self.sensors.sample(now);
        // Read every tick, so that a session's first observation carries only what happened
        // since the tick before it; what a tick without an observation measured goes with
        // the next one.
        let step = self.rewards.since_last_sample();
        if self.mode == Mode::AwaitingHandshake {
            self.unsent_step = EpisodeStep::default();
        } else {
            self.unsent_step = self.unsent_step.followed_by(step);
        }
        if self.mode != Mode::AwaitingHandshake {
            self.seq = self.seq.wrapping_add(1);
            // A tick without an observation cannot be answered: it counts as a miss.
            self.awaiting_action = true;
            match sample {
                Ok(values) => {
                    let step = core::mem::take(&mut self.unsent_step);
                    self.send(&Message::Observation(Observation {
                        seq: self.seq,
                        timestamp_us: now,
                        values,
                        step,
                    }));
                    bump(&mut self.stats.observations_sent);
                }
                Err(_) => {
                    bump(&mut self.stats.sensor_errors);
                    self.report(FaultKind::SensorRead, true);
                }
            }
        }
        let every = self.config.heartbeat_every;
        if every > 0 && self.stats.ticks.is_multiple_of(every) {
            self.send(&Message::Heartbeat(Heartbeat {
                tick: self.stats.ticks,
                mode: self.mode,
                deadline_misses: self.stats.deadline_misses,
                faults: self.stats.faults,
                clamped_actions: self.stats.clamped_actions,
                frame_errors: self.link.counters().errors(),
            }));
        }
    }

    /// Counts a miss when the observation went unanswered; enters safe mode after K in a row.
    fn end_tick(&mut self) {
        if !self.awaiting_action {
            return;
        }
        self.awaiting_action = false;
        bump(&mut self.stats.deadline_misses);
        self.round_trip_every_tick
            .record(u64::from(self.config.period_us));
        self.consecutive_misses = self.consecutive_misses.saturating_add(1);
        if self.mode == Mode::Running && self.consecutive_misses >= self.config.max_missed.max(1) {
            self.enter_safe(FaultKind::DeadlineMissed);
        }
    }

    fn enter_safe(&mut self, kind: FaultKind) {
        self.motor_off();
        self.mode = Mode::Safe;
        self.fault = Some(kind);
        bump(&mut self.stats.faults);
        self.report(kind, true);
    }

    fn motor_off(&mut self) {
        self.command.clear();
        if self.motor.off().is_err() {
            bump(&mut self.stats.actuator_errors);
        }
    }

    /// Handles every message the link holds; returns the time the poll started, against
    /// which deadlines are judged.
    fn poll(&mut self, clock: &mut impl Clock) -> u64 {
        let now = clock.now_us();
        loop {
            match self.link.receive() {
                Ok(Some(frame)) => {
                    self.read_failing = false;
                    self.handle(frame.message, now, clock);
                }
                Ok(None) => {
                    self.read_failing = false;
                    return now;
                }
                Err(_) => {
                    // A dead link fails every poll; count each run of failures once.
                    if !self.read_failing {
                        self.read_failing = true;
                        bump(&mut self.stats.serial_errors);
                    }
                    return now;
                }
            }
        }
    }

    fn handle(&mut self, message: Message, now: u64, clock: &mut impl Clock) {
        match message {
            Message::Hello(hello) => self.handshake(&hello),
            Message::Action(action) => self.on_action(&action, now, clock),
            Message::HelloAck(_)
            | Message::Observation(_)
            | Message::Heartbeat(_)
            | Message::Fault(_) => {
                bump(&mut self.stats.unexpected_messages);
            }
        }
    }

    fn handshake(&mut self, hello: &Hello) {
        let layout = self.sensors.layout().wire_layout();
        let result = if hello.protocol_version != PROTOCOL_VERSION {
            HandshakeResult::VersionMismatch
        } else if hello.task != self.config.task {
            HandshakeResult::TaskMismatch
        } else if hello.layout != layout {
            HandshakeResult::LayoutMismatch
        } else {
            HandshakeResult::Accepted
        };
        if result == HandshakeResult::Accepted {
            bump(&mut self.stats.handshakes_accepted);
            // A fault stays active across a new session until actions return.
            if self.mode == Mode::AwaitingHandshake {
                self.mode = Mode::Running;
                self.consecutive_misses = 0;
            }
        } else {
            bump(&mut self.stats.handshakes_rejected);
        }
        self.send(&Message::HelloAck(HelloAck {
            result,
            protocol_version: PROTOCOL_VERSION,
            task: self.config.task.clone(),
            layout,
            rewards: R::MEASURED,
        }));
    }

    fn on_action(&mut self, action: &Action, now: u64, clock: &mut impl Clock) {
        if self.mode == Mode::AwaitingHandshake || action.seq != self.seq {
            bump(&mut self.stats.stale_actions);
            return;
        }
        if !self.awaiting_action || now > self.deadline_us {
            bump(&mut self.stats.late_actions);
            return;
        }
        let expected = self.sensors.layout().action_size();
        if action.values.len() != expected || action.values.iter().any(|v| !v.is_finite()) {
            bump(&mut self.stats.invalid_actions);
            return;
        }
        let mut command: Vec<f32, MAX_ACTION> = Vec::new();
        let mut clamped = false;
        for &value in &action.values {
            let limited = value.clamp(-1.0, 1.0);
            clamped |= limited != value;
            // Cannot fail: the length was checked against the layout, which fits MAX_ACTION.
            let _ = command.push(limited);
        }
        if clamped {
            bump(&mut self.stats.clamped_actions);
        }
        if self.motor.apply(command[0]).is_err() {
            bump(&mut self.stats.actuator_errors);
            self.awaiting_action = false;
            if self.mode == Mode::Running {
                self.enter_safe(FaultKind::Actuator);
            }
            return;
        }
        let round_trip = clock.now_us().saturating_sub(self.sampled_at_us);
        self.round_trip.record(round_trip);
        self.round_trip_every_tick.record(round_trip);
        self.command = command;
        self.awaiting_action = false;
        self.consecutive_misses = 0;
        bump(&mut self.stats.actions_applied);
        if self.mode == Mode::Safe {
            self.mode = Mode::Running;
            bump(&mut self.stats.recoveries);
            let kind = self.fault.take().unwrap_or(FaultKind::DeadlineMissed);
            self.report(kind, false);
        }
    }

    fn report(&mut self, kind: FaultKind, active: bool) {
        self.send(&Message::Fault(FaultReport {
            seq: self.seq,
            kind,
            active,
            consecutive_misses: self.consecutive_misses,
        }));
    }

    fn send(&mut self, message: &Message) {
        if self.link.send(message).is_err() {
            bump(&mut self.stats.serial_errors);
        }
    }

    /// Switches the motor off and hands the peripherals and the link back.
    pub fn shutdown(mut self) -> (Sensors<I2C, SPI>, Motor<PWM, DIR>, L) {
        self.motor_off();
        (self.sensors, self.motor, self.link)
    }
}

/// Counters saturate: the firmware never panics or wraps a count back to zero.
fn bump(counter: &mut u32) {
    *counter = counter.saturating_add(1);
}
