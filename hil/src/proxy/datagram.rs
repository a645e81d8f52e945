//! The relay for the UDP link: faults per datagram.
//!
//! The relay owns two sockets on the processes' interface: one the firmware is given as its
//! peer, one the runtime is given as its peer ([`UdpEnds`]). Every datagram is one frame, so
//! the ledger follows from each datagram's fate:
//!
//! - delivered unmodified (an original, a copy, a delayed or an overtaken one): the receiver
//!   must accept it;
//! - delivered with a flipped bit: the receiver must reject it once (the CRC catches every
//!   single-bit error);
//! - dropped: never seen.
//!
//! The sequence gaps the receiver must count follow from the unmodified datagrams in the
//! order they were sent (loopback keeps it), fed to a mirror decoder.
//!
//! Faults, per datagram, in this order: drop it (`drop`); otherwise flip one random bit
//! (`flip`); hold it, and to keep the order everything behind it, for `delay_us`
//! (`delay_p`); let the next datagram overtake it (`reorder`); send it twice (`dup`). An
//! overtaken datagram whose successor has not come within [`REORDER_HOLD`] goes alone.
//!
//! A receiver that stops reading (a stopped process) loses datagrams in its own kernel once
//! its receive queue is full, as on a real network stack; [`receive_drops`] reads that count
//! for the reconciliation.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dreamer_wire::{FrameDecoder, decode_datagram, same_peer};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{Direction, FaultRates, Injected, LinkStats, Proxy, Relay, lock};
use crate::fd::{is_quiet, wait_ready};

/// Longest an overtaken datagram waits for the one that overtakes it.
pub const REORDER_HOLD: Duration = Duration::from_millis(50);

/// The relay's two sockets, as the processes must be given them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UdpEnds {
    /// The firmware's peer: what it sends here goes to the runtime.
    pub for_firmware: SocketAddr,
    /// The runtime's peer: what it sends here goes to the firmware.
    pub for_runtime: SocketAddr,
}

/// A datagram on its way out.
#[derive(Debug, Clone)]
struct Datagram {
    bytes: Vec<u8>,
    /// A bit was flipped.
    corrupted: bool,
    /// Waits for the next datagram to go first.
    overtaken: bool,
}

struct DatagramRelay {
    direction: Direction,
    /// Receives from `sender`.
    src: UdpSocket,
    sender: SocketAddr,
    /// Sends to `receiver`.
    dst: UdpSocket,
    receiver: SocketAddr,
    rng: ChaCha8Rng,
    faults: FaultRates,
    epoch: Instant,
    stats: Arc<Mutex<LinkStats>>,
    /// Set by the runtime -> firmware direction at its first datagram; gates the other one.
    runtime_connected: Arc<AtomicBool>,
    live: bool,
    /// (release time, datagram), in release order.
    held: VecDeque<(Instant, Datagram)>,
    last_release: Instant,
    /// Overtaken datagrams, with when they were set aside.
    waiting: VecDeque<(Instant, Datagram)>,
    /// Released, not yet taken by the socket.
    outbox: VecDeque<Datagram>,
    mirror: FrameDecoder,
}

impl Relay for DatagramRelay {
    fn receive_waiting(&mut self) -> io::Result<bool> {
        // Longer than any valid frame, so an oversized datagram is forwarded whole.
        let mut buf = [0u8; 2048];
        loop {
            match self.src.recv_from(&mut buf) {
                Ok((n, from)) if same_peer(from, self.sender) => {
                    self.ingest(&buf[..n], Instant::now());
                }
                Ok(_) => lock(&self.stats).foreign += 1,
                Err(e) if is_quiet(&e) => return Ok(true),
                // An earlier datagram of this socket found no listener: not about this one.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Overtaken datagrams go behind the one that overtakes them.
    fn release(&mut self, now: Option<Instant>) {
        let due = |at: Instant| now.is_none_or(|now| at <= now);
        while let Some(&(at, _)) = self.held.front() {
            if !due(at) {
                break;
            }
            let (at, datagram) = self.held.pop_front().expect("front exists");
            if datagram.overtaken && now.is_some() {
                self.waiting.push_back((at, datagram));
                continue;
            }
            self.outbox.push_back(datagram);
            self.outbox
                .extend(self.waiting.drain(..).map(|(_, datagram)| datagram));
        }
        while let Some(&(since, _)) = self.waiting.front() {
            if !due(since + REORDER_HOLD) {
                break;
            }
            let (_, datagram) = self.waiting.pop_front().expect("front exists");
            self.outbox.push_back(datagram);
        }
    }

    /// Enters each datagram sent in the ledger.
    fn write_out(&mut self) -> io::Result<()> {
        while let Some(datagram) = self.outbox.front() {
            match self.dst.send_to(&datagram.bytes, self.receiver) {
                Ok(n) => {
                    let datagram = self.outbox.pop_front().expect("front exists");
                    let mut stats = lock(&self.stats);
                    stats.bytes_out += n as u64;
                    if datagram.corrupted {
                        stats.ledger.damaged += 1;
                    } else {
                        stats.ledger.intact += 1;
                        if self.mirror.push_datagram(&datagram.bytes).is_err() {
                            stats.ledger.mirror_rejected += 1;
                        }
                        stats.ledger.sequence_gaps =
                            u64::from(self.mirror.counters().sequence_gaps);
                    }
                }
                Err(e) if is_quiet(&e) => return Ok(()),
                // The receiver's port has no socket (it exited): the datagram is gone, and
                // the receiver can count nothing of it.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.outbox.pop_front();
                    lock(&self.stats).undeliverable += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn backlog(&self) -> bool {
        !self.outbox.is_empty()
    }

    fn next_due(&self) -> Option<Instant> {
        let held = self.held.front().map(|&(release, _)| release);
        let overtaken = self.waiting.front().map(|&(since, _)| since + REORDER_HOLD);
        held.into_iter().chain(overtaken).min()
    }

    fn wait_input(&mut self, mut wait: Duration) -> io::Result<bool> {
        if self.backlog() {
            // The socket's send buffer is full: try again soon.
            wait = wait.min(Duration::from_micros(100));
        }
        Ok(wait_ready(self.src.as_raw_fd(), false, wait)?.0)
    }
}

impl DatagramRelay {
    fn ingest(&mut self, bytes: &[u8], now: Instant) {
        if self.direction == Direction::RuntimeToFirmware {
            self.runtime_connected.store(true, Ordering::Relaxed);
        }
        let at_s = now.saturating_duration_since(self.epoch).as_secs_f64();
        {
            let mut stats = lock(&self.stats);
            stats.bytes_in += bytes.len() as u64;
            stats.note_original(decode_datagram(bytes), at_s);
            if !self.live
                && (self.direction == Direction::RuntimeToFirmware
                    || self.runtime_connected.load(Ordering::Relaxed))
            {
                self.live = true;
                stats.live_since_s = Some(at_s);
            }
            if !self.live {
                stats.discarded_before_connect += bytes.len() as u64;
                return;
            }
        }
        let faults = self.faults;
        let mut injected = Injected::default();
        if faults.drop > 0.0 && self.rng.random_bool(faults.drop) {
            injected.dropped = 1;
            lock(&self.stats).injected.add(&injected);
            return;
        }
        let mut datagram = Datagram {
            bytes: bytes.to_vec(),
            corrupted: false,
            overtaken: false,
        };
        if faults.flip > 0.0 && self.rng.random_bool(faults.flip) && !bytes.is_empty() {
            let at = self.rng.random_range(0..bytes.len());
            datagram.bytes[at] ^= 1 << self.rng.random_range(0..8u32);
            datagram.corrupted = true;
            injected.flipped = 1;
        }
        let mut release = now;
        if faults.delay_p > 0.0 && faults.delay_us > 0 && self.rng.random_bool(faults.delay_p) {
            release += Duration::from_micros(faults.delay_us);
            injected.delayed = 1;
        }
        release = release.max(self.last_release);
        self.last_release = release;
        if faults.reorder > 0.0 && self.rng.random_bool(faults.reorder) {
            datagram.overtaken = true;
            injected.reordered = 1;
        }
        if faults.dup > 0.0 && self.rng.random_bool(faults.dup) {
            injected.duplicated = 1;
            let copy = Datagram {
                overtaken: false,
                ..datagram.clone()
            };
            self.held.push_back((release, datagram));
            self.held.push_back((release, copy));
        } else {
            self.held.push_back((release, datagram));
        }
        lock(&self.stats).injected.add(&injected);
    }
}

impl Proxy {
    /// Starts relaying datagrams between the firmware at `firmware` and the runtime at
    /// `runtime`, through two sockets of its own on the firmware's interface (give each
    /// process its end of [`UdpEnds`] as its peer).
    pub fn start_udp(
        firmware: SocketAddr,
        runtime: SocketAddr,
        faults: FaultRates,
        seed: u64,
        epoch: Instant,
        rt_priority: Option<i32>,
    ) -> io::Result<(Proxy, UdpEnds)> {
        let bind = || -> io::Result<UdpSocket> {
            let socket = UdpSocket::bind(SocketAddr::new(firmware.ip(), 0))?;
            socket.set_nonblocking(true)?;
            Ok(socket)
        };
        let (facing_firmware, facing_runtime) = (bind()?, bind()?);
        let ends = UdpEnds {
            for_firmware: facing_firmware.local_addr()?,
            for_runtime: facing_runtime.local_addr()?,
        };
        let connected = Arc::new(AtomicBool::new(false));
        let mut proxy = Proxy { links: Vec::new() };
        for (direction, src, sender, dst, receiver) in [
            (
                Direction::FirmwareToRuntime,
                &facing_firmware,
                firmware,
                &facing_runtime,
                runtime,
            ),
            (
                Direction::RuntimeToFirmware,
                &facing_runtime,
                runtime,
                &facing_firmware,
                firmware,
            ),
        ] {
            let rng = direction.fault_rng(seed);
            let (src, dst) = (src.try_clone()?, dst.try_clone()?);
            let runtime_connected = connected.clone();
            proxy.spawn(direction, rt_priority, move |stats| DatagramRelay {
                direction,
                src,
                sender,
                dst,
                receiver,
                rng,
                faults,
                epoch,
                stats,
                runtime_connected,
                live: false,
                held: VecDeque::new(),
                last_release: epoch,
                waiting: VecDeque::new(),
                outbox: VecDeque::new(),
                mirror: FrameDecoder::new(),
            })?;
        }
        Ok((proxy, ends))
    }
}

/// Datagrams the kernel dropped from the receive queue of the UDP socket bound to `addr`
/// (the `drops` column of `/proc/net/udp` or `udp6`); `None` when no such socket is open.
pub fn receive_drops(addr: SocketAddr) -> io::Result<Option<u64>> {
    let table = match addr.ip() {
        IpAddr::V4(_) => "/proc/net/udp",
        IpAddr::V6(_) => "/proc/net/udp6",
    };
    let text = std::fs::read_to_string(table)?;
    Ok(text
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local = parse_proc_address(fields.get(1)?)?;
            let drops = fields.last()?.parse::<u64>().ok()?;
            Some((local, drops))
        })
        .find(|&(local, _)| local == addr)
        .map(|(_, drops)| drops))
}

/// `0100007F:1F90` (the kernel's words printed in the host's byte order) as an address.
fn parse_proc_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(8 * i..8 * i + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut octets = [0u8; 16];
            for i in 0..4 {
                octets[4 * i..4 * i + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(octets))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_table_names_a_bound_socket_and_its_drops() {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = socket.local_addr().unwrap();
        assert_eq!(receive_drops(addr).unwrap(), Some(0));
        drop(socket);
        assert_eq!(receive_drops(addr).unwrap(), None);
    }

    #[test]
    fn a_full_receive_queue_shows_as_drops() {
        let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let addr = receiver.local_addr().unwrap();
        // Far more than a default receive queue holds; nobody reads.
        for _ in 0..20_000 {
            sender.send_to(&[7u8; 64], addr).unwrap();
        }
        assert!(receive_drops(addr).unwrap().unwrap() > 0);
    }
}
