//! `serve` against the host firmware (the firmware core on a simulated plant) over a real
//! pty, with bundles exported by `dreamer-export`.

#[path = "../../export/tests/common/mod.rs"]
mod export_fixtures;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dreamer_export::{ExportOptions, export};
#[cfg(feature = "sim")]
use dreamer_runtime::serve::Camera;
use dreamer_runtime::serve::{
    Experience, LinkSpec, NextPolicy, ServeEnd, ServeError, ServeFailure, ServeOptions,
    ServeSummary, serve,
};
use dreamer_runtime::{Agent, AgentOptions};
use dreamer_wire::HandshakeResult;
use dreamer_wire::report::FirmwareSummary;
use export_fixtures::Spec;
use firmware_host::{DatagramLink, HostFirmware, HostUdp, Link, PtySerial, SimOptions, StreamLink};
use serialport::{SerialPort, TTYPort};

fn bundle(dir: &Path, spec: &Spec) -> PathBuf {
    let ckpt = export_fixtures::write_checkpoint(&dir.join("ckpt"), spec, 9);
    let out = dir.join("bundle");
    export(&ckpt, &out, &ExportOptions::default()).unwrap();
    out
}

/// Held while a pty pair is made and while a child process is spawned: `TTYPort::pair`
/// opens both ends without close-on-exec, and a child that inherited another test's pty
/// master would keep that pty open (its hang-up would never come).
static SPAWN: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A pty pair whose descriptors are not inherited by child processes.
fn pty_pair() -> (TTYPort, TTYPort) {
    use std::os::fd::AsRawFd;
    let _spawning = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
    let (master, slave) = TTYPort::pair().unwrap();
    for fd in [master.as_raw_fd(), slave.as_raw_fd()] {
        // SAFETY: fcntl on descriptors owned by the two ports.
        assert_eq!(
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) },
            0
        );
    }
    (master, slave)
}

fn cartpole_state() -> Spec {
    Spec {
        task: "cartpole-swingup",
        o: 5,
        steps: 30,
        ..Spec::state()
    }
}

/// The link a test serves over.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Over {
    Pty,
    Udp,
}

/// A free loopback UDP address (bound, read, released; the caller binds it next).
fn free_udp_address() -> SocketAddr {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A host firmware on a loopback UDP socket (a free port) whose peer is the runtime's free
/// address; returns it with that address and its own.
fn udp_robot(options: SimOptions) -> (HostFirmware<DatagramLink<HostUdp>>, SocketAddr, SocketAddr) {
    let runtime = free_udp_address();
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let link = DatagramLink::bind(HostUdp::new(ip), 0, runtime).unwrap();
    let (fd, firmware) = link.stack().bound().unwrap();
    let mut robot = HostFirmware::new(options, link).unwrap();
    robot.wake_on_input(fd);
    (robot, runtime, firmware)
}

/// Serves `bundle` against a host firmware for `plant` over `over` for `seconds`; returns
/// both sides.
fn against_firmware(
    plant: &str,
    bundle: &Path,
    seconds: f64,
    over: Over,
) -> (Result<ServeSummary, ServeFailure>, FirmwareSummary) {
    let mut agent = Agent::load(bundle, AgentOptions::default()).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let options = SimOptions {
        rate_hz: 50.0,
        heartbeat_hz: 10.0,
        ..SimOptions::new(plant)
    };
    let (link, firmware) = match over {
        Over::Pty => {
            let (master, slave) = pty_pair();
            let port = PathBuf::from(slave.name().unwrap());
            // serve opens the slave itself, exclusively.
            drop(slave);
            let robot = HostFirmware::new(options, StreamLink::new(PtySerial::new(master)));
            let firmware = in_thread(robot.unwrap(), seconds, &stop);
            (
                LinkSpec::Serial {
                    path: port,
                    baud: 115_200,
                },
                firmware,
            )
        }
        Over::Udp => {
            let (robot, runtime, firmware_addr) = udp_robot(options);
            let firmware = in_thread(robot, seconds, &stop);
            (
                LinkSpec::Udp {
                    bind: runtime,
                    peer: firmware_addr,
                },
                firmware,
            )
        }
    };
    let outcome = serve(
        &mut agent,
        &ServeOptions::on(link),
        &stop,
        Experience::default(),
    );
    stop.store(true, Ordering::Relaxed);
    let summary = firmware.join().unwrap();
    (outcome, summary)
}

/// Runs `robot` for `seconds` in a thread, then drains and sets `stop`.
fn in_thread<L: Link + Send + 'static>(
    mut robot: HostFirmware<L>,
    seconds: f64,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<FirmwareSummary> {
    let stop = stop.clone();
    std::thread::spawn(move || {
        robot.run(
            Some(Duration::from_secs_f64(seconds)),
            &AtomicBool::new(false),
        );
        robot.drain(Duration::from_millis(100));
        stop.store(true, Ordering::Relaxed);
        robot.finish()
    })
}

#[test]
fn answers_every_observation_of_the_host_firmware() {
    for over in [Over::Pty, Over::Udp] {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = bundle(tmp.path(), &cartpole_state());
        let (outcome, firmware) = against_firmware("cartpole-swingup", &bundle, 2.0, over);
        let served = outcome.unwrap();
        assert_eq!(
            (served.end, served.error.as_deref()),
            (ServeEnd::Stopped, None),
            "{over:?}"
        );
        assert_eq!(
            served.port.to_string_lossy().starts_with("udp 127.0.0.1:"),
            over == Over::Udp
        );
        assert!(served.session_opened_s.is_some());
        assert!(served.hello_sent >= 1);
        assert!(served.answered >= 30, "{over:?} {served:?}");
        assert_eq!(
            served.answered + served.stale_observations,
            served.observations
        );
        assert_eq!(served.frame_errors.errors(), 0, "{:?}", served.frame_errors);
        assert_eq!(served.frame_errors.foreign, 0);
        assert!(served.heartbeats > 0);
        assert_eq!(served.agent_faults, 0);
        assert_eq!(served.inference.count, served.answered);
        // The firmware took the answers: every action it received was a valid frame (action
        // sequence gaps are allowed: a late runtime answers only the newest observation).
        let link = firmware.frame_errors;
        assert_eq!(
            link.bad_cobs
                + link.bad_crc
                + link.wrong_length
                + link.unknown_message
                + link.malformed,
            0,
            "{link:?}"
        );
        // Everything it accepted was sent by serve (the last answer may come after it stopped).
        assert!(u64::from(link.frames_ok) <= served.answered + served.hello_sent);
        assert!(u64::from(firmware.firmware.actions_applied) * 2 >= served.answered);
        assert_eq!(firmware.firmware.invalid_actions, 0);
        assert_eq!(firmware.round_trip.count, firmware.firmware.actions_applied);
    }
}

#[test]
fn a_refused_handshake_names_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path(), &cartpole_state());
    let (outcome, firmware) = against_firmware("pendulum", &bundle, 1.0, Over::Udp);
    let ServeFailure { error, summary } = outcome.unwrap_err();
    // The summary comes with the error and says how serving ended.
    assert_eq!(summary.end, ServeEnd::Refused);
    assert_eq!(summary.error.as_deref(), Some(error.to_string().as_str()));
    assert!(summary.hello_sent >= 1 && summary.session_opened_s.is_none());
    assert!(
        matches!(
            error,
            ServeError::Refused {
                result: HandshakeResult::TaskMismatch,
                ..
            }
        ),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("pendulum") && text.contains("cartpole-swingup"),
        "{text}"
    );
    assert_eq!(firmware.firmware.actions_applied, 0);
}

fn pixel_bundle(dir: &Path) -> PathBuf {
    bundle(
        dir,
        &Spec {
            steps: 10,
            ..Spec::pixels()
        },
    )
}

#[cfg(feature = "sim")]
#[test]
fn a_pixel_policy_needs_a_readable_camera_state() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = pixel_bundle(tmp.path());
    let mut agent = Agent::load(&bundle, AgentOptions::default()).unwrap();
    let stop = AtomicBool::new(true);
    let failure = serve(
        &mut agent,
        &ServeOptions::new("/dev/null".into()),
        &stop,
        Experience::default(),
    )
    .unwrap_err();
    assert_eq!(failure.summary.end, ServeEnd::Error);
    let error = failure.error;
    assert!(error.to_string().contains("--camera-state"), "{error}");
    let missing = tmp.path().join("no-such.state");
    let error = Camera::open(&missing, "cartpole-swingup").err().unwrap();
    assert!(error.to_string().contains("no-such.state"), "{error}");
    std::fs::write(&missing, b"garbage").unwrap();
    let error = Camera::open(&missing, "cartpole-swingup").err().unwrap();
    assert!(error.to_string().contains("PLST"), "{error}");
}

#[cfg(not(feature = "sim"))]
#[test]
fn without_the_simulation_a_pixel_policy_is_refused_naming_the_feature() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = pixel_bundle(tmp.path());
    let mut agent = Agent::load(&bundle, AgentOptions::default()).unwrap();
    let stop = AtomicBool::new(true);
    let mut options = ServeOptions::new("/dev/null".into());
    options.camera_state = Some(tmp.path().join("plant.state"));
    let error = serve(&mut agent, &options, &stop, Experience::default())
        .unwrap_err()
        .error;
    assert!(
        matches!(error, ServeError::Camera(_)) && error.to_string().contains("`sim`"),
        "{error}"
    );
}

/// Existing readers of the JSON summary (the HIL harness, scripts) find every field under
/// the name it always had.
#[test]
fn the_summary_keeps_its_json_field_names() {
    let json = serde_json::to_value(ServeSummary::default()).unwrap();
    let keys = |value: &serde_json::Value| {
        let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&json),
        [
            "agent_faults",
            "answered",
            "camera_errors",
            "camera_frames",
            "elapsed_s",
            // Added later: how serving ended, and the error when it failed.
            "end",
            // Added with protocol 2: the firmware's episodes.
            "episode_returns",
            "error",
            "fault_reports",
            "firmware_rewards",
            "frame_errors",
            "heartbeats",
            "hello_sent",
            "inference",
            "last_mode",
            "observations",
            "observations_before_session",
            "policy_switches",
            "port",
            "service",
            "session_opened_s",
            "stale_observations",
            "task",
            "unexpected_messages",
        ]
    );
    for latency in ["inference", "service"] {
        assert_eq!(
            keys(&json[latency]),
            [
                "count", "max_us", "mean_us", "p50_us", "p90_us", "p999_us", "p99_us"
            ]
        );
    }
    assert_eq!(
        keys(&json["frame_errors"]),
        [
            "bad_cobs",
            "bad_crc",
            "foreign",
            "frames_ok",
            "malformed",
            "sequence_gaps",
            "unknown_message",
            "wrong_length",
        ]
    );
    let running = ServeSummary {
        last_mode: Some(dreamer_wire::Mode::Running),
        ..ServeSummary::default()
    };
    assert_eq!(
        serde_json::to_value(running).unwrap()["last_mode"],
        "Running"
    );
}

/// An old summary (written before `end` and `error` existed) still reads, as a stop.
#[test]
fn a_summary_without_an_end_reads_as_stopped() {
    let mut json = serde_json::to_value(ServeSummary::default()).unwrap();
    let object = json.as_object_mut().unwrap();
    object.remove("end");
    object.remove("error");
    let summary: ServeSummary = serde_json::from_value(json).unwrap();
    assert_eq!((summary.end, summary.error), (ServeEnd::Stopped, None));
    let hung_up = ServeSummary {
        end: ServeEnd::HungUp,
        ..ServeSummary::default()
    };
    assert_eq!(serde_json::to_value(hung_up).unwrap()["end"], "hung_up");
}

/// The firmware goes away (its end of the pty closes) without a stop request: serve ends
/// with the summary of everything up to then.
#[test]
fn a_hang_up_ends_serving_with_its_summary() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path(), &cartpole_state());
    let mut agent = Agent::load(&bundle, AgentOptions::default()).unwrap();
    let (master, slave) = pty_pair();
    let port = PathBuf::from(slave.name().unwrap());
    drop(slave);
    let firmware = std::thread::spawn(move || {
        let options = SimOptions {
            rate_hz: 50.0,
            ..SimOptions::new("cartpole-swingup")
        };
        let mut robot =
            HostFirmware::new(options, StreamLink::new(PtySerial::new(master))).unwrap();
        // Until the session has run a while (counted in applied actions, not time; the
        // bound only keeps a broken serve from hanging the test).
        for _ in 0..1200 {
            if robot.firmware().stats().actions_applied >= 10 {
                break;
            }
            robot.run(Some(Duration::from_millis(100)), &AtomicBool::new(false));
        }
        // Dropping the robot closes the pty master: the hang-up.
        robot.finish()
    });
    let outcome = serve(
        &mut agent,
        &ServeOptions::new(port),
        &AtomicBool::new(false),
        Experience::default(),
    );
    let firmware = firmware.join().unwrap();
    let ServeFailure { error, summary } = outcome.unwrap_err();
    assert!(matches!(error, ServeError::HungUp { .. }), "{error}");
    assert!(error.to_string().contains("hung up"), "{error}");
    assert_eq!(summary.end, ServeEnd::HungUp);
    assert_eq!(summary.error.as_deref(), Some(error.to_string().as_str()));
    assert!(summary.session_opened_s.is_some(), "{summary:?}");
    assert!(
        summary.answered >= u64::from(firmware.firmware.actions_applied),
        "{summary:?}"
    );
    assert_eq!(summary.inference.count, summary.answered);
}

/// `dreamer-rt serve` as a process: the summary file on every exit path, stdout full or
/// closed without a panic.
mod binary {
    use std::io::{BufRead, BufReader};
    use std::process::{Child, Command, ExitStatus, Stdio};
    use std::sync::mpsc;

    use dreamer_cli::testing::{GoneStdout, assert_no_panic};
    use dreamer_wire::report::read_report;

    use super::*;

    struct Served {
        child: Child,
        /// stderr lines as they come.
        lines: mpsc::Receiver<String>,
        stderr: Vec<String>,
    }

    impl Served {
        /// `dreamer-rt serve` of `bundle` with `link` (the firmware's link options).
        fn start(
            bundle: &Path,
            link: &[String],
            summary: &Path,
            extra: &[&str],
            stdout: Stdio,
        ) -> Self {
            let spawning = SPAWN.lock().unwrap_or_else(|p| p.into_inner());
            let mut child = Command::new(env!("CARGO_BIN_EXE_dreamer-rt"))
                .arg("serve")
                .arg(bundle)
                .args(link)
                .arg("--summary")
                .arg(summary)
                .args(extra)
                .env("RUST_BACKTRACE", "0")
                .stdout(stdout)
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            drop(spawning);
            let stderr = child.stderr.take().unwrap();
            let (send, lines) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    let _ = send.send(line);
                }
            });
            Served {
                child,
                lines,
                stderr: Vec::new(),
            }
        }

        /// Waits for a stderr line containing `needle` (false: the process ended first).
        fn wait_for(&mut self, needle: &str) -> bool {
            while let Ok(line) = self.lines.recv() {
                self.stderr.push(line);
                if self.stderr.last().unwrap().contains(needle) {
                    return true;
                }
            }
            false
        }

        fn finish(mut self) -> (ExitStatus, String) {
            let status = self.child.wait().unwrap();
            self.stderr.extend(self.lines.iter());
            (status, self.stderr.join("\n"))
        }
    }

    /// A host firmware on a new pty or UDP socket, running until [`Firmware::stop`].
    struct Firmware {
        /// Serve's options for its end of the link (`--port ...` or `--udp-bind ...`).
        port: Vec<String>,
        stop: Arc<AtomicBool>,
        thread: std::thread::JoinHandle<()>,
    }

    impl Firmware {
        fn start(plant: &'static str) -> Self {
            Self::start_over(plant, Over::Pty)
        }

        fn start_over(plant: &'static str, over: Over) -> Self {
            let stop = Arc::new(AtomicBool::new(false));
            let running = stop.clone();
            let options = SimOptions {
                rate_hz: 50.0,
                ..SimOptions::new(plant)
            };
            fn run<L: Link + Send + 'static>(
                mut robot: HostFirmware<L>,
                running: Arc<AtomicBool>,
            ) -> std::thread::JoinHandle<()> {
                // Dropped at the end: the pty master or the socket closes.
                std::thread::spawn(move || robot.run(None, &running))
            }
            let (port, thread) = match over {
                Over::Pty => {
                    let (master, slave) = pty_pair();
                    let port = slave.name().unwrap();
                    drop(slave);
                    let link = StreamLink::new(PtySerial::new(master));
                    let robot = HostFirmware::new(options, link).unwrap();
                    (vec!["--port".to_string(), port], run(robot, running))
                }
                Over::Udp => {
                    let (robot, runtime, firmware) = udp_robot(options);
                    let args = ["--udp-bind", &runtime.to_string(), "--udp-peer"]
                        .iter()
                        .map(|a| a.to_string())
                        .chain([firmware.to_string()])
                        .collect();
                    (args, run(robot, running))
                }
            };
            Firmware { port, stop, thread }
        }

        fn stop(self) {
            self.stop.store(true, Ordering::Relaxed);
            self.thread.join().unwrap();
        }
    }

    fn summary_of(path: &Path, stderr: &str) -> ServeSummary {
        read_report(path, "serve summary").unwrap_or_else(|e| panic!("{e}; stderr: {stderr}"))
    }

    #[test]
    fn a_refused_handshake_writes_the_summary() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = bundle(tmp.path(), &cartpole_state());
        for gone in GoneStdout::ALL {
            let name = gone.name();
            let firmware = Firmware::start("pendulum");
            let summary_path = tmp.path().join(format!("refused-{name}.json"));
            let served = Served::start(&bundle, &firmware.port, &summary_path, &[], gone.stdio());
            let (status, stderr) = served.finish();
            firmware.stop();
            assert!(!status.success(), "{name}: {stderr}");
            assert_no_panic(&stderr, name);
            assert!(stderr.contains("refused the handshake"), "{name}: {stderr}");
            let summary = summary_of(&summary_path, &stderr);
            assert_eq!(summary.end, ServeEnd::Refused, "{name}");
            assert!(
                summary
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("pendulum")),
                "{name}: {summary:?}"
            );
            assert_eq!(summary.task, "cartpole-swingup");
        }
    }

    #[test]
    fn a_hang_up_writes_the_summary() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = bundle(tmp.path(), &cartpole_state());
        for gone in GoneStdout::ALL {
            let name = gone.name();
            let firmware = Firmware::start("cartpole-swingup");
            let summary_path = tmp.path().join(format!("hung-up-{name}.json"));
            let mut served = Served::start(
                &bundle,
                &firmware.port,
                &summary_path,
                &["--handshake-timeout-s", "120"],
                gone.stdio(),
            );
            let opened = served.wait_for("session open");
            // The firmware goes away.
            firmware.stop();
            let (status, stderr) = served.finish();
            assert!(opened, "{name}: {stderr}");
            assert!(!status.success(), "{name}: {stderr}");
            assert_no_panic(&stderr, name);
            assert!(stderr.contains("hung up"), "{name}: {stderr}");
            let summary = summary_of(&summary_path, &stderr);
            assert_eq!(summary.end, ServeEnd::HungUp, "{name}: {summary:?}");
            assert!(summary.session_opened_s.is_some(), "{name}: {summary:?}");
        }
    }

    #[test]
    fn a_serve_process_explores_and_records_the_firmwares_episodes_into_its_spool() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = bundle(tmp.path(), &Spec::state());
        let spool = tmp.path().join("spool");
        let firmware = Firmware::start_over("pendulum", Over::Udp);
        let summary_path = tmp.path().join("recorded.json");
        let spool_arg = spool.to_string_lossy().into_owned();
        // Noise far wider than the action range: nearly every action sent is clipped to +-1.
        let extra = [
            "--record",
            spool_arg.as_str(),
            "--device",
            "arm-1",
            "--explore",
            "100",
        ];
        let mut served = Served::start(
            &bundle,
            &firmware.port,
            &summary_path,
            &extra,
            Stdio::null(),
        );
        let opened = served.wait_for("session open");
        std::thread::sleep(Duration::from_secs(1));
        // SAFETY: plain kill(2) on our own child.
        unsafe { libc::kill(served.child.id() as libc::pid_t, libc::SIGTERM) };
        let (status, stderr) = served.finish();
        firmware.stop();
        assert!(opened && status.success(), "{stderr}");
        assert!(
            stderr.contains("serve: recorded 1 episodes into the spool (1 written"),
            "{stderr}"
        );
        let summary = summary_of(&summary_path, &stderr);
        assert!(summary.firmware_rewards, "{summary:?}");
        let policies: Vec<_> = std::fs::read_dir(spool.join("arm-1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir())
            .collect();
        assert_eq!(policies.len(), 1, "{policies:?}");
        let files = dreamer_episode::list(&policies[0]).unwrap();
        assert_eq!(files.len(), 1);
        // The episode in progress at the stop, cut there: about a second at 50 Hz.
        let episode = dreamer_episode::load(&files[0], pendulum_layout()).unwrap();
        assert!(episode.len() >= 20, "{}", episode.len());
        // Pendulum's rewards are never positive; a 50 ms physics step comes every 2-3 ticks.
        assert!(episode.reward.iter().all(|&r| r <= 0.0));
        assert!(episode.total_reward() < 0.0);
        // The recorded actions are the noisy ones sent.
        let clipped = episode.action[1..]
            .iter()
            .filter(|a| a.abs() == 1.0)
            .count();
        assert!(
            clipped * 10 >= (episode.len() - 1) * 9,
            "{:?}",
            episode.action
        );
    }

    #[test]
    fn a_stop_request_writes_the_summary_whatever_happens_to_stdout() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = bundle(tmp.path(), &cartpole_state());
        let cases = GoneStdout::ALL
            .into_iter()
            .map(|gone| (gone, Over::Pty))
            .chain([(GoneStdout::ALL[0], Over::Udp)]);
        for (gone, over) in cases {
            let name = format!("{} {over:?}", gone.name());
            let name = name.as_str();
            let firmware = Firmware::start_over("cartpole-swingup", over);
            let summary_path = tmp.path().join(format!("stopped-{name}.json"));
            let mut served =
                Served::start(&bundle, &firmware.port, &summary_path, &[], gone.stdio());
            let opened = served.wait_for("session open");
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(served.child.id() as libc::pid_t, libc::SIGTERM) };
            let (status, stderr) = served.finish();
            firmware.stop();
            assert!(opened, "{name}: {stderr}");
            assert_no_panic(&stderr, name);
            let summary = summary_of(&summary_path, &stderr);
            assert_eq!(
                (summary.end, summary.error),
                (ServeEnd::Stopped, None),
                "{name}"
            );
            // A closed pipe is the reader's choice; a full device lost the output.
            gone.assert_exit(status, &stderr);
        }
    }

    #[test]
    fn a_handshake_timeout_and_a_bad_bundle_write_the_summary() {
        let tmp = tempfile::tempdir().unwrap();
        let bundle = bundle(tmp.path(), &cartpole_state());
        // Nobody answers on this pty, nor at this UDP address.
        let (_master, slave) = pty_pair();
        let port = vec!["--port".to_string(), slave.name().unwrap()];
        drop(slave);
        let udp = ["--udp-bind", "--udp-peer"]
            .into_iter()
            .flat_map(|flag| [flag.to_string(), free_udp_address().to_string()])
            .collect::<Vec<_>>();
        for (name, link) in [("pty", &port), ("udp", &udp)] {
            let summary_path = tmp.path().join(format!("timeout-{name}.json"));
            let served = Served::start(
                &bundle,
                link,
                &summary_path,
                &["--handshake-timeout-s", "0.2"],
                Stdio::null(),
            );
            let (status, stderr) = served.finish();
            assert!(!status.success(), "{name}: {stderr}");
            let summary = summary_of(&summary_path, &stderr);
            assert_eq!(
                summary.end,
                ServeEnd::HandshakeTimeout,
                "{name}: {summary:?}"
            );
            assert!(summary.hello_sent >= 1, "{name}: {summary:?}");
        }

        let missing = tmp.path().join("no-such-bundle");
        let summary_path = tmp.path().join("no-bundle.json");
        let served = Served::start(&missing, &port, &summary_path, &[], Stdio::null());
        let (status, stderr) = served.finish();
        assert!(!status.success(), "{stderr}");
        assert!(stderr.contains("no-such-bundle"), "{stderr}");
        let summary = summary_of(&summary_path, &stderr);
        assert_eq!(summary.end, ServeEnd::Error, "{summary:?}");
        assert!(
            summary
                .error
                .as_deref()
                .is_some_and(|e| e.contains("no-such-bundle")),
            "{summary:?}"
        );
    }
}

/// A recorder into `spool` for the pendulum fixture's policy.
fn pendulum_recorder(spool: &Path) -> dreamer_runtime::record::Recorder {
    dreamer_runtime::record::Recorder::start(dreamer_runtime::record::RecordOptions {
        spool: spool.to_path_buf(),
        device: "bench".into(),
        policy: "p0".into(),
        layout: pendulum_layout(),
        max_steps: 1001,
        buffers: 2,
    })
    .unwrap()
}

fn pendulum_layout() -> dreamer_episode::Layout {
    dreamer_episode::Layout {
        action: 1,
        state: 3,
        pixels: false,
    }
}

#[test]
fn the_episodes_a_firmware_reports_are_followed_returned_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path(), &Spec::state());
    let mut agent = Agent::load(&bundle, AgentOptions::default()).unwrap();
    let spool = tmp.path().join("spool");
    let mut recorder = pendulum_recorder(&spool);
    // Pendulum episodes last 10 s of plant time (200 steps of 50 ms): one ends, the next is
    // cut when serving stops.
    let options = SimOptions {
        rate_hz: 20.0,
        episode_at_handshake: true,
        ..SimOptions::new("pendulum")
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (robot, runtime, firmware_addr) = udp_robot(options);
    let firmware = in_thread(robot, 11.5, &stop);
    let link = LinkSpec::Udp {
        bind: runtime,
        peer: firmware_addr,
    };
    // A followed policy that arrives during the first episode: the agent switches at the
    // next episode start, whose episodes are recorded under its id.
    let mut asked = 0;
    let mut next_policy = || {
        asked += 1;
        (asked == 2).then(|| NextPolicy {
            agent: Agent::load(&bundle, AgentOptions::default()).unwrap(),
            policy_id: "p1".into(),
            label: "v1".into(),
        })
    };
    let experience = Experience {
        recorder: Some(&mut recorder),
        next_policy: Some(&mut next_policy),
        exploration: None,
    };
    let served = serve(&mut agent, &ServeOptions::on(link), &stop, experience).unwrap();
    let firmware = firmware.join().unwrap();
    let (counters, written) = recorder.finish().unwrap();

    assert!(served.firmware_rewards);
    assert_eq!(firmware.completed_episode_returns.len(), 1, "{firmware:?}");
    assert_eq!(served.episode_returns.len(), 1, "{served:?}");
    // The plant's own return, less what no observation carried: the reward accrued between
    // the last observation and the reset, and before the new episode's first observation
    // (a physics step each, at most 16.3 in magnitude on pendulum).
    let (ours, plant) = (
        served.episode_returns[0],
        firmware.completed_episode_returns[0],
    );
    assert!(
        ours < 0.0 && (ours - plant).abs() <= 33.0,
        "{ours} vs {plant}"
    );
    assert_eq!((counters.recorded, written.written.len()), (2, 2));
    assert_eq!((asked, served.policy_switches), (2, 1));

    let files = |policy: &str| dreamer_episode::list(&spool.join("bench").join(policy)).unwrap();
    let (before, after) = (files("p0"), files("p1"));
    assert_eq!((before.len(), after.len()), (1, 1));
    assert_eq!(dreamer_episode::file_index(&before[0]), Some(0));
    assert_eq!(dreamer_episode::file_index(&after[0]), Some(1));
    let first = dreamer_episode::load(&before[0], pendulum_layout()).unwrap();
    // One observation per tick of the episode's 10 s at 20 Hz, give or take a stale one.
    assert!((180..=202).contains(&first.len()), "{}", first.len());
    assert_eq!(first.action[0], 0.0);
    assert_eq!(first.reward[0], 0.0);
    assert!(first.discount.iter().all(|&d| d == 1.0));
    assert!(first.action.iter().all(|a| a.abs() <= 1.0));
    assert!((first.total_reward() - ours).abs() < 1e-2);
}

#[test]
fn recording_refuses_a_firmware_that_measures_no_rewards() {
    use dreamer_wire::{
        HelloAck, MAX_RAW, Message, PROTOCOL_VERSION, decode_datagram, encode_datagram,
    };
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path(), &Spec::state());
    let mut agent = Agent::load(&bundle, AgentOptions::default()).unwrap();
    let mut recorder = pendulum_recorder(&tmp.path().join("spool"));
    // A firmware that accepts any hello and says it measures no rewards.
    let firmware = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    firmware
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let firmware_addr = firmware.local_addr().unwrap();
    let runtime = free_udp_address();
    let answering = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        let (len, from) = firmware.recv_from(&mut buf).unwrap();
        let Ok(Message::Hello(hello)) = decode_datagram(&buf[..len]) else {
            panic!("expected a hello");
        };
        let ack = Message::HelloAck(HelloAck {
            result: dreamer_wire::HandshakeResult::Accepted,
            protocol_version: PROTOCOL_VERSION,
            task: hello.task,
            layout: hello.layout,
            rewards: false,
        });
        let mut out = [0u8; MAX_RAW];
        firmware
            .send_to(encode_datagram(&ack, &mut out), from)
            .unwrap();
    });
    let link = LinkSpec::Udp {
        bind: runtime,
        peer: firmware_addr,
    };
    let experience = Experience {
        recorder: Some(&mut recorder),
        next_policy: None,
        exploration: None,
    };
    let failure = serve(
        &mut agent,
        &ServeOptions::on(link),
        &AtomicBool::new(false),
        experience,
    )
    .unwrap_err();
    answering.join().unwrap();
    assert!(
        matches!(failure.error, ServeError::NoRewards),
        "{}",
        failure.error
    );
    assert!(failure.error.to_string().contains("measures no rewards"));
    assert_eq!(failure.summary.end, ServeEnd::Error);
    let (counters, _) = recorder.finish().unwrap();
    assert_eq!(counters.recorded, 0);
}
