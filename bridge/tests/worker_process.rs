//! The worker script as a process: it dies with its parent even while its stdin stays open.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dreamer_bridge::resolve_python;

/// Running (not a zombie, not gone).
fn is_running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

#[test]
fn a_worker_dies_with_its_parent() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/python/dreamer_worker.py");
    let python = resolve_python(None).path;
    // sh starts the worker in the background with sh's (our) stdin kept open on fd 3, prints
    // its pid and exits after a moment; the worker waits for a hello that never comes.
    let mut parent = Command::new("sh")
        .arg("-c")
        .arg(r#"exec 3<&0; DREAMER_BRIDGE_PARENT_PID=$$ "$0" -u "$1" <&3 & echo $!; sleep 0.5"#)
        .arg(&python)
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start sh");
    let _keep_stdin_open = parent.stdin.take();
    let mut line = String::new();
    BufReader::new(parent.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let pid: u32 = line.trim().parse().expect("worker pid");
    assert!(is_running(pid), "worker {pid} did not start");
    parent.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_running(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!is_running(pid), "worker {pid} outlived its parent");
}
