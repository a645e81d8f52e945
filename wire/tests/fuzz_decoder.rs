//! Property tests: no input makes the decoder panic, every message round-trips, and
//! corrupted frames never decode to a different message.

use dreamer_wire::{
    Action, EpisodeStep, FaultKind, FaultReport, FrameDecoder, Heartbeat, MAX_ACTION, MAX_FRAME,
    MAX_OBSERVATION, Message, Mode, Observation, decode_frame, encode_frame,
};
use proptest::prelude::*;

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
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
        (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(tick, misses, faults)| {
            Message::Heartbeat(Heartbeat {
                tick,
                mode: Mode::Running,
                deadline_misses: misses,
                faults,
                clamped_actions: tick ^ misses,
                frame_errors: faults,
            })
        }),
        (any::<u32>(), any::<bool>(), any::<u16>()).prop_map(|(seq, active, misses)| {
            Message::Fault(FaultReport {
                seq,
                kind: FaultKind::DeadlineMissed,
                active,
                consecutive_misses: misses,
            })
        }),
    ]
}

/// Compares messages bit for bit (NaN payloads included).
fn same(a: &Message, b: &Message) -> bool {
    let mut x = [0u8; MAX_FRAME];
    let mut y = [0u8; MAX_FRAME];
    encode_frame(a, &mut x) == encode_frame(b, &mut y)
}

proptest! {
    #![proptest_config(dreamer_fuzz::config(4096))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = decode_frame(&bytes);
        let mut decoder = FrameDecoder::new();
        let mut results = 0u32;
        for &b in &bytes {
            if decoder.push(b).is_some() {
                results += 1;
            }
        }
        let c = *decoder.counters();
        prop_assert_eq!(c.frames_ok + c.bad_cobs + c.bad_crc + c.wrong_length + c.unknown_message + c.malformed, results);
    }

    #[test]
    fn messages_roundtrip(m in message()) {
        let mut buf = [0u8; MAX_FRAME];
        let frame = encode_frame(&m, &mut buf);
        prop_assert_eq!(frame.iter().position(|&b| b == 0), Some(frame.len() - 1));
        let decoded = decode_frame(&frame[..frame.len() - 1]).unwrap();
        prop_assert!(same(&decoded, &m));
    }

    #[test]
    fn corrupted_frames_never_decode_to_another_message(
        m in message(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let mut buf = [0u8; MAX_FRAME];
        let mut frame = encode_frame(&m, &mut buf).to_vec();
        for (at, xor) in edits {
            let i = at.index(frame.len());
            frame[i] ^= xor;
        }
        let mut decoder = FrameDecoder::new();
        let mut frames: Vec<_> = frame.iter().filter_map(|&b| decoder.push(b)).collect();
        frames.extend(decoder.push(0));
        for result in frames.into_iter().flatten() {
            // CRC32 lets through about one corruption in 2^32; a pass-through must be
            // the original message (an edit that cancelled itself out).
            prop_assert!(same(&result.message, &m), "corruption decoded as {:?}", result.message);
        }
    }

    #[test]
    fn random_splicing_of_valid_frames_is_safe(
        ms in prop::collection::vec(message(), 1..6),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
    ) {
        let mut stream = Vec::new();
        for m in &ms {
            let mut buf = [0u8; MAX_FRAME];
            stream.extend_from_slice(encode_frame(m, &mut buf));
        }
        for cut in cuts {
            if !stream.is_empty() {
                stream.remove(cut.index(stream.len()));
            }
        }
        let mut decoder = FrameDecoder::new();
        for &b in &stream {
            if let Some(Ok(frame)) = decoder.push(b) {
                prop_assert!(ms.iter().any(|m| same(m, &frame.message)));
            }
        }
    }
}
