//! The simulated robot: a `dreamer-tasks` plant stepped in real time under the motor command,
//! seen through quantising sensors.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use dreamer_firmware::{ENCODER_COUNTS, TaskLayout};
use dreamer_tasks::{Env, EnvOptions, ObsMode};
use dreamer_wire::{EpisodeStep, plant_state};

use crate::HostError;

/// PWM resolution of the simulated motor driver.
pub const MAX_DUTY: u16 = 1000;
/// Motor command changes kept for [`SimWorld::command_at`].
const COMMAND_LOG_LEN: usize = 4096;

/// Plant, motor driver state and episode bookkeeping. Physics runs lazily: every peripheral
/// access first advances the plant to the current wall-clock time in fixed physics steps,
/// under the motor command that was in force, so the plant moves in real time without a
/// thread of its own.
pub struct SimWorld {
    env: Box<dyn Env>,
    layout: TaskLayout,
    start: Instant,
    physics_dt: f64,
    /// Simulated seconds since `start` the plant has been stepped to.
    sim_time_s: f64,
    duty: u16,
    forward: bool,
    counts_per_metre: f64,
    seed: u64,
    episodes_started: u64,
    episode_return: f64,
    completed_returns: Vec<f64>,
    physics_steps: u64,
    /// (microseconds since start, command from then on), oldest first.
    command_log: VecDeque<(u64, f32)>,
    /// Where the physical state is published after every physics step, for a camera.
    state_file: Option<StateFile>,
    /// What the firmware's reward source has not yet reported.
    unreported: EpisodeStep,
}

/// A plant state record file, rewritten in place (one `pwrite` per publication).
struct StateFile {
    file: File,
    published: u64,
}

/// A persist error as the `io::Error` this module reports, its path kept in the message.
fn into_io(e: dreamer_persist::PersistError) -> io::Error {
    io::Error::new(e.source.kind(), e.to_string())
}

impl StateFile {
    /// Creates the file with a first record, whole (through `dreamer_persist`: a reader
    /// never finds the file without a record), then keeps its handle for the updates.
    fn create(path: &Path, time_s: f64, state: &[f64]) -> io::Result<Self> {
        let mut staged = dreamer_persist::AtomicFile::create(path).map_err(into_io)?;
        let mut buf = [0u8; plant_state::MAX_RECORD];
        let len = plant_state::encode(1, time_s, state, &mut buf);
        staged.write_all(&buf[..len])?;
        let file = staged.commit().map_err(into_io)?;
        Ok(Self { file, published: 1 })
    }

    fn publish(&mut self, time_s: f64, state: &[f64]) -> io::Result<()> {
        self.published += 1;
        let mut buf = [0u8; plant_state::MAX_RECORD];
        let len = plant_state::encode(self.published, time_s, state, &mut buf);
        self.file.write_all_at(&buf[..len], 0)
    }
}

impl SimWorld {
    /// Builds the plant of `task` and starts its first episode from `seed`.
    pub fn new(
        task: &str,
        seed: u64,
        counts_per_metre: f64,
        start: Instant,
    ) -> Result<Self, HostError> {
        let layout = TaskLayout::for_task(task)
            .ok_or_else(|| HostError::NoSensorSuite { task: task.into() })?;
        let options = EnvOptions {
            obs_mode: ObsMode::State,
            action_repeat: 1,
        };
        let mut env = dreamer_tasks::make(task, options).map_err(|source| HostError::Task {
            task: task.into(),
            source,
        })?;
        let spec = env.spec();
        let fields: Vec<&str> = spec.state_fields.iter().map(|s| s.as_str()).collect();
        if fields != layout.fields() || spec.action_size != layout.action_size() {
            return Err(HostError::LayoutDrift {
                task: task.into(),
                firmware: layout.fields().join(", "),
                task_fields: fields.join(", "),
            });
        }
        let physics_dt = spec.physics_dt;
        env.reset(seed);
        Ok(Self {
            env,
            layout,
            start,
            physics_dt,
            sim_time_s: 0.0,
            duty: 0,
            forward: true,
            counts_per_metre,
            seed,
            episodes_started: 1,
            episode_return: 0.0,
            completed_returns: Vec::new(),
            physics_steps: 0,
            command_log: VecDeque::from([(0, 0.0)]),
            state_file: None,
            unreported: EpisodeStep::default(),
        })
    }

    /// Publishes the physical state to `path` after every physics step from now on.
    pub fn publish_state_to(&mut self, path: &Path) -> io::Result<()> {
        let state = self.env.physical_state();
        self.state_file = Some(StateFile::create(path, self.sim_time_s, &state)?);
        Ok(())
    }

    /// Starts the episode sequence again from the first seed, now (the plant jumps to the
    /// first episode's initial state); returns and completed episodes so far are discarded.
    pub fn restart_episodes(&mut self) {
        self.advance_to_now();
        self.env.reset(self.seed);
        self.episodes_started = 1;
        self.episode_return = 0.0;
        self.completed_returns.clear();
        self.unreported = new_episode();
        self.publish_state();
    }

    fn publish_state(&mut self) {
        if let Some(file) = &mut self.state_file {
            // A failed write only leaves the camera with an older picture; the control loop
            // must not stop for it.
            let _ = file.publish(self.sim_time_s, &self.env.physical_state());
        }
    }

    pub fn layout(&self) -> TaskLayout {
        self.layout
    }

    /// Steps the plant up to the current wall-clock time.
    pub fn advance_to_now(&mut self) {
        let now = self.start.elapsed().as_secs_f64();
        self.advance_to(now);
    }

    /// Steps the plant in whole physics periods until `time_s` (seconds since start).
    pub fn advance_to(&mut self, time_s: f64) {
        let command = [self.motor_command()];
        let steps_before = self.physics_steps;
        while self.sim_time_s + self.physics_dt <= time_s {
            self.sim_time_s += self.physics_dt;
            self.physics_steps += 1;
            // The command is finite and within [-1, 1] by construction, so the step cannot fail.
            let step = self
                .env
                .step(&command)
                .expect("motor command is a valid action");
            self.episode_return += step.reward;
            self.unreported.reward += step.reward as f32;
            // The plant resets at once, so its terminal state is never sampled: the firmware
            // reports the next observation as the start of a new episode.
            if step.terminated || step.truncated {
                self.unreported = new_episode();
                self.completed_returns.push(self.episode_return);
                self.episode_return = 0.0;
                self.env
                    .reset(self.seed.wrapping_add(self.episodes_started));
                self.episodes_started += 1;
            }
        }
        if self.physics_steps != steps_before {
            self.publish_state();
        }
    }

    /// The reward accrued and whether a new episode started since the previous call (the
    /// simulated robot's reward source; the plant is not advanced, the sensors just did).
    pub fn take_episode_step(&mut self) -> EpisodeStep {
        std::mem::take(&mut self.unreported)
    }

    /// The normalised command the driver applies: duty fraction, signed by the direction pin.
    pub fn motor_command(&self) -> f32 {
        let magnitude = f32::from(self.duty) / f32::from(MAX_DUTY);
        if self.forward { magnitude } else { -magnitude }
    }

    pub fn set_duty(&mut self, duty: u16) {
        self.advance_to_now();
        self.duty = duty.min(MAX_DUTY);
        self.log_command();
    }

    pub fn set_forward(&mut self, forward: bool) {
        self.advance_to_now();
        self.forward = forward;
        self.log_command();
    }

    fn log_command(&mut self) {
        let now_us = self.start.elapsed().as_micros() as u64;
        if self.command_log.len() == COMMAND_LOG_LEN {
            self.command_log.pop_front();
        }
        self.command_log.push_back((now_us, self.motor_command()));
    }

    /// The motor command in force at `time_us` (microseconds since start, the firmware
    /// clock's origin), or None when that is older than the kept history.
    pub fn command_at(&self, time_us: u64) -> Option<f32> {
        let after = self.command_log.partition_point(|&(t, _)| t <= time_us);
        after.checked_sub(1).map(|i| self.command_log[i].1)
    }

    /// Count of encoder `index` (0 = upright), or None when the task has no such encoder.
    pub fn encoder_count(&mut self, index: usize) -> Option<u16> {
        if index >= self.layout.encoders() {
            return None;
        }
        self.advance_to_now();
        let state = self.env.physical_state();
        let angle = match self.layout {
            TaskLayout::Pendulum => state[0],
            TaskLayout::Cartpole => state[1],
            TaskLayout::Acrobot => state[index],
        };
        let turns = angle / std::f64::consts::TAU;
        let counts = (turns - turns.floor()) * f64::from(ENCODER_COUNTS);
        Some((counts.round() as u32 % ENCODER_COUNTS) as u16)
    }

    /// Cart position in counter counts (0 when the task has no cart).
    pub fn cart_count(&mut self) -> i32 {
        if !self.layout.has_cart() {
            return 0;
        }
        self.advance_to_now();
        let x = self.env.physical_state()[0];
        (x * self.counts_per_metre).round() as i32
    }

    /// The plant's exact state observation (for comparing against the sensor pipeline).
    pub fn true_physical_state(&self) -> Vec<f64> {
        self.env.physical_state()
    }

    /// Reward summed over the episode in progress.
    pub fn episode_return(&self) -> f64 {
        self.episode_return
    }

    /// Returns of the episodes that reached their time limit.
    pub fn completed_returns(&self) -> &[f64] {
        &self.completed_returns
    }

    pub fn physics_steps(&self) -> u64 {
        self.physics_steps
    }

    pub fn sim_time_s(&self) -> f64 {
        self.sim_time_s
    }
}

/// What a new episode has accrued before any physics step.
fn new_episode() -> EpisodeStep {
    EpisodeStep {
        reward: 0.0,
        first: true,
        terminal: false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use dreamer_firmware::Sensors;

    use super::*;
    use crate::{SimI2c, SimSpi};

    /// The published record follows the plant step by step and restarting the episodes
    /// puts the plant back to the first episode's initial state.
    #[test]
    fn state_file_follows_the_plant_and_episodes_restart() {
        let dir = std::env::temp_dir().join(format!("plant-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("plant.state");
        let start = Instant::now() + Duration::from_secs(3600);
        let mut world = SimWorld::new("cartpole-swingup", 3, 20_000.0, start).unwrap();
        let initial = world.true_physical_state();
        world.publish_state_to(&path).unwrap();
        let first = plant_state::decode(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(&first.values[..], &initial[..]);
        world.advance_to(0.5);
        let later = plant_state::decode(&std::fs::read(&path).unwrap()).unwrap();
        assert!(later.seq > first.seq);
        assert!((later.time_s - world.sim_time_s()).abs() < 1e-12);
        assert_eq!(&later.values[..], &world.true_physical_state()[..]);
        world.restart_episodes();
        assert_eq!(world.episode_return(), 0.0);
        assert_eq!(world.true_physical_state(), initial);
        let restarted = plant_state::decode(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(&restarted.values[..], &initial[..]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_reward_source_reports_rewards_since_its_last_read_and_each_new_episode() {
        let start = Instant::now() + Duration::from_secs(3600);
        // Pendulum: 200 steps of 50 ms, so an episode lasts 10 s.
        let mut world = SimWorld::new("pendulum", 1, 20_000.0, start).unwrap();
        world.advance_to(4.0);
        let step = world.take_episode_step();
        assert!(!step.first && !step.terminal);
        assert!((f64::from(step.reward) - world.episode_return()).abs() < 1e-3);
        assert!(step.reward < 0.0);
        assert_eq!(world.take_episode_step(), EpisodeStep::default());
        world.advance_to(11.0);
        let step = world.take_episode_step();
        assert_eq!(world.completed_returns().len(), 1);
        assert!(step.first, "the episode ended at 10 s");
        assert!((f64::from(step.reward) - world.episode_return()).abs() < 1e-3);
        world.restart_episodes();
        assert_eq!(world.take_episode_step(), new_episode());
    }

    /// The sensor pipeline (quantised counts over the simulated buses) reproduces the task's
    /// own observation to within one count, in the task's field order.
    #[test]
    fn sensors_reproduce_the_task_observation() {
        for (task, state) in [
            ("pendulum", vec![2.5, 0.0]),
            ("cartpole-swingup", vec![0.3, -2.0, 0.0, 0.0]),
            ("acrobot-swingup", vec![1.0, -0.7, 0.0, 0.0]),
        ] {
            // A clock origin in the future keeps the plant still while it is measured.
            let start = Instant::now() + Duration::from_secs(3600);
            let mut world = SimWorld::new(task, 7, 20_000.0, start).unwrap();
            world.env.set_physical_state(&state).unwrap();
            let layout = world.layout();
            let mut plant = dreamer_tasks::make_plant(task).unwrap();
            plant.set_state(&state).unwrap();
            let expected = plant.observation();

            let world = Arc::new(Mutex::new(world));
            let mut sensors = Sensors::new(
                layout,
                SimI2c::new(world.clone()),
                SimSpi::new(world.clone()),
                20_000.0,
            );
            let observed = sensors.sample(0).unwrap();
            assert_eq!(observed.len(), expected.len(), "{task}");
            let angle_step = std::f64::consts::TAU / f64::from(ENCODER_COUNTS);
            for (i, (&got, want)) in observed.iter().zip(&expected).enumerate() {
                let field = layout.fields()[i];
                if field.contains("velocity") || field.ends_with("_dot") {
                    assert_eq!(
                        got, 0.0,
                        "{task} {field}: no velocity before a second sample"
                    );
                    continue;
                }
                assert!(
                    (f64::from(got) - want).abs() <= angle_step,
                    "{task} {field}: sensors {got}, task {want}"
                );
            }
        }
    }
}
