//! Export time and bundle size for the project's presets, on random checkpoints written per
//! docs/checkpoint-format.md (the weights' values do not change the cost).
//!
//! `cargo bench -p dreamer-export --bench export`; bundle sizes are printed before the timings.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Spec;
use criterion::{Criterion, criterion_group, criterion_main};
use dreamer_export::{ExportOptions, Precision, export};

fn presets() -> Vec<(&'static str, Spec)> {
    let paper = Spec {
        task: "cartpole-swingup",
        obs: "pixels",
        o: 5,
        a: 1,
        d: 200,
        s: 30,
        h: 200,
        u: 400,
        c: 32,
        min_std: 0.1,
        pcont: false,
        symlog: false,
        steps: 500,
        cases: 16,
    };
    vec![
        ("paper-pixels", paper.clone()),
        (
            "cpu-pixels",
            Spec {
                d: 100,
                s: 16,
                h: 100,
                u: 100,
                c: 8,
                ..paper.clone()
            },
        ),
        (
            "cpu-state",
            Spec {
                task: "pendulum",
                obs: "state",
                o: 3,
                d: 128,
                s: 16,
                h: 128,
                u: 128,
                ..paper.clone()
            },
        ),
        (
            "state-200",
            Spec {
                task: "pendulum",
                obs: "state",
                o: 3,
                u: 200,
                ..paper
            },
        ),
    ]
}

fn checkpoint(root: &Path, name: &str, spec: &Spec) -> PathBuf {
    common::write_checkpoint(&root.join(name), spec, 1)
}

fn bench_export(c: &mut Criterion) {
    let tmp = tempfile::tempdir().unwrap();
    let mut group = c.benchmark_group("export");
    group.sample_size(10).warm_up_time(Duration::from_secs(1));
    for (name, spec) in presets() {
        let ckpt = checkpoint(tmp.path(), name, &spec);
        let variants = [
            ("verified", ExportOptions::default()),
            (
                "no-verify",
                ExportOptions {
                    verify: false,
                    ..ExportOptions::default()
                },
            ),
            (
                "fp16-verified",
                ExportOptions {
                    precision: Precision::Float16,
                    ..ExportOptions::default()
                },
            ),
        ];
        for (variant, options) in variants {
            let out = tmp.path().join(format!("{name}-{variant}"));
            let report = export(&ckpt, &out, &options).unwrap();
            eprintln!(
                "{name} {variant}: bundle {} bytes ({}), policy_step.onnx {} bytes",
                report.bundle_bytes(),
                report
                    .file_bytes
                    .iter()
                    .map(|(f, b)| format!("{f} {b}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                report.file_bytes["policy_step.onnx"],
            );
            if let Some(v) = &report.manifest.verification {
                eprintln!("{name} {variant}: {v:?}");
            }
            group.bench_function(format!("{name}/{variant}"), |b| {
                b.iter(|| export(&ckpt, &out, &options).unwrap())
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_export);
criterion_main!(benches);
