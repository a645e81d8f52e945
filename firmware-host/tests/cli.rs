//! The `firmware-host` binary with its stdout on a full device or a closed pipe: the run
//! completes, writes its `--summary` file, and nothing panics.

use std::path::PathBuf;
use std::process::Command;

use dreamer_cli::testing::{GoneStdout, run_without_panic};
use dreamer_wire::report::{FirmwareSummary, read_report};
use serialport::{SerialPort, TTYPort};

/// A summary path of this test process, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn a_full_or_closed_stdout_still_leaves_the_summary() {
    for gone in GoneStdout::ALL {
        let name = gone.name();
        // The test holds the master (nobody answers: the firmware waits for a handshake).
        let (_master, slave) = TTYPort::pair().expect("cannot create a pty pair");
        let path = slave.name().expect("pty slave has a path");
        let summary = TempFile(std::env::temp_dir().join(format!(
            "firmware-host-cli-{}-{name}.json",
            std::process::id()
        )));
        let mut command = Command::new(env!("CARGO_BIN_EXE_firmware-host"));
        command
            .args([
                "--plant",
                "pendulum",
                "--port",
                &path,
                "--duration-s",
                "0.3",
            ])
            .arg("--summary")
            .arg(&summary.0);
        let (status, stderr) = run_without_panic(&mut command, gone.stdio(), name);
        let written: FirmwareSummary = read_report(&summary.0, "firmware-host summary")
            .unwrap_or_else(|e| panic!("{name}: {e}; stderr: {stderr}"));
        assert_eq!(written.task, "pendulum");
        assert!(written.ticks > 0, "{name}: {written:?}");
        gone.assert_exit(status, &stderr);
    }
}
