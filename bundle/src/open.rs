//! Reading a bundle folder. Every read is confined to the folder, size-capped and hashed
//! before use, and a graph's verified bytes are what the runtime hands to ONNX Runtime.
//!
//! What the loader opens: `manifest.json`, `manifest.json.sig` when trusted keys are
//! configured, and the files the manifest lists in `files`, nothing else. Each must be a
//! regular file reached through plain relative names (no `..`, no absolute path, no
//! symbolic link on the way), no larger than its cap.

use std::collections::BTreeMap;
use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::sign::{self, Authenticity, PublicKey};
use crate::{BundleError, MANIFEST_FILE, Manifest, parse_manifest};

/// Largest `manifest.json` a loader reads (1 MiB; a real one is a few KiB).
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Largest file a bundle may list (1 GiB; a Dreamer graph is a few MiB to a few hundred).
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// A bundle whose manifest parsed and validated, whose signature (when keys were given)
/// verified, and whose listed files all matched their sha256.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// The exact bytes of `manifest.json` (what a signature covers).
    pub manifest_bytes: Vec<u8>,
    pub authenticity: Authenticity,
    /// Verified bytes of every graph, by file name.
    graphs: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Opens the bundle at `dir`. With `trusted` keys, a bundle not signed by one of them is
    /// refused; with none, authenticity is not checked (and [`Bundle::authenticity`] says so).
    pub fn open(dir: &Path, trusted: &[PublicKey]) -> Result<Bundle, BundleError> {
        let meta = fs::metadata(dir).map_err(|source| BundleError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(BundleError::Unsafe {
                path: dir.to_path_buf(),
                reason: "a bundle is a folder".to_string(),
            });
        }
        let manifest_bytes = read_confined(dir, MANIFEST_FILE, MAX_MANIFEST_BYTES, "manifest")?;
        // Before parsing: with keys configured, nothing unsigned is interpreted.
        let authenticity = sign::check(dir, &manifest_bytes, trusted)?;
        let manifest = parse_manifest(&manifest_bytes, &dir.join(MANIFEST_FILE))?;
        let mut graphs = BTreeMap::new();
        for (name, expected) in &manifest.files {
            let bytes = read_listed(dir, name, expected)?;
            // Kept only for graphs; other listed files are checked and dropped.
            if manifest.graphs.values().any(|g| &g.file == name) {
                graphs.insert(name.clone(), bytes);
            }
        }
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            manifest_bytes,
            authenticity,
            graphs,
        })
    }

    /// The verified bytes of graph `role`.
    pub fn graph_bytes(&self, role: &str) -> Result<&[u8], BundleError> {
        let file = &self.manifest.graph(role)?.file;
        // Every graph's file is listed (validated), so it was read.
        self.graphs
            .get(file)
            .map(Vec::as_slice)
            .ok_or_else(|| BundleError::MissingGraph {
                path: self.dir.join(MANIFEST_FILE),
                role: role.to_string(),
            })
    }
}

/// Opens the bundle at `dir` without trusted keys (see [`Bundle::open`]) and returns its
/// manifest.
pub fn open(dir: &Path) -> Result<Manifest, BundleError> {
    Bundle::open(dir, &[]).map(|b| b.manifest)
}

/// Reads graph `role` of the bundle at `dir` and checks it against `manifest`, which the
/// caller already verified (with [`Bundle::open`]): returns the bytes that matched the
/// listed sha256, to be handed to ONNX Runtime as they are.
pub fn read_graph(dir: &Path, manifest: &Manifest, role: &str) -> Result<Vec<u8>, BundleError> {
    let file = &manifest.graph(role)?.file;
    let expected = manifest
        .files
        .get(file)
        .ok_or_else(|| BundleError::Invalid {
            path: dir.join(MANIFEST_FILE),
            field: format!("graphs.{role}.file"),
            message: format!("`{file}` is not listed in `files`, so it cannot be checked"),
        })?;
    read_listed(dir, file, expected)
}

/// Reads the listed file `name` and checks it against its `expected` sha256.
fn read_listed(dir: &Path, name: &str, expected: &str) -> Result<Vec<u8>, BundleError> {
    let bytes = read_confined(dir, name, MAX_FILE_BYTES, "file")?;
    let actual = sha256_hex(&bytes);
    if actual != expected {
        return Err(BundleError::Checksum {
            file: dir.join(name),
            expected: expected.to_string(),
            actual,
        });
    }
    Ok(bytes)
}

/// Why `name` is not a plain relative file name inside a bundle, if it is not.
pub(crate) fn unsafe_name(name: &str) -> Option<&'static str> {
    let path = Path::new(name);
    if name.is_empty() {
        return Some("the name is empty");
    }
    if name.contains('\0') {
        return Some("the name contains a NUL byte");
    }
    if path.is_absolute() || path.has_root() {
        return Some("the name is an absolute path");
    }
    for component in path.components() {
        match component {
            Component::Normal(_) => {}
            Component::ParentDir => return Some("the name leaves the bundle folder (`..`)"),
            _ => return Some("the name is not a plain relative path"),
        }
    }
    None
}

/// Reads `dir/name`, at most `cap` bytes, refusing anything but a regular file reached
/// through plain names inside `dir`.
pub(crate) fn read_confined(
    dir: &Path,
    name: &str,
    cap: u64,
    what: &'static str,
) -> Result<Vec<u8>, BundleError> {
    let path = dir.join(name);
    let refuse = |reason: String| BundleError::Unsafe {
        path: path.clone(),
        reason,
    };
    if let Some(reason) = unsafe_name(name) {
        return Err(refuse(reason.to_string()));
    }
    let io = |source| BundleError::Io {
        path: path.clone(),
        source,
    };
    // No symbolic link anywhere below `dir`: a link could lead out of the folder.
    let mut walked = dir.to_path_buf();
    for component in Path::new(name).components() {
        walked.push(component);
        let meta = fs::symlink_metadata(&walked).map_err(io)?;
        if meta.file_type().is_symlink() {
            return Err(refuse(format!(
                "{} is a symbolic link; a bundle holds only regular files",
                walked.display()
            )));
        }
    }
    read_regular(&path, cap, what, false)
}

/// Reads the regular file at `path`, at most `cap` bytes; `follow` allows `path` itself to
/// be a symbolic link (for key files, which secret stores often mount as links).
pub(crate) fn read_regular(
    path: &Path,
    cap: u64,
    what: &'static str,
    follow: bool,
) -> Result<Vec<u8>, BundleError> {
    let io = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = open_nonblocking(path, follow).map_err(io)?;
    // Checked on the open file (fstat), so a swap after the caller's checks is caught too.
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(BundleError::Unsafe {
            path: path.to_path_buf(),
            reason: format!("it is a {}, not a regular file", kind(&meta.file_type())),
        });
    }
    let too_large = || BundleError::TooLarge {
        path: path.to_path_buf(),
        what,
        cap,
    };
    if meta.len() > cap {
        return Err(too_large());
    }
    // One byte past the cap tells a file that grew after the fstat from one that fits.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > cap {
        return Err(too_large());
    }
    Ok(bytes)
}

/// Opens for reading without blocking on a fifo swapped in after the checks and, unless
/// `follow`, without following a final symbolic link.
fn open_nonblocking(path: &Path, follow: bool) -> std::io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        let no_follow = if follow { 0 } else { libc::O_NOFOLLOW };
        options.custom_flags(no_follow | libc::O_NONBLOCK);
    }
    #[cfg(not(unix))]
    let _ = follow;
    options.open(path).map_err(|e| {
        if e.raw_os_error() == Some(ELOOP) {
            std::io::Error::new(ErrorKind::InvalidInput, "it is a symbolic link")
        } else {
            e
        }
    })
}

#[cfg(unix)]
const ELOOP: i32 = libc::ELOOP;
#[cfg(not(unix))]
const ELOOP: i32 = -1;

fn kind(file_type: &fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "fifo";
        }
        if file_type.is_char_device() || file_type.is_block_device() {
            return "device";
        }
        if file_type.is_socket() {
            return "socket";
        }
    }
    if file_type.is_dir() {
        "folder"
    } else {
        "special file"
    }
}

/// Lowercase hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Lowercase hex sha256 of a file's contents. For writers hashing what they wrote; a reader
/// goes through [`Bundle::open`].
pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let io_err = |source| BundleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::File::open(path).map_err(io_err)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(io_err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}
