//! The runtime's end of the firmware link: a serial port (a real `/dev/tty*` or a pty),
//! the wire protocol handshake, and one action per observation from the [`Agent`].
//!
//! The firmware samples at its own fixed rate and sends an observation per tick; this side
//! only reacts. Everything waiting on the port is read before answering, and only the
//! newest observation is answered (the older ones are stale: their deadline passed while
//! this process was not running, and acting on them would apply an outdated action).
//! Every frame error is counted by the [`FrameDecoder`]; heartbeats and fault reports are
//! logged. For a pixel policy, a [`Camera`] renders the plant's published state; it is part
//! of the simulation (`sim` feature), so a build without it serves state policies only.

mod sim;

use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dreamer_bundle::Manifest;
pub use dreamer_wire::report::ServeSummary;
use dreamer_wire::{
    Action, FaultReport, FrameDecoder, HandshakeResult, Hello, HelloAck, Layout, MAX_ACTION,
    MAX_FRAME, MAX_TASK_NAME, Message, PROTOCOL_VERSION, encode_frame,
};
use serialport::SerialPort;

use crate::agent::{Agent, Observation};
use crate::control::LatencyRecorder;
pub use sim::Camera;

/// How to serve.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Serial device or pty path.
    pub port: PathBuf,
    /// Baud rate set on a real serial port (ignored by ptys).
    pub baud: u32,
    /// Plant state record published by the firmware host, for the simulated camera of a pixel
    /// policy (`sim` feature).
    pub camera_state: Option<PathBuf>,
    /// Hello is repeated this often until the firmware accepts it.
    pub hello_interval: Duration,
    /// Give up when no session opened within this time (`None`: keep trying).
    pub handshake_timeout: Option<Duration>,
    /// After a stop request, keep reading until the port has been quiet this long, so that
    /// every frame already sent is counted.
    pub drain_quiet: Duration,
}

impl ServeOptions {
    pub fn new(port: PathBuf) -> Self {
        Self {
            port,
            baud: 115_200,
            camera_state: None,
            hello_interval: Duration::from_millis(200),
            handshake_timeout: None,
            drain_quiet: Duration::from_millis(100),
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
    #[error("serial port {}: {source}", path.display())]
    Io {
        path: PathBuf,
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

struct Port {
    path: PathBuf,
    port: serialport::TTYPort,
}

impl Port {
    fn io(&self, source: io::Error) -> ServeError {
        ServeError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn send(&mut self, message: &Message) -> Result<(), ServeError> {
        let mut buf = [0u8; MAX_FRAME];
        let frame = encode_frame(message, &mut buf);
        self.port.write_all(frame).map_err(|e| self.io(e))
    }

    /// Reads what arrives within the port timeout; 0 when nothing did.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ServeError> {
        match self.port.read(buf) {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut
                        | io::ErrorKind::WouldBlock
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(self.io(e)),
        }
    }

    fn waiting(&self) -> u32 {
        self.port.bytes_to_read().unwrap_or(0)
    }
}

/// Serves the firmware on `options.port` until `stop` is set; returns what happened.
pub fn serve(
    agent: &mut Agent,
    options: &ServeOptions,
    stop: &AtomicBool,
) -> Result<ServeSummary, ServeError> {
    let manifest = agent.manifest().clone();
    let mut camera = Camera::open_for(&manifest, options)?;
    let hello = hello_for(&manifest)?;
    let uses_state = manifest.observation.state.is_some();
    let path_text = options.port.to_string_lossy().into_owned();
    let port = serialport::new(path_text, options.baud)
        .timeout(Duration::from_millis(20))
        .open_native()
        .map_err(|source| ServeError::Open {
            path: options.port.clone(),
            source,
        })?;
    let mut port = Port {
        path: options.port.clone(),
        port,
    };

    let started = Instant::now();
    let mut summary = ServeSummary {
        task: manifest.task.name.clone(),
        port: options.port.clone(),
        ..ServeSummary::default()
    };
    let mut decoder = FrameDecoder::new();
    let mut inference = LatencyRecorder::default();
    let mut service = LatencyRecorder::default();
    let mut buf = [0u8; 4096];
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
                port.send(&Message::Hello(hello.clone()))?;
                summary.hello_sent += 1;
                last_hello = Some(Instant::now());
            }
        }

        // Everything waiting, so that only the newest observation is answered.
        let mut newest = None;
        let mut batch_observations = 0u64;
        let mut received_at = None;
        let mut read_any = false;
        let mut hung_up = false;
        loop {
            let n = match port.read(&mut buf) {
                Ok(n) => n,
                // The other end went away after the stop request: nothing more will come.
                Err(_) if stop.load(Ordering::Relaxed) => {
                    hung_up = true;
                    0
                }
                Err(e) => return Err(e),
            };
            if n == 0 {
                break;
            }
            read_any = true;
            received_at = Some(Instant::now());
            for &byte in &buf[..n] {
                let Some(Ok(frame)) = decoder.push(byte) else {
                    continue;
                };
                match frame.message {
                    Message::Observation(o) if accepted => {
                        batch_observations += 1;
                        newest = Some(o);
                    }
                    Message::Observation(_) => summary.observations_before_session += 1,
                    Message::HelloAck(ack) => {
                        // A repeated acknowledgement (of a repeated hello) keeps the episode.
                        if handle_ack(&ack, &hello, &mut accepted, &mut summary, started)? {
                            agent.reset();
                        }
                    }
                    Message::Heartbeat(h) => {
                        summary.heartbeats += 1;
                        if summary.last_mode != Some(h.mode) {
                            eprintln!(
                                "serve: firmware mode {:?} (tick {}, {} deadline misses, {} faults, {} frame errors)",
                                h.mode, h.tick, h.deadline_misses, h.faults, h.frame_errors
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
            if port.waiting() == 0 {
                break;
            }
        }
        summary.frame_errors = *decoder.counters();

        if hung_up {
            drain_since.get_or_insert_with(Instant::now);
        }
        if let Some(since) = drain_since {
            // Count what is still arriving, answer nothing more.
            summary.observations += batch_observations;
            summary.stale_observations += batch_observations;
            if hung_up || (!read_any && since.elapsed() >= options.drain_quiet) {
                break;
            }
            if since.elapsed() >= options.drain_quiet * 20 {
                break;
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
        let pixels = camera.as_mut().map(|c| c.capture());
        let step_started = Instant::now();
        let outcome = agent.step(&Observation {
            state: uses_state.then_some(&state[..]),
            pixels,
        });
        inference.record(step_started.elapsed());
        if outcome.is_err() {
            summary.agent_faults += 1;
        }
        action_values.clear();
        for &value in agent.action().iter().take(MAX_ACTION) {
            // Cannot fail: at most MAX_ACTION values are taken.
            let _ = action_values.push(value);
        }
        match port.send(&Message::Action(Action {
            seq: observation.seq,
            values: action_values.clone(),
        })) {
            Ok(()) => {}
            Err(_) if stop.load(Ordering::Relaxed) => continue,
            Err(e) => return Err(e),
        }
        summary.answered += 1;
        if let Some(at) = received_at {
            service.record(at.elapsed());
        }
        // Split steps: the next transition, while the firmware applies the action. A failure
        // here repeats in the next step, which counts it and sends the safe action.
        let _ = agent.prepare();
    }

    summary.elapsed_s = started.elapsed().as_secs_f64();
    summary.frame_errors = *decoder.counters();
    summary.inference = inference.summary();
    summary.service = service.summary();
    if let Some(camera) = &camera {
        summary.camera_frames = Some(camera.frames());
        summary.camera_errors = Some(camera.errors());
    }
    Ok(summary)
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
    eprintln!(
        "serve: session open with firmware task `{}` (protocol {})",
        ack.task, ack.protocol_version
    );
    Ok(true)
}

fn log_fault(f: &FaultReport) {
    eprintln!(
        "serve: firmware fault {:?} {} at observation {} ({} missed in a row)",
        f.kind,
        if f.active { "raised" } else { "cleared" },
        f.seq,
        f.consecutive_misses
    );
}
