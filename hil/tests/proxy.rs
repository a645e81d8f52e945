//! The fault-injection relay on its own: two ptys, frames written at one slave and decoded
//! at the other. Every corrupted frame must be rejected and none accepted, exactly as the
//! relay's ledger says, and a seed must reproduce the same faults.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use dreamer_hil::pty::{self, Pty};
use dreamer_hil::{Direction, FaultRates, Injected, Ledger, Proxy, Reconciliation};
use dreamer_wire::{
    Action, FrameDecoder, Hello, Layout, LinkCounters, MAX_FRAME, Message, Observation,
    PROTOCOL_VERSION, encode_frame,
};

fn open_slave(pty: &Pty) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(&pty.slave_path)
        .unwrap()
}

fn frame(message: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    encode_frame(message, &mut buf).to_vec()
}

fn observation(seq: u32) -> Message {
    Message::Observation(Observation {
        seq,
        timestamp_us: u64::from(seq) * 20_000,
        values: heapless::Vec::from_slice(&[0.1, -0.2, 0.3, 0.4, seq as f32]).unwrap(),
    })
}

fn action(seq: u32) -> Message {
    Message::Action(Action {
        seq,
        values: heapless::Vec::from_slice(&[seq as f32 / 1000.0]).unwrap(),
    })
}

/// Reads whatever is waiting into the decoder.
fn drain(port: &mut File, decoder: &mut FrameDecoder) -> usize {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        match port.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => {
                total += n;
                for &b in &buf[..n] {
                    decoder.push(b);
                }
            }
            Err(_) => return total,
        }
    }
}

/// Waits until the relay has read something in `direction`.
fn wait_for_input(proxy: &Proxy, direction: Direction) {
    let give_up = Instant::now() + Duration::from_secs(30);
    while proxy.stats(direction).bytes_in == 0 {
        assert!(Instant::now() < give_up, "the relay read nothing");
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Outcome {
    f2r: (Injected, Ledger, LinkCounters, Reconciliation),
    r2f: (Injected, Ledger, LinkCounters, Reconciliation),
}

/// Sends `frames` observations one way and as many actions the other way through the relay.
fn exchange(faults: FaultRates, seed: u64, frames: u32) -> Outcome {
    let firmware_pty = Pty::open().unwrap();
    let runtime_pty = Pty::open().unwrap();
    let mut firmware = open_slave(&firmware_pty);
    let mut runtime = open_slave(&runtime_pty);
    let mut proxy = Proxy::start(
        &firmware_pty.master,
        &runtime_pty.master,
        faults,
        seed,
        Instant::now(),
    )
    .unwrap();
    let mut at_runtime = FrameDecoder::new();
    let mut at_firmware = FrameDecoder::new();

    // The firmware talks first: nothing of it reaches the runtime before the runtime's
    // first byte, and what does reach it starts at a frame boundary.
    firmware.write_all(&frame(&observation(1000))).unwrap();
    wait_for_input(&proxy, Direction::FirmwareToRuntime);
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        task: heapless::String::try_from("cartpole-swingup").unwrap(),
        layout: Layout::from_fields(&["a", "b"], 1),
    });
    runtime.write_all(&frame(&hello)).unwrap();
    // Forwarding to the runtime opens once the relay has read its hello.
    wait_for_input(&proxy, Direction::RuntimeToFirmware);
    for seq in 1..=frames {
        firmware.write_all(&frame(&observation(seq))).unwrap();
        runtime.write_all(&frame(&action(seq))).unwrap();
        if seq % 8 == 0 {
            // Keep the pty buffers from filling.
            std::thread::sleep(Duration::from_millis(2));
            drain(&mut runtime, &mut at_runtime);
            drain(&mut firmware, &mut at_firmware);
        }
    }
    // Let the relay catch up, flush what it holds back, and read the rest.
    std::thread::sleep(Duration::from_millis(100));
    drain(&mut runtime, &mut at_runtime);
    drain(&mut firmware, &mut at_firmware);
    proxy.flush_and_stop(Direction::FirmwareToRuntime).unwrap();
    proxy.flush_and_stop(Direction::RuntimeToFirmware).unwrap();
    let quiet_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < quiet_until {
        pty::wait_ready(std::os::fd::AsRawFd::as_raw_fd(&runtime), false, 20).unwrap();
        drain(&mut runtime, &mut at_runtime);
        drain(&mut firmware, &mut at_firmware);
    }
    let f2r = proxy.stats(Direction::FirmwareToRuntime);
    let r2f = proxy.stats(Direction::RuntimeToFirmware);
    assert!(
        f2r.discarded_before_connect > 0,
        "the early frame was held back"
    );
    let rt = *at_runtime.counters();
    let fw = *at_firmware.counters();
    Outcome {
        f2r: (
            f2r.injected,
            f2r.ledger,
            rt,
            dreamer_hil::proxy::reconcile(&f2r.ledger, &rt),
        ),
        r2f: (
            r2f.injected,
            r2f.ledger,
            fw,
            dreamer_hil::proxy::reconcile(&r2f.ledger, &fw),
        ),
    }
}

#[test]
fn clean_relay_delivers_every_frame() {
    let out = exchange(FaultRates::default(), 1, 300);
    for (name, (injected, ledger, counters, rec)) in [("f2r", out.f2r), ("r2f", out.r2f)] {
        assert_eq!(injected, Injected::default(), "{name}");
        assert_eq!(ledger.damaged, 0, "{name}");
        assert!(rec.reconciled, "{name}: {rec:?}");
        assert_eq!(counters.errors(), 0, "{name}: {counters:?}");
    }
    // 300 observations; 300 actions plus the hello.
    assert_eq!(out.f2r.2.frames_ok, 300);
    assert_eq!(out.r2f.2.frames_ok, 301);
}

#[test]
fn every_corrupted_frame_is_rejected_and_counts_reconcile() {
    let faults = FaultRates {
        drop: 0.002,
        flip: 0.002,
        dup: 0.002,
        delay_p: 0.001,
        delay_us: 3000,
    };
    let a = exchange(faults, 42, 1500);
    for (name, (injected, ledger, counters, rec)) in [("f2r", a.f2r), ("r2f", a.r2f)] {
        assert!(injected.corruptions() > 0, "{name}: nothing injected");
        assert!(ledger.damaged > 0, "{name}");
        // Each corruption damages at most two segments (a split or a merge) and every
        // damaged segment holds at least one corruption, except that a duplicated
        // delimiter damages nothing.
        assert!(ledger.damaged <= 2 * injected.corruptions(), "{name}");
        assert!(
            ledger.damaged >= 1,
            "{name}: corruptions {injected:?} left no damaged frame"
        );
        assert!(rec.reconciled, "{name}: {rec:?} {counters:?}");
        assert_eq!(rec.rejected, ledger.damaged, "{name}");
        assert!(counters.sequence_gaps > 0, "{name}: lost frames leave gaps");
    }
    // Same seed, same byte streams: the same faults land on the same bytes.
    let b = exchange(faults, 42, 1500);
    assert_eq!(a.f2r.0, b.f2r.0);
    assert_eq!(a.r2f.0, b.r2f.0);
    assert_eq!(a.f2r.1, b.f2r.1);
    assert_eq!(a.r2f.1, b.r2f.1);
}
