//! Wire protocol between the firmware and the runtime.
//!
//! Every message is one frame: `COBS(postcard(message) ++ crc32_le(postcard(message))) ++ 0x00`
//! on a byte stream (serial), or the raw `postcard(message) ++ crc32_le(...)` as one datagram
//! (UDP), which keeps message boundaries itself.
//! All buffers are fixed-size arrays whose lengths derive from postcard's [`MaxSize`], so
//! neither side allocates. [`FrameDecoder`] turns a byte stream into messages and counts
//! every kind of corruption (bad COBS, bad CRC, wrong length, unknown message, sequence
//! gaps). With the `std` feature, [`FrameReader`] does the same over any `std::io::Read`.
//!
//! [`FirmwareStats`] and [`LatencyStats`] are the firmware's own counters and latency
//! percentiles, which it fills and its reports carry.
//!
//! [`plant_state`] is the record through which a simulated plant publishes its physical state
//! to a simulated camera on the runtime's side.
//!
//! The byte layout, message types and handshake are described in `docs/firmware.md`.
#![cfg_attr(not(any(test, feature = "std")), no_std)]

mod cobs;
mod firmware_stats;
mod frame;
mod message;
pub mod plant_state;
#[cfg(feature = "std")]
mod reader;
#[cfg(feature = "std")]
pub mod report;

pub use cobs::{CobsError, cobs_decode, cobs_encode, cobs_max_encoded_len};
pub use firmware_stats::{FirmwareStats, LatencyStats};
pub use frame::{
    Frame, FrameDecoder, FrameError, LinkCounters, MAX_FRAME, MAX_PAYLOAD, MAX_RAW, SequenceGap,
    SequenceTracker, decode_datagram, decode_frame, encode_datagram, encode_frame, same_peer,
};
pub use message::{
    Action, DEFAULT_MAX_MISSED, EpisodeStep, FaultKind, FaultReport, HandshakeResult, Heartbeat,
    Hello, HelloAck, Layout, MAX_ACTION, MAX_OBSERVATION, MAX_TASK_NAME, MESSAGE_KINDS, Message,
    Mode, Observation, PROTOCOL_VERSION, fields_fingerprint,
};
pub use postcard::experimental::max_size::MaxSize;
#[cfg(feature = "std")]
pub use reader::{FrameReader, write_message};
