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
use firmware_host::{HostFirmware, PtySerial};
use serialport::{SerialPort, TTYPort};

#[test]
fn actions_apply_silence_faults_and_answers_recover() {
    let (master, slave) = TTYPort::pair().expect("cannot create a pty pair");
    let link = StreamLink::new(PtySerial::new(slave));
    let robot = HostFirmware::new(common::scenario_options(), link).unwrap();
    let world = robot.world();
    let stop = Arc::new(AtomicBool::new(false));
    let firmware = common::run_until_stopped(robot, &stop);

    let mut peer = Peer::new(Pty::new(master));
    common::session_scenario(&mut peer, &world);

    stop.store(true, Ordering::Relaxed);
    common::check_scenario_summary(&firmware.join().unwrap());
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
    common::apply_one_then_fall_silent(&mut peer);
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
