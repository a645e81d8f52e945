//! `dreamer-hil` refuses bad input with an error naming it, before starting anything.

use std::process::Command;

fn fails_with(args: &[&str], needle: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_dreamer-hil"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
}

#[test]
fn bad_arguments_are_named() {
    let missing = std::env::temp_dir().join("no-such-bundle-for-dreamer-hil");
    let missing = missing.to_str().unwrap();
    fails_with(&["--bundle", missing], "no-such-bundle-for-dreamer-hil");
    fails_with(&["--bundle", missing, "--flip", "1.5"], "--flip");
    fails_with(&["--bundle", missing, "--delay-p=-0.1"], "--delay-p");
    fails_with(&["--bundle", missing, "--duration-s", "0"], "--duration-s");
}
