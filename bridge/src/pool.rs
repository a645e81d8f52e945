//! The worker processes of one bridge as a group: requests out, replies in, and the rule that
//! the first fault of any worker ends them all.

use std::time::{Duration, Instant};

use crate::error::{BridgeError, Fault, Stage};
use crate::options::{BridgeOptions, PythonChoice};
use crate::poll::receive_all;
use crate::process::{Launch, Worker, WorkerScript, end_all};
use crate::protocol::Frame;

/// Time an idle worker gets to exit after its stdin closes, before SIGKILL.
const EXIT_GRACE: Duration = Duration::from_millis(300);

pub(crate) struct Pool {
    task: String,
    workers: Vec<Worker>,
    /// Set by the first fault; every later call answers with it.
    failed: Option<String>,
    write_buffer: Vec<u8>,
    read_chunk: Vec<u8>,
    /// Kept until the pool ends (the workers read it at start-up).
    _script: WorkerScript,
}

impl Pool {
    /// Starts `count` workers; a Python that cannot be started is reported with the fix.
    pub(crate) fn start(
        task: &str,
        count: usize,
        python: &PythonChoice,
        bridge: &BridgeOptions,
    ) -> Result<Self, BridgeError> {
        let script = WorkerScript::write()?;
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let launch = Launch {
                python: &python.path,
                script: script.path(),
                env: &bridge.env,
                echo_prefix: bridge
                    .echo_stderr
                    .then(|| format!("[{task} worker {index}]")),
            };
            match Worker::start(&launch) {
                Ok(worker) => workers.push(worker),
                Err(error) => {
                    end_all(&mut workers, Duration::ZERO);
                    return Err(BridgeError::PythonNotFound {
                        task: task.to_string(),
                        python: python.path.clone(),
                        lookup: python.lookup.clone(),
                        reason: error.to_string(),
                    });
                }
            }
        }
        Ok(Self {
            task: task.to_string(),
            workers,
            failed: None,
            write_buffer: Vec::new(),
            read_chunk: Vec::new(),
            _script: script,
        })
    }

    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    pub(crate) fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(Worker::pid).collect()
    }

    /// An error if an earlier fault stopped the pool.
    pub(crate) fn check_alive(&self) -> Result<(), BridgeError> {
        match &self.failed {
            Some(first) => Err(BridgeError::Stopped {
                task: self.task.clone(),
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Writes one request to worker `index`.
    pub(crate) fn send(
        &mut self,
        index: usize,
        kind: u8,
        payload: &[u8],
        stage: Stage,
    ) -> Result<(), BridgeError> {
        match self.workers[index].send(kind, payload, &mut self.write_buffer) {
            Ok(()) => Ok(()),
            Err(fault) => Err(self.fail(index, stage, fault)),
        }
    }

    /// One reply from each worker in `which`, in that order, before `timeout` has passed.
    pub(crate) fn receive(
        &mut self,
        which: &[usize],
        timeout: (Duration, &'static str),
        stage: impl Fn(usize) -> Stage,
    ) -> Result<Vec<Frame>, BridgeError> {
        let deadline = Instant::now() + timeout.0;
        match receive_all(
            &mut self.workers,
            which,
            deadline,
            timeout,
            &mut self.read_chunk,
        ) {
            Ok(frames) => Ok(frames),
            Err((index, fault)) => Err(self.fail(index, stage(index), fault)),
        }
    }

    /// Ends every worker and returns the error naming the env, the worker and the stage, with
    /// the worker's last stderr lines.
    pub(crate) fn fail(&mut self, index: usize, stage: Stage, fault: Fault) -> BridgeError {
        end_all(&mut self.workers, Duration::ZERO);
        let stderr = self.workers[index].stderr_tail();
        let error = BridgeError::Worker {
            task: self.task.clone(),
            worker: index,
            stage,
            fault,
            stderr,
        };
        self.stop(&error);
        error
    }

    /// Ends every worker because of `error`.
    pub(crate) fn stop(&mut self, error: &BridgeError) {
        end_all(&mut self.workers, Duration::ZERO);
        let text = error.to_string();
        self.failed = Some(text.lines().next().unwrap_or_default().to_string());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        end_all(&mut self.workers, EXIT_GRACE);
    }
}
