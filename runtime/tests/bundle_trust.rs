//! The runtime opens bundles only through the trusted loader: signatures against configured
//! keys, every graph listed and hashed, no path outside the folder, no hang on a device, and
//! the same checks and notices in `info` and `doctor`.

mod common;
#[path = "../../export/tests/common/mod.rs"]
mod export_fixtures;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Faults, Sizes, Weights};
use dreamer_bundle::{
    Authenticity, MANIFEST_FILE, PublicKey, SIGNATURE_FILE, SecretKey, generate_key_pair,
};
use dreamer_export::BundleArgs;
use dreamer_runtime::{Agent, AgentOptions, LoadError};

fn pendulum_bundle(dir: &Path) -> dreamer_bundle::Manifest {
    common::write_bundle(
        dir,
        &Weights::random(Sizes::pendulum(), 3),
        Faults::default(),
    )
}

/// A key pair in `dir`: (secret key, public key, public key file).
fn keys(dir: &Path, name: &str) -> (SecretKey, PublicKey, PathBuf) {
    let (secret, public, _) = generate_key_pair(&dir.join(name)).unwrap();
    (
        SecretKey::read(&secret).unwrap(),
        PublicKey::read(&public).unwrap(),
        public,
    )
}

fn sign(dir: &Path, key: &SecretKey) {
    let bytes = fs::read(dir.join(MANIFEST_FILE)).unwrap();
    fs::write(dir.join(SIGNATURE_FILE), key.sign_manifest(&bytes)).unwrap();
}

fn load(dir: &Path, trusted: &[PublicKey]) -> Result<Agent, LoadError> {
    Agent::load(
        dir,
        AgentOptions {
            trusted_keys: trusted.to_vec(),
            warmup_steps: 1,
            ..AgentOptions::default()
        },
    )
}

fn load_error(dir: &Path, trusted: &[PublicKey]) -> String {
    match load(dir, trusted) {
        Ok(_) => panic!("the agent loaded {}", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// `dreamer-rt ARGS`, killed if it takes over 60 s: (success, stdout + stderr, seconds).
fn dreamer_rt(args: &[&str]) -> (bool, String, f64) {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dreamer-rt"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            child.kill().unwrap();
            panic!("dreamer-rt {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, start.elapsed().as_secs_f64())
}

#[test]
fn a_signed_bundle_loads_with_its_key_and_others_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public, public_file) = keys(tmp.path(), "release");
    let (stranger, _, _) = keys(tmp.path(), "stranger");
    let dir = tmp.path().join("b");
    let manifest = pendulum_bundle(&dir);

    // Unsigned, with a key configured.
    let e = load_error(&dir, std::slice::from_ref(&public));
    assert!(e.contains(SIGNATURE_FILE) && e.contains("unsigned"), "{e}");

    // Signed by another key.
    sign(&dir, &stranger);
    let e = load_error(&dir, std::slice::from_ref(&public));
    assert!(
        e.contains(&format!("signed by {}", stranger.fingerprint()))
            && e.contains(&public.fingerprint()),
        "{e}"
    );

    // Signed by the trusted key.
    sign(&dir, &secret);
    let agent = load(&dir, std::slice::from_ref(&public)).unwrap();
    assert_eq!(
        agent.authenticity(),
        &Authenticity::Verified {
            fingerprint: public.fingerprint(),
            key_file: public_file,
        }
    );

    // The manifest changed after signing (a wider actuator range).
    let mut wider = manifest.clone();
    wider.action.physical_high = vec![200.0; wider.action.size as usize];
    common::write_manifest(&dir, &wider);
    let e = load_error(&dir, std::slice::from_ref(&public));
    assert!(e.contains("modified after signing"), "{e}");

    // Without keys: loads, and says its origin was not checked.
    let agent = load(&dir, &[]).unwrap();
    assert_eq!(agent.authenticity(), &Authenticity::NotChecked);
}

#[test]
fn tampered_or_unlisted_graphs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let manifest = pendulum_bundle(&dir);
    // A working graph from another bundle, so only the hash can tell.
    let other = tmp.path().join("other");
    common::write_bundle(
        &other,
        &Weights::random(Sizes::pendulum(), 99),
        Faults::default(),
    );
    fs::copy(other.join("policy_step.onnx"), dir.join("policy_step.onnx")).unwrap();
    let e = load_error(&dir, &[]);
    assert!(
        e.contains("policy_step.onnx") && e.contains("sha256"),
        "{e}"
    );

    // Unlisted: before, a graph missing from `files` was never hashed.
    let mut unlisted = manifest.clone();
    unlisted.files.remove("policy_step.onnx");
    common::write_manifest(&dir, &unlisted);
    let e = load_error(&dir, &[]);
    assert!(e.contains("graphs.policy_step.file"), "{e}");

    let mut empty = manifest;
    empty.files.clear();
    common::write_manifest(&dir, &empty);
    let e = load_error(&dir, &[]);
    assert!(e.contains("does not list"), "{e}");
}

#[test]
fn a_wrong_latent_size_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let mut manifest = pendulum_bundle(tmp.path());
    let deter = manifest.latent.deter;
    manifest.latent.deter = 99;
    common::write_manifest(tmp.path(), &manifest);
    let e = load_error(tmp.path(), &[]);
    assert!(
        e.contains(&format!(
            "latent.deter is 99 but graph rssm_obs_step input h is [1, {deter}]"
        )),
        "{e}"
    );
}

#[test]
fn info_and_doctor_report_the_loaders_verdict() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, _, public_file) = keys(tmp.path(), "release");
    let key = public_file.to_str().unwrap();
    let dir = tmp.path().join("b");
    let manifest = pendulum_bundle(&dir);
    let path = dir.to_str().unwrap();

    let (ok, text, _) = dreamer_rt(&["info", path]);
    assert!(ok, "{text}");
    assert!(text.contains("authenticity not checked"), "{text}");
    let (ok, text, _) = dreamer_rt(&["info", "--trusted-key", key, path]);
    assert!(!ok && text.contains("unsigned"), "{text}");
    sign(&dir, &secret);
    let (ok, text, _) = dreamer_rt(&["info", "--trusted-key", key, path]);
    assert!(ok && text.contains("signature verified"), "{text}");
    let (ok, text, _) = dreamer_rt(&["doctor", "--trusted-key", key, path]);
    assert!(ok, "{text}");
    assert!(text.contains("ok    signature verified"), "{text}");
    assert!(text.contains("policy loaded"), "{text}");

    // `"files": {}` used to pass doctor with "checksums match".
    let mut empty = manifest;
    empty.files.clear();
    common::write_manifest(&dir, &empty);
    let (ok, text, _) = dreamer_rt(&["doctor", path]);
    assert!(!ok, "{text}");
    assert!(
        text.contains("FAIL") && text.contains("does not list"),
        "{text}"
    );
}

#[cfg(unix)]
#[test]
fn a_manifest_on_a_device_fails_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/zero", tmp.path().join(MANIFEST_FILE)).unwrap();
    let path = tmp.path().to_str().unwrap();
    // Used to read /dev/zero forever.
    let (ok, text, seconds) = dreamer_rt(&["info", path]);
    assert!(!ok && text.contains("symbolic link"), "{text}");
    assert!(seconds < 30.0, "took {seconds} s");
    let e = load_error(tmp.path(), &[]);
    assert!(e.contains("symbolic link"), "{e}");
}

#[test]
fn an_export_with_sign_key_loads_with_the_public_key() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = export_fixtures::Spec::state();
    let ckpt = export_fixtures::write_checkpoint(&tmp.path().join("ckpt"), &spec, 4);
    let (secret_file, public_file, fingerprint) =
        generate_key_pair(&tmp.path().join("robot")).unwrap();
    let out = tmp.path().join("bundle");
    let args = BundleArgs {
        out: out.clone(),
        batch: 1,
        precision: dreamer_export::PrecisionArg::Float32,
        fp16: false,
        calibration_replay: None,
        calibration_steps: 5000,
        return_episodes: 20,
        max_return_drop: 0.05,
        graph_form: dreamer_export::GraphFormArg::Compact,
        ort_lib: None,
        sign_key: Some(secret_file),
    };
    // With verification: the signature must cover the manifest as rewritten after it.
    args.export(&ckpt, &args.options()).unwrap();
    let public = PublicKey::read(&public_file).unwrap();
    let agent = load(&out, &[public]).unwrap();
    assert!(
        matches!(agent.authenticity(), Authenticity::Verified { fingerprint: f, .. } if *f == fingerprint),
        "{:?}",
        agent.authenticity()
    );
}
