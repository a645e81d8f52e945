//! The runtime's end of the firmware link: a serial port or pty (COBS frames), or a UDP socket
//! (one message per datagram, from the firmware's address only). Both decode through the same
//! [`FrameDecoder`], so counters and sequence checks do not depend on the link.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

use dreamer_wire::{
    FrameDecoder, MAX_FRAME, MAX_RAW, Message, encode_datagram, encode_frame, same_peer,
};
use serialport::SerialPort;

use super::ServeError;

/// How long one receive waits for the first bytes before the session loop goes round
/// (without busy polling).
const RECEIVE_WAIT: Duration = Duration::from_millis(20);

/// Where the firmware is.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkSpec {
    /// A serial device or pty path; `baud` is set on a real serial port (ptys ignore it).
    Serial { path: PathBuf, baud: u32 },
    /// A UDP socket bound to `bind`, talking to the firmware at `peer`.
    Udp { bind: SocketAddr, peer: SocketAddr },
}

impl fmt::Display for LinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LinkSpec::Serial { path, .. } => write!(f, "{}", path.display()),
            LinkSpec::Udp { bind, peer } => write!(f, "udp {bind} (peer {peer})"),
        }
    }
}

/// An open link.
pub(super) enum ServeLink {
    Serial {
        path: PathBuf,
        port: serialport::TTYPort,
    },
    Udp {
        socket: UdpSocket,
        peer: SocketAddr,
        /// How long a receive waits for the first datagram.
        wait: Duration,
    },
}

impl ServeLink {
    /// Opens `spec`; with `busy_poll` a receive never sleeps: it takes what is waiting and
    /// returns, so the session loop spins on the link.
    pub(super) fn open(spec: &LinkSpec, busy_poll: bool) -> Result<ServeLink, ServeError> {
        let wait = if busy_poll {
            Duration::ZERO
        } else {
            RECEIVE_WAIT
        };
        match spec {
            LinkSpec::Serial { path, baud } => {
                let port = serialport::new(path.to_string_lossy(), *baud)
                    .timeout(wait)
                    .open_native()
                    .map_err(|source| ServeError::Open {
                        path: path.clone(),
                        source,
                    })?;
                Ok(ServeLink::Serial {
                    path: path.clone(),
                    port,
                })
            }
            LinkSpec::Udp { bind, peer } => {
                let bind_err = |source| ServeError::Bind {
                    addr: *bind,
                    source,
                };
                let socket = UdpSocket::bind(bind).map_err(bind_err)?;
                socket.set_nonblocking(true).map_err(bind_err)?;
                Ok(ServeLink::Udp {
                    socket,
                    peer: *peer,
                    wait,
                })
            }
        }
    }

    fn error(&self, source: io::Error) -> ServeError {
        match self {
            ServeLink::Serial { path, .. } if is_hang_up(&source) => ServeError::HungUp {
                path: path.clone(),
                source,
            },
            ServeLink::Serial { path, .. } => ServeError::Io {
                path: path.clone(),
                source,
            },
            ServeLink::Udp { peer, .. } => ServeError::Udp {
                peer: *peer,
                source,
            },
        }
    }

    pub(super) fn send(&mut self, message: &Message) -> Result<(), ServeError> {
        let result = match self {
            ServeLink::Serial { port, .. } => {
                let mut buf = [0u8; MAX_FRAME];
                port.write_all(encode_frame(message, &mut buf))
            }
            ServeLink::Udp { socket, peer, .. } => {
                let mut buf = [0u8; MAX_RAW];
                match socket.send_to(encode_datagram(message, &mut buf), *peer) {
                    // A full send buffer drops the datagram, as the network would.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                    other => other.map(drop),
                }
            }
        };
        result.map_err(|e| self.error(e))
    }

    /// Waits up to [`RECEIVE_WAIT`] (not at all when busy polling) for input, then takes
    /// everything waiting; each valid
    /// message goes to `out`, every frame is counted by `decoder`. Returns whether anything
    /// arrived.
    pub(super) fn receive(
        &mut self,
        decoder: &mut FrameDecoder,
        out: &mut Vec<Message>,
    ) -> Result<bool, ServeError> {
        let result = match self {
            ServeLink::Serial { port, .. } => receive_stream(port, decoder, out),
            ServeLink::Udp { socket, peer, wait } => {
                receive_datagrams(socket, *peer, *wait, decoder, out)
            }
        };
        result.map_err(|e| self.error(e))
    }
}

fn receive_stream(
    port: &mut serialport::TTYPort,
    decoder: &mut FrameDecoder,
    out: &mut Vec<Message>,
) -> io::Result<bool> {
    let mut buf = [0u8; 4096];
    let mut read_any = false;
    loop {
        let n = match port.read(&mut buf) {
            Ok(n) => n,
            Err(e) if is_quiet(&e) => 0,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(read_any);
        }
        read_any = true;
        out.extend(
            buf[..n]
                .iter()
                .filter_map(|&byte| decoder.push(byte)?.ok().map(|f| f.message)),
        );
        if port.bytes_to_read().unwrap_or(0) == 0 {
            return Ok(true);
        }
    }
}

fn receive_datagrams(
    socket: &UdpSocket,
    peer: SocketAddr,
    wait: Duration,
    decoder: &mut FrameDecoder,
    out: &mut Vec<Message>,
) -> io::Result<bool> {
    if !readable(socket, wait)? {
        return Ok(false);
    }
    // One byte more than the largest frame, so an oversized datagram shows.
    let mut buf = [0u8; MAX_RAW + 1];
    let mut read_any = false;
    loop {
        match socket.recv_from(&mut buf) {
            Ok((_, from)) if !same_peer(from, peer) => decoder.count_foreign(),
            Ok((n, _)) => {
                read_any = true;
                if let Ok(frame) = decoder.push_datagram(&buf[..n]) {
                    out.push(frame.message);
                }
            }
            Err(e) if is_quiet(&e) => return Ok(read_any),
            // A datagram sent earlier found no listener (ICMP port unreachable): the
            // firmware is not up (yet); not an error of this link.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
            Err(e) => return Err(e),
        }
    }
}

/// Nothing to read now.
fn is_quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// Whether a port error means the other end went away (a pty whose master closed reads
/// and writes EIO, and polls as hung up; a USB serial device that was unplugged likewise).
fn is_hang_up(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe || e.raw_os_error() == Some(libc::EIO)
}

/// Waits until `socket` has a datagram or `wait` passed.
fn readable(socket: &UdpSocket, wait: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: socket.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let timeout_ms = wait.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd for the duration of the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
    match ready {
        -1 => {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(false)
            } else {
                Err(e)
            }
        }
        0 => Ok(false),
        _ => Ok(true),
    }
}
