//! Short hardware-in-the-loop runs of real exported bundles: `firmware-host` and
//! `dreamer-rt serve` as separate processes over ptys, through the fault-injection relay.
//!
//! Assertions are on counts and states, never on durations, so a loaded machine only
//! makes the runs slower, not wrong.

#[path = "../../export/tests/common/mod.rs"]
mod export_fixtures;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use dreamer_cli::testing::{GoneStdout, run_without_panic};
use dreamer_export::{ExportOptions, export};
use dreamer_hil::proxy::rejected;
use dreamer_hil::{FaultRates, HilOptions, HilReport, Injected, LinkKind};
use dreamer_wire::{LinkCounters, Mode};
use export_fixtures::Spec;

/// One loop at a time: two processes per loop already fill a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

struct Fixtures {
    _dir: tempfile::TempDir,
    state_bundle: PathBuf,
    pixel_bundle: PathBuf,
    firmware_bin: PathBuf,
    runtime_bin: PathBuf,
}

/// The sibling binaries, built into this test's own target folder, and two bundles.
fn fixtures() -> &'static Fixtures {
    static FIXTURES: OnceLock<Fixtures> = OnceLock::new();
    FIXTURES.get_or_init(|| {
        let bin_dir = Path::new(env!("CARGO_BIN_EXE_dreamer-hil"))
            .parent()
            .unwrap()
            .to_path_buf();
        let target_dir = bin_dir.parent().unwrap();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "-p", "firmware-host", "-p", "dreamer-runtime"])
            .args([
                "--bin",
                "firmware-host",
                "--bin",
                "dreamer-rt",
                "--target-dir",
            ])
            .arg(target_dir);
        if bin_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "building firmware-host and dreamer-rt failed"
        );

        let dir = tempfile::tempdir().unwrap();
        let bundle = |name: &str, spec: &Spec| {
            let ckpt = export_fixtures::write_checkpoint(&dir.path().join(name), spec, 3);
            let out = dir.path().join(format!("{name}-bundle"));
            export(&ckpt, &out, &ExportOptions::default()).unwrap();
            out
        };
        let cartpole_state = Spec {
            task: "cartpole-swingup",
            o: 5,
            steps: 50,
            ..Spec::state()
        };
        let pixels = Spec {
            steps: 20,
            ..Spec::pixels()
        };
        Fixtures {
            state_bundle: bundle("state", &cartpole_state),
            pixel_bundle: bundle("pixels", &pixels),
            _dir: dir,
            firmware_bin: bin_dir.join("firmware-host"),
            runtime_bin: bin_dir.join("dreamer-rt"),
        }
    })
}

fn options(bundle: &Path) -> HilOptions {
    let f = fixtures();
    HilOptions {
        compare_simulation: false,
        ..HilOptions::new(
            bundle.to_path_buf(),
            f.firmware_bin.clone(),
            f.runtime_bin.clone(),
        )
    }
}

fn run(options: HilOptions) -> HilReport {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    // run() fails when a process exits early or with an error status (a panic exits 101).
    dreamer_hil::run(&options).unwrap()
}

/// No frame was rejected either way. Action sequence gaps are allowed: a late runtime
/// answers only the newest observation.
fn assert_clean_links(report: &HilReport) {
    assert_eq!(
        rejected(&report.firmware_link),
        0,
        "{:?}",
        report.firmware_link
    );
    assert_eq!(report.runtime_link.errors(), 0, "{:?}", report.runtime_link);
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; pid 0 is the calling thread; CPU_ISSET stays within
    // CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
            .collect()
    }
}

/// Per direction: its name, the faults injected into it, what its receiver counted.
fn by_direction(report: &HilReport) -> [(&'static str, Injected, LinkCounters); 2] {
    [
        (
            "firmware -> runtime",
            report.injected_firmware_to_runtime,
            report.runtime_link,
        ),
        (
            "runtime -> firmware",
            report.injected_runtime_to_firmware,
            report.firmware_link,
        ),
    ]
}

fn assert_reconciled(report: &HilReport) {
    assert!(report.relay);
    for (name, r) in [
        ("firmware -> runtime", report.reconcile_firmware_to_runtime),
        ("runtime -> firmware", report.reconcile_runtime_to_firmware),
    ] {
        let r = r.unwrap();
        assert!(r.reconciled, "{name}: {r:?}");
    }
}

#[test]
fn clean_loop_controls_the_plant_without_errors() {
    let report = run(HilOptions {
        rate_hz: Some(50.0),
        duration_s: 3.0,
        relay: true,
        compare_simulation: true,
        ..options(&fixtures().state_bundle)
    });
    assert_reconciled(&report);
    assert_clean_links(&report);
    assert!(
        report.observations_sent >= 100,
        "{}",
        report.observations_sent
    );
    // Most observations answered in time (a loaded machine may delay some).
    assert!(
        report.actions_applied * 2 >= report.observations_sent,
        "{} applied of {}",
        report.actions_applied,
        report.observations_sent
    );
    assert_eq!(report.final_mode, Mode::Running);
    assert_eq!(u64::from(report.round_trip.count), report.actions_applied);
    let rate = report.command_success_rate;
    let expected =
        report.actions_applied as f64 / (report.actions_applied + report.deadline_misses) as f64;
    assert!((rate - expected).abs() < 1e-12 && rate >= 0.5, "{rate}");
    // Every session tick in the every-tick percentiles: the applied ones and the misses.
    let counters = &report.firmware.firmware;
    assert_eq!(
        report.round_trip_every_tick.count,
        counters.actions_applied + counters.deadline_misses
    );
    assert!(report.inference.count >= report.actions_applied);
    assert!(report.returns.loop_partial.is_finite());
    // 3 s is shorter than an episode (10 s): no loop return yet, the simulation's is there.
    assert_eq!(report.returns.loop_return, None);
    assert!(report.returns.simulation_return.is_some_and(f64::is_finite));
}

/// The same loop over UDP on loopback (one datagram per message, no relay), `serve` spinning
/// on its socket, with the bare UDP echo measured the same way before it.
#[test]
fn a_udp_loop_controls_the_plant_and_reports_its_floor() {
    let report = run(HilOptions {
        link: LinkKind::Udp,
        rate_hz: Some(50.0),
        duration_s: 2.0,
        baseline_s: 0.2,
        busy_poll: true,
        cpus: (dreamer_hil::sched::online_cpus() >= 2).then_some([0, 1]),
        ..options(&fixtures().state_bundle)
    });
    assert_eq!((report.link, report.relay), (LinkKind::Udp, false));
    assert!(report.busy_poll);
    if report.cpus.is_some() {
        // The harness put itself (and so the firmware it started) on the first CPU.
        assert_eq!(allowed_cpus(), vec![0]);
    }
    assert!(
        report
            .runtime
            .port
            .to_string_lossy()
            .starts_with("udp 127.0.0.1:"),
        "{:?}",
        report.runtime.port
    );
    assert_clean_links(&report);
    assert_eq!(
        (report.firmware_link.foreign, report.runtime_link.foreign),
        (0, 0)
    );
    assert!(
        report.observations_sent >= 60,
        "{}",
        report.observations_sent
    );
    assert!(
        report.command_success_rate >= 0.5,
        "{} applied of {}",
        report.actions_applied,
        report.observations_sent
    );
    assert_eq!(report.final_mode, Mode::Running);
    let floor = report.echo_floor.as_ref().unwrap();
    assert_eq!((floor.link, floor.echoes, floor.lost), ("udp", 10, 0));
    assert_eq!(floor.waiting, dreamer_hil::baseline::Waiting::Spin);

    // A byte stream cannot reorder: the fault is refused on the pty link.
    let mut reordered = options(&fixtures().state_bundle);
    reordered.faults.reorder = 0.01;
    let error = dreamer_hil::run(&reordered).unwrap_err().to_string();
    assert!(error.contains("--reorder 0.01 needs --link udp"), "{error}");
}

/// Datagram faults at 1 % each way plus a runtime stall, through the UDP relay: every fault
/// detected and counted, the safe state within K periods, control back after the stall.
#[test]
fn udp_faults_and_a_stall_reconcile_and_the_loop_recovers() {
    let report = run(HilOptions {
        link: LinkKind::Udp,
        rate_hz: Some(100.0),
        duration_s: 4.0,
        seed: 3,
        faults: FaultRates {
            drop: 0.01,
            flip: 0.01,
            dup: 0.01,
            delay_p: 0.005,
            delay_us: 2000,
            reorder: 0.01,
        },
        stall_at_s: Some(1.5),
        stall_for_s: 0.5,
        max_missed: 5,
        ..options(&fixtures().state_bundle)
    });
    assert_eq!(report.link, LinkKind::Udp);
    assert_reconciled(&report);
    for (name, injected, link) in by_direction(&report) {
        assert!(injected.corruptions() > 0, "{name}: nothing injected");
        // A flipped datagram is one rejection (two if it was also duplicated).
        let rejected = rejected(&link);
        assert!(
            (injected.flipped..=2 * injected.flipped).contains(&rejected),
            "{name}: {injected:?} {link:?}"
        );
        assert_eq!(link.foreign, 0, "{name}");
    }
    let stall = report.stall.as_ref().unwrap();
    assert!(
        stall.fault_seq.is_some() || stall.already_safe,
        "no fault raised: {stall:?}"
    );
    assert!(stall.safe_within_k && stall.recovered, "{stall:?}");
    assert_eq!(report.final_mode, Mode::Running);
    assert!(report.command_success_rate > 0.5, "{report:?}");
}

#[test]
fn every_injected_corruption_is_detected_and_counted() {
    let report = run(HilOptions {
        rate_hz: Some(100.0),
        duration_s: 4.0,
        seed: 5,
        faults: FaultRates {
            drop: 0.002,
            flip: 0.002,
            dup: 0.002,
            delay_p: 0.001,
            delay_us: 2000,
            reorder: 0.0,
        },
        ..options(&fixtures().state_bundle)
    });
    assert_reconciled(&report);
    for (name, injected, link) in by_direction(&report) {
        assert!(injected.corruptions() > 0, "{name}: nothing injected");
        let rejected = rejected(&link);
        assert!(rejected > 0, "{name}: no frame rejected");
        // Each corruption damages at most two frames (a split or a merge).
        assert!(rejected <= 2 * injected.corruptions(), "{name}");
    }
    // The loop kept running through it (about 3/4 of the frames survive both ways).
    assert!(report.actions_applied > report.observations_sent / 3);
}

#[test]
fn stalled_runtime_puts_the_firmware_in_the_safe_state_and_control_resumes() {
    let report = run(HilOptions {
        rate_hz: Some(50.0),
        duration_s: 3.5,
        stall_at_s: Some(1.0),
        stall_for_s: 0.8,
        max_missed: 3,
        ..options(&fixtures().state_bundle)
    });
    assert_reconciled(&report);
    let stall = report.stall.as_ref().unwrap();
    assert!(
        stall.fault_seq.is_some() || stall.already_safe,
        "no fault raised: {stall:?}"
    );
    assert!(stall.safe_within_k, "{stall:?}");
    assert!(stall.recovered, "{stall:?}");
    assert!(report.faults >= 1 && report.recoveries >= 1);
    assert_eq!(report.final_mode, Mode::Running);
    // The stalled runtime found a backlog and answered only the newest observation.
    assert!(report.runtime.stale_observations > 0);
}

#[test]
fn pixel_policy_sees_the_plant_through_the_simulated_camera() {
    for link in [LinkKind::Pty, LinkKind::Udp] {
        let report = run(HilOptions {
            link,
            rate_hz: Some(20.0),
            duration_s: 2.0,
            ..options(&fixtures().pixel_bundle)
        });
        assert!(report.pixels && report.link == link);
        // No relay: nothing may be lost or corrupted.
        assert!(!report.relay && report.reconcile_firmware_to_runtime.is_none());
        assert_clean_links(&report);
        let frames = report.runtime.camera_frames.unwrap();
        assert!(frames >= 20, "{link:?}: {frames} camera frames");
        assert_eq!(report.runtime.camera_errors, Some(0), "{link:?}");
        assert!(report.actions_applied >= 20, "{link:?}");
    }
}

/// `dreamer-hil` as a process with its stdout on a full device or a closed pipe: the run
/// completes and writes its `--json` report, and nothing panics.
#[test]
fn a_full_or_closed_stdout_still_leaves_the_report() {
    let f = fixtures();
    let dir = tempfile::tempdir().unwrap();
    for gone in GoneStdout::ALL {
        let name = gone.name();
        let json = dir.path().join(format!("{name}.json"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer-hil"));
        command
            .arg("--bundle")
            .arg(&f.state_bundle)
            .arg("--firmware-bin")
            .arg(&f.firmware_bin)
            .arg("--runtime-bin")
            .arg(&f.runtime_bin)
            .args(["--rate-hz", "50", "--duration-s", "1", "--no-simulation"])
            .arg("--json")
            .arg(&json);
        let (status, stderr) = {
            let _one_at_a_time = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
            run_without_panic(&mut command, gone.stdio(), name)
        };
        // The report is complete although it could not be printed.
        let report = std::fs::read_to_string(&json).unwrap();
        assert!(
            report.contains("\"observations_sent\"") && report.trim_end().ends_with('}'),
            "{name}: {report}"
        );
        gone.assert_exit(status, &stderr);
    }
}

/// Writes the benchmark bundles of docs/hil.md into `$HIL_BUNDLE_DIR` (random weights at
/// the default Dreamer sizes): `state` (cartpole-swingup from state) and `pixels`, and
/// `state-small` (deter 64, stoch 16, hidden and units 64).
#[test]
#[ignore = "writes benchmark bundles; run with --ignored and HIL_BUNDLE_DIR set"]
fn write_benchmark_bundles() {
    let dir = PathBuf::from(std::env::var_os("HIL_BUNDLE_DIR").expect("set HIL_BUNDLE_DIR"));
    let sized = |spec: Spec| Spec {
        d: 200,
        s: 30,
        h: 200,
        u: 200,
        c: 32,
        steps: 20,
        cases: 2,
        ..spec
    };
    for (name, spec) in [
        (
            "state",
            sized(Spec {
                task: "cartpole-swingup",
                o: 5,
                ..Spec::state()
            }),
        ),
        ("pixels", sized(Spec::pixels())),
        (
            "state-small",
            Spec {
                task: "cartpole-swingup",
                o: 5,
                d: 64,
                s: 16,
                h: 64,
                u: 64,
                steps: 20,
                cases: 2,
                ..Spec::state()
            },
        ),
    ] {
        let ckpt = export_fixtures::write_checkpoint(&dir.join(format!("{name}-ckpt")), &spec, 1);
        export(&ckpt, &dir.join(name), &ExportOptions::default()).unwrap();
    }
}
