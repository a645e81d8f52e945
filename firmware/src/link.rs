//! The firmware's link to the runtime: a byte stream (a UART, COBS-framed) or datagrams (UDP,
//! one message per datagram). Both carry the same messages with the same CRC, sequence
//! numbers and counters ([`FrameDecoder`]); only the framing differs.

use core::net::SocketAddr;

use dreamer_wire::{
    Frame, FrameDecoder, LinkCounters, MAX_FRAME, MAX_RAW, Message, encode_datagram, encode_frame,
    same_peer,
};
use embedded_io::{Read, ReadReady, Write};
use embedded_nal::{UdpFullStack, nb};

/// The link failed (the port or the network stack returned an error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkFailed;

/// How the firmware exchanges messages with the runtime.
pub trait Link {
    /// Sends one message.
    fn send(&mut self, message: &Message) -> Result<(), LinkFailed>;
    /// The next valid message that has arrived, or None when nothing more is pending.
    /// Corrupt frames are counted and skipped.
    fn receive(&mut self) -> Result<Option<Frame>, LinkFailed>;
    /// Outcomes of every frame received.
    fn counters(&self) -> &LinkCounters;
}

/// Messages over an `embedded-io` byte stream (a UART), COBS-framed with `0x00` delimiters.
pub struct StreamLink<S> {
    port: S,
    decoder: FrameDecoder,
    /// Bytes read from the port and not yet decoded (`buf[next..len]`).
    buf: [u8; 64],
    next: usize,
    len: usize,
}

impl<S: Read + ReadReady + Write> StreamLink<S> {
    pub fn new(port: S) -> Self {
        Self {
            port,
            decoder: FrameDecoder::new(),
            buf: [0; 64],
            next: 0,
            len: 0,
        }
    }

    /// Hands the port back.
    pub fn into_inner(self) -> S {
        self.port
    }
}

impl<S: Read + ReadReady + Write> Link for StreamLink<S> {
    fn send(&mut self, message: &Message) -> Result<(), LinkFailed> {
        let mut buf = [0u8; MAX_FRAME];
        let frame = encode_frame(message, &mut buf);
        self.port
            .write_all(frame)
            .and_then(|()| self.port.flush())
            .map_err(|_| LinkFailed)
    }

    fn receive(&mut self) -> Result<Option<Frame>, LinkFailed> {
        loop {
            while self.next < self.len {
                let byte = self.buf[self.next];
                self.next += 1;
                if let Some(Ok(frame)) = self.decoder.push(byte) {
                    return Ok(Some(frame));
                }
            }
            // Only read what is waiting, so a poll never blocks.
            if !self.port.read_ready().map_err(|_| LinkFailed)? {
                return Ok(None);
            }
            let n = self.port.read(&mut self.buf).map_err(|_| LinkFailed)?;
            if n == 0 {
                return Ok(None);
            }
            (self.next, self.len) = (0, n);
        }
    }

    fn counters(&self) -> &LinkCounters {
        self.decoder.counters()
    }
}

/// Messages as UDP datagrams over an `embedded-nal` stack: bound to a local port, sending to
/// one peer (the runtime), and taking datagrams from that peer only (others are counted in
/// [`LinkCounters::foreign`] and dropped).
pub struct DatagramLink<N: UdpFullStack> {
    stack: N,
    socket: N::UdpSocket,
    peer: SocketAddr,
    decoder: FrameDecoder,
}

impl<N: UdpFullStack> DatagramLink<N> {
    /// A socket of `stack` bound to `local_port`, talking to `peer`.
    pub fn bind(mut stack: N, local_port: u16, peer: SocketAddr) -> Result<Self, N::Error> {
        let mut socket = stack.socket()?;
        stack.bind(&mut socket, local_port)?;
        Ok(Self {
            stack,
            socket,
            peer,
            decoder: FrameDecoder::new(),
        })
    }

    /// The network stack (e.g. to ask it about the bound socket).
    pub fn stack(&self) -> &N {
        &self.stack
    }

    /// Closes the socket and hands the stack back.
    pub fn close(mut self) -> N {
        // Closing can only fail on a stack already in trouble; the stack is returned anyway.
        let _ = self.stack.close(self.socket);
        self.stack
    }
}

impl<N: UdpFullStack> Link for DatagramLink<N> {
    fn send(&mut self, message: &Message) -> Result<(), LinkFailed> {
        let mut buf = [0u8; MAX_RAW];
        let datagram = encode_datagram(message, &mut buf);
        // A full send buffer drops the datagram, as the network would: the peer's sequence
        // check sees the gap.
        match self.stack.send_to(&mut self.socket, self.peer, datagram) {
            Ok(()) | Err(nb::Error::WouldBlock) => Ok(()),
            Err(nb::Error::Other(_)) => Err(LinkFailed),
        }
    }

    fn receive(&mut self) -> Result<Option<Frame>, LinkFailed> {
        // One byte more than the largest frame, so an oversized datagram is seen as such.
        let mut buf = [0u8; MAX_RAW + 1];
        loop {
            match self.stack.receive(&mut self.socket, &mut buf) {
                Ok((_, from)) if !same_peer(from, self.peer) => self.decoder.count_foreign(),
                Ok((n, _)) => {
                    if let Ok(frame) = self.decoder.push_datagram(&buf[..n.min(buf.len())]) {
                        return Ok(Some(frame));
                    }
                }
                Err(nb::Error::WouldBlock) => return Ok(None),
                Err(nb::Error::Other(_)) => return Err(LinkFailed),
            }
        }
    }

    fn counters(&self) -> &LinkCounters {
        self.decoder.counters()
    }
}
