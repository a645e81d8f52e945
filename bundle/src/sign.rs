//! Bundle authenticity: an ed25519 signature over the exact bytes of `manifest.json`, kept
//! beside it in `manifest.json.sig`. The manifest lists every file's sha256, so the signature
//! covers the graphs too.
//!
//! Text formats (one line each, lowercase hex, a trailing newline allowed):
//! - secret key file: `dreamer-ed25519-secret <64 hex>` (the 32-byte seed), mode 0600;
//! - public key file: `dreamer-ed25519-public <64 hex>`;
//! - signature file: `dreamer-ed25519-signature <key fingerprint> <128 hex>`.
//!
//! A key's fingerprint is `ed25519:` and the first 16 hex digits of the sha256 of its 32
//! public bytes; the one in a signature file only helps name the signer in errors.

use std::fs;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::BundleError;
use crate::open::{read_confined, read_regular, sha256_hex};

/// File name of the detached signature inside a bundle folder.
pub const SIGNATURE_FILE: &str = "manifest.json.sig";
const SECRET_TAG: &str = "dreamer-ed25519-secret";
const PUBLIC_TAG: &str = "dreamer-ed25519-public";
const SIGNATURE_TAG: &str = "dreamer-ed25519-signature";
/// Largest key or signature file read (they are under 200 bytes).
const MAX_SMALL_FILE: u64 = 4096;

/// Whether a bundle's origin was checked, and by which key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authenticity {
    /// No trusted key was configured: anyone who can write the folder can change the policy.
    NotChecked,
    /// Signed by this trusted key.
    Verified {
        fingerprint: String,
        key_file: PathBuf,
    },
}

impl std::fmt::Display for Authenticity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Authenticity::NotChecked => f.write_str(
                "authenticity not checked (no trusted key given; pass --trusted-key FILE)",
            ),
            Authenticity::Verified {
                fingerprint,
                key_file,
            } => write!(
                f,
                "signature verified: signed by {fingerprint} (trusted key {})",
                key_file.display()
            ),
        }
    }
}

/// A public key a runtime trusts, with the file it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    origin: PathBuf,
}

impl PublicKey {
    /// Reads a public key file (`dreamer-ed25519-public <hex>`).
    pub fn read(path: &Path) -> Result<PublicKey, BundleError> {
        let bytes = read_key_file(path)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|e| BundleError::Key {
            path: path.to_path_buf(),
            message: format!("not an ed25519 public key: {e}"),
        })?;
        Ok(PublicKey {
            key,
            origin: path.to_path_buf(),
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key)
    }

    pub fn origin(&self) -> &Path {
        &self.origin
    }
}

/// A signing key, read from its secret key file.
pub struct SecretKey {
    key: SigningKey,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(f, "SecretKey({})", fingerprint(&self.key.verifying_key()))
    }
}

impl SecretKey {
    /// Reads a secret key file (`dreamer-ed25519-secret <hex>`).
    pub fn read(path: &Path) -> Result<SecretKey, BundleError> {
        read_key_file_tagged(path, SECRET_TAG).map(|seed| SecretKey {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn fingerprint(&self) -> String {
        fingerprint(&self.key.verifying_key())
    }

    /// The signature file's text for the manifest bytes `manifest`.
    pub fn sign_manifest(&self, manifest: &[u8]) -> String {
        let signature = self.key.sign(manifest);
        format!(
            "{SIGNATURE_TAG} {} {}\n",
            self.fingerprint(),
            hex::encode(signature.to_bytes())
        )
    }
}

/// Creates a key pair from 32 bytes of OS randomness: `<out>.secret` (mode 0600) and
/// `<out>.pub`. Refuses to overwrite either. Returns (secret path, public path, fingerprint).
pub fn generate_key_pair(out: &Path) -> Result<(PathBuf, PathBuf, String), BundleError> {
    let secret_path = with_suffix(out, "secret");
    let public_path = with_suffix(out, "pub");
    for path in [&secret_path, &public_path] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(BundleError::Key {
                path: path.clone(),
                message: "already exists; refusing to overwrite a key".to_string(),
            });
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| BundleError::Key {
        path: secret_path.clone(),
        message: format!("no OS randomness for a new key: {e}"),
    })?;
    let key = SigningKey::from_bytes(&seed);
    let public = key.verifying_key();
    if let Some(parent) = secret_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|e| BundleError::Key {
            path: parent.to_path_buf(),
            message: format!("cannot create the folder for the keys: {e}"),
        })?;
    }
    write_new(
        &secret_path,
        &format!("{SECRET_TAG} {}\n", hex::encode(seed)),
        0o600,
    )?;
    let written = write_new(
        &public_path,
        &format!("{PUBLIC_TAG} {}\n", hex::encode(public.to_bytes())),
        0o644,
    );
    if written.is_err() {
        // A secret without its public half is of no use: leave neither.
        let _ = fs::remove_file(&secret_path);
    }
    written?;
    Ok((secret_path, public_path, fingerprint(&public)))
}

/// Checks the signature of the bundle at `dir` over `manifest` (its manifest bytes) against
/// `trusted`. With no trusted key, nothing is read and the result is `NotChecked`.
pub(crate) fn check(
    dir: &Path,
    manifest: &[u8],
    trusted: &[PublicKey],
) -> Result<Authenticity, BundleError> {
    if trusted.is_empty() {
        return Ok(Authenticity::NotChecked);
    }
    let path = dir.join(SIGNATURE_FILE);
    let refuse = |message: String| BundleError::Signature {
        path: path.clone(),
        message,
    };
    let keys = trusted
        .iter()
        .map(|k| format!("{} ({})", k.fingerprint(), k.origin.display()))
        .collect::<Vec<_>>()
        .join(", ");
    let bytes = match read_confined(dir, SIGNATURE_FILE, MAX_SMALL_FILE, "signature") {
        Err(BundleError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Err(refuse(format!(
                "missing: the bundle is unsigned, and trusted keys are configured ({keys})"
            )));
        }
        other => other?,
    };
    let text = String::from_utf8_lossy(&bytes);
    let fields: Vec<&str> = text.split_whitespace().collect();
    let [tag, signer, sig_hex] = fields[..] else {
        return Err(refuse(format!(
            "is not `{SIGNATURE_TAG} <fingerprint> <hex>`"
        )));
    };
    let sig_bytes: [u8; 64] = hex_array(sig_hex)
        .ok_or_else(|| refuse("the signature is not 128 hex digits".to_string()))?;
    if tag != SIGNATURE_TAG {
        return Err(refuse(format!(
            "starts with `{tag}`, not `{SIGNATURE_TAG}`"
        )));
    }
    let signature = Signature::from_bytes(&sig_bytes);
    for key in trusted {
        if key.key.verify_strict(manifest, &signature).is_ok() {
            return Ok(Authenticity::Verified {
                fingerprint: key.fingerprint(),
                key_file: key.origin.clone(),
            });
        }
    }
    let message = if trusted.iter().any(|k| k.fingerprint() == signer) {
        format!(
            "the signature by {signer} does not match manifest.json: the manifest was \
             modified after signing"
        )
    } else {
        format!("signed by {signer}, which is not a trusted key (trusted: {keys})")
    };
    Err(refuse(message))
}

fn fingerprint(key: &VerifyingKey) -> String {
    format!("ed25519:{}", &sha256_hex(key.as_bytes())[..16])
}

fn read_key_file(path: &Path) -> Result<[u8; 32], BundleError> {
    read_key_file_tagged(path, PUBLIC_TAG)
}

/// The 32 bytes of a `<tag> <64 hex>` key file.
fn read_key_file_tagged(path: &Path, tag: &str) -> Result<[u8; 32], BundleError> {
    let bad = |message: String| BundleError::Key {
        path: path.to_path_buf(),
        message,
    };
    // A key is a small regular file; refusing fifos and devices keeps a wrong path from
    // hanging the program. The path may be a link: secret stores often mount keys as links.
    let bytes = match read_regular(path, MAX_SMALL_FILE, "key", true) {
        Err(BundleError::Unsafe { reason, .. }) => return Err(bad(reason)),
        other => other?,
    };
    let text = String::from_utf8_lossy(&bytes);
    let fields: Vec<&str> = text.split_whitespace().collect();
    match fields[..] {
        [found, value] if found == tag => hex_array(value)
            .ok_or_else(|| bad(format!("the key after `{tag}` is not 64 hex digits"))),
        [found, _] if found == SECRET_TAG || found == PUBLIC_TAG => {
            Err(bad(format!("is a `{found}` key file; expected `{tag}`")))
        }
        _ => Err(bad(format!("is not a `{tag} <64 hex digits>` key file"))),
    }
}

fn hex_array<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = hex::decode(text).ok()?;
    bytes.try_into().ok()
}

fn with_suffix(out: &Path, suffix: &str) -> PathBuf {
    let mut name = out.as_os_str().to_owned();
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Writes `text` to a new file with `mode` (Unix), failing if the file exists.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), BundleError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let io = |e: std::io::Error| BundleError::Key {
        path: path.to_path_buf(),
        message: format!("cannot write: {e}"),
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}
