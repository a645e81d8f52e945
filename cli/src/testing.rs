//! Fixtures for the tests of the binaries (feature `testing`, for dev-dependencies only):
//! a stdout that is gone, and the checks of how a binary ended without it.

use std::fs::OpenOptions;
use std::process::{Command, ExitStatus, Stdio};

/// A pipe whose reading end is already closed (`... | true`): every write to it fails with
/// EPIPE (or SIGPIPE, where the process restored its default).
pub fn closed_pipe() -> Stdio {
    let (reader, writer) = std::io::pipe().expect("cannot create a pipe");
    drop(reader);
    writer.into()
}

/// `/dev/full` (`... >/dev/full`): every write to it fails with ENOSPC.
pub fn full_device() -> Stdio {
    OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("cannot open /dev/full")
        .into()
}

/// The two ways stdout goes away, for a test that tries a binary with each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoneStdout {
    /// `/dev/full`: the output is lost, a failure the binary must report.
    Full,
    /// A closed pipe: the reader's choice, no failure.
    Closed,
}

impl GoneStdout {
    pub const ALL: [GoneStdout; 2] = [GoneStdout::Full, GoneStdout::Closed];

    /// "full" or "closed", for messages and file names.
    pub fn name(self) -> &'static str {
        match self {
            GoneStdout::Full => "full",
            GoneStdout::Closed => "closed",
        }
    }

    /// A fresh stdout of this kind for a child process.
    pub fn stdio(self) -> Stdio {
        match self {
            GoneStdout::Full => full_device(),
            GoneStdout::Closed => closed_pipe(),
        }
    }

    /// How a binary that finished its work must end: success on a closed pipe (as other
    /// Unix tools), failure naming stdout on a full device (its output was lost).
    #[track_caller]
    pub fn assert_exit(self, status: ExitStatus, stderr: &str) {
        match self {
            GoneStdout::Closed => assert!(status.success(), "{self}: {stderr}"),
            GoneStdout::Full => assert!(
                !status.success() && stderr.contains("stdout"),
                "{self}: {status}: {stderr}"
            ),
        }
    }
}

impl std::fmt::Display for GoneStdout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Fails the test when `stderr` shows a panic; `context` names the case in the message.
#[track_caller]
pub fn assert_no_panic(stderr: &str, context: impl std::fmt::Display) {
    assert!(
        !stderr.contains("panicked"),
        "{context}: panicked: {stderr}"
    );
}

/// Runs `command` to its end with `stdout` (and no backtrace, which would only lengthen a
/// panic message), checks that it did not panic ([`assert_no_panic_exit`]), and returns
/// its exit status and stderr.
#[track_caller]
pub fn run_without_panic(
    command: &mut Command,
    stdout: Stdio,
    context: impl std::fmt::Display,
) -> (ExitStatus, String) {
    let output = command
        .env("RUST_BACKTRACE", "0")
        .stdout(stdout)
        .output()
        .expect("cannot run the command");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_no_panic_exit(output.status, &stderr, context);
    (output.status, stderr)
}

/// [`assert_no_panic`], and the exit status is not a panic's (101).
#[track_caller]
pub fn assert_no_panic_exit(status: ExitStatus, stderr: &str, context: impl std::fmt::Display) {
    assert_no_panic(stderr, &context);
    assert_ne!(status.code(), Some(101), "{context}: exit 101: {stderr}");
}
