//! N copies of an environment stepped in parallel on persistent worker threads.

use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use crate::env::{Env, EnvOptions, EnvSpec, Observation, Step};
use crate::error::TaskError;

enum Job {
    /// (index within the worker's chunk, seed)
    Reset(Vec<(usize, u64)>),
    /// `[chunk_len, action_size]` flattened.
    Step(Vec<f32>),
}

enum Reply {
    Observations(Vec<Observation>),
    Steps(Result<Vec<Step>, TaskError>),
}

/// One thread owning a contiguous chunk of the environments.
struct Worker {
    first: usize,
    len: usize,
    jobs: Option<Sender<Job>>,
    replies: Receiver<Reply>,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    fn spawn(first: usize, mut envs: Vec<Box<dyn Env>>) -> Result<Self, TaskError> {
        let len = envs.len();
        let (job_sender, job_receiver) = channel::<Job>();
        let (reply_sender, reply_receiver) = channel::<Reply>();
        let thread = std::thread::Builder::new()
            .name(format!("env-worker-{first}"))
            .spawn(move || {
                while let Ok(job) = job_receiver.recv() {
                    let reply = match job {
                        Job::Reset(seeds) => Reply::Observations(
                            seeds
                                .into_iter()
                                .map(|(i, seed)| envs[i].reset(seed))
                                .collect(),
                        ),
                        Job::Step(actions) => {
                            let action_size = actions.len() / envs.len().max(1);
                            Reply::Steps(
                                envs.iter_mut()
                                    .zip(actions.chunks_exact(action_size.max(1)))
                                    .map(|(env, action)| env.step(action))
                                    .collect(),
                            )
                        }
                    };
                    if reply_sender.send(reply).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| TaskError::Batch(format!("cannot start a worker thread: {e}")))?;
        Ok(Self {
            first,
            len,
            jobs: Some(job_sender),
            replies: reply_receiver,
            thread: Some(thread),
        })
    }

    fn send(&self, job: Job) -> Result<(), TaskError> {
        self.jobs
            .as_ref()
            .and_then(|jobs| jobs.send(job).ok())
            .ok_or_else(|| self.stopped())
    }

    fn receive(&self) -> Result<Reply, TaskError> {
        self.replies.recv().map_err(|_| self.stopped())
    }

    fn stopped(&self) -> TaskError {
        TaskError::Batch(format!(
            "worker thread for envs {}..{} stopped",
            self.first,
            self.first + self.len
        ))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.jobs = None; // closes the channel; the thread's loop ends
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A batch of environments of one task, each with its own seed, stepped on worker threads.
pub struct VecEnv {
    spec: EnvSpec,
    num_envs: usize,
    workers: Vec<Worker>,
    /// Per env: true before its first reset and after its episode ended.
    needs_reset: Vec<bool>,
}

impl VecEnv {
    /// `num_envs` copies of `task` on `num_threads` threads (clamped to 1..=num_envs).
    pub fn new(
        task: &str,
        options: EnvOptions,
        num_envs: usize,
        num_threads: usize,
    ) -> Result<Self, TaskError> {
        let envs = (0..num_envs)
            .map(|_| crate::make(task, options))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_envs(envs, num_threads)
    }

    /// Wraps existing environments; they must all have the same spec.
    pub fn from_envs(envs: Vec<Box<dyn Env>>, num_threads: usize) -> Result<Self, TaskError> {
        let Some(first) = envs.first() else {
            return Err(TaskError::Batch("needs at least one environment".into()));
        };
        let spec = first.spec().clone();
        if let Some(index) = envs.iter().position(|env| env.spec() != &spec) {
            return Err(TaskError::Batch(format!(
                "env {index} ({}) differs in spec from env 0 ({})",
                envs[index].spec().task,
                spec.task
            )));
        }
        let num_envs = envs.len();
        let num_threads = num_threads.clamp(1, num_envs);
        let mut workers = Vec::with_capacity(num_threads);
        let mut remaining = envs.into_iter();
        let mut first_index = 0;
        for thread_index in 0..num_threads {
            // Chunks differ in size by at most one.
            let len = num_envs / num_threads + usize::from(thread_index < num_envs % num_threads);
            workers.push(Worker::spawn(
                first_index,
                remaining.by_ref().take(len).collect(),
            )?);
            first_index += len;
        }
        Ok(Self {
            spec,
            num_envs,
            workers,
            needs_reset: vec![true; num_envs],
        })
    }

    pub fn spec(&self) -> &EnvSpec {
        &self.spec
    }

    pub fn num_envs(&self) -> usize {
        self.num_envs
    }

    /// True for an env whose episode has ended (or that was never reset).
    pub fn needs_reset(&self, index: usize) -> bool {
        self.needs_reset.get(index).copied().unwrap_or(true)
    }

    /// Resets every env, env `i` with `seeds[i]`.
    pub fn reset_all(&mut self, seeds: &[u64]) -> Result<Vec<Observation>, TaskError> {
        if seeds.len() != self.num_envs {
            return Err(TaskError::Batch(format!(
                "{} seeds for {} envs",
                seeds.len(),
                self.num_envs
            )));
        }
        for worker in &self.workers {
            let chunk = &seeds[worker.first..worker.first + worker.len];
            worker.send(Job::Reset(chunk.iter().copied().enumerate().collect()))?;
        }
        let mut observations = Vec::with_capacity(self.num_envs);
        for worker in &self.workers {
            match worker.receive()? {
                Reply::Observations(chunk) => observations.extend(chunk),
                Reply::Steps(_) => {
                    return Err(TaskError::Batch("worker replied out of order".into()));
                }
            }
        }
        self.needs_reset.fill(false);
        Ok(observations)
    }

    /// Resets env `index` alone (for example when its episode ended).
    pub fn reset_one(&mut self, index: usize, seed: u64) -> Result<Observation, TaskError> {
        let worker = self
            .workers
            .iter()
            .find(|w| (w.first..w.first + w.len).contains(&index))
            .ok_or_else(|| {
                TaskError::Batch(format!(
                    "env index {index} out of range 0..{}",
                    self.num_envs
                ))
            })?;
        worker.send(Job::Reset(vec![(index - worker.first, seed)]))?;
        match worker.receive()? {
            Reply::Observations(mut chunk) if chunk.len() == 1 => {
                self.needs_reset[index] = false;
                Ok(chunk.remove(0))
            }
            _ => Err(TaskError::Batch("worker replied out of order".into())),
        }
    }

    /// Steps every env; `actions` is `[num_envs, action_size]` flattened, normalised to [-1, 1].
    /// All actions are checked before any env moves, so an error leaves every state untouched.
    pub fn step_all(&mut self, actions: &[f32]) -> Result<Vec<Step>, TaskError> {
        let action_size = self.spec.action_size;
        if actions.len() != self.num_envs * action_size {
            return Err(TaskError::Batch(format!(
                "{} action values for {} envs x {} components",
                actions.len(),
                self.num_envs,
                action_size
            )));
        }
        if let Some(position) = actions.iter().position(|v| !v.is_finite()) {
            return Err(TaskError::NonFiniteAction {
                task: format!("{} (env {})", self.spec.task, position / action_size),
                index: position % action_size,
                value: actions[position] as f64,
            });
        }
        if let Some(index) = self.needs_reset.iter().position(|&r| r) {
            return Err(TaskError::Batch(format!(
                "env {index} needs a reset before stepping"
            )));
        }
        for worker in &self.workers {
            let chunk =
                &actions[worker.first * action_size..(worker.first + worker.len) * action_size];
            worker.send(Job::Step(chunk.to_vec()))?;
        }
        let mut steps = Vec::with_capacity(self.num_envs);
        let mut first_error = None;
        for worker in &self.workers {
            match worker.receive()? {
                Reply::Steps(Ok(chunk)) => steps.extend(chunk),
                Reply::Steps(Err(error)) => {
                    first_error.get_or_insert(error);
                }
                Reply::Observations(_) => {
                    return Err(TaskError::Batch("worker replied out of order".into()));
                }
            }
        }
        if let Some(error) = first_error {
            return Err(error);
        }
        for (flag, step) in self.needs_reset.iter_mut().zip(&steps) {
            *flag = step.terminated || step.truncated;
        }
        Ok(steps)
    }
}
