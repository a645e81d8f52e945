//! The host firmware over a real pseudo-terminal, against a test peer that plays the
//! runtime: handshake, answer observations, go silent, answer again.
//!
//! Assertions never depend on how fast either side runs. The firmware sends a heartbeat
//! right after every observation; when its deadline-miss count did not grow, the previous
//! tick's action was applied on time, so the motor command at this tick's start (the
//! observation timestamp, looked up in the simulated driver's command log) is known exactly.
//! Conditions that need a timely answer are retried with later observations.

use std::io::{self, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dreamer_firmware::TaskLayout;
use dreamer_wire::report::FirmwareSummary;
use dreamer_wire::{
    Action, FaultKind, FaultReport, Frame, FrameReader, HandshakeResult, Heartbeat, Hello,
    MAX_FRAME, Message, Mode, PROTOCOL_VERSION, cobs_encode, write_message,
};
use firmware_host::{HostFirmware, PtySerial, SharedWorld, SimOptions};
use serialport::{SerialPort, TTYPort};

/// The runtime's side of the link.
struct Peer {
    reader: FrameReader<TTYPort>,
    writer: TTYPort,
}

/// One control tick as the peer sees it: the observation and the heartbeat after it.
struct Tick {
    seq: u32,
    timestamp_us: u64,
    values: usize,
    heartbeat: Heartbeat,
    /// Fault reports received since the previous tick.
    faults: Vec<FaultReport>,
}

/// Linux `EIO`: what reading a pty master returns once no slave is open.
const EIO: i32 = 5;

impl Peer {
    fn new(mut master: TTYPort) -> Self {
        master.set_timeout(Duration::from_millis(200)).unwrap();
        let reader = FrameReader::new(master.try_clone_native().unwrap());
        Self {
            reader,
            writer: master,
        }
    }

    fn send(&mut self, message: &Message) {
        write_message(&mut self.writer, message).unwrap();
    }

    /// Next valid message, or None after `patience` without one or when the other end closed.
    fn next(&mut self, patience: Duration) -> Option<Message> {
        let give_up = Instant::now() + patience;
        while Instant::now() < give_up {
            match self.reader.next_frame() {
                Ok(Some(Ok(Frame { message, .. }))) => return Some(message),
                Ok(Some(Err(e))) => panic!("firmware sent a bad frame: {e}"),
                Ok(None) => return None,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) => {}
                Err(e)
                    if e.kind() == io::ErrorKind::BrokenPipe || e.raw_os_error() == Some(EIO) =>
                {
                    return None;
                }
                Err(e) => panic!("reading the pty: {e}"),
            }
        }
        None
    }

    fn handshake(&mut self, task: &str, layout: dreamer_wire::Layout) {
        let hello = Message::Hello(Hello {
            protocol_version: PROTOCOL_VERSION,
            task: heapless::String::try_from(task).unwrap(),
            layout,
        });
        // Resent until answered: the firmware process may not have opened its end yet.
        for _ in 0..100 {
            self.send(&hello);
            while let Some(message) = self.next(Duration::from_millis(200)) {
                if let Message::HelloAck(ack) = message {
                    assert_eq!(ack.result, HandshakeResult::Accepted);
                    return;
                }
            }
        }
        panic!("no handshake answer");
    }

    /// The next observation and the heartbeat that follows it.
    fn tick(&mut self) -> Tick {
        let mut faults = Vec::new();
        let mut observation = None;
        loop {
            match self
                .next(Duration::from_secs(10))
                .expect("the firmware went silent")
            {
                Message::Observation(o) => observation = Some(o),
                Message::Fault(f) => faults.push(f),
                Message::Heartbeat(heartbeat) => {
                    if let Some(o) = observation.take() {
                        return Tick {
                            seq: o.seq,
                            timestamp_us: o.timestamp_us,
                            values: o.values.len(),
                            heartbeat,
                            faults,
                        };
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn answer(&mut self, seq: u32, value: f32) {
        self.send(&action(seq, value));
    }
}

fn action(seq: u32, value: f32) -> Message {
    Message::Action(Action {
        seq,
        values: heapless::Vec::from_slice(&[value]).unwrap(),
    })
}

/// The motor command in force when `tick` started.
fn command_at(world: &SharedWorld, tick: &Tick) -> f32 {
    let world = world.lock().unwrap();
    world
        .command_at(tick.timestamp_us)
        .expect("command log covers the test")
}

/// Answers every tick with `value` until `on_time` ticks were verified applied on time
/// (deadline-miss count unchanged in Running mode). At each verified tick the motor command
/// must be the clamped answer. Returns the last tick (verified, its action not yet sent).
fn drive(
    peer: &mut Peer,
    world: &SharedWorld,
    value: f32,
    on_time: usize,
    events: &mut Vec<FaultReport>,
) -> Tick {
    let mut previous: Option<Tick> = None;
    let mut verified = 0;
    for _ in 0..300 {
        let tick = peer.tick();
        events.extend(&tick.faults);
        if let Some(prev) = &previous {
            let hit = tick.heartbeat.deadline_misses == prev.heartbeat.deadline_misses;
            if hit
                && tick.heartbeat.mode == Mode::Running
                && prev.heartbeat.mode != Mode::AwaitingHandshake
            {
                assert_eq!(
                    command_at(world, &tick),
                    value.clamp(-1.0, 1.0),
                    "tick {}",
                    tick.seq
                );
                verified += 1;
                if verified >= on_time {
                    return tick;
                }
            }
        }
        peer.answer(tick.seq, value);
        previous = Some(tick);
    }
    panic!("no action was applied on time in 300 ticks");
}

#[test]
fn actions_apply_silence_faults_and_answers_recover() {
    const K: u16 = 3;
    let (master, slave) = TTYPort::pair().expect("cannot create a pty pair");
    let rate_hz = 20.0;
    let options = SimOptions {
        rate_hz,
        deadline_s: Some(0.045),
        max_missed: K,
        heartbeat_hz: rate_hz,
        ..SimOptions::new("cartpole-swingup")
    };
    let mut robot = HostFirmware::new(options, PtySerial::new(slave)).unwrap();
    let world = robot.world();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let firmware = std::thread::spawn(move || {
        robot.run(Some(Duration::from_secs(120)), &stop_flag);
        robot.finish()
    });

    let mut peer = Peer::new(master);
    peer.handshake("cartpole-swingup", TaskLayout::Cartpole.wire_layout());
    let mut events = Vec::new();

    // Answered: the action drives the motor; an out-of-range one is clamped.
    drive(&mut peer, &world, 0.5, 2, &mut events);
    let last_good = drive(&mut peer, &world, 1.5, 2, &mut events);
    assert_eq!(last_good.values, 5);

    // Silent from here. The tick before `last_good` was on time, so the misses start at
    // `last_good` and the fault is raised at its K-th tick at the latest.
    let (fault, first_safe) = loop {
        let tick = peer.tick();
        if let Some(f) = tick.faults.iter().find(|f| f.active) {
            break (*f, tick);
        }
        assert!(
            tick.seq < last_good.seq + u32::from(K),
            "no fault after {} silent ticks",
            tick.seq - last_good.seq
        );
    };
    assert_eq!(fault.kind, FaultKind::DeadlineMissed);
    assert_eq!(fault.consecutive_misses, K);
    assert!(fault.seq < last_good.seq + u32::from(K));
    assert_eq!(
        command_at(&world, &first_safe),
        0.0,
        "motor off in the safe state"
    );
    // Still silent: it stays safe, motor off, without repeating the report.
    for _ in 0..3 {
        let tick = peer.tick();
        assert!(tick.faults.is_empty(), "{:?}", tick.faults);
        assert_eq!(tick.heartbeat.mode, Mode::Safe);
        assert_eq!(command_at(&world, &tick), 0.0);
    }

    // Answering again clears the fault and the new action drives the motor.
    events.clear();
    drive(&mut peer, &world, -0.25, 2, &mut events);
    assert!(
        events
            .iter()
            .any(|f| !f.active && f.kind == FaultKind::DeadlineMissed),
        "{events:?}"
    );

    // An action whose CRC does not match is counted, not applied.
    let tick = peer.tick();
    let mut raw = [0u8; MAX_FRAME];
    let payload_len = postcard::to_slice(&action(tick.seq, 0.9), &mut raw)
        .unwrap()
        .len();
    let bad_crc = 0xDEAD_BEEFu32.to_le_bytes();
    raw[payload_len..payload_len + 4].copy_from_slice(&bad_crc);
    let mut frame = [0u8; MAX_FRAME];
    let n = cobs_encode(&raw[..payload_len + 4], &mut frame).unwrap();
    frame[n] = 0;
    peer.writer.write_all(&frame[..=n]).unwrap();
    // Wait until the firmware has counted it: only that frame can raise the error count.
    let mut after = peer.tick();
    for _ in 0..50 {
        if after.heartbeat.frame_errors > tick.heartbeat.frame_errors {
            break;
        }
        after = peer.tick();
    }
    assert_eq!(
        after.heartbeat.frame_errors,
        tick.heartbeat.frame_errors + 1
    );
    assert_ne!(
        command_at(&world, &after),
        0.9,
        "the corrupted action was applied"
    );

    stop.store(true, Ordering::Relaxed);
    let summary = firmware.join().unwrap();
    assert!(
        summary.faults >= 1 && summary.recoveries >= 1,
        "{summary:?}"
    );
    assert!(summary.clamped_actions >= 2);
    assert_eq!(summary.frame_errors.bad_crc, 1);
    assert_eq!(summary.firmware.unexpected_messages, 0);
    assert!(summary.physics_steps > 0 && summary.episode_return.is_finite());
}

#[test]
fn the_binary_runs_a_session_and_prints_a_summary() {
    let (master, slave) = TTYPort::pair().expect("cannot create a pty pair");
    let path = slave.name().expect("pty slave has a path");
    // No --duration-s: the test ends the run with SIGTERM once it has seen what it needs.
    let child = Command::new(env!("CARGO_BIN_EXE_firmware-host"))
        .args(["--plant", "pendulum", "--port", &path, "--rate-hz", "20"])
        .args(["--max-missed", "2", "--heartbeat-hz", "20", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peer = Peer::new(master);
    peer.handshake("pendulum", TaskLayout::Pendulum.wire_layout());
    // The process has the port open now; closing ours lets its exit end our reads.
    drop(slave);
    // Answer until one action is known to have been applied on time.
    let mut previous = peer.tick();
    peer.answer(previous.seq, 0.2);
    for _ in 0..300 {
        let tick = peer.tick();
        assert_eq!(tick.values, 3);
        if tick.heartbeat.deadline_misses == previous.heartbeat.deadline_misses {
            break;
        }
        peer.answer(tick.seq, 0.2);
        previous = tick;
    }
    // Silence until the firmware reports the safe state, then stop it.
    while peer.tick().heartbeat.mode != Mode::Safe {}
    // SAFETY: plain kill(2) on the child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    // Keep reading until the process ends so its writes never block.
    while peer.next(Duration::from_secs(10)).is_some() {}
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: FirmwareSummary = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary.task, "pendulum");
    assert!(summary.ticks >= 3);
    assert!(summary.faults >= 1);
    assert!(summary.deadline_misses >= 2);
    assert_eq!(summary.final_mode, Mode::Safe);
    assert!(summary.firmware.actions_applied >= 1);
    assert_eq!(summary.frame_errors.bad_crc, 0);
    assert!(summary.episode_return.is_finite());
    assert!(summary.physics_steps > 0);
}
