//! Experience recording on the device, for a learner to train on.
//!
//! The control thread writes each step (the observation, the action taken before it, the
//! reward received with it, whether the episode ended) into an episode buffer allocated when
//! the recorder starts: [`Recorder::step`] neither allocates nor waits. A finished episode
//! goes to a writer thread, which saves it as an episode file (`dreamer-episode`, the
//! trainer's replay format, written kill-safe) in a local spool and hands the buffer back.
//! When every buffer is still with the writer, the next episode is not recorded and is
//! counted; the control loop never waits for the disk.
//!
//! Spool layout: `<spool>/<device>/<policy>/ep<number>-<len>.npz`, so an episode's id
//! `<device>/<policy>/<number>` is stable across restarts; `<spool>/<device>/next_episode`
//! holds the next number, persisted before each episode file is written (a number is never
//! given to two episodes, a crash may skip one).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;

pub use dreamer_episode::Layout;
use dreamer_episode::{Episode, FRAME_BYTES};

/// The spool file holding the next episode number of a device.
pub const NEXT_EPISODE_FILE: &str = "next_episode";

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("spool {path}: {message}")]
    Spool { path: PathBuf, message: String },
    #[error("`{what}` is `{value}`: {message}")]
    Name {
        what: &'static str,
        value: String,
        message: &'static str,
    },
    #[error("the spool writer thread stopped unexpectedly")]
    WriterGone,
}

/// Where and what to record.
#[derive(Debug, Clone)]
pub struct RecordOptions {
    /// The spool folder (created if missing).
    pub spool: PathBuf,
    /// This device's name in episode ids: letters, digits, `-`, `_`, `.`.
    pub device: String,
    /// The policy that acts, in episode ids (for example the bundle's version); same
    /// characters as `device`.
    pub policy: String,
    /// What each step holds.
    pub layout: Layout,
    /// Steps per episode at most (the task's decisions plus the first observation); steps
    /// beyond it are counted in [`RecordCounters::truncated`], not stored.
    pub max_steps: usize,
    /// Episode buffers: the one being recorded and those waiting for the writer.
    pub buffers: usize,
}

/// What recording did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordCounters {
    /// Episodes handed to the writer.
    pub recorded: u64,
    /// Episodes not recorded because every buffer was still with the writer.
    pub dropped: u64,
    /// Steps past `max_steps`, not stored.
    pub truncated: u64,
}

/// What the writer did, once it stopped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterReport {
    /// Ids of the episode files written, in order.
    pub written: Vec<String>,
    /// Episodes that could not be written (each reported on stderr by the caller).
    pub failed: Vec<(String, String)>,
}

/// An episode on its way to the spool: its number, the policy that acted, its steps.
struct Recording {
    number: u64,
    policy: Arc<str>,
    episode: Episode,
}

/// The control thread's side of recording.
pub struct Recorder {
    layout: Layout,
    max_steps: usize,
    current: Option<Box<Recording>>,
    free: Receiver<Box<Recording>>,
    finished: Option<SyncSender<Box<Recording>>>,
    writer: Option<JoinHandle<WriterReport>>,
    next_number: u64,
    /// The policy acting now (shared, so handing it to a recording does not allocate).
    policy: Arc<str>,
    counters: RecordCounters,
}

impl Recorder {
    /// Creates the spool, reads the next episode number, allocates the buffers and starts
    /// the writer thread.
    pub fn start(options: RecordOptions) -> Result<Recorder, RecordError> {
        check_name("device", &options.device)?;
        check_name("policy", &options.policy)?;
        let device_dir = options.spool.join(&options.device);
        std::fs::create_dir_all(&device_dir).map_err(spool_error(&device_dir))?;
        let next_number = read_next_number(&device_dir)?;
        let buffers = options.buffers.max(1);
        let (finished_tx, finished_rx) = sync_channel::<Box<Recording>>(buffers);
        let (free_tx, free_rx) = sync_channel::<Box<Recording>>(buffers);
        for _ in 0..buffers {
            let recording = Box::new(Recording {
                number: 0,
                policy: Arc::from(""),
                episode: empty_episode(options.layout, options.max_steps),
            });
            // The channel holds `buffers` items: this cannot fail.
            let _ = free_tx.try_send(recording);
        }
        let layout = options.layout;
        let writer = std::thread::Builder::new()
            .name("episode-spool".to_string())
            .spawn(move || write_episodes(&device_dir, layout, finished_rx, free_tx))
            .map_err(spool_error(&options.spool))?;
        Ok(Recorder {
            layout: options.layout,
            max_steps: options.max_steps,
            current: None,
            free: free_rx,
            finished: Some(finished_tx),
            writer: Some(writer),
            next_number,
            policy: Arc::from(options.policy.as_str()),
            counters: RecordCounters::default(),
        })
    }

    /// The policy that acts from the next episode on (a new bundle): its episodes go to
    /// their own folder of the spool. Between episodes only: this allocates.
    pub fn set_policy(&mut self, policy: &str) -> Result<(), RecordError> {
        check_name("policy", policy)?;
        self.policy = Arc::from(policy);
        Ok(())
    }

    /// Whether the episode being recorded holds `max_steps` steps (a further step would be
    /// counted as truncated, not stored).
    pub fn full(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|r| r.episode.len() >= self.max_steps)
    }

    /// Starts recording a new episode (an unfinished one is handed over first). Without a
    /// free buffer the episode is not recorded and counted as dropped.
    pub fn begin(&mut self) {
        self.end();
        if self.current.is_some() {
            // The previous episode recorded nothing: its buffer and number serve this one.
            return;
        }
        match self.free.try_recv() {
            Ok(mut recording) => {
                recording.number = self.next_number;
                recording.policy = Arc::clone(&self.policy);
                self.next_number += 1;
                self.current = Some(recording);
            }
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => self.counters.dropped += 1,
        }
    }

    /// Records one step of the current episode: the observation parts the layout holds
    /// (`state` [O], `pixels` [64, 64, 3]), the action taken before it [A] (zeros at the
    /// reset), the reward received with it, and `discount` 0 after a terminal transition,
    /// else 1. Does not allocate.
    pub fn step(
        &mut self,
        state: &[f32],
        pixels: &[u8],
        action: &[f32],
        reward: f32,
        discount: f32,
    ) {
        let Some(recording) = self.current.as_mut() else {
            return;
        };
        let episode = &mut recording.episode;
        if episode.len() >= self.max_steps {
            self.counters.truncated += 1;
            return;
        }
        let state = if self.layout.state > 0 {
            fit(state, self.layout.state)
        } else {
            &[][..]
        };
        let pixels = if self.layout.pixels {
            fit(pixels, FRAME_BYTES)
        } else {
            &[][..]
        };
        let action = fit(action, self.layout.action);
        episode.push(state, pixels, action, reward, discount);
        // A part shorter than the layout (a bad frame) is padded with zeros so every array
        // keeps its shape; the capacity was reserved for full rows.
        pad(&mut episode.state, episode.reward.len() * self.layout.state);
        pad(
            &mut episode.pixels,
            if self.layout.pixels {
                episode.reward.len() * FRAME_BYTES
            } else {
                0
            },
        );
        pad(
            &mut episode.action,
            episode.reward.len() * self.layout.action,
        );
    }

    /// Hands the current episode (if any, and not empty) to the writer.
    pub fn end(&mut self) {
        let Some(recording) = self.current.take() else {
            return;
        };
        if recording.episode.is_empty() {
            self.current = Some(recording);
            return;
        }
        if let Some(finished) = &self.finished {
            match finished.try_send(recording) {
                Ok(()) => self.counters.recorded += 1,
                // Both cannot happen while the writer runs (the channel holds every buffer);
                // if it stopped, the episode is lost and counted.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    self.counters.dropped += 1
                }
            }
        }
    }

    pub fn counters(&self) -> RecordCounters {
        self.counters
    }

    /// Hands over the current episode, waits for the writer to save everything it holds,
    /// and returns what it wrote.
    pub fn finish(mut self) -> Result<(RecordCounters, WriterReport), RecordError> {
        self.end();
        self.finished = None;
        let report = self
            .writer
            .take()
            .map(JoinHandle::join)
            .transpose()
            .map_err(|_| RecordError::WriterGone)?
            .unwrap_or_default();
        Ok((self.counters, report))
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.end();
        self.finished = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// An episode with room for `max_steps` steps of `layout`.
fn empty_episode(layout: Layout, max_steps: usize) -> Episode {
    let pixels = if layout.pixels { FRAME_BYTES } else { 0 };
    Episode {
        state: Vec::with_capacity(max_steps * layout.state),
        pixels: Vec::with_capacity(max_steps * pixels),
        action: Vec::with_capacity(max_steps * layout.action),
        reward: Vec::with_capacity(max_steps),
        discount: Vec::with_capacity(max_steps),
    }
}

/// At most `len` values of `x`.
fn fit<T>(x: &[T], len: usize) -> &[T] {
    &x[..x.len().min(len)]
}

fn pad<T: Default + Clone>(x: &mut Vec<T>, len: usize) {
    if x.len() < len {
        x.resize(len, T::default());
    }
}

/// The writer thread: saves each finished episode, persisting the next number first, and
/// returns its buffer.
fn write_episodes(
    device_dir: &Path,
    layout: Layout,
    finished: Receiver<Box<Recording>>,
    free: SyncSender<Box<Recording>>,
) -> WriterReport {
    let mut report = WriterReport::default();
    let device = device_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    while let Ok(mut recording) = finished.recv() {
        let id = format!("{device}/{}/{}", recording.policy, recording.number);
        let policy_dir = device_dir.join(&*recording.policy);
        let file = policy_dir.join(dreamer_episode::file_name(
            recording.number as usize,
            recording.episode.len(),
        ));
        let saved = std::fs::create_dir_all(&policy_dir)
            .map_err(|e| e.to_string())
            .and_then(|()| write_next_number(device_dir, recording.number + 1))
            .and_then(|()| {
                dreamer_episode::save(&file, &recording.episode, layout).map_err(|e| e.to_string())
            });
        match saved {
            Ok(()) => report.written.push(id),
            Err(message) => report.failed.push((id, message)),
        }
        let episode = &mut recording.episode;
        episode.state.clear();
        episode.pixels.clear();
        episode.action.clear();
        episode.reward.clear();
        episode.discount.clear();
        if free.send(recording).is_err() {
            // The recorder is gone; keep saving what is queued.
            continue;
        }
    }
    report
}

fn read_next_number(device_dir: &Path) -> Result<u64, RecordError> {
    let path = device_dir.join(NEXT_EPISODE_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| RecordError::Spool {
            path,
            message: format!("holds `{}`, not an episode number", text.trim()),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(spool_error(&path)(e)),
    }
}

fn write_next_number(device_dir: &Path, next: u64) -> Result<(), String> {
    let path = device_dir.join(NEXT_EPISODE_FILE);
    dreamer_persist::write_file(&path, format!("{next}\n").as_bytes()).map_err(|e| e.to_string())
}

fn spool_error(path: &Path) -> impl Fn(std::io::Error) -> RecordError + use<> {
    let path = path.to_path_buf();
    move |e| RecordError::Spool {
        path: path.clone(),
        message: e.to_string(),
    }
}

/// Names in episode ids are path components: letters, digits, `-`, `_`, `.`, not `.` or `..`.
fn check_name(what: &'static str, value: &str) -> Result<(), RecordError> {
    // The names the learner's intake accepts in an episode id, at most 64 bytes.
    if dreamer_online::plain_name(value) && value.len() <= 64 {
        Ok(())
    } else {
        Err(RecordError::Name {
            what,
            value: value.to_string(),
            message: "must be 1-64 letters, digits, `-`, `_` or `.` (and not `.` or `..`)",
        })
    }
}
