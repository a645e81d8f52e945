//! The host firmware over a real pseudo-terminal, against a test peer that plays the
//! runtime: handshake, answer observations, go silent, answer again. Assertions are on
//! message order, counts and states, never on durations.

use std::io::{self, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use dreamer_wire::{
    Action, FaultKind, Frame, FrameReader, HandshakeResult, Hello, MAX_FRAME, Message, Mode,
    Observation, PROTOCOL_VERSION, encode_frame, write_message,
};
use firmware_host::firmware::TaskLayout;
use firmware_host::host::{HostFirmware, PtySerial, SimOptions};
use serialport::{SerialPort, TTYPort};

/// The runtime's side of the link.
struct Peer {
    reader: FrameReader<TTYPort>,
    writer: TTYPort,
}

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

    /// Next valid message, or None after `patience` without one.
    fn next(&mut self, patience: Duration) -> Option<Message> {
        let give_up = Instant::now() + patience;
        while Instant::now() < give_up {
            match self.reader.next_frame() {
                Ok(Some(Ok(Frame { message, .. }))) => return Some(message),
                Ok(Some(Err(e))) => panic!("firmware sent a bad frame: {e}"),
                Ok(None) => return None,
                // The other end closed (the firmware process exited).
                Err(e)
                    if e.kind() == io::ErrorKind::BrokenPipe || e.raw_os_error() == Some(EIO) =>
                {
                    return None;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                    ) => {}
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
        for _ in 0..50 {
            self.send(&hello);
            let give_up = Instant::now() + Duration::from_millis(200);
            while Instant::now() < give_up {
                if let Some(Message::HelloAck(ack)) = self.next(Duration::from_millis(200)) {
                    assert_eq!(ack.result, HandshakeResult::Accepted);
                    return;
                }
            }
        }
        panic!("no handshake answer");
    }

    /// Next observation; fault reports seen on the way are appended to `faults`.
    fn observation(&mut self, faults: &mut Vec<dreamer_wire::FaultReport>) -> Observation {
        loop {
            match self
                .next(Duration::from_secs(5))
                .expect("the firmware went silent")
            {
                Message::Observation(o) => return o,
                Message::Fault(f) => faults.push(f),
                _ => {}
            }
        }
    }

    fn answer(&mut self, seq: u32, value: f32) {
        self.send(&Message::Action(Action {
            seq,
            values: heapless::Vec::from_slice(&[value]).unwrap(),
        }));
    }
}

/// Linux `EIO`: what reading a pty master returns once no slave is open.
const EIO: i32 = 5;

fn command(world: &firmware_host::host::SharedWorld) -> f32 {
    world.lock().unwrap().motor_command()
}

#[test]
fn actions_apply_silence_faults_and_answers_recover() {
    const K: u16 = 3;
    let (master, slave) = TTYPort::pair().expect("cannot create a pty pair");
    let options = SimOptions {
        rate_hz: 50.0,
        deadline_s: Some(0.018),
        max_missed: K,
        heartbeat_hz: 0.0,
        ..SimOptions::new("cartpole-swingup")
    };
    let mut robot = HostFirmware::new(options, PtySerial::new(slave)).unwrap();
    let world = robot.world();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let firmware = std::thread::spawn(move || {
        robot.run(Some(Duration::from_secs(60)), &stop_flag);
        robot.finish()
    });

    let mut peer = Peer::new(master);
    peer.handshake("cartpole-swingup", TaskLayout::Cartpole.wire_layout());
    let mut faults = Vec::new();

    // Answered: 0.5 for a while, then out of range (clamped to 1.0).
    for i in 0..15 {
        let obs = peer.observation(&mut faults);
        assert_eq!(obs.values.len(), 5);
        peer.answer(obs.seq, if i < 10 { 0.5 } else { 1.5 });
    }
    peer.observation(&mut faults);
    if faults.is_empty() {
        assert_eq!(command(&world), 1.0, "the clamped action is being applied");
    }

    // Silent: the safe state comes within K observations, with an active fault report.
    let mut unanswered = 1;
    let fault = loop {
        match peer
            .next(Duration::from_secs(5))
            .expect("the firmware went silent")
        {
            Message::Observation(_) => unanswered += 1,
            Message::Fault(f) if f.active => break f,
            _ => {}
        }
    };
    assert!(
        unanswered <= usize::from(K),
        "{unanswered} observations before the fault"
    );
    assert_eq!(fault.kind, FaultKind::DeadlineMissed);
    assert_eq!(command(&world), 0.0, "motor off in the safe state");
    // It stays safe while silent, without repeating the report.
    for _ in 0..3 {
        let _ = peer.observation(&mut faults);
    }
    assert!(faults.is_empty(), "extra fault reports: {faults:?}");
    assert_eq!(command(&world), 0.0);

    // Answering again recovers: the fault is cleared and the new action drives the motor.
    let mut cleared = None;
    for _ in 0..20 {
        let obs = peer.observation(&mut faults);
        if let Some(f) = faults.iter().find(|f| !f.active) {
            cleared = Some(*f);
            break;
        }
        peer.answer(obs.seq, -0.25);
    }
    let cleared = cleared.expect("no fault-cleared report after answering again");
    assert_eq!(cleared.kind, FaultKind::DeadlineMissed);
    let obs = peer.observation(&mut faults);
    peer.answer(obs.seq, -0.25);
    let obs = peer.observation(&mut faults);
    peer.answer(obs.seq, -0.25);
    let obs = peer.observation(&mut faults);
    if faults.iter().filter(|f| f.active).count() == 0 {
        assert_eq!(command(&world), -0.25);
    }

    // A corrupted action is counted, not applied.
    let mut buf = [0u8; MAX_FRAME];
    let mut frame = encode_frame(
        &Message::Action(Action {
            seq: obs.seq,
            values: heapless::Vec::from_slice(&[0.9]).unwrap(),
        }),
        &mut buf,
    )
    .to_vec();
    frame[2] ^= 0x10;
    peer.writer.write_all(&frame).unwrap();
    let _ = peer.observation(&mut faults);

    stop.store(true, Ordering::Relaxed);
    let summary = firmware.join().unwrap();
    assert!(
        summary.faults >= 1 && summary.recoveries >= 1,
        "{summary:?}"
    );
    assert_eq!(summary.final_mode, Mode::Running);
    assert!(summary.clamped_actions >= 1);
    assert_eq!(summary.frame_errors.bad_crc, 1);
    assert_eq!(summary.firmware.unexpected_messages, 0);
    assert!(summary.physics_steps > 0 && summary.episode_return.is_finite());
}

#[test]
fn the_binary_runs_a_session_and_prints_a_summary() {
    let (master, slave) = TTYPort::pair().expect("cannot create a pty pair");
    let path = slave.name().expect("pty slave has a path");
    let child = Command::new(env!("CARGO_BIN_EXE_firmware-host"))
        .args([
            "--plant",
            "pendulum",
            "--port",
            &path,
            "--rate-hz",
            "50",
            "--duration-s",
            "1.5",
        ])
        .args(["--max-missed", "2", "--heartbeat-hz", "10", "--seed", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut peer = Peer::new(master);
    peer.handshake("pendulum", TaskLayout::Pendulum.wire_layout());
    // The process has the port open now; closing ours lets its exit end our reads.
    drop(slave);
    let mut faults = Vec::new();
    for _ in 0..10 {
        let obs = peer.observation(&mut faults);
        assert_eq!(obs.values.len(), 3);
        peer.answer(obs.seq, 0.2);
    }
    // Then silence: keep reading until the process ends so its writes never block.
    let mut saw_safe_heartbeat = false;
    let mut saw_fault = false;
    while let Some(message) = peer.next(Duration::from_secs(5)) {
        match message {
            Message::Heartbeat(h) => saw_safe_heartbeat |= h.mode == Mode::Safe,
            Message::Fault(f) => saw_fault |= f.active && f.kind == FaultKind::DeadlineMissed,
            _ => {}
        }
    }
    assert!(saw_fault && saw_safe_heartbeat);
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["task"], "pendulum");
    assert!(summary["ticks"].as_u64().unwrap() >= 12);
    assert!(summary["faults"].as_u64().unwrap() >= 1);
    assert!(summary["deadline_misses"].as_u64().unwrap() >= 2);
    assert_eq!(summary["final_mode"], "Safe");
    assert!(summary["firmware"]["actions_applied"].as_u64().unwrap() >= 1);
    assert_eq!(summary["frame_errors"]["bad_crc"], 0);
    assert!(summary["episode_return"].as_f64().unwrap().is_finite());
    assert!(summary["physics_steps"].as_u64().unwrap() > 0);
}
