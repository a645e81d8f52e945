//! The simulated robot: the firmware core (`dreamer-firmware`) running on a PC against
//! simulated peripherals backed by a `dreamer-tasks` plant stepped in real time, with a real
//! serial port or pseudo-terminal as its UART. The `firmware-host` binary runs it and prints
//! its [`FirmwareSummary`] at exit.

mod peripherals;
mod serial;
mod udp;
mod world;

pub use dreamer_firmware::{DatagramLink, Link, StreamLink};
pub use peripherals::{HostClock, SharedWorld, SimDirection, SimI2c, SimPwm, SimRewards, SimSpi};
pub use serial::PtySerial;
pub use udp::{HostUdp, HostUdpSocket};
pub use world::{MAX_DUTY, SimWorld};

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dreamer_firmware::{Config, Firmware, Motor, Sensors, TaskLayout};
use dreamer_wire::report::FirmwareSummary;
use dreamer_wire::{MAX_TASK_NAME, Mode};

/// Why the simulated robot could not start.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("task `{task}`: {source}")]
    Task {
        task: String,
        #[source]
        source: dreamer_tasks::TaskError,
    },
    #[error(
        "task `{task}` has no firmware sensor suite (supported: pendulum, cartpole-swingup, cartpole-balance, acrobot-swingup)"
    )]
    NoSensorSuite { task: String },
    #[error(
        "task `{task}`: firmware observation fields [{firmware}] differ from the task's [{task_fields}]"
    )]
    LayoutDrift {
        task: String,
        firmware: String,
        task_fields: String,
    },
    #[error("cannot publish the plant state to {}: {source}", path.display())]
    StateFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("option {option}: {reason}")]
    InvalidOption {
        option: &'static str,
        reason: String,
    },
}

/// Settings of one simulated robot.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// `dreamer-tasks` task name.
    pub task: String,
    pub rate_hz: f64,
    /// Action deadline after the tick start; `None`: half the period.
    pub deadline_s: Option<f64>,
    pub max_missed: u16,
    /// Heartbeats per second (0: none).
    pub heartbeat_hz: f64,
    /// Initial state seed of the first episode (later episodes use seed + 1, + 2, ...).
    pub seed: u64,
    /// Cart counter resolution.
    pub counts_per_metre: f64,
    /// Serial polling interval while waiting for an action or the next tick.
    pub poll_interval_us: u32,
    /// Start the first episode (from `seed`) when the first session opens, not at start-up,
    /// so the return covers exactly the episodes the runtime controlled.
    pub episode_at_handshake: bool,
    /// Publish the plant's physical state here after every physics step (see
    /// [`dreamer_wire::plant_state`]), for a simulated camera.
    pub state_file: Option<PathBuf>,
}

impl SimOptions {
    pub fn new(task: &str) -> Self {
        Self {
            task: task.into(),
            rate_hz: 50.0,
            deadline_s: None,
            max_missed: dreamer_wire::DEFAULT_MAX_MISSED,
            heartbeat_hz: 1.0,
            seed: 0,
            counts_per_metre: 20_000.0,
            poll_interval_us: 100,
            episode_at_handshake: false,
            state_file: None,
        }
    }

    fn firmware_config(&self) -> Result<Config, HostError> {
        let invalid = |option, reason: &str| HostError::InvalidOption {
            option,
            reason: reason.into(),
        };
        if !(self.rate_hz.is_finite() && self.rate_hz > 0.0 && self.rate_hz <= 10_000.0) {
            return Err(invalid("rate_hz", "must be in (0, 10000]"));
        }
        let period_s = 1.0 / self.rate_hz;
        let deadline_s = self.deadline_s.unwrap_or(period_s / 2.0);
        if !(deadline_s.is_finite() && deadline_s > 0.0 && deadline_s <= period_s) {
            return Err(invalid(
                "deadline",
                "must be positive and at most one period",
            ));
        }
        if self.max_missed == 0 {
            return Err(invalid("max_missed", "must be at least 1"));
        }
        if !(self.heartbeat_hz.is_finite() && self.heartbeat_hz >= 0.0) {
            return Err(invalid("heartbeat_hz", "must be zero or positive"));
        }
        if !(1..=100_000).contains(&self.poll_interval_us) {
            return Err(invalid("poll_interval_us", "must be in [1, 100000]"));
        }
        if !(self.counts_per_metre.is_finite() && self.counts_per_metre > 0.0) {
            return Err(invalid("counts_per_metre", "must be positive"));
        }
        let task = heapless::String::<MAX_TASK_NAME>::try_from(self.task.as_str())
            .map_err(|_| invalid("task", "name longer than the wire protocol's 32 bytes"))?;
        let heartbeat_every = if self.heartbeat_hz > 0.0 {
            (self.rate_hz / self.heartbeat_hz).round().max(1.0) as u32
        } else {
            0
        };
        Ok(Config {
            task,
            period_us: (period_s * 1e6).round() as u32,
            deadline_us: (deadline_s * 1e6).round() as u32,
            max_missed: self.max_missed,
            heartbeat_every,
            poll_interval_us: self.poll_interval_us,
        })
    }
}

/// The firmware's waits, ended early by input like a UART receive interrupt would: a
/// delay returns as soon as bytes arrive on the serial descriptor (without one, or once
/// the other end hung up, it sleeps the whole time).
#[derive(Debug, Clone, Copy, Default)]
pub struct InputWait {
    fd: Option<RawFd>,
}

impl embedded_hal::delay::DelayNs for InputWait {
    fn delay_ns(&mut self, ns: u32) {
        let sleep = || std::thread::sleep(Duration::from_nanos(u64::from(ns)));
        let Some(fd) = self.fd else {
            return sleep();
        };
        let timeout = libc::timespec {
            tv_sec: (ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (ns % 1_000_000_000) as libc::c_long,
        };
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a valid timeout, no signal mask.
        let ready = unsafe { libc::ppoll(&mut pfd, 1, &timeout, std::ptr::null()) };
        if ready > 0 && pfd.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            // A closed peer would end every wait at once: wait the full time instead.
            sleep();
        }
    }
}

/// The firmware core wired to simulated peripherals and a link (serial port or UDP).
pub struct HostFirmware<L> {
    firmware: Firmware<SimI2c, SimSpi, SimPwm, SimDirection, L, SimRewards>,
    world: SharedWorld,
    clock: HostClock,
    input_wait: InputWait,
    options: SimOptions,
    started: Instant,
    session_opened_s: Option<f64>,
}

impl<L: Link> HostFirmware<L> {
    pub fn new(options: SimOptions, link: L) -> Result<Self, HostError> {
        let config = options.firmware_config()?;
        let start = Instant::now();
        let world = SimWorld::new(&options.task, options.seed, options.counts_per_metre, start)?;
        let layout: TaskLayout = world.layout();
        let mut world = world;
        if let Some(path) = &options.state_file {
            world
                .publish_state_to(path)
                .map_err(|source| HostError::StateFile {
                    path: path.clone(),
                    source,
                })?;
        }
        let world: SharedWorld = Arc::new(Mutex::new(world));
        let sensors = Sensors::new(
            layout,
            SimI2c::new(world.clone()),
            SimSpi::new(world.clone()),
            options.counts_per_metre as f32,
        );
        let motor = Motor::new(SimPwm::new(world.clone()), SimDirection::new(world.clone()));
        Ok(Self {
            firmware: Firmware::with_rewards(
                config,
                sensors,
                motor,
                link,
                SimRewards::new(world.clone()),
            ),
            world,
            clock: HostClock::new(start),
            input_wait: InputWait::default(),
            options,
            started: start,
            session_opened_s: None,
        })
    }

    /// The simulated robot, for inspection.
    pub fn world(&self) -> SharedWorld {
        self.world.clone()
    }

    pub fn firmware(&self) -> &Firmware<SimI2c, SimSpi, SimPwm, SimDirection, L, SimRewards> {
        &self.firmware
    }

    /// Ends the firmware's waits as soon as bytes arrive on `fd` (the serial port's
    /// descriptor), as a receive interrupt would, instead of polling at intervals.
    pub fn wake_on_input(&mut self, fd: RawFd) {
        self.input_wait = InputWait { fd: Some(fd) };
    }

    /// Runs control ticks until `duration` has passed (if given) or `stop` is set.
    pub fn run(&mut self, duration: Option<Duration>, stop: &AtomicBool) {
        let end = duration.map(|d| Instant::now() + d);
        while !stop.load(Ordering::Relaxed) && end.is_none_or(|end| Instant::now() < end) {
            let mut delay = self.input_wait;
            // Serving up to the tick start here (tick() would do it too) lets a session that
            // opened meanwhile start its episode before the tick samples the plant.
            if let Some(due) = self.firmware.next_tick_us() {
                self.firmware.serve_until(due, &mut self.clock, &mut delay);
            }
            self.note_session();
            self.firmware.tick(&mut self.clock, &mut delay);
        }
    }

    fn note_session(&mut self) {
        if self.session_opened_s.is_some() || self.firmware.mode() == Mode::AwaitingHandshake {
            return;
        }
        self.session_opened_s = Some(self.started.elapsed().as_secs_f64());
        if self.options.episode_at_handshake {
            lock_world(&self.world).restart_episodes();
            // The plant jumped: the next velocity estimate must not difference across it.
            self.firmware.sensors_mut().forget_previous();
        }
    }

    /// Keeps serving the serial port for `duration` without ticking, so that answers in
    /// flight at the end of a run are received and counted.
    pub fn drain(&mut self, duration: Duration) {
        let mut delay = self.input_wait;
        let until = self.started.elapsed() + duration;
        self.firmware
            .serve_until(until.as_micros() as u64, &mut self.clock, &mut delay);
    }

    /// Switches the motor off, brings the plant up to date and reports the run.
    pub fn finish(mut self) -> FirmwareSummary {
        // Infallible on the simulated driver.
        let _ = self.firmware.motor_mut().off();
        let mut world = lock_world(&self.world);
        world.advance_to_now();
        let stats = *self.firmware.stats();
        FirmwareSummary {
            task: self.options.task.clone(),
            rate_hz: self.options.rate_hz,
            max_missed: self.options.max_missed,
            elapsed_s: self.started.elapsed().as_secs_f64(),
            ticks: stats.ticks,
            deadline_misses: stats.deadline_misses,
            faults: stats.faults,
            recoveries: stats.recoveries,
            clamped_actions: stats.clamped_actions,
            round_trip: self.firmware.round_trip().stats(),
            round_trip_every_tick: self.firmware.round_trip_every_tick().stats(),
            period_jitter: self.firmware.period_jitter().stats(),
            session_opened_s: self.session_opened_s,
            frame_errors: *self.firmware.link(),
            final_mode: self.firmware.mode(),
            episode_return: world.episode_return(),
            completed_episode_returns: world.completed_returns().to_vec(),
            physics_steps: world.physics_steps(),
            firmware: stats,
        }
    }
}

fn lock_world(world: &SharedWorld) -> std::sync::MutexGuard<'_, SimWorld> {
    // A panic elsewhere leaves the plant state itself consistent; keep using it.
    world.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use dreamer_firmware::StreamLink;
    use embedded_io::{Read, ReadReady, Write};

    use super::*;

    /// A serial port that never receives anything and swallows writes.
    struct NullSerial;

    impl embedded_io::ErrorType for NullSerial {
        type Error = core::convert::Infallible;
    }
    impl ReadReady for NullSerial {
        fn read_ready(&mut self) -> Result<bool, Self::Error> {
            Ok(false)
        }
    }
    impl Read for NullSerial {
        fn read(&mut self, _buf: &mut [u8]) -> Result<usize, Self::Error> {
            Ok(0)
        }
    }
    impl Write for NullSerial {
        fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> Result<(), Self::Error> {
            Ok(())
        }
    }

    fn error_of(options: SimOptions) -> String {
        match HostFirmware::new(options, StreamLink::new(NullSerial)) {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_options_are_named() {
        assert!(error_of(SimOptions::new("walker-walk")).contains("walker-walk"));
        let message = error_of(SimOptions {
            rate_hz: 0.0,
            ..SimOptions::new("pendulum")
        });
        assert!(message.contains("rate_hz"), "{message}");
        let message = error_of(SimOptions {
            deadline_s: Some(1.0),
            ..SimOptions::new("pendulum")
        });
        assert!(message.contains("deadline"), "{message}");
        let message = error_of(SimOptions {
            max_missed: 0,
            ..SimOptions::new("pendulum")
        });
        assert!(message.contains("max_missed"), "{message}");
    }

    #[test]
    fn every_task_with_a_sensor_suite_starts() {
        for &task in dreamer_tasks::TASK_NAMES {
            let robot = HostFirmware::new(SimOptions::new(task), StreamLink::new(NullSerial))
                .unwrap_or_else(|e| panic!("{task}: {e}"));
            let summary = robot.finish();
            assert_eq!(summary.final_mode, Mode::AwaitingHandshake);
            assert!(summary.episode_return.is_finite());
        }
    }
}
