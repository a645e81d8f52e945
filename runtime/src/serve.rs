//! The runtime's end of the firmware link: a serial port (a real `/dev/tty*` or a pty) or UDP
//! ([`LinkSpec`]), the wire protocol handshake, and one action per observation from the
//! [`Agent`].
//!
//! The firmware samples at its own fixed rate and sends an observation per tick; this side
//! only reacts. Everything waiting on the link is read before answering, and only the
//! newest observation is answered (the older ones are stale: their deadline passed while
//! this process was not running, and acting on them would apply an outdated action).
//! Every frame error is counted by the [`FrameDecoder`]; heartbeats and fault reports are
//! logged. For a pixel policy, a [`Camera`] renders the plant's published state; it is part
//! of the simulation (`sim` feature), so a build without it serves state policies only.
//! A firmware that measures rewards reports its episodes; serving follows them, records
//! them and switches policies between them ([`Experience`]).

mod episodes;
mod link;
mod sim;

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dreamer_bundle::Manifest;
use dreamer_cli::errln;
pub use dreamer_wire::report::{ServeEnd, ServeSummary};
use dreamer_wire::{
    Action, EpisodeStep, FaultReport, FrameDecoder, HandshakeResult, Hello, HelloAck, Layout,
    MAX_ACTION, MAX_TASK_NAME, Message, PROTOCOL_VERSION,
};

use crate::agent::{Agent, Observation};
use crate::control::LatencyRecorder;
use episodes::EpisodeTracker;
pub use episodes::{Experience, NextPolicy};
pub use link::LinkSpec;
use link::ServeLink;
pub use sim::Camera;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where the firmware is.
    pub link: LinkSpec,
    /// Plant state record published by the firmware host, for the simulated camera of a pixel
    /// policy (`sim` feature).
    pub camera_state: Option<PathBuf>,
    /// Hello is repeated this often until the firmware accepts it.
    pub hello_interval: Duration,
    /// Give up when no session opened within this time (`None`: keep trying).
    pub handshake_timeout: Option<Duration>,
    /// After a stop request, keep reading until the link has been quiet this long, so that
    /// every frame already sent is counted.
    pub drain_quiet: Duration,
    /// Spin on the link instead of sleeping until input arrives: the serving thread never
    /// leaves its core (no wake-up latency, caches kept warm). For a core of its own.
    pub busy_poll: bool,
}

impl ServeOptions {
    /// Serving over the serial device or pty `port` (at 115200 baud on a real port).
    pub fn new(port: PathBuf) -> Self {
        Self::on(LinkSpec::Serial {
            path: port,
            baud: 115_200,
        })
    }

    /// Serving over `link`.
    pub fn on(link: LinkSpec) -> Self {
        Self {
            link,
            camera_state: None,
            hello_interval: Duration::from_millis(200),
            handshake_timeout: None,
            drain_quiet: Duration::from_millis(100),
            busy_poll: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot open serial port {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: serialport::Error,
    },
    #[error("serial port {}: the firmware hung up ({source})", path.display())]
    HungUp {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("serial port {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot bind UDP {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("UDP link to {peer}: {source}")]
    Udp {
        peer: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error(
        "the firmware refused the handshake ({result:?}): it runs protocol {protocol_version}, task `{task}`, layout {layout:?}; this policy sent protocol {PROTOCOL_VERSION}, task `{our_task}`, layout {our_layout:?}"
    )]
    Refused {
        result: HandshakeResult,
        protocol_version: u16,
        task: String,
        layout: Layout,
        our_task: String,
        our_layout: Layout,
    },
    #[error("no handshake answer within {0:?}")]
    HandshakeTimeout(Duration),
    #[error("the policy does not fit the wire protocol: {0}")]
    Layout(String),
    #[error("camera: {0}")]
    Camera(String),
    #[error(
        "the firmware measures no rewards or episodes (its handshake answer says so): recording experience and following policies need them"
    )]
    NoRewards,
}

/// The handshake this policy sends: the task and the state layout the firmware must
/// sample. A pixel-only policy still receives the task's state observations (the firmware
/// always samples them), so its layout is the task's.
pub fn hello_for(manifest: &Manifest) -> Result<Hello, ServeError> {
    let task = manifest.task.name.as_str();
    let fields: Vec<String> = match &manifest.observation.state {
        Some(state) => state.fields.clone(),
        None => sim::task_state_fields(task)?,
    };
    let action_size = u8::try_from(manifest.action.size)
        .ok()
        .filter(|&a| usize::from(a) <= MAX_ACTION)
        .ok_or_else(|| {
            ServeError::Layout(format!(
                "{} action values, the protocol carries at most {MAX_ACTION}",
                manifest.action.size
            ))
        })?;
    Ok(Hello {
        protocol_version: PROTOCOL_VERSION,
        task: heapless::String::<MAX_TASK_NAME>::try_from(task).map_err(|_| {
            ServeError::Layout(format!("task name `{task}` is over {MAX_TASK_NAME} bytes"))
        })?,
        layout: Layout::from_fields(&fields, action_size),
    })
}

/// Serving failed; the summary of what happened up to then comes with the error, so that
/// every way serving can end leaves a report ([`ServeSummary::end`] says which).
#[derive(Debug)]
pub struct ServeFailure {
    pub error: ServeError,
    pub summary: Box<ServeSummary>,
}

impl std::fmt::Display for ServeFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for ServeFailure {
    // The error's own cause: this wrapper adds a summary, no message of its own.
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl ServeError {
    /// How a session that failed with this error ended, for the summary.
    pub fn end(&self) -> ServeEnd {
        match self {
            ServeError::HungUp { .. } => ServeEnd::HungUp,
            ServeError::Refused { .. } => ServeEnd::Refused,
            ServeError::HandshakeTimeout(_) => ServeEnd::HandshakeTimeout,
            ServeError::Open { .. }
            | ServeError::Io { .. }
            | ServeError::Bind { .. }
            | ServeError::Udp { .. }
            | ServeError::Layout(_)
            | ServeError::Camera(_)
            | ServeError::NoRewards => ServeEnd::Error,
        }
    }
}

/// What the session measures, kept outside it so that the summary is complete whichever
/// way the session ends.
#[derive(Default)]
struct Meters {
    decoder: FrameDecoder,
    inference: LatencyRecorder,
    service: LatencyRecorder,
    camera: Option<Camera>,
}

/// Serves the firmware on `options.link` until `stop` is set; returns what happened. On
/// failure (hang-up, refused handshake, handshake timeout, I/O error) the summary up to the
/// failure comes with the error. The episode in progress at the end is recorded as far as it
/// got.
pub fn serve(
    agent: &mut Agent,
    options: &ServeOptions,
    stop: &AtomicBool,
    experience: Experience<'_>,
) -> Result<ServeSummary, ServeFailure> {
    let started = Instant::now();
    let mut summary = ServeSummary {
        task: agent.manifest().task.name.clone(),
        port: PathBuf::from(options.link.to_string()),
        ..ServeSummary::default()
    };
    let mut meters = Meters::default();
    let mut episodes = EpisodeTracker::new(experience, agent.manifest().action.size as usize);
    let outcome = run_session(
        agent,
        options,
        stop,
        started,
        &mut summary,
        &mut meters,
        &mut episodes,
    );
    episodes.close(None);
    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.frame_errors = *meters.decoder.counters();
    summary.inference = meters.inference.summary();
    summary.service = meters.service.summary();
    if let Some(camera) = &meters.camera {
        summary.camera_frames = Some(camera.frames());
        summary.camera_errors = Some(camera.errors());
    }
    match outcome {
        Ok(()) => {
            summary.end = ServeEnd::Stopped;
            Ok(summary)
        }
        Err(error) => {
            summary.end = error.end();
            summary.error = Some(error.to_string());
            Err(ServeFailure {
                error,
                summary: Box::new(summary),
            })
        }
    }
}

/// The session itself: everything it counts goes into `summary` and `meters` as it
/// happens, so that an early return loses nothing.
fn run_session(
    agent: &mut Agent,
    options: &ServeOptions,
    stop: &AtomicBool,
    started: Instant,
    summary: &mut ServeSummary,
    meters: &mut Meters,
    episodes: &mut EpisodeTracker<'_>,
) -> Result<(), ServeError> {
    let manifest = agent.manifest().clone();
    meters.camera = Camera::open_for(&manifest, options)?;
    let hello = hello_for(&manifest)?;
    let uses_state = manifest.observation.state.is_some();
    let mut link = ServeLink::open(&options.link, options.busy_poll)?;

    let mut messages = Vec::new();
    let mut accepted = false;
    let mut last_hello: Option<Instant> = None;
    let mut drain_since: Option<Instant> = None;
    let mut state = Vec::with_capacity(dreamer_wire::MAX_OBSERVATION);
    let mut action_values = heapless::Vec::<f32, MAX_ACTION>::new();

    loop {
        if stop.load(Ordering::Relaxed) && drain_since.is_none() {
            drain_since = Some(Instant::now());
        }
        if !accepted && drain_since.is_none() {
            let due = last_hello.is_none_or(|t| t.elapsed() >= options.hello_interval);
            if due {
                if let Some(limit) = options.handshake_timeout
                    && started.elapsed() > limit
                {
                    return Err(ServeError::HandshakeTimeout(limit));
                }
                link.send(&Message::Hello(hello.clone()))?;
                summary.hello_sent += 1;
                last_hello = Some(Instant::now());
            }
        }

        // Everything waiting, so that only the newest observation is answered.
        let mut newest = None;
        // The episode steps of every observation in the batch, the skipped ones included.
        let mut batch_step: Option<EpisodeStep> = None;
        let mut batch_observations = 0u64;
        let mut received_at = None;
        let mut hung_up = false;
        messages.clear();
        let read_any = match link.receive(&mut meters.decoder, &mut messages) {
            Ok(read_any) => read_any,
            // The other end went away after the stop request: nothing more will come.
            Err(_) if stop.load(Ordering::Relaxed) => {
                hung_up = true;
                false
            }
            Err(e) => return Err(e),
        };
        if read_any {
            received_at = Some(Instant::now());
        }
        for message in messages.drain(..) {
            match message {
                Message::Observation(o) if accepted => {
                    batch_observations += 1;
                    batch_step = Some(match batch_step {
                        Some(earlier) => earlier.followed_by(o.step),
                        None => o.step,
                    });
                    newest = Some(o);
                }
                Message::Observation(_) => summary.observations_before_session += 1,
                Message::HelloAck(ack) => {
                    // A repeated acknowledgement (of a repeated hello) keeps the episode.
                    if handle_ack(&ack, &hello, &mut accepted, summary, started)? {
                        if episodes.needs_rewards() && !ack.rewards {
                            return Err(ServeError::NoRewards);
                        }
                        summary.firmware_rewards = ack.rewards;
                        episodes.session_opened(ack.rewards);
                        agent.reset();
                    }
                }
                Message::Heartbeat(h) => {
                    summary.heartbeats += 1;
                    if summary.last_mode != Some(h.mode) {
                        errln!(
                            "serve: firmware mode {:?} (tick {}, {} deadline misses, {} faults, {} frame errors)",
                            h.mode,
                            h.tick,
                            h.deadline_misses,
                            h.faults,
                            h.frame_errors
                        );
                    }
                    summary.last_mode = Some(h.mode);
                }
                Message::Fault(f) => {
                    summary.fault_reports += 1;
                    log_fault(&f);
                }
                Message::Hello(_) | Message::Action(_) => summary.unexpected_messages += 1,
            }
        }

        if hung_up {
            drain_since.get_or_insert_with(Instant::now);
        }
        if let Some(since) = drain_since {
            // Count what is still arriving, answer nothing more.
            summary.observations += batch_observations;
            summary.stale_observations += batch_observations;
            if hung_up || (!read_any && since.elapsed() >= options.drain_quiet) {
                return Ok(());
            }
            if since.elapsed() >= options.drain_quiet * 20 {
                return Ok(());
            }
            continue;
        }
        let Some(observation) = newest else {
            continue;
        };
        summary.observations += batch_observations;
        summary.stale_observations += batch_observations - 1;
        state.clear();
        state.extend_from_slice(&observation.values);
        let pixels = meters.camera.as_mut().map(|c| c.capture());
        episodes.observe(
            agent,
            batch_step.unwrap_or_default(),
            if uses_state { &state } else { &[] },
            pixels.unwrap_or_default(),
            &hello,
            summary,
        );
        let step_started = Instant::now();
        let outcome = agent.step(&Observation {
            state: uses_state.then_some(&state[..]),
            pixels,
        });
        meters.inference.record(step_started.elapsed());
        match outcome {
            Ok(_) => episodes.explore(agent),
            // The safe action goes out as it is.
            Err(_) => summary.agent_faults += 1,
        }
        episodes.answered(agent.action());
        action_values.clear();
        for &value in agent.action().iter().take(MAX_ACTION) {
            // Cannot fail: at most MAX_ACTION values are taken.
            let _ = action_values.push(value);
        }
        match link.send(&Message::Action(Action {
            seq: observation.seq,
            values: action_values.clone(),
        })) {
            Ok(()) => {}
            Err(_) if stop.load(Ordering::Relaxed) => continue,
            Err(e) => return Err(e),
        }
        summary.answered += 1;
        if let Some(at) = received_at {
            meters.service.record(at.elapsed());
        }
        // Split steps: the next transition, while the firmware applies the action. A failure
        // here repeats in the next step, which counts it and sends the safe action.
        let _ = agent.prepare();
    }
}

/// Checks a handshake answer; returns whether it opened the session.
fn handle_ack(
    ack: &HelloAck,
    hello: &Hello,
    accepted: &mut bool,
    summary: &mut ServeSummary,
    started: Instant,
) -> Result<bool, ServeError> {
    if ack.result != HandshakeResult::Accepted {
        return Err(ServeError::Refused {
            result: ack.result,
            protocol_version: ack.protocol_version,
            task: ack.task.to_string(),
            layout: ack.layout,
            our_task: hello.task.to_string(),
            our_layout: hello.layout,
        });
    }
    if *accepted {
        return Ok(false);
    }
    *accepted = true;
    summary.session_opened_s = Some(started.elapsed().as_secs_f64());
    errln!(
        "serve: session open with firmware task `{}` (protocol {})",
        ack.task,
        ack.protocol_version
    );
    Ok(true)
}

fn log_fault(f: &FaultReport) {
    errln!(
        "serve: firmware fault {:?} {} at observation {} ({} missed in a row)",
        f.kind,
        if f.active { "raised" } else { "cleared" },
        f.seq,
        f.consecutive_misses
    );
}
