//! runtime/python/bench_ort.py, the Python onnxruntime side of scripts/bench-runtime: it
//! times the graph a bundle names and says so, and names a graph the bundle lacks.

#[path = "../../export/tests/common/mod.rs"]
mod export_fixtures;

use std::path::Path;
use std::process::{Command, Output};

fn bench_ort(bundle: &Path, args: &[&str]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/bench_ort.py");
    Command::new("python3")
        .arg(script)
        .arg(bundle)
        .args(args)
        .env("PYTHONPATH", export_fixtures::deps_python())
        .output()
        .expect("python3 runs")
}

#[test]
fn the_python_benchmark_times_the_named_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = export_fixtures::Spec::state();
    let ckpt = export_fixtures::write_checkpoint(&tmp.path().join("ckpt"), &spec, 1);
    let bundle = tmp.path().join("bundle");
    let options = dreamer_export::ExportOptions {
        verify: false,
        ..Default::default()
    };
    dreamer_export::export(&ckpt, &bundle, &options).unwrap();

    let out = bench_ort(&bundle, &["--steps", "50", "--warmup", "5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" policy_step: load "), "{stdout}");
    assert!(stdout.contains("n=50 p50="), "{stdout}");

    let out = bench_ort(&bundle, &["--graph", "no_such_graph"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no graph `no_such_graph` in manifest.json"),
        "{stderr}"
    );
}
