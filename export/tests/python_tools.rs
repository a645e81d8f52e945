//! The bundle seen from Python: ONNX's own checker (full check, with shape inference) on
//! every graph, with the `onnx` package that scripts/fetch-deps installs in `.deps/python`.
//! (The manifest-only Python driver is tested in python_driver.rs.)

mod common;
mod schema;

use std::path::Path;
use std::process::Command;

use common::Spec;
use dreamer_export::{ExportOptions, Precision, export};

fn python(args: &[&str]) -> String {
    let out = Command::new("python3")
        .args(args)
        .env("PYTHONPATH", common::deps_python())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

const CHECK: &str = "import sys, onnx\n\
for path in sys.argv[1:]:\n    \
    onnx.checker.check_model(path, full_check=True)\n    \
    model = onnx.load(path)\n    \
    assert model.ir_version == 8 and model.opset_import[0].version == 17, path\n    \
    print('ok', path)\n";

fn check_graphs(bundle: &Path) {
    let paths: Vec<String> = dreamer_bundle::GRAPH_ROLES
        .iter()
        .map(|role| bundle.join(format!("{role}.onnx")).display().to_string())
        .collect();
    let mut args = vec!["-c", CHECK];
    args.extend(paths.iter().map(String::as_str));
    let out = python(&args);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("ok ")).count(),
        dreamer_bundle::GRAPH_ROLES.len(),
        "{out}"
    );
}

#[test]
fn onnx_checker_accepts_every_graph() {
    let tmp = tempfile::tempdir().unwrap();
    let both = Spec {
        obs: "both",
        task: "cartpole-swingup",
        o: 5,
        steps: 5,
        cases: 2,
        ..Spec::state()
    };
    let ckpt = common::write_checkpoint(&tmp.path().join("ckpt"), &both, 11);
    let variants = [
        ("b1", ExportOptions::default()),
        (
            "b4-f16",
            ExportOptions {
                batch: 4,
                precision: Precision::Float16,
                ..ExportOptions::default()
            },
        ),
    ];
    for (name, options) in variants {
        let out = tmp.path().join(name);
        export(&ckpt, &out, &options).unwrap();
        schema::assert_bundle(&out);
        check_graphs(&out);
    }
}
