//! The host's network stack behind `embedded-nal`'s UDP traits, so the firmware core's
//! [`dreamer_firmware::DatagramLink`] runs on a PC as it would on a microcontroller's stack.
//!
//! Written here rather than taken from `std-embedded-nal` because the simulation needs two
//! things that stack does not give: binding one chosen interface (loopback in tests, the
//! robot's network in use) instead of every interface, and the descriptor and port of the
//! bound socket (to wake on input and to let the OS pick a free port).

use std::io;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

use embedded_nal::{UdpClientStack, UdpFullStack, nb};

/// `std::net` sockets on the interface `ip`, non-blocking.
#[derive(Debug)]
pub struct HostUdp {
    ip: IpAddr,
    /// Descriptor and address of the socket bound last.
    bound: Option<(RawFd, SocketAddr)>,
}

/// A socket of [`HostUdp`]: none until it is bound or connected.
#[derive(Debug, Default)]
pub struct HostUdpSocket(Option<UdpSocket>);

impl HostUdp {
    pub fn new(ip: IpAddr) -> Self {
        Self { ip, bound: None }
    }

    /// Descriptor and local address of the socket bound last (port 0 resolved).
    pub fn bound(&self) -> Option<(RawFd, SocketAddr)> {
        self.bound
    }

    fn open(&mut self, port: u16) -> io::Result<UdpSocket> {
        let socket = UdpSocket::bind(SocketAddr::new(self.ip, port))?;
        socket.set_nonblocking(true)?;
        self.bound = Some((socket.as_raw_fd(), socket.local_addr()?));
        Ok(socket)
    }
}

fn not_open() -> nb::Error<io::Error> {
    nb::Error::Other(io::Error::new(
        io::ErrorKind::NotConnected,
        "the socket is neither bound nor connected",
    ))
}

fn to_nb(error: io::Error) -> nb::Error<io::Error> {
    match error.kind() {
        io::ErrorKind::WouldBlock => nb::Error::WouldBlock,
        // A datagram sent earlier found no listener (ICMP port unreachable): nothing to
        // read now, and the peer may come up later.
        io::ErrorKind::ConnectionRefused => nb::Error::WouldBlock,
        _ => nb::Error::Other(error),
    }
}

impl UdpClientStack for HostUdp {
    type UdpSocket = HostUdpSocket;
    type Error = io::Error;

    fn socket(&mut self) -> io::Result<HostUdpSocket> {
        Ok(HostUdpSocket(None))
    }

    fn connect(&mut self, socket: &mut HostUdpSocket, remote: SocketAddr) -> io::Result<()> {
        let open = self.open(0)?;
        open.connect(remote)?;
        socket.0 = Some(open);
        Ok(())
    }

    fn send(&mut self, socket: &mut HostUdpSocket, buffer: &[u8]) -> nb::Result<(), io::Error> {
        let open = socket.0.as_ref().ok_or_else(not_open)?;
        open.send(buffer).map(drop).map_err(to_nb)
    }

    fn receive(
        &mut self,
        socket: &mut HostUdpSocket,
        buffer: &mut [u8],
    ) -> nb::Result<(usize, SocketAddr), io::Error> {
        let open = socket.0.as_ref().ok_or_else(not_open)?;
        open.recv_from(buffer).map_err(to_nb)
    }

    fn close(&mut self, socket: HostUdpSocket) -> io::Result<()> {
        drop(socket);
        Ok(())
    }
}

impl UdpFullStack for HostUdp {
    fn bind(&mut self, socket: &mut HostUdpSocket, local_port: u16) -> io::Result<()> {
        socket.0 = Some(self.open(local_port)?);
        Ok(())
    }

    fn send_to(
        &mut self,
        socket: &mut HostUdpSocket,
        remote: SocketAddr,
        buffer: &[u8],
    ) -> nb::Result<(), io::Error> {
        let open = socket.0.as_ref().ok_or_else(not_open)?;
        open.send_to(buffer, remote).map(drop).map_err(to_nb)
    }
}
