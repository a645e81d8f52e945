//! The `dreamer-export` binary with its stdout closed or full: the bundle is written either
//! way, and the summary line that has no reader ends the process without a panic.

mod common;

use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};

use common::Spec;
use dreamer_cli::testing::{closed_pipe, full_device, run_without_panic};

fn exporter(ckpt: &Path, out: &Path, stdout: Stdio, case: &str) -> (ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer-export"));
    command.arg(ckpt).arg("--out").arg(out).arg("--no-verify");
    run_without_panic(&mut command, stdout, case)
}

#[test]
fn a_closed_or_full_stdout_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let spec = Spec {
        steps: 10,
        cases: 2,
        ..Spec::state()
    };
    let ckpt = common::write_checkpoint(&dir.path().join("ckpt"), &spec, 7);

    // `dreamer-export ... | true`
    let out = dir.path().join("piped");
    let (status, stderr) = exporter(&ckpt, &out, closed_pipe(), "| true");
    assert!(status.success(), "{stderr}");
    assert!(out.join("manifest.json").is_file());

    // `dreamer-export ... >/dev/full`: the bundle is there, the failed write is reported.
    let out = dir.path().join("full");
    let (status, stderr) = exporter(&ckpt, &out, full_device(), ">/dev/full");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing the summary to stdout"), "{stderr}");
    assert!(out.join("manifest.json").is_file());
}
