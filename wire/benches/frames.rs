//! Frame encode and stream-decode cost of the messages sent every control tick.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use dreamer_wire::{
    Action, EpisodeStep, FrameDecoder, MAX_FRAME, Message, Observation, encode_frame,
};

fn observation() -> Message {
    Message::Observation(Observation {
        seq: 123_456,
        timestamp_us: 9_876_543_210,
        values: heapless::Vec::from_slice(&[0.1, 0.99, -0.12, 0.5, -3.25]).unwrap(),
        step: EpisodeStep {
            reward: 0.25,
            first: false,
            terminal: false,
        },
    })
}

fn action() -> Message {
    Message::Action(Action {
        seq: 123_456,
        values: heapless::Vec::from_slice(&[-0.75]).unwrap(),
    })
}

fn frames(c: &mut Criterion) {
    for (name, message) in [("observation5", observation()), ("action1", action())] {
        let mut buf = [0u8; MAX_FRAME];
        c.bench_function(&format!("encode_{name}"), |b| {
            b.iter(|| encode_frame(black_box(&message), &mut buf).len())
        });
        let mut out = [0u8; MAX_FRAME];
        let frame = encode_frame(&message, &mut out).to_vec();
        let mut decoder = FrameDecoder::new();
        c.bench_function(&format!("decode_{name}"), |b| {
            b.iter(|| {
                let mut decoded = None;
                for &byte in black_box(&frame) {
                    if let Some(result) = decoder.push(byte) {
                        decoded = Some(result.is_ok());
                    }
                }
                decoded
            })
        });
    }
}

criterion_group!(benches, frames);
criterion_main!(benches);
