//! The `firmware-host` binary with its stdout on a full device or a closed pipe: the run
//! completes, writes its `--summary` file, and nothing panics.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use dreamer_wire::report::{FirmwareSummary, read_report};
use serialport::{SerialPort, TTYPort};

/// A summary path of this test process, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn full_device() -> Stdio {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap()
        .into()
}

/// A pipe whose reading end is already closed (`firmware-host ... | true`).
fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    writer.into()
}

#[test]
fn a_full_or_closed_stdout_still_leaves_the_summary() {
    for (name, stdout) in [("full", full_device()), ("closed", closed_pipe())] {
        // The test holds the master (nobody answers: the firmware waits for a handshake).
        let (_master, slave) = TTYPort::pair().expect("cannot create a pty pair");
        let path = slave.name().expect("pty slave has a path");
        let summary = TempFile(std::env::temp_dir().join(format!(
            "firmware-host-cli-{}-{name}.json",
            std::process::id()
        )));
        let output = Command::new(env!("CARGO_BIN_EXE_firmware-host"))
            .args([
                "--plant",
                "pendulum",
                "--port",
                &path,
                "--duration-s",
                "0.3",
            ])
            .arg("--summary")
            .arg(&summary.0)
            .env("RUST_BACKTRACE", "0")
            .stdout(stdout)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        let written: FirmwareSummary = read_report(&summary.0, "firmware-host summary")
            .unwrap_or_else(|e| panic!("{name}: {e}; stderr: {stderr}"));
        assert_eq!(written.task, "pendulum");
        assert!(written.ticks > 0, "{name}: {written:?}");
        if name == "closed" {
            // The reader's choice, as for other Unix tools.
            assert!(output.status.success(), "{name}: {stderr}");
        } else {
            assert!(!output.status.success(), "{name}: {stderr}");
            assert!(stderr.contains("stdout"), "{name}: {stderr}");
        }
    }
}
