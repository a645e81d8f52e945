//! `dreamer-hil` refuses bad input with an error naming it, before starting anything.

use std::process::Command;

use dreamer_cli::testing::assert_no_panic;

fn fails_with(args: &[&str], needle: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_dreamer-hil"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert_no_panic(&stderr, format_args!("{args:?}"));
}

#[test]
fn bad_arguments_are_named() {
    let missing = std::env::temp_dir().join("no-such-bundle-for-dreamer-hil");
    let missing = missing.to_str().unwrap();
    fails_with(&["--bundle", missing], "no-such-bundle-for-dreamer-hil");
    fails_with(&["--bundle", missing, "--flip", "1.5"], "--flip");
    fails_with(&["--bundle", missing, "--delay-p=-0.1"], "--delay-p");
    fails_with(&["--bundle", missing, "--duration-s", "0"], "--duration-s");
    fails_with(
        &["--bundle", missing, "--cpus", "0,4096"],
        "--cpus names CPU 4096",
    );
    fails_with(
        &["--bundle", missing, "--cpus", "0"],
        "--cpus takes two CPUs, F,R",
    );
}

/// A fault flag that needs another one is refused alone, instead of injecting nothing.
#[test]
fn a_fault_flag_without_its_partner_is_refused() {
    let missing = std::env::temp_dir().join("no-such-bundle-for-dreamer-hil");
    let missing = missing.to_str().unwrap();
    fails_with(
        &["--bundle", missing, "--delay-us", "2000"],
        "--delay-us 2000 delays nothing without --delay-p",
    );
    fails_with(
        &["--bundle", missing, "--delay-p", "0.1"],
        "--delay-p 0.1 delays nothing without --delay-us",
    );
    fails_with(
        &["--bundle", missing, "--stall-for", "1"],
        "--stall-for 1 stalls nothing without --stall-at",
    );
}

/// `--drop -0.1` (not only `--drop=-0.1`) reaches the validation, which names the flag and
/// the value.
#[test]
fn negative_values_are_refused_naming_the_flag_and_the_value() {
    let missing = std::env::temp_dir().join("no-such-bundle-for-dreamer-hil");
    let missing = missing.to_str().unwrap();
    for flag in ["--drop", "--flip", "--dup", "--delay-p", "--reorder"] {
        fails_with(
            &["--bundle", missing, flag, "-0.1"],
            &format!("{flag} must be a probability in [0, 1], got -0.1"),
        );
    }
    fails_with(
        &["--bundle", missing, "--duration-s", "-2"],
        "--duration-s must be positive, got -2",
    );
    fails_with(
        &["--bundle", missing, "--rate-hz", "-50"],
        "--rate-hz must be a positive number of ticks per second, got -50",
    );
    fails_with(
        &["--bundle", missing, "--stall-at", "-1"],
        "--stall-at must be 0 or more seconds after the session opened, got -1",
    );
    fails_with(
        &[
            "--bundle",
            missing,
            "--stall-at",
            "1",
            "--stall-for",
            "-0.5",
        ],
        "--stall-for must be a positive number of seconds, got -0.5",
    );
    // An unsigned value: clap's own error, naming the flag and the value.
    fails_with(
        &["--bundle", missing, "--delay-us", "-5"],
        "'-5' for '--delay-us",
    );
}

/// A later option replaces an earlier one, so a script's defaults can be overridden.
#[test]
fn a_repeated_option_takes_the_last_value() {
    let missing = std::env::temp_dir().join("no-such-bundle-for-dreamer-hil");
    let missing = missing.to_str().unwrap();
    fails_with(
        &["--bundle", missing, "--drop", "0.5", "--drop", "-2"],
        "--drop must be a probability in [0, 1], got -2",
    );
}
