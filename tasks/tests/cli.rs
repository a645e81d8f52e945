//! The `dreamer-tasks` viewer binary.
#![cfg(feature = "cli")]

use std::process::Command;

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
