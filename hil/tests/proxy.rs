//! The fault-injection relay on its own: two ptys, frames written at one slave and decoded
//! at the other, or two UDP sockets, one datagram per frame. Every corrupted frame must be
//! rejected and none accepted, exactly as the relay's ledger says, and a seed must reproduce
//! the same faults.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use dreamer_hil::pty::Pty;
use dreamer_hil::{Direction, FaultRates, Injected, Ledger, Proxy, Reconciliation};
use dreamer_wire::{
    Action, EpisodeStep, FrameDecoder, Hello, Layout, LinkCounters, MAX_FRAME, MAX_RAW, Message,
    Observation, PROTOCOL_VERSION, encode_datagram, encode_frame,
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
        step: EpisodeStep::default(),
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
        dreamer_hil::fd::wait_ready(
            std::os::fd::AsRawFd::as_raw_fd(&runtime),
            false,
            Duration::from_millis(20),
        )
        .unwrap();
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
            dreamer_hil::proxy::reconcile(&f2r.ledger, &rt, 0),
        ),
        r2f: (
            r2f.injected,
            r2f.ledger,
            fw,
            dreamer_hil::proxy::reconcile(&r2f.ledger, &fw, 0),
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
        reorder: 0.0,
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

fn datagram(message: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_RAW];
    encode_datagram(message, &mut buf).to_vec()
}

/// Reads every datagram waiting on `socket` into the decoder.
fn drain_datagrams(socket: &UdpSocket, decoder: &mut FrameDecoder) {
    let mut buf = [0u8; MAX_RAW + 1];
    while let Ok(n) = socket.recv(&mut buf) {
        let _ = decoder.push_datagram(&buf[..n]);
    }
}

/// [`exchange`] over UDP: each end bound to loopback, talking to the relay's socket.
fn udp_exchange(faults: FaultRates, seed: u64, frames: u32) -> Outcome {
    let bind = || {
        let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        socket.set_nonblocking(true).unwrap();
        socket
    };
    let (firmware, runtime) = (bind(), bind());
    let (mut proxy, ends) = Proxy::start_udp(
        firmware.local_addr().unwrap(),
        runtime.local_addr().unwrap(),
        faults,
        seed,
        Instant::now(),
        None,
    )
    .unwrap();
    let mut at_runtime = FrameDecoder::new();
    let mut at_firmware = FrameDecoder::new();
    let to_runtime = |m: &Message| firmware.send_to(&datagram(m), ends.for_firmware).unwrap();
    let to_firmware = |m: &Message| runtime.send_to(&datagram(m), ends.for_runtime).unwrap();

    // Nothing of the firmware's reaches the runtime before the runtime has sent something.
    to_runtime(&observation(1000));
    wait_for_input(&proxy, Direction::FirmwareToRuntime);
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        task: heapless::String::try_from("cartpole-swingup").unwrap(),
        layout: Layout::from_fields(&["a", "b"], 1),
    });
    to_firmware(&hello);
    wait_for_input(&proxy, Direction::RuntimeToFirmware);
    // A stranger's datagram is not forwarded.
    bind()
        .send_to(&datagram(&action(5000)), ends.for_runtime)
        .unwrap();
    for seq in 1..=frames {
        to_runtime(&observation(seq));
        to_firmware(&action(seq));
        if seq % 8 == 0 {
            // Keep the receive queues from filling.
            std::thread::sleep(Duration::from_millis(2));
            drain_datagrams(&runtime, &mut at_runtime);
            drain_datagrams(&firmware, &mut at_firmware);
        }
    }
    std::thread::sleep(Duration::from_millis(100));
    proxy.flush_and_stop(Direction::FirmwareToRuntime).unwrap();
    proxy.flush_and_stop(Direction::RuntimeToFirmware).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    drain_datagrams(&runtime, &mut at_runtime);
    drain_datagrams(&firmware, &mut at_firmware);
    let f2r = proxy.stats(Direction::FirmwareToRuntime);
    let r2f = proxy.stats(Direction::RuntimeToFirmware);
    assert_eq!(
        f2r.discarded_before_connect,
        datagram(&observation(1000)).len() as u64
    );
    assert_eq!(r2f.foreign, 1, "the stranger's datagram");
    let drops = |s: &UdpSocket| {
        dreamer_hil::proxy::receive_drops(s.local_addr().unwrap())
            .unwrap()
            .unwrap()
    };
    let (rt, fw) = (*at_runtime.counters(), *at_firmware.counters());
    Outcome {
        f2r: (
            f2r.injected,
            f2r.ledger,
            rt,
            dreamer_hil::proxy::reconcile(&f2r.ledger, &rt, drops(&runtime)),
        ),
        r2f: (
            r2f.injected,
            r2f.ledger,
            fw,
            dreamer_hil::proxy::reconcile(&r2f.ledger, &fw, drops(&firmware)),
        ),
    }
}

#[test]
fn clean_udp_relay_delivers_every_datagram() {
    let out = udp_exchange(FaultRates::default(), 1, 300);
    for (name, (injected, ledger, counters, rec)) in [("f2r", out.f2r), ("r2f", out.r2f)] {
        assert_eq!(injected, Injected::default(), "{name}");
        assert_eq!(ledger.damaged, 0, "{name}");
        assert_eq!(rec.receiver_drops, 0, "{name}");
        assert!(rec.reconciled, "{name}: {rec:?}");
        assert_eq!(counters.errors(), 0, "{name}: {counters:?}");
    }
    assert_eq!(out.f2r.2.frames_ok, 300);
    assert_eq!(out.r2f.2.frames_ok, 301);
}

#[test]
fn every_datagram_fault_is_detected_and_counts_reconcile() {
    let faults = FaultRates {
        drop: 0.01,
        flip: 0.01,
        dup: 0.01,
        delay_p: 0.005,
        delay_us: 3000,
        reorder: 0.01,
    };
    let a = udp_exchange(faults, 42, 1500);
    for (name, (injected, ledger, counters, rec)) in [("f2r", a.f2r), ("r2f", a.r2f)] {
        for (fault, count) in [
            ("dropped", injected.dropped),
            ("flipped", injected.flipped),
            ("duplicated", injected.duplicated),
            ("delayed", injected.delayed),
            ("reordered", injected.reordered),
        ] {
            assert!(count > 0, "{name}: nothing {fault}");
        }
        // One datagram, one frame: a flipped datagram is one rejection (two when it was
        // also duplicated), nothing else is rejected, and the CRC is what rejects it.
        assert!(
            (injected.flipped..=2 * injected.flipped).contains(&ledger.damaged),
            "{name}: {injected:?} {ledger:?}"
        );
        assert_eq!(rec.receiver_drops, 0, "{name}");
        assert!(rec.reconciled, "{name}: {rec:?} {counters:?}");
        assert_eq!(u64::from(counters.bad_crc), ledger.damaged, "{name}");
        // Drops, copies and reordering each break the sequence.
        assert!(
            counters.sequence_gaps as u64 >= injected.dropped,
            "{name}: {counters:?}"
        );
    }
    let b = udp_exchange(faults, 42, 1500);
    assert_eq!((a.f2r.0, a.r2f.0), (b.f2r.0, b.r2f.0));
    assert_eq!((a.f2r.1, a.r2f.1), (b.f2r.1, b.r2f.1));
}
