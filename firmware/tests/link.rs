//! The firmware's links on their own: a datagram link over a scripted `embedded-nal` stack
//! (peer filter, oversized and corrupt datagrams, a full send buffer, a failing stack) and a
//! stream link handing out several frames from one read.

use std::collections::VecDeque;
use std::net::SocketAddr;

use dreamer_firmware::{DatagramLink, Link, LinkFailed, StreamLink};
use dreamer_wire::{Action, MAX_RAW, Message, encode_datagram, encode_frame};
use embedded_nal::{UdpClientStack, UdpFullStack, nb};

/// A stack whose socket receives the scripted datagrams and records what is sent.
#[derive(Default)]
struct Scripted {
    incoming: VecDeque<(Vec<u8>, SocketAddr)>,
    sent: Vec<(Vec<u8>, SocketAddr)>,
    /// Outcomes of the next sends, in order (then: success).
    send_errors: VecDeque<nb::Error<()>>,
    bound: Option<u16>,
}

impl UdpClientStack for Scripted {
    type UdpSocket = ();
    type Error = ();
    fn socket(&mut self) -> Result<(), ()> {
        Ok(())
    }
    fn connect(&mut self, _: &mut (), _: SocketAddr) -> Result<(), ()> {
        Err(())
    }
    fn send(&mut self, _: &mut (), _: &[u8]) -> nb::Result<(), ()> {
        Err(nb::Error::Other(()))
    }
    fn receive(&mut self, _: &mut (), buffer: &mut [u8]) -> nb::Result<(usize, SocketAddr), ()> {
        let (datagram, from) = self.incoming.pop_front().ok_or(nb::Error::WouldBlock)?;
        // As a real stack: a datagram longer than the buffer is cut to it.
        let n = datagram.len().min(buffer.len());
        buffer[..n].copy_from_slice(&datagram[..n]);
        Ok((n, from))
    }
    fn close(&mut self, _: ()) -> Result<(), ()> {
        Ok(())
    }
}

impl UdpFullStack for Scripted {
    fn bind(&mut self, _: &mut (), port: u16) -> Result<(), ()> {
        self.bound = Some(port);
        Ok(())
    }
    fn send_to(&mut self, _: &mut (), remote: SocketAddr, buffer: &[u8]) -> nb::Result<(), ()> {
        if let Some(error) = self.send_errors.pop_front() {
            return Err(error);
        }
        self.sent.push((buffer.to_vec(), remote));
        Ok(())
    }
}

fn action(seq: u32) -> Message {
    Message::Action(Action {
        seq,
        values: heapless::Vec::from_slice(&[0.25]).unwrap(),
    })
}

fn datagram(message: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_RAW];
    encode_datagram(message, &mut buf).to_vec()
}

#[test]
fn a_datagram_link_takes_its_peer_only_and_counts_every_bad_datagram() {
    let peer: SocketAddr = "10.0.0.2:7000".parse().unwrap();
    // An IPv4 peer seen through a dual-stack socket is still the peer.
    let mapped: SocketAddr = "[::ffff:10.0.0.2]:7000".parse().unwrap();
    let stranger: SocketAddr = "10.0.0.3:7000".parse().unwrap();
    let mut corrupt = datagram(&action(2));
    corrupt[1] ^= 1;
    let mut stack = Scripted::default();
    stack.incoming.extend([
        (datagram(&action(1)), stranger),
        (corrupt, peer),
        (vec![7u8; MAX_RAW + 40], peer),
        (datagram(&action(1)), mapped),
        (datagram(&action(3)), peer),
    ]);
    let mut link = DatagramLink::bind(stack, 9000, peer).unwrap();
    assert_eq!(link.stack().bound, Some(9000));
    let first = link.receive().unwrap().unwrap();
    assert_eq!(first.message, action(1));
    let second = link.receive().unwrap().unwrap();
    assert_eq!(second.message, action(3));
    assert!(second.gap.is_some(), "2 was lost");
    assert_eq!(link.receive(), Ok(None));
    let counters = *link.counters();
    assert_eq!(
        (
            counters.frames_ok,
            counters.foreign,
            counters.bad_crc,
            counters.wrong_length,
            counters.sequence_gaps
        ),
        (2, 1, 1, 1, 1)
    );

    link.send(&action(4)).unwrap();
    assert_eq!(link.stack().sent, [(datagram(&action(4)), peer)]);
}

#[test]
fn a_full_send_buffer_drops_the_datagram_and_a_failing_stack_is_an_error() {
    let peer: SocketAddr = "10.0.0.2:7000".parse().unwrap();
    let stack = Scripted {
        send_errors: VecDeque::from([nb::Error::WouldBlock, nb::Error::Other(())]),
        ..Scripted::default()
    };
    let mut link = DatagramLink::bind(stack, 9000, peer).unwrap();
    assert_eq!(link.send(&action(1)), Ok(()));
    assert!(
        link.stack().sent.is_empty(),
        "dropped, as the network would"
    );
    assert_eq!(link.send(&action(2)), Err(LinkFailed));
    assert_eq!(link.send(&action(3)), Ok(()));
    assert_eq!(link.close().sent, [(datagram(&action(3)), peer)]);
}

/// A serial port that hands out everything written to it in one read.
#[derive(Default)]
struct Loopback(VecDeque<u8>);

impl embedded_io::ErrorType for Loopback {
    type Error = core::convert::Infallible;
}
impl embedded_io::ReadReady for Loopback {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        Ok(!self.0.is_empty())
    }
}
impl embedded_io::Read for Loopback {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let n = buf.len().min(self.0.len());
        for (slot, byte) in buf.iter_mut().zip(self.0.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}
impl embedded_io::Write for Loopback {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.extend(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[test]
fn a_stream_link_hands_out_every_frame_of_one_read() {
    let mut port = Loopback::default();
    let mut buf = [0u8; dreamer_wire::MAX_FRAME];
    for seq in 1..=3 {
        port.0.extend(encode_frame(&action(seq), &mut buf));
    }
    let mut link = StreamLink::new(port);
    for seq in 1..=3 {
        assert_eq!(link.receive().unwrap().unwrap().message, action(seq));
    }
    assert_eq!(link.receive(), Ok(None));
    link.send(&action(9)).unwrap();
    assert_eq!(link.receive().unwrap().unwrap().message, action(9));
    assert_eq!(link.counters().frames_ok, 4);
}
