//! The bundle seen from Python: ONNX's own checker (full check, with shape inference) on
//! every graph, and the documented ten-line example driving `policy_step.onnx` from the
//! manifest alone. Both use the `onnx` and `onnxruntime` packages that scripts/fetch-deps
//! installs in `.deps/python`.

mod common;

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
        check_graphs(&out);
    }
}

#[test]
fn documented_python_example_drives_the_policy() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/drive_policy.py");
    let text = std::fs::read_to_string(&script).unwrap();
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/export.md"))
            .unwrap();
    assert!(
        doc.contains(&text),
        "docs/export.md must show python/drive_policy.py verbatim"
    );
    assert_eq!(text.lines().count(), 10, "the example is ten lines");

    let tmp = tempfile::tempdir().unwrap();
    for spec in [
        Spec {
            steps: 5,
            cases: 2,
            ..Spec::state()
        },
        Spec {
            steps: 5,
            cases: 2,
            ..Spec::pixels()
        },
    ] {
        let ckpt = common::write_checkpoint(&tmp.path().join(spec.obs), &spec, 12);
        let out = tmp.path().join(format!("{}-bundle", spec.obs));
        let manifest = export(&ckpt, &out, &ExportOptions::default())
            .unwrap()
            .manifest;
        let stdout = python(&[script.to_str().unwrap(), out.to_str().unwrap()]);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 5, "{stdout}");
        let (low, high) = (
            manifest.action.physical_low[0],
            manifest.action.physical_high[0],
        );
        for (step, line) in lines.iter().enumerate() {
            // "<step> [<physical action>] <surprise>"
            let (head, surprise) = line.rsplit_once(' ').unwrap();
            let (index, action) = head.split_once(' ').unwrap();
            assert_eq!(index, step.to_string());
            let action: f32 = action
                .trim_matches(|c| c == '[' || c == ']')
                .parse()
                .unwrap();
            assert!(action >= low && action <= high, "{line}");
            let surprise: f32 = surprise.parse().unwrap();
            assert!(surprise.is_finite() && surprise >= 0.0, "{line}");
        }
    }
}
