//! Everything that can be wrong with a bundle, each naming the file, field and value.

use std::path::PathBuf;

use crate::FORMAT_VERSION;

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: manifest format version {found} is not supported (this build reads {FORMAT_VERSION})"
    )]
    Version { path: PathBuf, found: u32 },
    #[error(
        "{file}: sha256 is {actual}, the manifest says {expected}: the bundle was modified or is incomplete"
    )]
    Checksum {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error("manifest {path} has no graph `{role}`")]
    MissingGraph { path: PathBuf, role: String },
    #[error("graph `{graph}` has no {kind} named `{name}` in the manifest")]
    MissingTensor {
        graph: String,
        kind: &'static str,
        name: String,
    },
    /// A manifest value that is out of range or disagrees with another value or a graph's
    /// declared shape. `field` is a dotted path such as `latent.deter`.
    #[error("{}: {field} {message}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// The manifest's `contract` disagrees with itself or the rest of the manifest.
    #[error("{}: {field} {message}", path.display())]
    Contract {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// A file the loader refused to open: outside the bundle folder, a link, a device, a
    /// fifo or a folder.
    #[error("{}: refusing to read it: {reason}", path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("{}: larger than the {cap}-byte limit for a bundle {what}", path.display())]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        cap: u64,
    },
    /// A key file that cannot be used.
    #[error("{}: {message}", path.display())]
    Key { path: PathBuf, message: String },
    /// Trusted keys are configured and the bundle does not carry a signature one of them made.
    #[error("{}: {message}", path.display())]
    Signature { path: PathBuf, message: String },
}
