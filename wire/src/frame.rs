//! Frame encoding/decoding and the incremental, allocation-free stream decoder.

use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

use crate::cobs::{CobsError, cobs_decode, cobs_encode, cobs_max_encoded_len};
use crate::message::{MESSAGE_KINDS, Message};

/// Largest postcard encoding of a [`Message`].
pub const MAX_PAYLOAD: usize = Message::POSTCARD_MAX_SIZE;
/// Largest frame before COBS: payload plus the 4-byte CRC32.
pub const MAX_RAW: usize = MAX_PAYLOAD + CRC_LEN;
/// Largest frame on the wire: COBS-encoded raw frame plus the `0x00` delimiter.
pub const MAX_FRAME: usize = cobs_max_encoded_len(MAX_RAW) + 1;

const CRC_LEN: usize = 4;
/// Smallest raw frame: a one-byte enum tag and the CRC.
const MIN_RAW: usize = 1 + CRC_LEN;
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// Why a frame was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The COBS block is invalid.
    Cobs(CobsError),
    /// The CRC32 over the payload does not match the one in the frame.
    Crc { expected: u32, computed: u32 },
    /// Shorter than a tag plus the CRC (raw length given).
    TooShort { len: usize },
    /// Longer than the largest possible frame (bytes seen before giving up).
    TooLong { len: usize },
    /// The message decoded but bytes were left over before the CRC.
    TrailingBytes { extra: usize },
    /// The payload ended inside the message.
    Truncated,
    /// Enum tag of no known message.
    UnknownMessage { tag: u8 },
    /// The message tag is known but a field is invalid (bad varint, bool, UTF-8, length).
    Malformed,
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::Cobs(CobsError::ZeroCode { at }) => {
                write!(f, "bad COBS: zero byte at {at}")
            }
            FrameError::Cobs(CobsError::Truncated) => {
                write!(f, "bad COBS: the last code byte runs past the frame end")
            }
            FrameError::Cobs(CobsError::OutputFull) => {
                write!(f, "bad COBS: decodes to more than {MAX_RAW} bytes")
            }
            FrameError::Crc { expected, computed } => write!(
                f,
                "bad CRC: frame says {expected:#010x}, payload gives {computed:#010x}"
            ),
            FrameError::TooShort { len } => {
                write!(
                    f,
                    "wrong length: {len} bytes, a frame has at least {MIN_RAW}"
                )
            }
            FrameError::TooLong { len } => {
                write!(
                    f,
                    "wrong length: over {len} bytes, a frame has at most {MAX_FRAME}"
                )
            }
            FrameError::TrailingBytes { extra } => {
                write!(f, "wrong length: {extra} bytes after the message")
            }
            FrameError::Truncated => write!(f, "wrong length: payload ends inside the message"),
            FrameError::UnknownMessage { tag } => write!(f, "unknown message tag {tag}"),
            FrameError::Malformed => write!(f, "malformed message field"),
        }
    }
}

impl core::error::Error for FrameError {}

/// Encodes `message` as one complete frame, delimiter included, into `out`.
pub fn encode_frame<'a>(message: &Message, out: &'a mut [u8; MAX_FRAME]) -> &'a [u8] {
    let mut raw = [0u8; MAX_RAW];
    let raw = encode_datagram(message, &mut raw);
    let encoded = cobs_encode(raw, &mut out[..MAX_FRAME - 1])
        .expect("MAX_FRAME holds the COBS encoding of MAX_RAW bytes");
    out[encoded] = 0;
    &out[..=encoded]
}

/// Encodes `message` as one datagram: the raw frame, `postcard(message) ++ crc32_le`, without
/// COBS or delimiter (a datagram link keeps message boundaries itself).
pub fn encode_datagram<'a>(message: &Message, out: &'a mut [u8; MAX_RAW]) -> &'a [u8] {
    let payload_len = serialize(message, &mut out[..MAX_PAYLOAD]);
    let crc = CRC32.checksum(&out[..payload_len]);
    out[payload_len..payload_len + CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    &out[..payload_len + CRC_LEN]
}

/// Whether a datagram from `from` comes from `peer`, also when a dual-stack socket reports an
/// IPv4 peer as an IPv4-mapped IPv6 address.
pub fn same_peer(from: core::net::SocketAddr, peer: core::net::SocketAddr) -> bool {
    let canonical =
        |a: core::net::SocketAddr| core::net::SocketAddr::new(a.ip().to_canonical(), a.port());
    canonical(from) == canonical(peer)
}

/// Decodes one datagram (a raw frame, see [`encode_datagram`]).
pub fn decode_datagram(datagram: &[u8]) -> Result<Message, FrameError> {
    if datagram.len() > MAX_RAW {
        return Err(FrameError::TooLong {
            len: datagram.len(),
        });
    }
    decode_raw(datagram)
}

fn serialize<T: Serialize>(value: &T, buf: &mut [u8]) -> usize {
    // MAX_PAYLOAD is the postcard upper bound of every Message, so this cannot run out of room.
    postcard::to_slice(value, buf)
        .expect("MAX_PAYLOAD bounds every message")
        .len()
}

/// Decodes one frame given without its `0x00` delimiter.
pub fn decode_frame(block: &[u8]) -> Result<Message, FrameError> {
    if block.len() > MAX_FRAME - 1 {
        return Err(FrameError::TooLong { len: block.len() });
    }
    let mut raw = [0u8; MAX_RAW];
    let len = cobs_decode(block, &mut raw).map_err(FrameError::Cobs)?;
    decode_raw(&raw[..len])
}

fn decode_raw(raw: &[u8]) -> Result<Message, FrameError> {
    if raw.len() < MIN_RAW {
        return Err(FrameError::TooShort { len: raw.len() });
    }
    let (payload, crc_bytes) = raw.split_at(raw.len() - CRC_LEN);
    let expected = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    let computed = CRC32.checksum(payload);
    if expected != computed {
        return Err(FrameError::Crc { expected, computed });
    }
    // Tags are varints; every known tag fits the first byte, so any tag byte at or above the
    // variant count (including a continuation bit) names no message.
    if payload[0] >= MESSAGE_KINDS {
        return Err(FrameError::UnknownMessage { tag: payload[0] });
    }
    match postcard::take_from_bytes::<Message>(payload) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(FrameError::TrailingBytes { extra: rest.len() }),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(FrameError::Truncated),
        Err(_) => Err(FrameError::Malformed),
    }
}

/// A sequence number other than the one expected: frames were lost (`received` ahead) or
/// repeated/reordered (`received` behind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceGap {
    pub expected: u32,
    pub received: u32,
}

/// Checks that sequence numbers of one message stream increase by exactly one.
#[derive(Debug, Clone, Default)]
pub struct SequenceTracker {
    expected: Option<u32>,
}

impl SequenceTracker {
    /// Records `seq`; returns the gap if it is not the successor of the previous one.
    pub fn check(&mut self, seq: u32) -> Result<(), SequenceGap> {
        let expected = self.expected.replace(seq.wrapping_add(1));
        match expected {
            Some(expected) if expected != seq => Err(SequenceGap {
                expected,
                received: seq,
            }),
            _ => Ok(()),
        }
    }

    /// Forgets the stream (a new session starts anywhere).
    pub fn reset(&mut self) {
        self.expected = None;
    }
}

/// Counts per outcome of every frame a decoder has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkCounters {
    /// Frames that decoded to a message.
    pub frames_ok: u32,
    pub bad_cobs: u32,
    pub bad_crc: u32,
    /// Too short, too long, trailing bytes or a payload that ends inside the message.
    pub wrong_length: u32,
    pub unknown_message: u32,
    pub malformed: u32,
    /// Observation or action sequence numbers that did not follow the previous one.
    pub sequence_gaps: u32,
    /// Datagrams from an address other than the peer, dropped unread (always 0 on a
    /// stream). Not a frame error: nothing of the session's own traffic was lost.
    #[serde(default)]
    pub foreign: u32,
}

impl LinkCounters {
    /// Every rejected frame plus every sequence gap.
    pub fn errors(&self) -> u32 {
        self.bad_cobs
            .saturating_add(self.bad_crc)
            .saturating_add(self.wrong_length)
            .saturating_add(self.unknown_message)
            .saturating_add(self.malformed)
            .saturating_add(self.sequence_gaps)
    }

    fn count(&mut self, error: &FrameError) {
        let counter = match error {
            FrameError::Cobs(_) => &mut self.bad_cobs,
            FrameError::Crc { .. } => &mut self.bad_crc,
            FrameError::TooShort { .. }
            | FrameError::TooLong { .. }
            | FrameError::TrailingBytes { .. }
            | FrameError::Truncated => &mut self.wrong_length,
            FrameError::UnknownMessage { .. } => &mut self.unknown_message,
            FrameError::Malformed => &mut self.malformed,
        };
        *counter = counter.saturating_add(1);
    }
}

/// One decoded message, with the sequence gap it revealed, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    pub message: Message,
    pub gap: Option<SequenceGap>,
}

/// Incremental decoder: push bytes from a stream, get messages or errors out.
///
/// Holds one frame's worth of bytes in a fixed array. A frame longer than [`MAX_FRAME`] is
/// dropped up to the next delimiter and reported once, as [`FrameError::TooLong`]. Empty
/// frames (two delimiters in a row) are ignored: a sender may emit a lone `0x00` to resync.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflowed: bool,
    counters: LinkCounters,
    observations: SequenceTracker,
    actions: SequenceTracker,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            len: 0,
            overflowed: false,
            counters: LinkCounters {
                frames_ok: 0,
                bad_cobs: 0,
                bad_crc: 0,
                wrong_length: 0,
                unknown_message: 0,
                malformed: 0,
                sequence_gaps: 0,
                foreign: 0,
            },
            observations: SequenceTracker { expected: None },
            actions: SequenceTracker { expected: None },
        }
    }

    /// Feeds one byte; returns a result when it completed a frame.
    pub fn push(&mut self, byte: u8) -> Option<Result<Frame, FrameError>> {
        if byte != 0 {
            if self.len < self.buf.len() {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
            return None;
        }
        let len = self.len;
        let overflowed = self.overflowed;
        self.len = 0;
        self.overflowed = false;
        if len == 0 {
            return None;
        }
        let result = if overflowed {
            Err(FrameError::TooLong { len })
        } else {
            decode_frame(&self.buf[..len])
        };
        Some(self.account(result))
    }

    /// Decodes one whole datagram (a raw frame without COBS), with the same counters and
    /// sequence checks as the stream. A receive buffer of more than [`MAX_RAW`] bytes lets a
    /// too-long datagram be told from one that fits.
    pub fn push_datagram(&mut self, datagram: &[u8]) -> Result<Frame, FrameError> {
        self.account(decode_datagram(datagram))
    }

    fn account(&mut self, result: Result<Message, FrameError>) -> Result<Frame, FrameError> {
        match result {
            Ok(message) => {
                self.counters.frames_ok = self.counters.frames_ok.saturating_add(1);
                let gap = match &message {
                    Message::Observation(o) => self.observations.check(o.seq).err(),
                    Message::Action(a) => self.actions.check(a.seq).err(),
                    Message::Hello(_) | Message::HelloAck(_) => {
                        // A new session may start its sequence anywhere.
                        self.observations.reset();
                        self.actions.reset();
                        None
                    }
                    Message::Heartbeat(_) | Message::Fault(_) => None,
                };
                if gap.is_some() {
                    self.counters.sequence_gaps = self.counters.sequence_gaps.saturating_add(1);
                }
                Ok(Frame { message, gap })
            }
            Err(error) => {
                self.counters.count(&error);
                Err(error)
            }
        }
    }

    pub fn counters(&self) -> &LinkCounters {
        &self.counters
    }

    /// Counts a datagram that came from a stranger (see [`LinkCounters::foreign`]).
    pub fn count_foreign(&mut self) {
        self.counters.foreign = self.counters.foreign.saturating_add(1);
    }

    /// Bytes of an unfinished frame currently held.
    pub fn pending(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::*;

    fn observation(seq: u32) -> Message {
        Message::Observation(Observation {
            seq,
            timestamp_us: 1_234_567,
            values: heapless::Vec::from_slice(&[0.5, -1.0, 0.0, 3.25, -0.125]).unwrap(),
            step: EpisodeStep {
                reward: 0.75,
                first: seq == 1,
                terminal: false,
            },
        })
    }

    fn frame_of(message: &Message) -> std::vec::Vec<u8> {
        let mut buf = [0u8; MAX_FRAME];
        encode_frame(message, &mut buf).to_vec()
    }

    fn decode_all(
        decoder: &mut FrameDecoder,
        bytes: &[u8],
    ) -> std::vec::Vec<Result<Frame, FrameError>> {
        bytes.iter().filter_map(|&b| decoder.push(b)).collect()
    }

    #[test]
    fn sizes_are_derived_from_max_size() {
        let largest = Message::Observation(Observation {
            seq: u32::MAX,
            timestamp_us: u64::MAX,
            values: heapless::Vec::from_slice(&[f32::MAX; MAX_OBSERVATION]).unwrap(),
            step: EpisodeStep {
                reward: f32::MAX,
                first: true,
                terminal: true,
            },
        });
        let mut buf = [0u8; 256];
        assert!(postcard::to_slice(&largest, &mut buf).unwrap().len() <= MAX_PAYLOAD);
        assert_eq!(MAX_RAW, MAX_PAYLOAD + 4);
        assert_eq!(MAX_FRAME, MAX_RAW + MAX_RAW / 254 + 2);
    }

    #[test]
    fn layout_fingerprint_depends_on_order_and_names() {
        let cartpole = ["x", "cos", "sin", "x_dot", "theta_dot"];
        let layout = Layout::from_fields(&cartpole, 1);
        assert_eq!((layout.observation_size, layout.action_size), (5, 1));
        // CRC-32/ISO-HDLC of "x\ncos\nsin\nx_dot\ntheta_dot\n"
        assert_eq!(layout.observation_fields, 0xee2a_0482);
        let owned: std::vec::Vec<std::string::String> =
            cartpole.iter().map(|s| s.to_string()).collect();
        assert_eq!(Layout::from_fields(&owned, 1), layout);
        let swapped = ["x", "sin", "cos", "x_dot", "theta_dot"];
        assert_ne!(Layout::from_fields(&swapped, 1), layout);
    }

    #[test]
    fn sizes_match_docs_firmware_md() {
        assert_eq!((MAX_PAYLOAD, MAX_RAW, MAX_FRAME), (87, 91, 93));
    }

    /// The worked example in docs/firmware.md.
    #[test]
    fn documented_action_frame() {
        let action = Message::Action(Action {
            seq: 1,
            values: heapless::Vec::from_slice(&[0.5]).unwrap(),
        });
        assert_eq!(
            frame_of(&action),
            [
                0x04, 0x03, 0x01, 0x01, 0x01, 0x01, 0x06, 0x3f, 0xcb, 0x12, 0xde, 0xec, 0x00
            ]
        );
    }

    /// The documented action frame as a datagram: the same raw bytes without COBS and
    /// delimiter (docs/firmware.md).
    #[test]
    fn documented_action_datagram() {
        let action = Message::Action(Action {
            seq: 1,
            values: heapless::Vec::from_slice(&[0.5]).unwrap(),
        });
        let mut buf = [0u8; MAX_RAW];
        let datagram = encode_datagram(&action, &mut buf);
        assert_eq!(
            datagram,
            [
                0x03, 0x01, 0x01, 0x00, 0x00, 0x00, 0x3f, 0xcb, 0x12, 0xde, 0xec
            ]
        );
        assert_eq!(decode_datagram(datagram), Ok(action));
    }

    /// Datagrams share the stream's counters and sequence checks; a corrupt, short or long
    /// one is counted and named.
    #[test]
    fn datagrams_are_checked_and_counted_like_frames() {
        let mut decoder = FrameDecoder::new();
        let mut buf = [0u8; MAX_RAW];
        let first = encode_datagram(&observation(7), &mut buf).to_vec();
        assert_eq!(decoder.push_datagram(&first).unwrap().gap, None);
        let third = encode_datagram(&observation(9), &mut buf).to_vec();
        let gap = decoder.push_datagram(&third).unwrap().gap;
        assert_eq!(
            gap,
            Some(SequenceGap {
                expected: 8,
                received: 9
            })
        );
        let mut corrupt = third.clone();
        corrupt[2] ^= 0x40;
        assert!(matches!(
            decoder.push_datagram(&corrupt),
            Err(FrameError::Crc { .. })
        ));
        assert_eq!(
            decoder.push_datagram(&third[..3]),
            Err(FrameError::TooShort { len: 3 })
        );
        assert_eq!(
            decoder.push_datagram(&[1u8; MAX_RAW + 1]),
            Err(FrameError::TooLong { len: MAX_RAW + 1 })
        );
        let counters = decoder.counters();
        assert_eq!(
            (
                counters.frames_ok,
                counters.sequence_gaps,
                counters.bad_crc,
                counters.wrong_length
            ),
            (2, 1, 1, 2)
        );
    }

    #[test]
    fn every_message_roundtrips() {
        let layout = Layout {
            observation_size: 5,
            action_size: 1,
            observation_fields: fields_fingerprint(["x", "cos", "sin", "x_dot", "theta_dot"]),
        };
        let messages = [
            Message::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                task: heapless::String::try_from("cartpole-swingup").unwrap(),
                layout,
            }),
            Message::HelloAck(HelloAck {
                result: HandshakeResult::LayoutMismatch,
                protocol_version: PROTOCOL_VERSION,
                task: heapless::String::try_from("cartpole-swingup").unwrap(),
                layout,
                rewards: true,
            }),
            observation(u32::MAX),
            Message::Action(Action {
                seq: 7,
                values: heapless::Vec::from_slice(&[0.25]).unwrap(),
            }),
            Message::Heartbeat(Heartbeat {
                tick: 9,
                mode: Mode::Safe,
                deadline_misses: 3,
                faults: 1,
                clamped_actions: 2,
                frame_errors: 0,
            }),
            Message::Fault(FaultReport {
                seq: 11,
                kind: FaultKind::DeadlineMissed,
                active: true,
                consecutive_misses: 3,
            }),
        ];
        let mut decoder = FrameDecoder::new();
        for message in &messages {
            let bytes = frame_of(message);
            assert!(bytes.len() <= MAX_FRAME);
            assert_eq!(bytes.iter().filter(|&&b| b == 0).count(), 1);
            assert_eq!(
                decode_frame(&bytes[..bytes.len() - 1]).as_ref(),
                Ok(message)
            );
            let out = decode_all(&mut decoder, &bytes);
            assert_eq!(out.len(), 1);
            assert_eq!(&out[0].as_ref().unwrap().message, message);
        }
        assert_eq!(decoder.counters().frames_ok, messages.len() as u32);
        assert_eq!(decoder.counters().errors(), 0);
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let bytes = frame_of(&observation(42));
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupted = bytes.clone();
                corrupted[i] ^= 1 << bit;
                let mut decoder = FrameDecoder::new();
                let mut out = decode_all(&mut decoder, &corrupted);
                // A flipped delimiter leaves the frame unfinished; the next delimiter ends it.
                out.extend(decoder.push(0));
                assert!(!out.is_empty(), "byte {i} bit {bit}: nothing decoded");
                assert!(
                    out.iter().all(|r| r.is_err()),
                    "byte {i} bit {bit}: corruption decoded as {out:?}"
                );
            }
        }
    }

    #[test]
    fn lost_delimiter_does_not_merge_frames() {
        let mut stream = frame_of(&observation(1));
        stream.pop();
        stream.extend(frame_of(&observation(2)));
        let mut decoder = FrameDecoder::new();
        let out = decode_all(&mut decoder, &stream);
        assert_eq!(out.len(), 1);
        assert!(out[0].is_err());
        assert_eq!(decoder.counters().frames_ok, 0);
    }

    #[test]
    fn error_kinds_are_counted() {
        let mut decoder = FrameDecoder::new();
        // bad COBS: code byte runs past the end
        assert_eq!(decoder.push(0x09), None);
        assert!(matches!(decoder.push(0), Some(Err(FrameError::Cobs(_)))));
        // too short: valid COBS holding two bytes
        decode_all(&mut decoder, &[0x03, 1, 2, 0]);
        // bad CRC
        let mut bad = frame_of(&observation(3));
        bad[3] ^= 0x40;
        decode_all(&mut decoder, &bad);
        // unknown message: tag 9 with a valid CRC
        decode_all(&mut decoder, &raw_frame(&[9, 1, 2]));
        // trailing bytes after a valid heartbeat
        let mut payload = [0u8; MAX_PAYLOAD];
        let hb = Message::Heartbeat(Heartbeat {
            tick: 1,
            mode: Mode::Running,
            deadline_misses: 0,
            faults: 0,
            clamped_actions: 0,
            frame_errors: 0,
        });
        let n = postcard::to_slice(&hb, &mut payload).unwrap().len();
        let mut long = payload[..n].to_vec();
        long.push(7);
        decode_all(&mut decoder, &raw_frame(&long));
        // truncated payload
        decode_all(&mut decoder, &raw_frame(&payload[..n - 1]));
        // malformed: Fault with bool byte 2
        decode_all(&mut decoder, &raw_frame(&[5, 1, 0, 2, 0]));
        // overflow: more than MAX_FRAME non-zero bytes
        let junk = std::vec![0x55u8; MAX_FRAME * 2];
        decode_all(&mut decoder, &junk);
        assert!(matches!(
            decoder.push(0),
            Some(Err(FrameError::TooLong { .. }))
        ));
        // sequence gap: 5, 6, 8
        for seq in [5, 6, 8] {
            decode_all(&mut decoder, &frame_of(&observation(seq)));
        }
        let c = decoder.counters();
        assert_eq!(c.bad_cobs, 1);
        assert_eq!(c.bad_crc, 1);
        assert_eq!(c.unknown_message, 1);
        assert_eq!(c.malformed, 1);
        assert_eq!(c.wrong_length, 4);
        assert_eq!(c.sequence_gaps, 1);
        assert_eq!(c.frames_ok, 3);
        // the decoder resynchronises after all of that
        let out = decode_all(&mut decoder, &frame_of(&observation(9)));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].as_ref().unwrap().gap, None);
    }

    #[test]
    fn handshake_resets_sequence_tracking() {
        let mut decoder = FrameDecoder::new();
        decode_all(&mut decoder, &frame_of(&observation(100)));
        let hello = Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            task: heapless::String::new(),
            layout: Layout {
                observation_size: 1,
                action_size: 1,
                observation_fields: 0,
            },
        });
        decode_all(&mut decoder, &frame_of(&hello));
        decode_all(&mut decoder, &frame_of(&observation(1)));
        assert_eq!(decoder.counters().sequence_gaps, 0);
    }

    /// COBS(payload ++ crc) ++ 0: a correctly checksummed frame around arbitrary payload.
    fn raw_frame(payload: &[u8]) -> std::vec::Vec<u8> {
        let mut raw = payload.to_vec();
        raw.extend(CRC32.checksum(payload).to_le_bytes());
        let mut out = std::vec![0u8; cobs_max_encoded_len(raw.len()) + 1];
        let n = cobs_encode(&raw, &mut out).unwrap();
        out.truncate(n);
        out.push(0);
        out
    }
}
