//! `serve` against the host firmware (the firmware core on a simulated plant) over a real
//! pty, with bundles exported by `dreamer-export`.

#[path = "../../export/tests/common/mod.rs"]
mod export_fixtures;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dreamer_export::{ExportOptions, export};
#[cfg(feature = "sim")]
use dreamer_runtime::serve::Camera;
use dreamer_runtime::serve::{ServeError, ServeOptions, ServeSummary, serve};
use dreamer_runtime::{Agent, AgentOptions};
use dreamer_wire::HandshakeResult;
use dreamer_wire::report::FirmwareSummary;
use export_fixtures::Spec;
use firmware_host::{HostFirmware, PtySerial, SimOptions};
use serialport::{SerialPort, TTYPort};

fn bundle(dir: &Path, spec: &Spec) -> PathBuf {
    let ckpt = export_fixtures::write_checkpoint(&dir.join("ckpt"), spec, 9);
    let out = dir.join("bundle");
    export(&ckpt, &out, &ExportOptions::default()).unwrap();
    out
}

fn cartpole_state() -> Spec {
    Spec {
        task: "cartpole-swingup",
        o: 5,
        steps: 30,
        ..Spec::state()
    }
}

/// Runs `options` against a host firmware for `plant` for `seconds`; returns both sides.
fn against_firmware(
    plant: &str,
    bundle: &Path,
    seconds: f64,
) -> (Result<ServeSummary, ServeError>, FirmwareSummary) {
    let mut agent = Agent::load(bundle, AgentOptions::default()).unwrap();
    let (master, slave) = TTYPort::pair().unwrap();
    let port = PathBuf::from(slave.name().unwrap());
    // serve opens the slave itself, exclusively.
    drop(slave);
    let stop = Arc::new(AtomicBool::new(false));
    let firmware = {
        let stop = stop.clone();
        let plant = plant.to_string();
        std::thread::spawn(move || {
            let options = SimOptions {
                rate_hz: 50.0,
                heartbeat_hz: 10.0,
                ..SimOptions::new(&plant)
            };
            let mut robot = HostFirmware::new(options, PtySerial::new(master)).unwrap();
            robot.run(
                Some(Duration::from_secs_f64(seconds)),
                &AtomicBool::new(false),
            );
            robot.drain(Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
            robot.finish()
        })
    };
    let outcome = serve(&mut agent, &ServeOptions::new(port), &stop);
    stop.store(true, Ordering::Relaxed);
    let summary = firmware.join().unwrap();
    (outcome, summary)
}

#[test]
fn answers_every_observation_of_the_host_firmware() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path(), &cartpole_state());
    let (outcome, firmware) = against_firmware("cartpole-swingup", &bundle, 2.0);
    let served = outcome.unwrap();
    assert!(served.session_opened_s.is_some());
    assert!(served.hello_sent >= 1);
    assert!(served.answered >= 30, "{served:?}");
    assert_eq!(
        served.answered + served.stale_observations,
        served.observations
    );
    assert_eq!(served.frame_errors.errors(), 0, "{:?}", served.frame_errors);
    assert!(served.heartbeats > 0);
    assert_eq!(served.agent_faults, 0);
    assert_eq!(served.inference.count, served.answered);
    // The firmware took the answers: every action it received was a valid frame (action
    // sequence gaps are allowed: a late runtime answers only the newest observation).
    let link = firmware.frame_errors;
    assert_eq!(
        link.bad_cobs + link.bad_crc + link.wrong_length + link.unknown_message + link.malformed,
        0,
        "{link:?}"
    );
    // Everything it accepted was sent by serve (the last answer may come after it stopped).
    assert!(u64::from(link.frames_ok) <= served.answered + served.hello_sent);
    assert!(u64::from(firmware.firmware.actions_applied) * 2 >= served.answered);
    assert_eq!(firmware.firmware.invalid_actions, 0);
    assert_eq!(firmware.round_trip.count, firmware.firmware.actions_applied);
}

#[test]
fn a_refused_handshake_names_both_sides() {
    let tmp = tempfile::tempdir().unwrap();
    let bundle = bundle(tmp.path(), &cartpole_state());
    let (outcome, firmware) = against_firmware("pendulum", &bundle, 1.0);
    let error = outcome.unwrap_err();
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
    let error = serve(&mut agent, &ServeOptions::new("/dev/null".into()), &stop).unwrap_err();
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
    let error = serve(&mut agent, &options, &stop).unwrap_err();
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
            "fault_reports",
            "frame_errors",
            "heartbeats",
            "hello_sent",
            "inference",
            "last_mode",
            "observations",
            "observations_before_session",
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
