//! export/python/drive_policy.py, which drives a bundle from its manifest alone (graph and
//! tensor names, wiring, initial state, noise, action mapping all from `contract`), against
//! the tests' independent float64 implementation of the same closed loop: every step scheme
//! of the contract, state and pixel observations, batch 1 and 3.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Reference, Spec};
use dreamer_bundle::contract;
use dreamer_export::{ExportOptions, export};

/// One printed step: the physical command of batch row 0 and the surprise (NaN when the
/// scheme has none).
#[derive(Debug, PartialEq)]
struct Line {
    command: Vec<f64>,
    surprise: f64,
}

fn drive(bundle: &Path, args: &[&str]) -> Vec<Line> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/drive_policy.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(bundle)
        .args(args)
        .env("PYTHONPATH", common::deps_python())
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "drive_policy.py {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .enumerate()
        .map(|(step, line)| {
            // "<step> [<command>, ...] <surprise>"
            let (head, surprise) = line.rsplit_once(' ').unwrap();
            let (index, command) = head.split_once(' ').unwrap();
            assert_eq!(index, step.to_string(), "{line}");
            let command = command.trim_matches(|c| c == '[' || c == ']');
            Line {
                command: command.split(", ").map(|v| v.parse().unwrap()).collect(),
                surprise: surprise.parse().unwrap(),
            }
        })
        .collect()
}

/// The deterministic closed loop on all-zero observations in float64: what the script must
/// print for 5 steps.
fn reference_loop(spec: &Spec, seed: u64, low: &[f32], high: &[f32]) -> Vec<Line> {
    let w = common::random_weights(spec, seed);
    let r = Reference {
        spec: spec.clone(),
        w: &w,
    };
    let pixels = vec![0u8; 64 * 64 * 3];
    let state = vec![0f32; spec.o];
    let embed = r.encoder(
        spec.uses_pixels().then_some(pixels.as_slice()),
        spec.uses_state().then_some(state.as_slice()),
    );
    let (mut h, mut s, mut a) = (vec![0.0; spec.d], vec![0.0; spec.s], vec![0.0; spec.a]);
    (0..5)
        .map(|_| {
            let step = r.obs_step(&h, &s, &a, &embed, &vec![0.0; spec.s]);
            let feat: Vec<f64> = step.h.iter().chain(&step.s).copied().collect();
            (a, _, _) = r.actor(&feat);
            (h, s) = (step.h.clone(), step.s.clone());
            let command = a
                .iter()
                .zip(low.iter().zip(high))
                .map(|(x, (&l, &u))| f64::from(l) + (x + 1.0) / 2.0 * f64::from(u - l))
                .collect();
            Line {
                command,
                surprise: common::kl(&step),
            }
        })
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * b.abs().max(1.0)
}

#[test]
fn every_step_scheme_drives_the_policy_as_the_reference_does() {
    let tmp = tempfile::tempdir().unwrap();
    let both = Spec {
        obs: "both",
        task: "cartpole-swingup",
        o: 5,
        ..Spec::state()
    };
    for (spec, batch) in [(Spec::state(), 1), (Spec::pixels(), 1), (both, 3)] {
        let spec = Spec {
            steps: 5,
            cases: 2,
            ..spec
        };
        let name = format!("{}-b{batch}", spec.obs);
        let seed = 60 + batch as u64;
        let ckpt = common::write_checkpoint(&tmp.path().join(&name).join("ckpt"), &spec, seed);
        let out = tmp.path().join(&name).join("bundle");
        let options = ExportOptions {
            batch,
            verify: false,
            ..ExportOptions::default()
        };
        let m = export(&ckpt, &out, &options).unwrap().manifest;
        let expected = reference_loop(&spec, seed, &m.action.physical_low, &m.action.physical_high);
        for scheme in m.contract.steps.keys() {
            let lines = drive(&out, &[scheme]);
            assert_eq!(lines.len(), 5, "{name} {scheme}");
            for (step, (got, want)) in lines.iter().zip(&expected).enumerate() {
                let at = format!("{name} {scheme} step {step}: {got:?} against {want:?}");
                assert_eq!(got.command.len(), want.command.len(), "{at}");
                for (g, w) in got.command.iter().zip(&want.command) {
                    assert!(close(*g, *w, 1e-4), "{at}");
                }
                if scheme == contract::SEPARATE {
                    assert!(got.surprise.is_nan(), "{at}");
                } else {
                    assert!(close(got.surprise, want.surprise, 1e-3), "{at}");
                }
            }
        }
    }
}

#[test]
fn sampling_draws_noise_and_stays_in_the_actuator_range() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = Spec {
        steps: 5,
        cases: 2,
        ..Spec::state()
    };
    let ckpt = common::write_checkpoint(&tmp.path().join("ckpt"), &spec, 70);
    let out = tmp.path().join("bundle");
    let options = ExportOptions {
        verify: false,
        ..ExportOptions::default()
    };
    let m = export(&ckpt, &out, &options).unwrap().manifest;
    let mode = drive(&out, &[]);
    let sampled = drive(&out, &["fused", "--sample"]);
    assert_eq!(mode, drive(&out, &["fused"]), "fused is the default scheme");
    assert_ne!(mode, sampled, "--sample must change the actions");
    let (low, high) = (m.action.physical_low[0], m.action.physical_high[0]);
    for line in &sampled {
        let c = line.command[0] as f32;
        assert!(c >= low && c <= high, "{line:?}");
        assert!(
            line.surprise.is_finite() && line.surprise >= 0.0,
            "{line:?}"
        );
    }
}

#[test]
fn the_readme_shows_the_script_verbatim() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(dir.join("python/drive_policy.py")).unwrap();
    let readme = std::fs::read_to_string(dir.join("../README.md")).unwrap();
    assert!(
        readme.contains(&format!("```python\n{script}```\n")),
        "README.md must show export/python/drive_policy.py verbatim"
    );
}
