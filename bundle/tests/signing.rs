//! Authenticity: with trusted keys, only a bundle whose manifest one of them signed opens;
//! without keys, every bundle opens and says its origin was not checked.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use dreamer_bundle::{
    Authenticity, Bundle, MANIFEST_FILE, PublicKey, SIGNATURE_FILE, SecretKey, generate_key_pair,
};

struct Keys {
    secret: SecretKey,
    public: PublicKey,
    public_path: PathBuf,
}

fn keys(dir: &Path, name: &str) -> Keys {
    let (secret_path, public_path, fingerprint) = generate_key_pair(&dir.join(name)).unwrap();
    let secret = SecretKey::read(&secret_path).unwrap();
    let public = PublicKey::read(&public_path).unwrap();
    assert_eq!(secret.fingerprint(), fingerprint);
    assert_eq!(public.fingerprint(), fingerprint);
    Keys {
        secret,
        public,
        public_path,
    }
}

fn sign(dir: &Path, key: &SecretKey) {
    let manifest = fs::read(dir.join(MANIFEST_FILE)).unwrap();
    fs::write(dir.join(SIGNATURE_FILE), key.sign_manifest(&manifest)).unwrap();
}

fn refused(dir: &Path, trusted: &[PublicKey]) -> String {
    match Bundle::open(dir, trusted) {
        Ok(_) => panic!("accepted"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_signed_bundle_opens_with_its_key() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path(), "release");
    let dir = tmp.path().join("b");
    common::valid(&dir);
    sign(&dir, &k.secret);
    let opened = Bundle::open(&dir, std::slice::from_ref(&k.public)).unwrap();
    assert_eq!(
        opened.authenticity,
        Authenticity::Verified {
            fingerprint: k.public.fingerprint(),
            key_file: k.public_path.clone(),
        }
    );
    // Any one of several trusted keys suffices.
    let other = keys(tmp.path(), "other");
    let opened = Bundle::open(&dir, &[other.public, k.public]).unwrap();
    assert!(matches!(opened.authenticity, Authenticity::Verified { .. }));
}

#[test]
fn without_keys_any_bundle_opens_and_says_it_was_not_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    common::valid(&dir);
    let opened = Bundle::open(&dir, &[]).unwrap();
    assert_eq!(opened.authenticity, Authenticity::NotChecked);
    assert!(
        opened
            .authenticity
            .to_string()
            .contains("authenticity not checked")
    );
}

#[test]
fn an_unsigned_bundle_is_refused_when_keys_are_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path(), "release");
    let dir = tmp.path().join("b");
    common::valid(&dir);
    let e = refused(&dir, std::slice::from_ref(&k.public));
    assert!(
        e.contains(SIGNATURE_FILE) && e.contains("unsigned") && e.contains(&k.public.fingerprint()),
        "{e}"
    );
}

#[test]
fn a_bundle_signed_by_another_key_is_refused_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let trusted = keys(tmp.path(), "release");
    let stranger = keys(tmp.path(), "stranger");
    let dir = tmp.path().join("b");
    common::valid(&dir);
    sign(&dir, &stranger.secret);
    let e = refused(&dir, std::slice::from_ref(&trusted.public));
    assert!(
        e.contains(&format!("signed by {}", stranger.public.fingerprint()))
            && e.contains("not a trusted key")
            && e.contains(&trusted.public.fingerprint()),
        "{e}"
    );
}

#[test]
fn a_manifest_changed_after_signing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path(), "release");
    let dir = tmp.path().join("b");
    let mut m = common::valid(&dir);
    sign(&dir, &k.secret);
    m.action.physical_high = vec![20.0; 2];
    common::write_manifest(&dir, &m);
    let e = refused(&dir, std::slice::from_ref(&k.public));
    assert!(e.contains("modified after signing"), "{e}");
}

#[test]
fn a_graph_changed_after_signing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path(), "release");
    let dir = tmp.path().join("b");
    common::valid(&dir);
    sign(&dir, &k.secret);
    fs::write(dir.join("policy_step.onnx"), b"evil").unwrap();
    let e = refused(&dir, std::slice::from_ref(&k.public));
    assert!(
        e.contains("policy_step.onnx") && e.contains("sha256"),
        "{e}"
    );
}

#[test]
fn a_garbled_signature_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path(), "release");
    let dir = tmp.path().join("b");
    common::valid(&dir);
    fs::write(dir.join(SIGNATURE_FILE), "dreamer-ed25519-signature x zz\n").unwrap();
    let e = refused(&dir, std::slice::from_ref(&k.public));
    assert!(e.contains("128 hex digits"), "{e}");
}

#[test]
fn key_files_are_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let (secret, public, _) = generate_key_pair(&tmp.path().join("k")).unwrap();
    assert_eq!(secret, tmp.path().join("k.secret"));
    assert_eq!(public, tmp.path().join("k.pub"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    let text = fs::read_to_string(&public).unwrap();
    assert!(text.starts_with("dreamer-ed25519-public "), "{text}");
    // Never overwrite a key.
    let e = generate_key_pair(&tmp.path().join("k"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("refusing to overwrite"), "{e}");
    assert_eq!(fs::read_to_string(&public).unwrap(), text);
    // A secret key is not a public key, and the reverse.
    let e = PublicKey::read(&secret).unwrap_err().to_string();
    assert!(
        e.contains("dreamer-ed25519-secret") && e.contains("k.secret"),
        "{e}"
    );
    let e = SecretKey::read(&public).unwrap_err().to_string();
    assert!(e.contains("dreamer-ed25519-public"), "{e}");
    let e = PublicKey::read(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a regular file"), "{e}");
    // The secret never shows in debug output.
    let key = SecretKey::read(&secret).unwrap();
    let hex_seed = fs::read_to_string(&secret).unwrap();
    let seed = hex_seed.split_whitespace().nth(1).unwrap();
    assert!(!format!("{key:?}").contains(seed));
}

#[test]
fn key_generation_makes_its_folder_and_leaves_no_half_pair() {
    let tmp = tempfile::tempdir().unwrap();
    // As the README writes it: `--out keys/robot` where `keys/` does not exist yet.
    let (secret, public, _) = generate_key_pair(&tmp.path().join("keys/robot")).unwrap();
    assert!(secret.is_file() && public.is_file());

    // An existing public half is refused before the secret is written: no half pair.
    let blocked = tmp.path().join("blocked");
    fs::create_dir_all(&blocked).unwrap();
    fs::write(blocked.join("k.pub"), "").unwrap();
    let e = generate_key_pair(&blocked.join("k"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("k.pub") && e.contains("refusing to overwrite"),
        "{e}"
    );
    assert!(!blocked.join("k.secret").exists());

    // A folder that cannot be created is named.
    let file = tmp.path().join("a-file");
    fs::write(&file, "").unwrap();
    let e = generate_key_pair(&file.join("k")).unwrap_err().to_string();
    assert!(e.contains("a-file") && e.contains("cannot create"), "{e}");
}
