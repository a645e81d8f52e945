//! Bad checkpoints and options give errors that name the problem, and never touch an
//! existing bundle.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Spec;
use dreamer_export::{ExportError, ExportOptions, export};

/// A valid state checkpoint with a short trajectory (fast), and its weights for editing.
fn checkpoint(dir: &Path) -> (PathBuf, common::Weights) {
    let spec = Spec {
        steps: 10,
        cases: 2,
        ..Spec::state()
    };
    let ckpt = common::write_checkpoint(&dir.join("ckpt"), &spec, 7);
    (ckpt, common::random_weights(&spec, 7))
}

fn rewrite_weights(ckpt: &Path, weights: &common::Weights) {
    common::weights_file(weights).write(&ckpt.join("model.safetensors"));
}

fn export_err(ckpt: &Path, out: &Path, options: &ExportOptions) -> ExportError {
    match export(ckpt, out, options) {
        Ok(_) => panic!("export of {} succeeded", ckpt.display()),
        Err(e) => e,
    }
}

/// An existing bundle with a marker file, to check it survives a failed export.
fn existing_bundle(dir: &Path) -> PathBuf {
    let out = dir.join("bundle");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("manifest.json"), "{\"old\": true}").unwrap();
    fs::write(out.join("marker"), "previous bundle").unwrap();
    out
}

fn assert_untouched(out: &Path) {
    assert_eq!(
        fs::read_to_string(out.join("marker")).unwrap(),
        "previous bundle"
    );
    assert_eq!(
        fs::read_to_string(out.join("manifest.json")).unwrap(),
        "{\"old\": true}"
    );
    // No staging folder is left beside it.
    let leftovers: Vec<_> = fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".bundle"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn missing_tensor_is_named_with_its_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, mut weights) = checkpoint(tmp.path());
    weights.remove("rssm.obs_dist.bias");
    rewrite_weights(&ckpt, &weights);
    let out = existing_bundle(tmp.path());
    let msg = export_err(&ckpt, &out, &ExportOptions::default()).to_string();
    assert!(
        msg.contains("missing tensor `rssm.obs_dist.bias` (expected shape [10])"),
        "{msg}"
    );
    assert!(msg.contains("model.safetensors"), "{msg}");
    assert_untouched(&out);
}

#[test]
fn extra_tensor_is_named_with_its_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, mut weights) = checkpoint(tmp.path());
    weights.insert("rssm.layer_norm.weight".into(), (vec![12], vec![1.0; 12]));
    rewrite_weights(&ckpt, &weights);
    let out = existing_bundle(tmp.path());
    let msg = export_err(&ckpt, &out, &ExportOptions::default()).to_string();
    assert!(
        msg.contains("unexpected tensor `rssm.layer_norm.weight` with shape [12]"),
        "{msg}"
    );
    assert_untouched(&out);
}

#[test]
fn mis_shaped_tensor_is_named_with_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, mut weights) = checkpoint(tmp.path());
    weights.insert("actor.l2.weight".into(), (vec![16, 15], vec![0.0; 240]));
    rewrite_weights(&ckpt, &weights);
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(
        msg.contains("tensor `actor.l2.weight` has shape [16, 15], expected [16, 16]"),
        "{msg}"
    );
    assert!(!tmp.path().join("out").exists());
}

#[test]
fn non_f32_tensor_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, weights) = checkpoint(tmp.path());
    let mut file = common::weights_file(&weights);
    file.u8("actor.out.bias", &[2], vec![0, 0]);
    file.write(&ckpt.join("model.safetensors"));
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(
        msg.contains("`actor.out.bias` has dtype U8, expected F32"),
        "{msg}"
    );
}

#[test]
fn unsupported_model_option_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let config = fs::read_to_string(ckpt.join("config.toml")).unwrap();
    fs::write(
        ckpt.join("config.toml"),
        config.replace("[model]\n", "[model]\nlayer_norm = true\n"),
    )
    .unwrap();
    let err = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default());
    assert!(
        matches!(err, ExportError::Unsupported { ref option, .. } if option == "model.layer_norm"),
        "{err}"
    );
}

#[test]
fn two_hot_bins_that_the_heads_do_not_have_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let config = fs::read_to_string(ckpt.join("config.toml")).unwrap();
    fs::write(
        ckpt.join("config.toml"),
        config.replace("[model]\n", "[model]\ntwo_hot_bins = 255\n"),
    )
    .unwrap();
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(
        msg.contains("`model.two_hot_bins` = 255 but tensor `value.out.weight` has 1 outputs"),
        "{msg}"
    );
}

/// A Gaussian checkpoint (S = 5: `rssm.img_dist.weight` has 10 rows) claimed to have
/// discrete latents: every wrong `model.classes` is named with what it contradicts.
#[test]
fn classes_that_the_latent_layers_do_not_have_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let config = fs::read_to_string(ckpt.join("config.toml")).unwrap();
    for (classes, expected) in [
        (
            "1",
            "`model.classes` = 1: supported is 0 (Gaussian latents) or at least 2",
        ),
        ("-4", "`model.classes` = -4: supported is"),
        (
            "3",
            "`rssm.img_dist.weight` has 10 rows, not a whole number of categoricals of `model.classes` = 3",
        ),
        // 5 categoricals of 2: the state would be 10 wide, the transition's input is 6.
        (
            "2",
            "`rssm.img_in.weight` has 6 columns for S + A with S = 10",
        ),
        ("\"two\"", "`model.classes` must be an integer"),
    ] {
        fs::write(
            ckpt.join("config.toml"),
            config.replace("[model]\n", &format!("[model]\nclasses = {classes}\n")),
        )
        .unwrap();
        let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
        assert!(msg.contains(expected), "classes = {classes}: {msg}");
        assert!(!tmp.path().join("out").exists(), "{classes}");
    }
}

#[test]
fn unsupported_observation_mode_and_batch_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let zero_batch = ExportOptions {
        batch: 0,
        ..ExportOptions::default()
    };
    let msg = export_err(&ckpt, &tmp.path().join("out"), &zero_batch).to_string();
    assert!(msg.contains("`batch`"), "{msg}");
    let config = fs::read_to_string(ckpt.join("config.toml")).unwrap();
    fs::write(
        ckpt.join("config.toml"),
        config.replace("obs_mode = \"state\"", "obs_mode = \"rgb\""),
    )
    .unwrap();
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(msg.contains("`run.obs_mode` = rgb"), "{msg}");
}

#[test]
fn missing_config_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let config = fs::read_to_string(ckpt.join("config.toml")).unwrap();
    fs::write(
        ckpt.join("config.toml"),
        config.replace("min_std = 0.1\n", ""),
    )
    .unwrap();
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(
        msg.contains("missing key `model.min_std`") && msg.contains("config.toml"),
        "{msg}"
    );
}

#[test]
fn config_sizes_must_match_the_tensors() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let config = fs::read_to_string(ckpt.join("config.toml")).unwrap();
    fs::write(
        ckpt.join("config.toml"),
        config.replace("deter = 12", "deter = 200"),
    )
    .unwrap();
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(
        msg.contains("`model.deter` = 200 but tensor `rssm.gru.weight_hh` implies 12"),
        "{msg}"
    );
}

#[test]
fn missing_reference_is_reported_and_no_verify_skips_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    fs::remove_file(ckpt.join("reference.safetensors")).unwrap();
    let err = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default());
    assert!(matches!(err, ExportError::NoReference { .. }), "{err}");
    assert!(err.to_string().contains("--no-verify"), "{err}");
    let options = ExportOptions {
        verify: false,
        ..ExportOptions::default()
    };
    let report = export(&ckpt, &tmp.path().join("out"), &options).unwrap();
    assert!(report.manifest.verification.is_none());
    dreamer_bundle::open(&tmp.path().join("out")).unwrap();
}

#[test]
fn a_trainer_that_disagrees_fails_verification_and_keeps_the_old_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, weights) = checkpoint(tmp.path());
    // Weights changed after the reference was recorded: the graphs no longer match it.
    let mut changed = weights.clone();
    changed.get_mut("rssm.img_out.bias").unwrap().1[0] += 1e-3;
    rewrite_weights(&ckpt, &changed);
    let out = existing_bundle(tmp.path());
    let err = export_err(&ckpt, &out, &ExportOptions::default());
    assert!(matches!(err, ExportError::Verification { .. }), "{err}");
    assert_untouched(&out);
}

#[test]
fn reference_with_a_mis_shaped_tensor_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, weights) = checkpoint(tmp.path());
    let spec = Spec {
        steps: 10,
        cases: 2,
        ..Spec::state()
    };
    let mut reference = common::reference_file(&spec, &weights, 1);
    reference.f32("traj.h", &[10, 11], vec![0.0; 110]);
    reference.write(&ckpt.join("reference.safetensors"));
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(
        msg.contains("reference.safetensors")
            && msg.contains("`traj.h` has shape [10, 11], expected [10, 12]"),
        "{msg}"
    );
}

#[test]
fn successful_export_replaces_an_existing_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let out = existing_bundle(tmp.path());
    export(&ckpt, &out, &ExportOptions::default()).unwrap();
    assert!(!out.join("marker").exists());
    dreamer_bundle::open(&out).unwrap();
}

#[test]
fn a_folder_that_is_not_a_bundle_is_never_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let out = tmp.path().join("documents");
    fs::create_dir_all(&out).unwrap();
    fs::write(out.join("thesis.txt"), "precious").unwrap();
    let msg = export_err(&ckpt, &out, &ExportOptions::default()).to_string();
    assert!(msg.contains("refusing to replace"), "{msg}");
    assert_eq!(
        fs::read_to_string(out.join("thesis.txt")).unwrap(),
        "precious"
    );
}

#[test]
fn unknown_task_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, _) = checkpoint(tmp.path());
    let config = fs::read_to_string(ckpt.join("config.toml")).unwrap();
    fs::write(
        ckpt.join("config.toml"),
        config.replace("task = \"pendulum\"", "task = \"juggling\""),
    )
    .unwrap();
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(msg.contains("task `juggling`"), "{msg}");
}

#[test]
fn non_finite_weight_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let (ckpt, mut weights) = checkpoint(tmp.path());
    weights.get_mut("rssm.gru.weight_hh").unwrap().1[5] = f32::NAN;
    rewrite_weights(&ckpt, &weights);
    let msg = export_err(&ckpt, &tmp.path().join("out"), &ExportOptions::default()).to_string();
    assert!(
        msg.contains("tensor `rssm.gru.weight_hh` holds NaN at flat index 5"),
        "{msg}"
    );
}
