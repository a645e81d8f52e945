//! The host firmware over real UDP sockets on loopback (the firmware core's `DatagramLink` on
//! `HostUdp`), against the test peer of the pty test playing the runtime: the same session
//! (tests/common), one message per datagram; a stranger's datagrams are counted and dropped.

mod common;

use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Peer, Udp};
use dreamer_firmware::TaskLayout;
use dreamer_wire::{Hello, MAX_RAW, Message, PROTOCOL_VERSION, encode_datagram};
use firmware_host::{DatagramLink, HostFirmware, HostUdp};

#[test]
fn actions_apply_silence_faults_and_answers_recover_over_udp() {
    let peer_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let peer_addr = peer_socket.local_addr().unwrap();
    // Port 0: the OS picks a free one, which the stack reports.
    let link =
        DatagramLink::bind(HostUdp::new(IpAddr::V4(Ipv4Addr::LOCALHOST)), 0, peer_addr).unwrap();
    let (fd, firmware_addr) = link.stack().bound().unwrap();
    let mut robot = HostFirmware::new(common::scenario_options(), link).unwrap();
    robot.wake_on_input(fd);
    let world = robot.world();
    let stop = Arc::new(AtomicBool::new(false));
    let firmware = common::run_until_stopped(robot, &stop);

    // A stranger's valid handshake gets no answer.
    let stranger = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let hello = Message::Hello(Hello {
        protocol_version: PROTOCOL_VERSION,
        task: heapless::String::try_from("cartpole-swingup").unwrap(),
        layout: TaskLayout::Cartpole.wire_layout(),
    });
    let mut buf = [0u8; MAX_RAW];
    for _ in 0..2 {
        stranger
            .send_to(encode_datagram(&hello, &mut buf), firmware_addr)
            .unwrap();
    }
    stranger
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        stranger.recv_from(&mut [0u8; 128]).is_err(),
        "the firmware answered a stranger"
    );

    let mut peer = Peer::new(Udp::new(peer_socket, firmware_addr));
    common::session_scenario(&mut peer, &world);

    stop.store(true, Ordering::Relaxed);
    let summary = firmware.join().unwrap();
    common::check_scenario_summary(&summary);
    assert_eq!(summary.frame_errors.foreign, 2);
    assert_eq!(summary.firmware.handshakes_accepted, 1);
}

/// The binary with `--udp-bind 127.0.0.1:0`: it heartbeats before any session (which is how
/// the peer learns its port), accepts the handshake, applies actions, goes safe when they stop,
/// and prints its summary on SIGTERM.
#[test]
fn the_binary_runs_a_udp_session_and_prints_a_summary() {
    let peer_socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let peer_addr = peer_socket.local_addr().unwrap().to_string();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_firmware-host"))
        .args(["--plant", "pendulum", "--udp-bind", "127.0.0.1:0"])
        .args(["--udp-peer", &peer_addr, "--rate-hz", "20"])
        .args(["--max-missed", "2", "--heartbeat-hz", "20", "--seed", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    peer_socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (_, firmware_addr) = peer_socket
        .recv_from(&mut [0u8; MAX_RAW + 1])
        .expect("no heartbeat from the firmware");
    let mut peer = Peer::new(Udp::new(peer_socket, firmware_addr));
    peer.handshake("pendulum", TaskLayout::Pendulum.wire_layout());
    common::apply_one_then_fall_silent(&mut peer);
    // SAFETY: plain kill(2) on the child's pid.
    assert_eq!(
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) },
        0
    );
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "pendulum on UDP {firmware_addr} (peer {peer_addr})"
        )),
        "{stderr}"
    );
    let summary: dreamer_wire::report::FirmwareSummary =
        serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary.task, "pendulum");
    assert!(summary.faults >= 1 && summary.firmware.actions_applied >= 1);
    assert_eq!(summary.final_mode, dreamer_wire::Mode::Safe);
    assert_eq!(summary.frame_errors.errors(), 0);
}
