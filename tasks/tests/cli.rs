//! The `dreamer-tasks` viewer binary.
#![cfg(feature = "cli")]

use std::process::Command;

use dreamer_cli::testing::{closed_pipe, full_device, run_without_panic};

fn viewer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dreamer-tasks"))
}

#[test]
fn show_writes_a_png_strip_and_prints_the_return() {
    let dir = std::env::temp_dir().join(format!("dreamer-tasks-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("strip.png");
    let result = viewer()
        .args([
            "show", "--task", "pendulum", "--policy", "scripted", "--steps", "20", "--scale", "1",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let stdout = String::from_utf8_lossy(&result.stdout);
    assert!(
        stdout.contains("20 decisions") && stdout.contains("return -"),
        "{stdout}"
    );
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    // 10 frames of 64 px with 2 px gaps.
    assert_eq!(
        u32::from_be_bytes(bytes[16..20].try_into().unwrap()),
        10 * 64 + 9 * 2
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_task_lists_the_available_ones() {
    let result = viewer()
        .args(["show", "--task", "cartpole"])
        .output()
        .unwrap();
    assert!(!result.status.success());
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(
        stderr.contains("cartpole-swingup") && stderr.contains("acrobot-swingup"),
        "{stderr}"
    );
}

#[test]
fn a_closed_or_full_stdout_ends_list_without_a_panic() {
    // `dreamer-tasks list | head -1`: the reader left, nothing to report.
    let (status, stderr) = run_without_panic(viewer().arg("list"), closed_pipe(), "list | true");
    assert!(status.success(), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    // `dreamer-tasks list >/dev/full`: a real failure, reported.
    let (status, stderr) =
        run_without_panic(viewer().arg("list"), full_device(), "list >/dev/full");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("writing to stdout"), "{stderr}");
}

#[test]
fn show_writes_its_file_even_when_stdout_is_closed() {
    // No tempfile here: the crate's dev-dependencies do not have it.
    let dir = std::env::temp_dir().join(format!("dreamer-tasks-cli-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("strip.png");
    let mut show = viewer();
    show.args(["show", "--task", "pendulum", "--steps", "5", "--scale", "1"])
        .arg("--out")
        .arg(&out);
    let (status, stderr) = run_without_panic(&mut show, closed_pipe(), "show | true");
    assert!(status.success(), "{stderr}");
    assert!(out.is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}
