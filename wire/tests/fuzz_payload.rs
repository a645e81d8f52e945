//! Fuzz targets of the full decode path past the CRC: valid messages of every kind are
//! serialised, their postcard payload mutated (bytes flipped, inserted, cut, spliced,
//! varints and lengths set to extremes) and then framed *with a correct CRC*, so the
//! mutations reach the message decoder instead of stopping at the checksum. The frames go
//! through `decode_frame`, the incremental `FrameDecoder` and (feature `std`) the
//! `FrameReader` over a stream that reads in odd chunks and is interrupted. The plant-state
//! record the simulated camera reads is fuzzed the same way. Each case must return a message or an error within a
//! time bound, never panic; a decoded message must re-encode to a frame that decodes to it.
//!
//! `PROPTEST_CASES` sets the number of cases (scripts/fuzz-long runs many).

use std::time::Duration;

use dreamer_fuzz::bounded;
use dreamer_wire::plant_state::{self, MAX_RECORD, MAX_STATE};
use dreamer_wire::{
    Action, EpisodeStep, FaultKind, FaultReport, Frame, FrameDecoder, FrameError, HandshakeResult,
    Heartbeat, Hello, HelloAck, Layout, MAX_ACTION, MAX_FRAME, MAX_OBSERVATION, MAX_PAYLOAD,
    MAX_TASK_NAME, MESSAGE_KINDS, Message, Mode, Observation, cobs_encode, cobs_max_encoded_len,
    decode_frame, encode_frame,
};
use proptest::prelude::*;

const LIMIT: Duration = Duration::from_secs(2);
const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

fn task() -> impl Strategy<Value = heapless::String<MAX_TASK_NAME>> {
    prop_oneof![
        Just("cartpole-swingup".to_string()),
        Just(String::new()),
        "[a-z-]{0,32}",
        // Multi-byte characters up to the byte capacity.
        "[é€😀a]{0,8}",
    ]
    .prop_map(|s| heapless::String::try_from(s.as_str()).unwrap())
}

fn layout() -> impl Strategy<Value = Layout> {
    (any::<u8>(), any::<u8>(), any::<u32>()).prop_map(|(o, a, f)| Layout {
        observation_size: o,
        action_size: a,
        observation_fields: f,
    })
}

/// Every message kind with any field values.
fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (any::<u16>(), task(), layout()).prop_map(|(protocol_version, task, layout)| {
            Message::Hello(Hello {
                protocol_version,
                task,
                layout,
            })
        }),
        (
            prop::sample::select(vec![
                HandshakeResult::Accepted,
                HandshakeResult::VersionMismatch,
                HandshakeResult::TaskMismatch,
                HandshakeResult::LayoutMismatch,
            ]),
            any::<u16>(),
            task(),
            layout(),
            any::<bool>()
        )
            .prop_map(|(result, protocol_version, task, layout, rewards)| {
                Message::HelloAck(HelloAck {
                    result,
                    protocol_version,
                    task,
                    layout,
                    rewards,
                })
            }),
        (
            any::<u32>(),
            any::<u64>(),
            prop::collection::vec(any::<f32>(), 0..=MAX_OBSERVATION),
            (any::<f32>(), any::<bool>(), any::<bool>())
        )
            .prop_map(|(seq, timestamp_us, v, (reward, first, terminal))| {
                Message::Observation(Observation {
                    seq,
                    timestamp_us,
                    values: heapless::Vec::from_slice(&v).unwrap(),
                    step: EpisodeStep {
                        reward,
                        first,
                        terminal,
                    },
                })
            }),
        (
            any::<u32>(),
            prop::collection::vec(any::<f32>(), 0..=MAX_ACTION)
        )
            .prop_map(|(seq, v)| Message::Action(Action {
                seq,
                values: heapless::Vec::from_slice(&v).unwrap(),
            })),
        (
            any::<[u32; 5]>(),
            prop::sample::select(vec![Mode::AwaitingHandshake, Mode::Running, Mode::Safe])
        )
            .prop_map(|(n, mode)| Message::Heartbeat(Heartbeat {
                tick: n[0],
                mode,
                deadline_misses: n[1],
                faults: n[2],
                clamped_actions: n[3],
                frame_errors: n[4],
            })),
        (
            any::<u32>(),
            prop::sample::select(vec![
                FaultKind::DeadlineMissed,
                FaultKind::SensorRead,
                FaultKind::Actuator
            ]),
            any::<bool>(),
            any::<u16>()
        )
            .prop_map(|(seq, kind, active, consecutive_misses)| Message::Fault(
                FaultReport {
                    seq,
                    kind,
                    active,
                    consecutive_misses
                }
            )),
    ]
}

/// One change to a postcard payload.
#[derive(Debug, Clone)]
enum Edit {
    Flip(prop::sample::Index, u8),
    /// Overwrite with bytes at the edges of varints: continuation bits, 0xff runs, zeros.
    Overwrite(prop::sample::Index, Vec<u8>),
    Insert(prop::sample::Index, Vec<u8>),
    Delete(prop::sample::Index, usize),
    Truncate(prop::sample::Index),
    Splice(prop::sample::Index, prop::sample::Index, usize),
}

fn edge_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(vec![0xff; 10]),
        Just(vec![0x80; 5]),
        Just(vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
        Just(vec![0xff, 0xff, 0xff, 0xff, 0x10]),
        Just(vec![0x80, 0x00]),
        Just(vec![0x00]),
        Just(vec![MESSAGE_KINDS]),
        Just(vec![0x21]),
        Just(vec![0xc3, 0x28]),
        Just(vec![0xed, 0xa0, 0x80]),
        prop::collection::vec(any::<u8>(), 1..6),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        3 => (index(), 1u8..=255).prop_map(|(i, x)| Edit::Flip(i, x)),
        3 => (index(), edge_bytes()).prop_map(|(i, b)| Edit::Overwrite(i, b)),
        1 => (index(), edge_bytes()).prop_map(|(i, b)| Edit::Insert(i, b)),
        1 => (index(), 1usize..8).prop_map(|(i, n)| Edit::Delete(i, n)),
        1 => index().prop_map(Edit::Truncate),
        1 => (index(), index(), 1usize..16).prop_map(|(a, b, n)| Edit::Splice(a, b, n)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    match edit {
        Edit::Flip(i, x) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes[i] ^= x;
        }
        Edit::Overwrite(i, b) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            let end = (i + b.len()).min(bytes.len());
            bytes.splice(i..end, b.iter().copied());
        }
        Edit::Insert(i, b) => {
            let i = i.index(bytes.len() + 1);
            bytes.splice(i..i, b.iter().copied());
        }
        Edit::Delete(i, n) if !bytes.is_empty() => {
            let i = i.index(bytes.len());
            bytes.drain(i..(i + n).min(bytes.len()));
        }
        Edit::Truncate(i) => {
            let i = i.index(bytes.len() + 1);
            bytes.truncate(i);
        }
        Edit::Splice(from, to, n) if !bytes.is_empty() => {
            let from = from.index(bytes.len());
            let piece = bytes[from..(from + n).min(bytes.len())].to_vec();
            let to = to.index(bytes.len());
            let end = (to + piece.len()).min(bytes.len());
            bytes.splice(to..end, piece);
        }
        Edit::Flip(..) | Edit::Overwrite(..) | Edit::Delete(..) | Edit::Splice(..) => {}
    }
}

fn payload_of(message: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_PAYLOAD];
    postcard::to_slice(message, &mut buf).unwrap().to_vec()
}

/// `COBS(payload ++ crc32_le(payload))`, no delimiter: a frame whose checksum is right
/// whatever the payload holds.
fn frame_around(payload: &[u8]) -> Vec<u8> {
    let mut raw = payload.to_vec();
    raw.extend(CRC32.checksum(payload).to_le_bytes());
    let mut out = vec![0u8; cobs_max_encoded_len(raw.len())];
    let n = cobs_encode(&raw, &mut out).unwrap();
    out.truncate(n);
    out
}

/// Compares messages bit for bit (NaN payloads included).
fn same(a: &Message, b: &Message) -> bool {
    let mut x = [0u8; MAX_FRAME];
    let mut y = [0u8; MAX_FRAME];
    encode_frame(a, &mut x) == encode_frame(b, &mut y)
}

/// A decoded message is within the protocol's bounds and survives its own round trip.
fn check_decoded(message: &Message) -> Result<(), TestCaseError> {
    match message {
        Message::Observation(o) => prop_assert!(o.values.len() <= MAX_OBSERVATION),
        Message::Action(a) => prop_assert!(a.values.len() <= MAX_ACTION),
        Message::Hello(Hello { task, .. }) | Message::HelloAck(HelloAck { task, .. }) => {
            prop_assert!(task.len() <= MAX_TASK_NAME)
        }
        Message::Heartbeat(_) | Message::Fault(_) => {}
    }
    let mut buf = [0u8; MAX_FRAME];
    let frame = encode_frame(message, &mut buf);
    let again = decode_frame(&frame[..frame.len() - 1]);
    prop_assert!(matches!(&again, Ok(m) if same(m, message)), "{again:?}");
    Ok(())
}

/// The frames of `stream` read through `FrameReader` (the `std` feature) from a reader that
/// hands out at most `chunk` bytes per call and is interrupted when a chunk is 0.
#[cfg(feature = "std")]
fn read_all(stream: Vec<u8>, chunks: Vec<usize>) -> Option<Vec<Result<Frame, FrameError>>> {
    use std::io::{self, Read};

    struct Choppy {
        data: Vec<u8>,
        at: usize,
        chunks: Vec<usize>,
        calls: usize,
    }

    impl Read for Choppy {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.calls += 1;
            let chunk = self.chunks[self.calls % self.chunks.len()];
            if chunk == 0 {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = chunk.min(buf.len()).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    let mut reader = dreamer_wire::FrameReader::new(Choppy {
        data: stream,
        at: 0,
        chunks,
        calls: 0,
    });
    let mut read = Vec::new();
    while let Some(result) = reader.next_frame().unwrap() {
        read.push(result);
    }
    Some(read)
}

/// Without the `std` feature there is no `FrameReader` to compare with.
#[cfg(not(feature = "std"))]
fn read_all(_stream: Vec<u8>, _chunks: Vec<usize>) -> Option<Vec<Result<Frame, FrameError>>> {
    None
}

/// Decodes `block` (no delimiter) alone, byte by byte, and as part of a stream through the
/// reader; all three agree and every decoded message passes `check_decoded`.
fn decode_everywhere(
    block: Vec<u8>,
    chunks: Vec<usize>,
) -> Result<Result<Message, FrameError>, TestCaseError> {
    let (alone, pushed, read) = bounded(LIMIT, move || {
        let alone = decode_frame(&block);
        let mut decoder = FrameDecoder::new();
        let mut pushed: Vec<_> = block.iter().filter_map(|&b| decoder.push(b)).collect();
        pushed.extend(decoder.push(0));
        let mut stream = block.clone();
        stream.push(0);
        (alone, pushed, read_all(stream, chunks))
    });
    if let Ok(message) = &alone {
        check_decoded(message)?;
    }
    // A block without zeros is one frame for the stream decoders; with a zero it splits.
    if !pushed.is_empty()
        && !alone
            .as_ref()
            .is_err_and(|e| matches!(e, FrameError::Cobs(_)))
    {
        let last = pushed.last().unwrap().as_ref().map(|f| &f.message);
        prop_assert_eq!(last.is_ok(), alone.is_ok());
    }
    if let Some(read) = read {
        prop_assert_eq!(pushed.len(), read.len());
        for (p, r) in pushed.iter().zip(&read) {
            prop_assert_eq!(p.as_ref().err(), r.as_ref().err());
        }
    }
    Ok(alone)
}

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![3 => 1usize..600, 1 => Just(0usize)], 1..4)
        .prop_filter("at least one chunk reads", |c| c.iter().any(|&n| n > 0))
}

/// A valid plant-state record, its CRC optionally fixed up after edits.
fn plant_record(seq: u64, time_s: f64, values: &[f64]) -> Vec<u8> {
    let mut out = [0u8; MAX_RECORD];
    let n = plant_state::encode(seq, time_s, values, &mut out);
    out[..n].to_vec()
}

proptest! {
    #![proptest_config(dreamer_fuzz::config(1024))]

    #[test]
    fn mutated_payloads_with_valid_crc(
        m in message(),
        edits in prop::collection::vec(edit(), 1..4),
        chunks in chunks(),
    ) {
        let mut payload = payload_of(&m);
        for e in &edits {
            apply(&mut payload, e);
        }
        let result = decode_everywhere(frame_around(&payload), chunks)?;
        // Nothing past the message and nothing short of it decodes.
        if payload.len() > MAX_PAYLOAD || payload.is_empty() {
            prop_assert!(result.is_err());
        }
    }

    #[test]
    fn random_payloads_with_valid_crc(
        tag in prop_oneof![0..MESSAGE_KINDS, any::<u8>()],
        body in prop::collection::vec(any::<u8>(), 0..(MAX_PAYLOAD + 8)),
        chunks in chunks(),
    ) {
        let mut payload = vec![tag];
        payload.extend(body);
        let result = decode_everywhere(frame_around(&payload), chunks)?;
        if let Ok(m) = result {
            // What decoded is what the bytes say. Postcard accepts an overlong varint for the
            // same value (0 as [0x80, 0x00], found by the long run), so the bytes need not be
            // the canonical encoding, but they decode to the message whose canonical
            // encoding is never longer, and which decodes to itself (`check_decoded`).
            let canonical = payload_of(&m);
            prop_assert!(canonical.len() <= payload.len());
            prop_assert_eq!(canonical[0], payload[0]);
            prop_assert!(same(&decode_frame(&frame_around(&canonical)).unwrap(), &m));
        }
    }

    #[test]
    fn mutated_frames_on_the_wire(
        m in message(),
        edits in prop::collection::vec(edit(), 1..4),
        chunks in chunks(),
    ) {
        let mut buf = [0u8; MAX_FRAME];
        let frame = encode_frame(&m, &mut buf);
        let mut block = frame[..frame.len() - 1].to_vec();
        for e in &edits {
            apply(&mut block, e);
        }
        if let Ok(decoded) = decode_everywhere(block, chunks)? {
            // CRC32 lets through about one corruption in 2^32: a message that decodes is
            // the original one, edits having cancelled out.
            prop_assert!(same(&decoded, &m), "corruption decoded as {decoded:?}");
        }
    }

    #[test]
    fn mutated_plant_state_records(
        seq in any::<u64>(),
        time_s in any::<f64>(),
        values in prop::collection::vec(any::<f64>(), 0..=MAX_STATE),
        edits in prop::collection::vec(edit(), 0..4),
        count in prop_oneof![Just(None), (0u32..16).prop_map(Some), Just(Some(u32::MAX))],
        fix_crc in any::<bool>(),
    ) {
        let mut record = plant_record(seq, time_s, &values);
        if let Some(count) = count {
            record[20..24].copy_from_slice(&count.to_le_bytes());
        }
        for e in &edits {
            apply(&mut record, e);
        }
        if fix_crc && record.len() >= 28 {
            let n = record.len() - 4;
            let crc = CRC32.checksum(&record[..n]);
            record[n..].copy_from_slice(&crc.to_le_bytes());
        }
        let result = bounded(LIMIT, move || plant_state::decode(&record));
        if let Ok(state) = &result {
            prop_assert!(state.values.len() <= MAX_STATE);
        }
        if count.is_none() && edits.is_empty() {
            let state = result.unwrap();
            prop_assert_eq!((state.seq, state.values.len()), (seq, values.len()));
        }
    }

    #[test]
    fn random_plant_state_bytes(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..(MAX_RECORD + 16)),
            prop::collection::vec(any::<u8>(), 0..(MAX_RECORD + 16)).prop_map(|mut b| {
                b.splice(0..0, *b"PLST");
                b
            }),
        ],
    ) {
        let _ = bounded(LIMIT, move || plant_state::decode(&bytes));
    }
}
