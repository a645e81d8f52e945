//! The `dreamer-export` binary with its stdout closed or full: the bundle is written either
//! way, and the summary line that has no reader ends the process without a panic.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::Spec;

fn exporter(ckpt: &Path, out: &Path, stdout: Stdio) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dreamer-export"))
        .arg(ckpt)
        .arg("--out")
        .arg(out)
        .arg("--no-verify")
        .env_remove("RUST_BACKTRACE")
        .stdout(stdout)
        .output()
        .unwrap()
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
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = dir.path().join("piped");
    let result = exporter(&ckpt, &out, writer.into());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(result.status.success(), "{stderr}");
    assert!(out.join("manifest.json").is_file());

    // `dreamer-export ... >/dev/full`: the bundle is there, the failed write is reported.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = dir.path().join("full");
    let result = exporter(&ckpt, &out, full.into());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing the summary to stdout"), "{stderr}");
    assert!(out.join("manifest.json").is_file());
}
