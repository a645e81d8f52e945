//! The relay for the pty link: faults per byte of the COBS stream.
//!
//! The ledger follows the provenance of every byte written:
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
//! Forwarding in the firmware -> runtime direction starts at a frame boundary.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dreamer_wire::{FrameDecoder, MAX_FRAME, decode_frame};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::{Direction, FaultRates, Injected, LinkStats, Proxy, Relay, lock};
use crate::fd::{is_quiet, wait_ready};
use crate::pty;

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

struct StreamRelay {
    direction: Direction,
    src: File,
    dst: File,
    rng: ChaCha8Rng,
    faults: FaultRates,
    epoch: Instant,
    stats: Arc<Mutex<LinkStats>>,
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

impl Relay for StreamRelay {
    fn receive_waiting(&mut self) -> io::Result<bool> {
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.src.read(&mut buf) {
                Ok(n) => n,
                Err(e) if is_quiet(&e) => return Ok(true),
                // EIO: no process has the slave open any more (cannot happen while the
                // harness holds it, but a closed pty ends the link cleanly).
                Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(false),
                Err(e) => return Err(e),
            };
            if n == 0 {
                return Ok(false);
            }
            let now = Instant::now();
            for &byte in &buf[..n] {
                self.ingest(byte, now);
            }
            lock(&self.stats).bytes_in += n as u64;
        }
    }

    fn release(&mut self, now: Option<Instant>) {
        while let Some(&(release, tagged)) = self.held.front() {
            if now.is_some_and(|now| release > now) {
                break;
            }
            self.held.pop_front();
            self.outgoing.push_back(tagged);
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        if self.outgoing.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = self.outgoing.iter().map(|t| t.byte).collect();
        let written = match self.dst.write(&bytes) {
            Ok(n) => n,
            Err(e) if is_quiet(&e) => 0,
            Err(e) => return Err(e),
        };
        for tagged in self.outgoing.drain(..written).collect::<Vec<_>>() {
            self.account(tagged);
        }
        lock(&self.stats).bytes_out += written as u64;
        Ok(())
    }

    fn backlog(&self) -> bool {
        !self.outgoing.is_empty()
    }

    fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|&(release, _)| release)
    }

    fn wait_input(&mut self, wait: Duration) -> io::Result<bool> {
        if self.backlog() {
            // The receiver is not taking bytes (a stopped process): wait for room.
            wait_ready(self.dst.as_raw_fd(), true, Duration::from_millis(1))?;
        }
        Ok(wait_ready(self.src.as_raw_fd(), false, wait)?.0)
    }
}

impl StreamRelay {
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
        if one != Injected::default() {
            lock(&self.stats).injected.add(&one);
        }
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
        lock(&self.stats).note_original(decoded, at_s);
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
        let mut proxy = Proxy { links: Vec::new() };
        for (direction, src, dst) in [
            (Direction::FirmwareToRuntime, firmware, runtime),
            (Direction::RuntimeToFirmware, runtime, firmware),
        ] {
            let rng = direction.fault_rng(seed);
            let (src, dst) = (src.try_clone()?, dst.try_clone()?);
            let runtime_connected = connected.clone();
            proxy.spawn(direction, rt_priority, move |stats| StreamRelay {
                direction,
                src,
                dst,
                rng,
                faults,
                epoch,
                stats,
                runtime_connected,
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
            })?;
        }
        Ok(proxy)
    }
}
