//! The fault-injection relay between the firmware's pty and the runtime's pty.
//!
//! One thread per direction reads the sender's bytes, injects faults drawn from a seeded
//! ChaCha8 generator (so a run is reproducible), and writes the result to the receiver. It
//! also keeps a ledger of what the receiver must conclude, computed from the provenance of
//! every byte it writes and independent of the receiver's decoder:
//!
//! - the output stream is cut at its `0x00` bytes into segments, as a receiver does;
//! - an empty segment is ignored (a receiver ignores it too);
//! - a segment is **intact** when it is exactly one original frame: all of its bytes, in
//!   order, unmodified, closed by that frame's own delimiter. The receiver must accept it;
//! - any other non-empty segment is **damaged** and the receiver must reject it as one
//!   frame error (bad COBS, CRC, length, ...).
//!
//! So a dropped data byte turns one accepted frame into one rejection; a dropped delimiter
//! merges two frames into one rejection; a flipped byte damages its frame, or splits it in
//! two rejections when it became `0x00` (one if at the frame start), or merges two frames
//! when it was the delimiter; a duplicated data byte damages its frame, a duplicated
//! delimiter only adds an ignored empty segment; a delay damages nothing. Sequence gaps
//! the receiver must count follow from the intact frames alone: the ledger feeds them to a
//! mirror decoder.
//!
//! Forwarding in the firmware -> runtime direction starts only once the runtime has sent a
//! byte (its port is open then, nothing is lost before it reads) and at a frame boundary.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dreamer_wire::{FaultKind, FrameDecoder, LinkCounters, MAX_FRAME, Message, decode_frame};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::pty;

/// Per-byte fault probabilities and the delay length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FaultRates {
    pub drop: f64,
    pub flip: f64,
    pub dup: f64,
    /// Probability that a byte (and, to keep the order, every byte behind it) is held back.
    pub delay_p: f64,
    pub delay_us: u64,
}

impl FaultRates {
    pub fn any(&self) -> bool {
        self.drop > 0.0
            || self.flip > 0.0
            || self.dup > 0.0
            || (self.delay_p > 0.0 && self.delay_us > 0)
    }

    /// Checks every probability is in [0, 1], and that a delay has both its probability
    /// and its length (either alone would silently inject nothing).
    pub fn validate(&self) -> Result<(), String> {
        for (name, p) in [
            ("--drop", self.drop),
            ("--flip", self.flip),
            ("--dup", self.dup),
            ("--delay-p", self.delay_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a probability in [0, 1], got {p}"));
            }
        }
        if self.delay_us > 0 && self.delay_p == 0.0 {
            return Err(format!(
                "--delay-us {} delays nothing without --delay-p (the probability that a byte is delayed)",
                self.delay_us
            ));
        }
        if self.delay_p > 0.0 && self.delay_us == 0 {
            return Err(format!(
                "--delay-p {} delays nothing without --delay-us (how long a delayed byte is held back)",
                self.delay_p
            ));
        }
        Ok(())
    }
}

/// Which way bytes flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    FirmwareToRuntime,
    RuntimeToFirmware,
}

/// Faults injected into one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Injected {
    pub dropped: u64,
    /// Of the dropped bytes, frame delimiters.
    pub dropped_delimiters: u64,
    pub flipped: u64,
    pub flipped_delimiters: u64,
    /// Flips that turned a data byte into `0x00`.
    pub flipped_to_zero: u64,
    pub duplicated: u64,
    pub duplicated_delimiters: u64,
    pub delayed: u64,
}

impl Injected {
    /// Faults that change the bytes (all but delays).
    pub fn corruptions(&self) -> u64 {
        self.dropped + self.flipped + self.duplicated
    }
}

/// What the receiver must have counted, from the provenance of the bytes written to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ledger {
    /// Segments that are exactly one original frame: must be accepted.
    pub intact: u64,
    /// Other non-empty segments: must each be rejected once.
    pub damaged: u64,
    /// Sequence gaps among the intact frames (mirror decoder).
    pub sequence_gaps: u64,
    /// Intact segments the mirror decoder refused (a harness defect if ever non-zero).
    pub mirror_rejected: u64,
}

/// A fault report seen in the firmware's stream.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FaultEvent {
    /// Seconds since the harness epoch when the proxy read it.
    pub at_s: f64,
    pub seq: u32,
    pub kind: FaultKind,
    pub active: bool,
    pub consecutive_misses: u16,
}

/// Everything one direction saw and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinkStats {
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Read before forwarding started (firmware -> runtime before the runtime's first byte).
    pub discarded_before_connect: u64,
    /// Original frames read from the sender (complete, delimiter seen).
    pub frames_in: u64,
    pub injected: Injected,
    pub ledger: Ledger,
    /// When forwarding started (seconds since the epoch).
    pub live_since_s: Option<f64>,
    /// Observations in the sender's stream (firmware -> runtime only).
    pub observations: u64,
    pub first_observation_s: Option<f64>,
    pub last_observation_seq: Option<u32>,
    /// Fault reports in the sender's stream, in order.
    pub fault_events: Vec<FaultEvent>,
}

const RUN: u8 = 0;
/// Write everything held back, then end.
const FLUSH: u8 = 1;
const STOP: u8 = 2;

/// A byte on its way out with where it came from.
#[derive(Debug, Clone, Copy)]
struct Tagged {
    byte: u8,
    /// Index of the original frame and position in it (the delimiter is at its length).
    frame: u64,
    pos: u32,
    /// Flipped or an extra copy.
    altered: bool,
}

struct Link {
    direction: Direction,
    src: File,
    dst: File,
    rng: ChaCha8Rng,
    faults: FaultRates,
    epoch: Instant,
    stats: Arc<Mutex<LinkStats>>,
    control: Arc<AtomicU8>,
    /// Set by the runtime -> firmware link at its first byte; gates the other direction.
    runtime_connected: Arc<AtomicBool>,
    live: bool,
    at_boundary: bool,
    in_frame: u64,
    in_pos: u32,
    original: Vec<u8>,
    /// (release time, byte), in order.
    held: VecDeque<(Instant, Tagged)>,
    last_release: Instant,
    outgoing: VecDeque<Tagged>,
    segment: Segment,
    mirror: FrameDecoder,
}

/// The output segment being built.
#[derive(Default)]
struct Segment {
    len: u32,
    frame: u64,
    clean: bool,
    bytes: Vec<u8>,
}

fn lock(stats: &Mutex<LinkStats>) -> MutexGuard<'_, LinkStats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    fn run(mut self) -> io::Result<()> {
        let mut buf = [0u8; 4096];
        let mut flush_deadline = None;
        loop {
            let now = Instant::now();
            let control = self.control.load(Ordering::Relaxed);
            if control == STOP {
                return Ok(());
            }
            if control == FLUSH {
                if flush_deadline.is_none() {
                    flush_deadline = Some(now + Duration::from_secs(2));
                    // Take in what the sender wrote before it stopped.
                    self.read_waiting(&mut buf)?;
                }
                while let Some((_, tagged)) = self.held.pop_front() {
                    self.outgoing.push_back(tagged);
                }
            }
            while let Some(&(release, tagged)) = self.held.front() {
                if release > now {
                    break;
                }
                self.held.pop_front();
                self.outgoing.push_back(tagged);
            }
            self.write_out()?;
            if control == FLUSH
                && (self.outgoing.is_empty() || flush_deadline.is_some_and(|d| now >= d))
            {
                return Ok(());
            }
            let wait = match self.held.front() {
                Some(&(release, _)) => release.saturating_duration_since(now),
                None => Duration::from_millis(20),
            }
            .min(Duration::from_millis(20));
            let wait_ms = wait.as_micros().div_ceil(1000) as libc::c_int;
            if !self.outgoing.is_empty() {
                // The receiver is not taking bytes (stopped process): wait for room.
                pty::wait_ready(self.dst.as_raw_fd(), true, 1)?;
            }
            let (readable, _) = pty::wait_ready(self.src.as_raw_fd(), false, wait_ms)?;
            if !readable {
                continue;
            }
            let n = match self.src.read(&mut buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // EIO: no process has the slave open any more (cannot happen while the
                // harness holds it, but a closed pty ends the link cleanly).
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(());
            }
            let now = Instant::now();
            for &byte in &buf[..n] {
                self.ingest(byte, now);
            }
            lock(&self.stats).bytes_in += n as u64;
            self.write_out()?;
        }
    }

    /// Reads and ingests everything the sender's pty holds now.
    fn read_waiting(&mut self, buf: &mut [u8]) -> io::Result<()> {
        loop {
            match self.src.read(buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    let now = Instant::now();
                    for &byte in &buf[..n] {
                        self.ingest(byte, now);
                    }
                    lock(&self.stats).bytes_in += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // WouldBlock: nothing more; EIO: the sender's side is closed.
                Err(_) => return Ok(()),
            }
        }
    }

    fn seconds(&self, at: Instant) -> f64 {
        at.saturating_duration_since(self.epoch).as_secs_f64()
    }

    fn ingest(&mut self, byte: u8, now: Instant) {
        if self.direction == Direction::RuntimeToFirmware {
            self.runtime_connected.store(true, Ordering::Relaxed);
        }
        if !self.live {
            let gate = self.direction == Direction::RuntimeToFirmware
                || self.runtime_connected.load(Ordering::Relaxed);
            if gate && self.at_boundary {
                self.live = true;
                lock(&self.stats).live_since_s = Some(self.seconds(now));
            }
        }
        self.track_original(byte, now);
        let (frame, pos) = (self.in_frame, self.in_pos);
        if byte == 0 {
            self.in_frame += 1;
            self.in_pos = 0;
        } else {
            self.in_pos = self.in_pos.saturating_add(1);
        }
        if !self.live {
            self.at_boundary = byte == 0;
            lock(&self.stats).discarded_before_connect += 1;
            return;
        }
        let faults = self.faults;
        let mut injected = Injected::default();
        if faults.drop > 0.0 && self.rng.random_bool(faults.drop) {
            injected.dropped = 1;
            injected.dropped_delimiters = u64::from(byte == 0);
            self.count(injected);
            return;
        }
        let mut out = Tagged {
            byte,
            frame,
            pos,
            altered: false,
        };
        if faults.flip > 0.0 && self.rng.random_bool(faults.flip) {
            out.byte ^= 1 << self.rng.random_range(0..8u32);
            out.altered = true;
            injected.flipped = 1;
            injected.flipped_delimiters = u64::from(byte == 0);
            injected.flipped_to_zero = u64::from(byte != 0 && out.byte == 0);
        }
        let mut release = now;
        if faults.delay_p > 0.0 && faults.delay_us > 0 && self.rng.random_bool(faults.delay_p) {
            release += Duration::from_micros(faults.delay_us);
            injected.delayed = 1;
        }
        release = release.max(self.last_release);
        self.last_release = release;
        self.held.push_back((release, out));
        if faults.dup > 0.0 && self.rng.random_bool(faults.dup) {
            injected.duplicated = 1;
            injected.duplicated_delimiters = u64::from(out.byte == 0);
            self.held.push_back((
                release,
                Tagged {
                    altered: true,
                    ..out
                },
            ));
        }
        self.count(injected);
    }

    fn count(&mut self, one: Injected) {
        if one == Injected::default() {
            return;
        }
        let mut stats = lock(&self.stats);
        let i = &mut stats.injected;
        i.dropped += one.dropped;
        i.dropped_delimiters += one.dropped_delimiters;
        i.flipped += one.flipped;
        i.flipped_delimiters += one.flipped_delimiters;
        i.flipped_to_zero += one.flipped_to_zero;
        i.duplicated += one.duplicated;
        i.duplicated_delimiters += one.duplicated_delimiters;
        i.delayed += one.delayed;
    }

    /// Follows the sender's original frames: session progress and fault reports.
    fn track_original(&mut self, byte: u8, now: Instant) {
        if byte != 0 {
            if self.original.len() < MAX_FRAME {
                self.original.push(byte);
            }
            return;
        }
        if self.original.is_empty() {
            return;
        }
        let decoded = decode_frame(&self.original);
        self.original.clear();
        let at_s = self.seconds(now);
        let mut stats = lock(&self.stats);
        stats.frames_in += 1;
        match decoded {
            Ok(Message::Observation(o)) => {
                stats.observations += 1;
                stats.first_observation_s.get_or_insert(at_s);
                stats.last_observation_seq = Some(o.seq);
            }
            Ok(Message::Fault(f)) => stats.fault_events.push(FaultEvent {
                at_s,
                seq: f.seq,
                kind: f.kind,
                active: f.active,
                consecutive_misses: f.consecutive_misses,
            }),
            _ => {}
        }
    }

    /// Writes what the receiver takes now; keeps the rest for later.
    fn write_out(&mut self) -> io::Result<()> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = self.outgoing.iter().map(|t| t.byte).collect();
        let written = match self.dst.write(&bytes) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(e) => return Err(e),
        };
        for tagged in self.outgoing.drain(..written).collect::<Vec<_>>() {
            self.account(tagged);
        }
        lock(&self.stats).bytes_out += written as u64;
        Ok(())
    }

    /// Classifies the output stream into intact and damaged segments.
    fn account(&mut self, t: Tagged) {
        let seg = &mut self.segment;
        if t.byte != 0 {
            if seg.len == 0 {
                seg.frame = t.frame;
                seg.clean = !t.altered && t.pos == 0;
                seg.bytes.clear();
            } else {
                seg.clean &= !t.altered && t.frame == seg.frame && t.pos == seg.len;
            }
            seg.len += 1;
            if seg.clean {
                seg.bytes.push(t.byte);
            }
            return;
        }
        if seg.len == 0 {
            return; // empty segment: ignored by every decoder
        }
        let intact = seg.clean && !t.altered && t.frame == seg.frame && t.pos == seg.len;
        seg.len = 0;
        let mut stats = lock(&self.stats);
        if !intact {
            stats.ledger.damaged += 1;
            return;
        }
        stats.ledger.intact += 1;
        let mut result = None;
        for &byte in seg.bytes.iter().chain([&0u8]) {
            result = self.mirror.push(byte).or(result);
        }
        if !matches!(result, Some(Ok(_))) {
            stats.ledger.mirror_rejected += 1;
        }
        stats.ledger.sequence_gaps = u64::from(self.mirror.counters().sequence_gaps);
    }
}

/// A running relay.
#[derive(Debug)]
pub struct Proxy {
    links: Vec<(Direction, LinkHandle)>,
}

#[derive(Debug)]
struct LinkHandle {
    thread: Option<JoinHandle<io::Result<()>>>,
    control: Arc<AtomicU8>,
    stats: Arc<Mutex<LinkStats>>,
}

impl Proxy {
    /// Starts relaying between the firmware's and the runtime's pty masters. The masters
    /// are switched to non-blocking mode.
    pub fn start(
        firmware: &File,
        runtime: &File,
        faults: FaultRates,
        seed: u64,
        epoch: Instant,
    ) -> io::Result<Proxy> {
        Self::start_with_priority(firmware, runtime, faults, seed, epoch, None)
    }

    /// [`Proxy::start`] with the relay threads under SCHED_FIFO at `rt_priority` (a
    /// failure to set it is reported on stderr and the relay runs at normal priority).
    pub fn start_with_priority(
        firmware: &File,
        runtime: &File,
        faults: FaultRates,
        seed: u64,
        epoch: Instant,
        rt_priority: Option<i32>,
    ) -> io::Result<Proxy> {
        pty::set_nonblocking(firmware.as_raw_fd())?;
        pty::set_nonblocking(runtime.as_raw_fd())?;
        let connected = Arc::new(AtomicBool::new(false));
        let mut links = Vec::new();
        for (direction, src, dst, stream) in [
            (Direction::FirmwareToRuntime, firmware, runtime, 1u64),
            (Direction::RuntimeToFirmware, runtime, firmware, 2u64),
        ] {
            let stats = Arc::new(Mutex::new(LinkStats::default()));
            let control = Arc::new(AtomicU8::new(RUN));
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(stream);
            let link = Link {
                direction,
                src: src.try_clone()?,
                dst: dst.try_clone()?,
                rng,
                faults,
                epoch,
                stats: stats.clone(),
                control: control.clone(),
                runtime_connected: connected.clone(),
                live: false,
                at_boundary: true,
                in_frame: 0,
                in_pos: 0,
                original: Vec::with_capacity(MAX_FRAME),
                held: VecDeque::new(),
                last_release: epoch,
                outgoing: VecDeque::new(),
                segment: Segment::default(),
                mirror: FrameDecoder::new(),
            };
            let thread = std::thread::Builder::new()
                .name(format!("proxy {direction:?}"))
                .spawn(move || {
                    if let Some(priority) = rt_priority
                        && let Err(e) = set_fifo_priority(priority)
                    {
                        dreamer_cli::errln!(
                            "dreamer-hil: note: relay SCHED_FIFO {priority} not set: {e}"
                        );
                    }
                    link.run()
                })?;
            links.push((
                direction,
                LinkHandle {
                    thread: Some(thread),
                    control,
                    stats,
                },
            ));
        }
        Ok(Proxy { links })
    }

    fn link(&self, direction: Direction) -> &LinkHandle {
        &self
            .links
            .iter()
            .find(|(d, _)| *d == direction)
            .expect("both directions exist")
            .1
    }

    /// A snapshot of one direction.
    pub fn stats(&self, direction: Direction) -> LinkStats {
        lock(&self.link(direction).stats).clone()
    }

    /// Writes everything held back in `direction` (up to 2 s), then ends that direction.
    pub fn flush_and_stop(&mut self, direction: Direction) -> io::Result<()> {
        self.end(direction, FLUSH)
    }

    fn end(&mut self, direction: Direction, how: u8) -> io::Result<()> {
        let handle = &mut self
            .links
            .iter_mut()
            .find(|(d, _)| *d == direction)
            .expect("both directions exist")
            .1;
        handle.control.store(how, Ordering::Relaxed);
        match handle.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("proxy thread panicked"))),
            None => Ok(()),
        }
    }

    /// Ends both directions now.
    pub fn stop(&mut self) -> io::Result<()> {
        let a = self.end(Direction::FirmwareToRuntime, STOP);
        let b = self.end(Direction::RuntimeToFirmware, STOP);
        a.and(b)
    }

    /// Whether a direction's thread ended by itself (an I/O error or a closed pty).
    pub fn finished(&self, direction: Direction) -> bool {
        self.link(direction)
            .thread
            .as_ref()
            .is_none_or(|t| t.is_finished())
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Puts the calling thread under SCHED_FIFO at `priority`.
pub fn set_fifo_priority(priority: i32) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: plain syscall on the calling thread with a valid parameter struct.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a receiver counted, for [`reconcile`].
pub fn rejected(counters: &LinkCounters) -> u64 {
    u64::from(counters.bad_cobs)
        + u64::from(counters.bad_crc)
        + u64::from(counters.wrong_length)
        + u64::from(counters.unknown_message)
        + u64::from(counters.malformed)
}

/// The receiver's counts against the ledger of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    pub expected_accepted: u64,
    pub accepted: u64,
    pub expected_rejected: u64,
    pub rejected: u64,
    pub expected_sequence_gaps: u64,
    pub sequence_gaps: u64,
    /// All three pairs equal.
    pub reconciled: bool,
}

pub fn reconcile(ledger: &Ledger, receiver: &LinkCounters) -> Reconciliation {
    let accepted = u64::from(receiver.frames_ok);
    let rejected = rejected(receiver);
    let gaps = u64::from(receiver.sequence_gaps);
    Reconciliation {
        expected_accepted: ledger.intact,
        accepted,
        expected_rejected: ledger.damaged,
        rejected,
        expected_sequence_gaps: ledger.sequence_gaps,
        sequence_gaps: gaps,
        reconciled: ledger.intact == accepted
            && ledger.damaged == rejected
            && ledger.sequence_gaps == gaps
            && ledger.mirror_rejected == 0,
    }
}
