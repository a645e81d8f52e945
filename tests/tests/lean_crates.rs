//! The runtime and the exporter run on devices without PyTorch: libtorch must never enter
//! their dependency trees.

use std::process::Command;

fn normal_dependencies(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(dreamer_tests::repo_root())
        .args([
            "tree",
            "--offline",
            "--locked",
            "--prefix",
            "none",
            "--edges",
            "normal,build",
        ])
        .args(["--package", package, "--format", "{p}"])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn assert_no_libtorch(package: &str) {
    let deps = normal_dependencies(package);
    assert!(
        deps.iter().any(|d| d == package),
        "cargo tree did not list {package} itself: {deps:?}"
    );
    let torch: Vec<_> = deps
        .iter()
        .filter(|d| matches!(d.as_str(), "tch" | "torch-sys"))
        .collect();
    assert!(torch.is_empty(), "{package} depends on {torch:?}");
}

#[test]
fn runtime_has_no_libtorch() {
    assert_no_libtorch("dreamer-runtime");
}

#[test]
fn exporter_has_no_libtorch() {
    assert_no_libtorch("dreamer-export");
}

#[test]
fn the_check_sees_libtorch_where_it_is() {
    // Guards the guard: the trainer does link tch, so the same query must find it there.
    assert!(
        normal_dependencies("dreamer-trainer")
            .iter()
            .any(|d| d == "tch")
    );
}
