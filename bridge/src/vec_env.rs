//! N bridged environments, one Python worker process each, stepped in parallel behind the API
//! of `dreamer_tasks::VecEnv`.

use std::time::Duration;

use dreamer_tasks::{EnvOptions, EnvSpec, Observation, Step};

use crate::error::{BridgeError, Stage};
use crate::options::{BridgeOptions, check_task_name, resolve_python};
use crate::pool::Pool;
use crate::protocol::{self, ObsShape, kind};
use crate::spec::WorkerSpec;

/// Largest hello frame: it must fit an empty pipe (64 KiB) so writing it never waits.
const MAX_HELLO: usize = 60_000;

/// A batch of Gymnasium / DeepMind Control environments of one task, each in its own Python
/// worker process.
pub struct BridgeVecEnv {
    spec: EnvSpec,
    worker_spec: WorkerSpec,
    shape: ObsShape,
    pool: Pool,
    /// Per env: true before its first reset and after its episode ended.
    needs_reset: Vec<bool>,
    /// Per env: decisions since its last reset.
    decisions: Vec<u32>,
    /// Per env: reset at least once (the first reset gets the start-up deadline, as renderers
    /// start lazily).
    started: Vec<bool>,
    start_timeout: Duration,
    step_timeout: Duration,
}

impl BridgeVecEnv {
    /// Starts `num_envs` workers for `task` (`gym:<id>` or `dmc:<domain>-<task>`), builds the
    /// env in each and checks that they all describe it the same way.
    pub fn new(
        task: &str,
        options: EnvOptions,
        num_envs: usize,
        bridge: &BridgeOptions,
    ) -> Result<Self, BridgeError> {
        check_task_name(task)?;
        check_options(task, options, num_envs, bridge)?;
        let hellos: Vec<Vec<u8>> = (0..num_envs)
            .map(|i| protocol::hello(task, &bridge.kwargs, options, bridge.physics_dt, i))
            .collect();
        if let Some(size) = hellos.iter().map(Vec::len).find(|&len| len > MAX_HELLO) {
            return Err(BridgeError::InvalidOption {
                option: "kwargs",
                reason: format!("the handshake would be {size} bytes; the limit is {MAX_HELLO}"),
            });
        }
        let python = resolve_python(bridge.python.as_deref());
        let mut pool = Pool::start(task, num_envs, &python, bridge)?;
        let worker_spec = handshake(&mut pool, task, options, &hellos, bridge.start_timeout)?;
        Ok(Self {
            spec: worker_spec.env_spec(task, options),
            shape: ObsShape {
                state_fields: if options.obs_mode.uses_state() {
                    worker_spec.state_fields.clone()
                } else {
                    Vec::new()
                },
                pixels: options.obs_mode.uses_pixels(),
            },
            worker_spec,
            pool,
            needs_reset: vec![true; num_envs],
            decisions: vec![0; num_envs],
            started: vec![false; num_envs],
            start_timeout: bridge.start_timeout,
            step_timeout: bridge.step_timeout,
        })
    }

    pub fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    /// The worker's own description: observation layout, pixel source, action space as
    /// Python prints it, Python and package versions.
    pub fn worker_spec(&self) -> &WorkerSpec {
        &self.worker_spec
    }

    pub fn num_envs(&self) -> usize {
        self.pool.len()
    }

    /// Process ids of the workers (ended ones included), for diagnostics and tests.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.pool.pids()
    }

    /// True for an env whose episode has ended (or that was never reset).
    pub fn needs_reset(&self, index: usize) -> bool {
        self.needs_reset.get(index).copied().unwrap_or(true)
    }

    /// Resets every env, env `i` with `seeds[i]` (gym: `reset(seed=...)`; dmc: a fresh
    /// `RandomState` from the seed's two 32-bit halves).
    pub fn reset_all(&mut self, seeds: &[u64]) -> Result<Vec<Observation>, BridgeError> {
        self.pool.check_alive()?;
        if seeds.len() != self.num_envs() {
            return Err(self.batch(format!(
                "{} seeds for {} envs",
                seeds.len(),
                self.num_envs()
            )));
        }
        let all: Vec<usize> = (0..self.num_envs()).collect();
        self.reset(&all, seeds)
    }

    /// Resets env `index` alone (for example when its episode ended).
    pub fn reset_one(&mut self, index: usize, seed: u64) -> Result<Observation, BridgeError> {
        self.pool.check_alive()?;
        if index >= self.num_envs() {
            return Err(self.batch(format!(
                "env index {index} out of range 0..{}",
                self.num_envs()
            )));
        }
        let mut observations = self.reset(&[index], &[seed])?;
        observations
            .pop()
            .ok_or_else(|| self.batch("no observation came back from the reset".into()))
    }

    fn reset(&mut self, which: &[usize], seeds: &[u64]) -> Result<Vec<Observation>, BridgeError> {
        for (&index, seed) in which.iter().zip(seeds) {
            self.pool
                .send(index, kind::RESET, &seed.to_le_bytes(), Stage::Reset)?;
        }
        let timeout = if which.iter().any(|&i| !self.started[i]) {
            (self.start_timeout, "start_timeout")
        } else {
            (self.step_timeout, "step_timeout")
        };
        let replies = self.pool.receive(which, timeout, |_| Stage::Reset)?;
        let mut observations = Vec::with_capacity(which.len());
        for (&index, frame) in which.iter().zip(replies) {
            let obs = protocol::expect(frame, kind::OBSERVATION)
                .and_then(|payload| protocol::decode_observation(&payload, &self.shape));
            match obs {
                Ok(obs) => observations.push(obs),
                Err(fault) => return Err(self.pool.fail(index, Stage::Reset, fault)),
            }
        }
        for &index in which {
            self.needs_reset[index] = false;
            self.decisions[index] = 0;
            self.started[index] = true;
        }
        Ok(observations)
    }

    /// Steps every env; `actions` is `[num_envs, action_size]` flattened, normalised to
    /// [-1, 1] (clipped, then mapped linearly onto the Box bounds in the worker). A bad batch
    /// is refused before any env moves. All actions are written before any reply is read.
    pub fn step_all(&mut self, actions: &[f32]) -> Result<Vec<Step>, BridgeError> {
        self.pool.check_alive()?;
        let n = self.num_envs();
        let size = self.spec.action_size;
        if actions.len() != n * size {
            return Err(self.batch(format!(
                "{} action values for {n} envs x {size} components",
                actions.len()
            )));
        }
        if let Some(position) = actions.iter().position(|v| !v.is_finite()) {
            return Err(self.batch(format!(
                "env {} action component {} is {}, expected a finite number",
                position / size,
                position % size,
                actions[position]
            )));
        }
        if let Some(index) = self.needs_reset.iter().position(|&r| r) {
            return Err(self.batch(format!("env {index} needs a reset before stepping")));
        }
        let mut payload = Vec::with_capacity(4 * size);
        for (index, action) in actions.chunks_exact(size).enumerate() {
            payload.clear();
            for value in action {
                payload.extend_from_slice(&value.to_le_bytes());
            }
            let stage = Stage::Step(self.decisions[index] + 1);
            self.pool.send(index, kind::STEP, &payload, stage)?;
        }
        let all: Vec<usize> = (0..n).collect();
        let decisions = &self.decisions;
        let replies = self
            .pool
            .receive(&all, (self.step_timeout, "step_timeout"), |index| {
                Stage::Step(decisions[index] + 1)
            })?;
        let mut steps = Vec::with_capacity(n);
        for (index, frame) in replies.into_iter().enumerate() {
            let step = protocol::expect(frame, kind::TRANSITION)
                .and_then(|payload| protocol::decode_transition(&payload, &self.shape));
            match step {
                Ok(step) => steps.push(step),
                Err(fault) => {
                    let stage = Stage::Step(self.decisions[index] + 1);
                    return Err(self.pool.fail(index, stage, fault));
                }
            }
        }
        for (index, step) in steps.iter().enumerate() {
            self.decisions[index] += 1;
            self.needs_reset[index] = step.terminated || step.truncated;
        }
        Ok(steps)
    }

    fn batch(&self, reason: String) -> BridgeError {
        BridgeError::Batch {
            task: self.spec.task.clone(),
            reason,
        }
    }
}

/// Sends each worker its hello and checks that every spec is valid and the same.
fn handshake(
    pool: &mut Pool,
    task: &str,
    options: EnvOptions,
    hellos: &[Vec<u8>],
    start_timeout: Duration,
) -> Result<WorkerSpec, BridgeError> {
    for (index, hello) in hellos.iter().enumerate() {
        pool.send(index, kind::HELLO, hello, Stage::Start)?;
    }
    let all: Vec<usize> = (0..pool.len()).collect();
    let replies = pool.receive(&all, (start_timeout, "start_timeout"), |_| Stage::Start)?;
    let mut specs = Vec::with_capacity(replies.len());
    for (index, frame) in replies.into_iter().enumerate() {
        let spec = protocol::expect(frame, kind::SPEC)
            .and_then(|payload| WorkerSpec::parse(&payload, options));
        match spec {
            Ok(spec) => specs.push(spec),
            Err(fault) => return Err(pool.fail(index, Stage::Start, fault)),
        }
    }
    if let Some(index) = specs.iter().position(|spec| spec != &specs[0]) {
        let error = BridgeError::SpecMismatch {
            task: task.to_string(),
            worker: index,
            difference: format!("{:?} versus {:?}", specs[index], specs[0]),
        };
        pool.stop(&error);
        return Err(error);
    }
    Ok(specs.swap_remove(0))
}

fn check_options(
    task: &str,
    options: EnvOptions,
    num_envs: usize,
    bridge: &BridgeOptions,
) -> Result<(), BridgeError> {
    let invalid = |option: &'static str, reason: &str| {
        Err(BridgeError::InvalidOption {
            option,
            reason: reason.to_string(),
        })
    };
    if num_envs == 0 {
        return Err(BridgeError::Batch {
            task: task.to_string(),
            reason: "needs at least one environment".into(),
        });
    }
    if options.action_repeat == 0 {
        return invalid("action_repeat", "must be at least 1");
    }
    if bridge.start_timeout.is_zero() {
        return invalid("start_timeout", "must be above zero");
    }
    if bridge.step_timeout.is_zero() {
        return invalid("step_timeout", "must be above zero");
    }
    if let Some(dt) = bridge.physics_dt
        && !(dt.is_finite() && dt > 0.0)
    {
        return invalid(
            "physics_dt",
            &format!("{dt} is not a positive number of seconds"),
        );
    }
    Ok(())
}
