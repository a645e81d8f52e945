//! The platform's floor for the loop's latency: a short message echoed between two threads at
//! the control rate over the loop's own kind of link, a pty pair or a UDP loopback socket pair,
//! with no protocol and no inference. Every round trip of the real loop crosses the same kernel
//! path twice (pty data is handed over by kernel workers that run at normal priority; UDP
//! loopback goes through the network stack's softirq), so the share of echoes above the
//! deadline is a lower bound for the loop's deadline misses on this machine.

use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::fd::wait_ready;
use crate::pty::Pty;
use crate::sched::{pin_to_cpu, set_fifo_priority};

/// Bytes per echo: about one observation frame.
const MESSAGE_LEN: usize = 32;
/// An echo not back within this long counts as lost.
const LOST_AFTER: Duration = Duration::from_millis(100);
/// How long the echo thread waits before looking at its stop flag again.
const ECHO_POLL: Duration = Duration::from_millis(20);

/// How the echoing end (the runtime's side) waits for input: sleeping in the kernel until it
/// arrives, or spinning on the descriptor as `dreamer-rt serve --busy-poll` does. The pinging
/// end (the firmware's side) sleeps between echoes either way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Waiting {
    #[default]
    Sleep,
    Spin,
}

impl Waiting {
    /// The poll timeout for a wait of up to `wait`.
    fn timeout(self, wait: Duration) -> Duration {
        match self {
            Waiting::Sleep => wait,
            Waiting::Spin => Duration::ZERO,
        }
    }
}

/// Round trips of the bare echo, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct EchoFloor {
    /// `pty` or `udp`.
    pub link: &'static str,
    pub rate_hz: f64,
    pub echoes: u64,
    pub lost: u64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub deadline_us: u64,
    /// How the echoing end waited for input.
    #[serde(default)]
    pub waiting: Waiting,
    /// Echoes slower than the deadline (lost ones included).
    pub over_deadline: u64,
    pub over_deadline_ratio: f64,
}

/// The pinging end of an echo link.
trait PingEnd: Send + 'static {
    fn send(&mut self, message: &[u8]) -> io::Result<()>;
    /// Reads what arrives within `timeout` (zero: only what is waiting); 0 when nothing did.
    fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
}

impl PingEnd for Pty {
    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        self.master.write_all(message)
    }

    fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        if !wait_ready(self.master.as_raw_fd(), false, timeout)?.0 {
            return Ok(0);
        }
        self.master.read(buf)
    }
}

/// A UDP socket connected to the echoing one.
impl PingEnd for UdpSocket {
    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        UdpSocket::send(self, message).map(drop)
    }

    fn receive(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        if !wait_ready(self.as_raw_fd(), false, timeout)?.0 {
            return Ok(0);
        }
        match self.recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(0),
            other => other,
        }
    }
}

/// Echoes `MESSAGE_LEN` bytes over a pty pair every `1 / rate_hz` seconds for `duration`,
/// both threads under SCHED_FIFO at `rt_priority` when given and permitted.
pub fn pty_echo(timing: EchoTiming) -> io::Result<EchoFloor> {
    check_rate(timing.rate_hz)?;
    let waiting = timing.waiting;
    let pty = Pty::open()?;
    let mut far_end = File::options()
        .read(true)
        .write(true)
        .open(&pty.slave_path)?;
    let echo = move |stop: &AtomicBool| -> io::Result<()> {
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            if wait_ready(far_end.as_raw_fd(), false, waiting.timeout(ECHO_POLL))?.0 {
                let n = match far_end.read(&mut buf) {
                    Ok(n) => n,
                    // The pinging end closed the master: the measurement is over.
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => return Ok(()),
                    Err(e) => return Err(e),
                };
                far_end.write_all(&buf[..n])?;
            }
        }
        Ok(())
    };
    measure("pty", pty, echo, timing)
}

/// The same over a pair of UDP sockets on loopback, one datagram each way per echo.
pub fn udp_echo(timing: EchoTiming) -> io::Result<EchoFloor> {
    check_rate(timing.rate_hz)?;
    let waiting = timing.waiting;
    let echoing = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let pinging = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    pinging.connect(echoing.local_addr()?)?;
    pinging.set_nonblocking(true)?;
    echoing.set_nonblocking(true)?;
    let echo = move |stop: &AtomicBool| -> io::Result<()> {
        let mut buf = [0u8; 256];
        while !stop.load(Ordering::Relaxed) {
            if wait_ready(echoing.as_raw_fd(), false, waiting.timeout(ECHO_POLL))?.0 {
                match echoing.recv_from(&mut buf) {
                    Ok((n, from)) => echoing.send_to(&buf[..n], from).map(drop)?,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    };
    measure("udp", pinging, echo, timing)
}

fn check_rate(rate_hz: f64) -> io::Result<()> {
    if rate_hz.is_finite() && rate_hz > 0.0 {
        return Ok(());
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("echo rate must be positive, got {rate_hz}"),
    ))
}

/// When and how the echoes go.
#[derive(Debug, Clone, Copy)]
pub struct EchoTiming {
    /// Echoes per second.
    pub rate_hz: f64,
    /// How long to echo.
    pub duration: Duration,
    /// An echo slower than this counts against the floor.
    pub deadline: Duration,
    /// SCHED_FIFO priority for both threads, when given and permitted.
    pub rt_priority: Option<i32>,
    pub waiting: Waiting,
    /// The CPU of the echoing thread (the runtime's side); the pinging thread stays where
    /// the caller runs.
    pub echo_cpu: Option<usize>,
}

/// Runs `echo` in one thread until the pings over `end` from another are done.
fn measure(
    link: &'static str,
    end: impl PingEnd,
    echo: impl FnOnce(&AtomicBool) -> io::Result<()> + Send + 'static,
    timing: EchoTiming,
) -> io::Result<EchoFloor> {
    let EchoTiming {
        rate_hz,
        deadline,
        rt_priority,
        waiting,
        echo_cpu,
        ..
    } = timing;
    let stop = Arc::new(AtomicBool::new(false));
    let echo_stop = Arc::clone(&stop);
    let echo = std::thread::Builder::new()
        .name(format!("{link} echo"))
        .spawn(move || {
            if let Some(cpu) = echo_cpu {
                pin_to_cpu(cpu)?;
            }
            set_priority(rt_priority, link, "echo");
            echo(&echo_stop)
        })?;
    let pinger = std::thread::Builder::new()
        .name(format!("{link} ping"))
        .spawn(move || {
            set_priority(rt_priority, link, "ping");
            ping(end, timing)
        })?;
    let round_trips = pinger
        .join()
        .map_err(|_| io::Error::other("ping thread panicked"))?;
    stop.store(true, Ordering::Relaxed);
    echo.join()
        .map_err(|_| io::Error::other("echo thread panicked"))??;
    let (mut round_trips, lost) = round_trips?;
    round_trips.sort_unstable();
    let deadline_us = deadline.as_micros() as u64;
    let over = round_trips.iter().filter(|&&us| us > deadline_us).count() as u64 + lost;
    let echoes = round_trips.len() as u64 + lost;
    let pct = |p: f64| -> u64 {
        let last = round_trips.len().saturating_sub(1);
        round_trips
            .get((p * last as f64).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    Ok(EchoFloor {
        link,
        rate_hz,
        echoes,
        lost,
        p50_us: pct(0.5),
        p90_us: pct(0.9),
        p99_us: pct(0.99),
        p999_us: pct(0.999),
        max_us: round_trips.last().copied().unwrap_or(0),
        deadline_us,
        waiting,
        over_deadline: over,
        over_deadline_ratio: over as f64 / echoes.max(1) as f64,
    })
}

/// The timing side: absolute send times (no drift), blocking until each echo is complete.
/// Returns (round trips in µs, lost echoes).
fn ping(mut end: impl PingEnd, timing: EchoTiming) -> io::Result<(Vec<u64>, u64)> {
    let period = Duration::from_secs_f64(1.0 / timing.rate_hz);
    let count = (timing.duration.as_secs_f64() * timing.rate_hz).ceil() as usize;
    let mut round_trips = Vec::with_capacity(count);
    let mut lost = 0;
    let message = [0x55u8; MESSAGE_LEN];
    let mut buf = [0u8; 256];
    let start = Instant::now() + period;
    for k in 0..count {
        let due = start + period * k as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // Bytes of an echo that came back after it was counted lost.
        while end.receive(&mut buf, Duration::ZERO)? > 0 {}
        let sent = Instant::now();
        end.send(&message)?;
        let mut got = 0;
        while got < MESSAGE_LEN {
            let n = end.receive(&mut buf, LOST_AFTER)?;
            if n == 0 {
                break;
            }
            got += n;
        }
        if got >= MESSAGE_LEN {
            round_trips.push(sent.elapsed().as_micros() as u64);
        } else {
            lost += 1;
        }
    }
    Ok((round_trips, lost))
}

fn set_priority(rt_priority: Option<i32>, link: &str, thread: &str) {
    if let Some(priority) = rt_priority
        && let Err(e) = set_fifo_priority(priority)
    {
        dreamer_cli::errln!(
            "dreamer-hil: note: {link} {thread} thread SCHED_FIFO {priority} not set: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoes_come_back_and_are_counted() {
        for waiting in [Waiting::Sleep, Waiting::Spin] {
            for echo in [pty_echo, udp_echo] {
                let report = echo(EchoTiming {
                    rate_hz: 500.0,
                    duration: Duration::from_millis(200),
                    deadline: Duration::from_millis(1),
                    rt_priority: None,
                    waiting,
                    echo_cpu: None,
                })
                .unwrap();
                assert_eq!(report.echoes, 100, "{report:?}");
                assert_eq!(report.lost, 0, "{report:?}");
                assert_eq!(report.waiting, waiting);
                assert!(report.p50_us > 0 && report.p50_us <= report.max_us);
                assert!(report.over_deadline <= report.echoes);
            }
        }
    }

    #[test]
    fn a_bad_rate_is_an_error() {
        for echo in [pty_echo, udp_echo] {
            let error = echo(EchoTiming {
                rate_hz: 0.0,
                duration: Duration::from_millis(10),
                deadline: Duration::from_millis(1),
                rt_priority: None,
                waiting: Waiting::Sleep,
                echo_cpu: None,
            })
            .unwrap_err();
            assert!(error.to_string().contains("rate"), "{error}");
        }
    }
}
