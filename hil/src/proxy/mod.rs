//! The fault-injection relay between the firmware and the runtime, for either link.
//!
//! One thread per direction reads what the sender wrote, injects faults drawn from a
//! seeded ChaCha8 generator (so a run is reproducible), and writes the result to the
//! receiver. It also keeps a [`Ledger`] of what the receiver must conclude, computed from
//! the provenance of everything it writes and independent of the receiver's decoder; the
//! harness then [`reconcile`]s the receiver's own counts against it.
//!
//! - [`stream`]: a byte stream (the pty link, COBS frames), faults per byte;
//! - [`datagram`]: UDP (one frame per datagram), faults per datagram, reordering included.
//!
//! Forwarding in the firmware -> runtime direction starts only once the runtime has sent
//! something (its end is open then: nothing is lost before it reads).

use std::io;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dreamer_wire::{FaultKind, FrameError, LinkCounters, Message};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

pub mod datagram;
pub mod stream;

pub use datagram::{UdpEnds, receive_drops};

/// Fault probabilities (per byte on a stream, per datagram on UDP) and the delay length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FaultRates {
    pub drop: f64,
    /// Probability of one flipped bit (a corrupted byte or datagram).
    pub flip: f64,
    pub dup: f64,
    /// Probability that a byte or datagram (and, to keep the order, everything behind it)
    /// is held back.
    pub delay_p: f64,
    pub delay_us: u64,
    /// Probability that a datagram is overtaken by the next one (UDP only: a byte stream
    /// cannot reorder).
    #[serde(default)]
    pub reorder: f64,
}

impl FaultRates {
    pub fn any(&self) -> bool {
        self.drop > 0.0
            || self.flip > 0.0
            || self.dup > 0.0
            || self.reorder > 0.0
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
            ("--reorder", self.reorder),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("{name} must be a probability in [0, 1], got {p}"));
            }
        }
        if self.delay_us > 0 && self.delay_p == 0.0 {
            return Err(format!(
                "--delay-us {} delays nothing without --delay-p (the probability of a delay)",
                self.delay_us
            ));
        }
        if self.delay_p > 0.0 && self.delay_us == 0 {
            return Err(format!(
                "--delay-p {} delays nothing without --delay-us (how long a delay holds back)",
                self.delay_p
            ));
        }
        Ok(())
    }
}

/// Which way frames flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Direction {
    FirmwareToRuntime,
    RuntimeToFirmware,
}

impl Direction {
    /// The fault generator of this direction: ChaCha8 from `seed`, one stream per direction
    /// (the same seed injects the same faults into the same traffic).
    fn fault_rng(self, seed: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(match self {
            Direction::FirmwareToRuntime => 1,
            Direction::RuntimeToFirmware => 2,
        });
        rng
    }
}

/// Faults injected into one direction: bytes on a stream, datagrams on UDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Injected {
    pub dropped: u64,
    /// Of the dropped bytes, frame delimiters (stream only).
    pub dropped_delimiters: u64,
    pub flipped: u64,
    /// Stream only.
    pub flipped_delimiters: u64,
    /// Flips that turned a data byte into `0x00` (stream only).
    pub flipped_to_zero: u64,
    pub duplicated: u64,
    /// Stream only.
    pub duplicated_delimiters: u64,
    pub delayed: u64,
    /// Datagrams sent after the one behind them (UDP only).
    pub reordered: u64,
}

impl Injected {
    /// Faults that change what arrives (all but delays and reordering).
    pub fn corruptions(&self) -> u64 {
        self.dropped + self.flipped + self.duplicated
    }

    fn add(&mut self, one: &Injected) {
        self.dropped += one.dropped;
        self.dropped_delimiters += one.dropped_delimiters;
        self.flipped += one.flipped;
        self.flipped_delimiters += one.flipped_delimiters;
        self.flipped_to_zero += one.flipped_to_zero;
        self.duplicated += one.duplicated;
        self.duplicated_delimiters += one.duplicated_delimiters;
        self.delayed += one.delayed;
        self.reordered += one.reordered;
    }
}

/// What the receiver must have counted, from the provenance of what was written to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Ledger {
    /// Frames delivered exactly as the sender wrote them: must be accepted.
    pub intact: u64,
    /// Other frames delivered: must each be rejected once.
    pub damaged: u64,
    /// Sequence gaps among the intact frames (mirror decoder).
    pub sequence_gaps: u64,
    /// Intact frames the mirror decoder refused (a harness defect if ever non-zero).
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
    /// Bytes read before forwarding started (firmware -> runtime before the runtime's first
    /// frame).
    pub discarded_before_connect: u64,
    /// Original frames read from the sender (complete, delimiter seen; one per datagram).
    pub frames_in: u64,
    /// Datagrams from an address other than the sender's, not forwarded (UDP only).
    #[serde(default)]
    pub foreign: u64,
    /// Datagrams the operating system refused to send (UDP only; not in the ledger).
    #[serde(default)]
    pub undeliverable: u64,
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

impl LinkStats {
    /// Follows the sender's original frames: session progress and fault reports.
    fn note_original(&mut self, decoded: Result<Message, FrameError>, at_s: f64) {
        self.frames_in += 1;
        match decoded {
            Ok(Message::Observation(o)) => {
                self.observations += 1;
                self.first_observation_s.get_or_insert(at_s);
                self.last_observation_seq = Some(o.seq);
            }
            Ok(Message::Fault(f)) => self.fault_events.push(FaultEvent {
                at_s,
                seq: f.seq,
                kind: f.kind,
                active: f.active,
                consecutive_misses: f.consecutive_misses,
            }),
            _ => {}
        }
    }
}

const RUN: u8 = 0;
/// Write everything held back, then end.
const FLUSH: u8 = 1;
const STOP: u8 = 2;

/// Longest a flush keeps writing to a receiver that does not take everything.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);
/// Longest one wait for input: the control flag is looked at least this often.
const IDLE_WAIT: Duration = Duration::from_millis(20);

/// One direction of a relay, as [`drive`] runs it.
trait Relay {
    /// Reads and takes in everything the sender has written so far; `false` when the
    /// sender's end is closed for good.
    fn receive_waiting(&mut self) -> io::Result<bool>;
    /// Moves what is due at `now` (everything, with `None`) towards the receiver.
    fn release(&mut self, now: Option<Instant>);
    /// Writes what the receiver takes now.
    fn write_out(&mut self) -> io::Result<()>;
    /// Released, but not yet taken by the receiver.
    fn backlog(&self) -> bool;
    /// When the next thing held back falls due.
    fn next_due(&self) -> Option<Instant>;
    /// Waits up to `wait` for the sender; whether input is there.
    fn wait_input(&mut self, wait: Duration) -> io::Result<bool>;
}

/// Runs one direction until the harness stops it, flushes it, or the sender's end closes.
fn drive(mut relay: impl Relay, control: &AtomicU8) -> io::Result<()> {
    let mut flush_deadline = None;
    loop {
        let now = Instant::now();
        let how = control.load(Ordering::Relaxed);
        if how == STOP {
            return Ok(());
        }
        if how == FLUSH {
            if flush_deadline.is_none() {
                flush_deadline = Some(now + FLUSH_LIMIT);
                // Take in what the sender wrote before it stopped.
                relay.receive_waiting()?;
            }
            relay.release(None);
        } else {
            relay.release(Some(now));
        }
        relay.write_out()?;
        if how == FLUSH && (!relay.backlog() || flush_deadline.is_some_and(|d| now >= d)) {
            return Ok(());
        }
        let wait = relay
            .next_due()
            .map_or(IDLE_WAIT, |due| due.saturating_duration_since(now))
            .min(IDLE_WAIT);
        if relay.wait_input(wait)? && !relay.receive_waiting()? {
            return Ok(());
        }
    }
}

fn lock(stats: &Mutex<LinkStats>) -> MutexGuard<'_, LinkStats> {
    stats.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running relay (either link).
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
    /// Runs the relay `relay` builds for one direction in its own thread (under SCHED_FIFO at `rt_priority`
    /// where permitted; a failure to set it is reported on stderr).
    fn spawn<R: Relay>(
        &mut self,
        direction: Direction,
        rt_priority: Option<i32>,
        relay: impl FnOnce(Arc<Mutex<LinkStats>>) -> R + Send + 'static,
    ) -> io::Result<()> {
        let stats = Arc::new(Mutex::new(LinkStats::default()));
        let control = Arc::new(AtomicU8::new(RUN));
        let (thread_control, thread_stats) = (control.clone(), stats.clone());
        let thread = std::thread::Builder::new()
            .name(format!("proxy {direction:?}"))
            .spawn(move || {
                if let Some(priority) = rt_priority
                    && let Err(e) = crate::sched::set_fifo_priority(priority)
                {
                    dreamer_cli::errln!(
                        "dreamer-hil: note: relay SCHED_FIFO {priority} not set: {e}"
                    );
                }
                drive(relay(thread_stats), &thread_control)
            })?;
        self.links.push((
            direction,
            LinkHandle {
                thread: Some(thread),
                control,
                stats,
            },
        ));
        Ok(())
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

    /// Whether a direction's thread ended by itself (an I/O error or a closed end).
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
    /// Datagrams the receiver's kernel dropped from its full receive queue (UDP only, read
    /// from `/proc/net/udp`): delivered by the relay, never seen by the receiver.
    pub receiver_drops: u64,
    /// Without receiver drops: all three pairs equal. With them: every delivered frame is
    /// accepted, rejected or one of the drops, no more accepted or rejected than expected
    /// (which frames were dropped, and so the gaps they make, the kernel does not say).
    pub reconciled: bool,
}

pub fn reconcile(ledger: &Ledger, receiver: &LinkCounters, receiver_drops: u64) -> Reconciliation {
    let accepted = u64::from(receiver.frames_ok);
    let rejected = rejected(receiver);
    let gaps = u64::from(receiver.sequence_gaps);
    let reconciled = ledger.mirror_rejected == 0
        && if receiver_drops == 0 {
            ledger.intact == accepted && ledger.damaged == rejected && ledger.sequence_gaps == gaps
        } else {
            accepted + rejected + receiver_drops == ledger.intact + ledger.damaged
                && accepted <= ledger.intact
                && rejected <= ledger.damaged
        };
    Reconciliation {
        expected_accepted: ledger.intact,
        accepted,
        expected_rejected: ledger.damaged,
        rejected,
        expected_sequence_gaps: ledger.sequence_gaps,
        sequence_gaps: gaps,
        receiver_drops,
        reconciled,
    }
}
