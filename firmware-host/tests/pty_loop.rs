//! The host firmware over a real pseudo-terminal, against a test peer that plays the
//! runtime (tests/common: handshake, answer observations, go silent, answer again, a corrupt
//! action), and the binary over a pty.

mod common;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Peer, Pty, Transport};
use dreamer_firmware::{StreamLink, TaskLayout};
use dreamer_wire::Mode;
use dreamer_wire::report::FirmwareSummary;
use firmware_host::{HostFirmware, PtySerial, SimOptions};
use serialport::{SerialPort, TTYPort};

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
    let mut robot = HostFirmware::new(options, StreamLink::new(PtySerial::new(slave))).unwrap();
    let world = robot.world();
    let stop = Arc::new(AtomicBool::new(false));
    let stop_flag = stop.clone();
    let firmware = std::thread::spawn(move || {
        robot.run(Some(Duration::from_secs(120)), &stop_flag);
        robot.finish()
    });

    let mut peer = Peer::new(Pty::new(master));
    common::session_scenario(&mut peer, &world, K);

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
    let mut peer = Peer::new(Pty::new(master));
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
    while peer.link.next(Duration::from_secs(10)).is_some() {}
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
