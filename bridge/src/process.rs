//! Worker processes: the embedded script, starting them from one lasting thread, their pipes,
//! the tail of their stderr, and ending them without leaving zombies.

use std::collections::VecDeque;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{BridgeError, Fault, StderrTail};
use crate::protocol;

/// The worker, compiled into the library so an installed binary needs no source tree.
const WORKER_SOURCE: &str = include_str!("../python/dreamer_worker.py");
const WORKER_FILE: &str = "dreamer_worker.py";
/// Lines of stderr kept per worker, and the longest line kept.
const STDERR_LINES: usize = 20;
const STDERR_LINE_CHARS: usize = 400;

/// The worker script written into a private (0700) temporary folder, removed on drop.
pub(crate) struct WorkerScript {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl WorkerScript {
    pub(crate) fn write() -> Result<Self, BridgeError> {
        let dir = tempfile::Builder::new()
            .prefix("dreamer-bridge-")
            .tempdir()
            .map_err(|e| BridgeError::Script(format!("{}: {e}", std::env::temp_dir().display())))?;
        let path = dir.path().join(WORKER_FILE);
        std::fs::write(&path, WORKER_SOURCE)
            .map_err(|e| BridgeError::Script(format!("{}: {e}", path.display())))?;
        Ok(Self { _dir: dir, path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

type SpawnRequest = (Command, Sender<io::Result<Child>>);

/// Starts `command` from a thread that lives as long as the process. The worker asks the
/// kernel to kill it when its parent dies (PR_SET_PDEATHSIG), and Linux means the parent
/// *thread*: a worker started from a short-lived thread (a test, a scoped thread) would be
/// killed when that thread ends, while the bridge is still in use.
fn spawn_lasting(mut command: Command) -> io::Result<Child> {
    static SPAWNER: OnceLock<Option<Mutex<Sender<SpawnRequest>>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("dreamer-bridge-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .ok()
            .map(|_| Mutex::new(requests))
    });
    let Some(spawner) = spawner else {
        // No thread could be started: spawn here (the parent-death signal is then tied to
        // this thread).
        return command.spawn();
    };
    let (reply, answer) = channel();
    let sent = match spawner.lock() {
        Ok(requests) => requests.send((command, reply)).map_err(|e| e.0.0),
        Err(_) => Err(command),
    };
    match sent {
        Ok(()) => answer
            .recv()
            .unwrap_or_else(|_| Err(io::Error::other("the spawner thread ended"))),
        Err(returned) => {
            command = returned;
            command.spawn()
        }
    }
}

/// The last lines of a worker's stderr, filled by a thread.
#[derive(Clone, Default)]
struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        if let Ok(mut lines) = self.0.lock() {
            if lines.len() == STDERR_LINES {
                lines.pop_front();
            }
            lines.push_back(line);
        }
    }

    fn snapshot(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|lines| lines.iter().cloned().collect())
            .unwrap_or_default()
    }
}

fn read_stderr(stderr: ChildStderr, tail: Tail, echo: Option<String>) -> Option<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("dreamer-bridge-stderr".into())
        .spawn(move || {
            for line in BufReader::new(stderr).split(b'\n') {
                let Ok(line) = line else { break };
                let text = String::from_utf8_lossy(&line);
                let text: String = text.trim_end().chars().take(STDERR_LINE_CHARS).collect();
                if let Some(prefix) = &echo {
                    eprintln!("{prefix} {text}");
                }
                tail.push(text);
            }
        })
        .ok()
}

/// How a worker is started.
pub(crate) struct Launch<'a> {
    pub python: &'a Path,
    pub script: &'a Path,
    pub env: &'a [(std::ffi::OsString, std::ffi::OsString)],
    pub echo_prefix: Option<String>,
}

/// One worker process and its pipes.
pub(crate) struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    pub(crate) stdout: ChildStdout,
    /// Bytes read from stdout that do not yet form a frame.
    pub(crate) inbox: Vec<u8>,
    tail: Tail,
    stderr_thread: Option<JoinHandle<()>>,
    reaped: bool,
    status: Option<String>,
}

impl Worker {
    pub(crate) fn start(launch: &Launch) -> io::Result<Self> {
        let mut command = Command::new(launch.python);
        command
            .arg("-u")
            .arg(launch.script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("DREAMER_BRIDGE_PARENT_PID", std::process::id().to_string())
            // Its own process group: a Ctrl-C in the terminal reaches the trainer, which
            // decides; the group lets the bridge end what the env itself started.
            .process_group(0);
        for (key, value) in launch.env {
            command.env(key, value);
        }
        let mut child = spawn_lasting(command)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other("the worker's pipes were not created"));
        };
        let tail = Tail::default();
        let stderr_thread = read_stderr(stderr, tail.clone(), launch.echo_prefix.clone());
        Ok(Self {
            child,
            stdin: Some(stdin),
            stdout,
            inbox: Vec::new(),
            tail,
            stderr_thread,
            reaped: false,
            status: None,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes one request frame (a pipe holds 64 KiB, so a request never waits on a worker
    /// that has not read its previous one: there is none).
    pub(crate) fn send(
        &mut self,
        kind: u8,
        payload: &[u8],
        buffer: &mut Vec<u8>,
    ) -> Result<(), Fault> {
        buffer.clear();
        protocol::encode(kind, payload, buffer);
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(self.exited_fault());
        };
        match stdin.write_all(buffer) {
            Ok(()) => Ok(()),
            Err(_) => Err(self.exited_fault()),
        }
    }

    /// The worker is gone (broken pipe or end of output): its exit status if it ended.
    pub(crate) fn exited_fault(&mut self) -> Fault {
        // The process usually exits right after closing its pipes; give it a moment.
        let deadline = Instant::now() + Duration::from_millis(200);
        while !self.reaped && Instant::now() < deadline {
            if self.try_reap() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Fault::Exited {
            status: self
                .status
                .clone()
                .unwrap_or_else(|| "it closed its output and still runs".into()),
        }
    }

    fn try_reap(&mut self) -> bool {
        if self.reaped {
            return true;
        }
        if let Ok(Some(status)) = self.child.try_wait() {
            self.reaped = true;
            self.status = Some(describe_status(status));
        }
        self.reaped
    }

    /// Closes stdin, so an idle worker exits by itself.
    fn close_input(&mut self) {
        self.stdin = None;
    }

    /// SIGKILL to the worker's process group, then reap it.
    fn kill(&mut self) {
        if self.try_reap() {
            return;
        }
        // Not reaped yet, so the group id is still this worker's (a zombie keeps it).
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) with a negative pid signals that process group; no memory is
            // touched.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait() {
            self.status = Some(describe_status(status));
        }
        self.reaped = true;
    }

    /// The stderr lines so far; waits briefly for the reader when the process has ended, so
    /// the last words before a crash are in.
    pub(crate) fn stderr_tail(&mut self) -> StderrTail {
        if self.reaped
            && let Some(thread) = self.stderr_thread.take()
        {
            let deadline = Instant::now() + Duration::from_millis(300);
            while !thread.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
        StderrTail(self.tail.snapshot())
    }
}

fn describe_status(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// Ends every worker: stdin closed, `grace` to exit, then SIGKILL; every one is reaped.
pub(crate) fn end_all(workers: &mut [Worker], grace: Duration) {
    for worker in workers.iter_mut() {
        worker.close_input();
    }
    let deadline = Instant::now() + grace;
    loop {
        let all_gone = workers.iter_mut().all(Worker::try_reap);
        if all_gone || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    for worker in workers.iter_mut() {
        worker.kill();
    }
}
