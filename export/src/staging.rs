//! The output folder: checked before anything is written, the bundle staged in a temporary
//! folder beside it, synced and swapped into place only once it is complete (through
//! `dreamer_persist`), so a failed or killed export leaves an existing bundle whole.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use dreamer_bundle::MANIFEST_FILE;
use dreamer_persist::StagedDir;

use crate::error::ExportError;

/// An existing output folder is replaced only if it is a bundle (has a manifest) or empty,
/// so a mistyped `--out` cannot delete unrelated files.
pub fn check_out_dir(out_dir: &Path) -> Result<(), ExportError> {
    let err = |message: &str| ExportError::OutDir {
        path: out_dir.to_path_buf(),
        message: message.to_string(),
    };
    if !out_dir.exists() {
        return Ok(());
    }
    if !out_dir.is_dir() {
        return Err(err("exists and is not a folder"));
    }
    let empty = fs::read_dir(out_dir)
        .map_err(ExportError::io(out_dir))?
        .next()
        .is_none();
    if empty || out_dir.join(MANIFEST_FILE).is_file() {
        Ok(())
    } else {
        Err(err(
            "exists, is not empty and holds no manifest.json: refusing to replace it",
        ))
    }
}

/// The bundle staged in `.<out>.tmp` beside the output folder (`dreamer_persist`'s
/// `StagedDir`), removed on drop unless committed.
pub struct Staging {
    /// Where the bundle's files are written.
    pub dir: PathBuf,
    staged: StagedDir,
}

impl Staging {
    /// Repairs what an export killed midway left beside `out_dir` (finishing an interrupted
    /// swap), then creates the empty staging folder.
    pub fn create(out_dir: &Path) -> Result<Staging, ExportError> {
        split_out_dir(out_dir)?;
        let staged = StagedDir::create(out_dir).map_err(persist_error)?;
        Ok(Staging {
            dir: staged.path().to_path_buf(),
            staged,
        })
    }

    /// Bytes of every file staged so far, by file name.
    pub fn file_sizes(&self) -> Result<BTreeMap<String, u64>, ExportError> {
        let io = || ExportError::io(&self.dir);
        let mut sizes = BTreeMap::new();
        for entry in fs::read_dir(&self.dir).map_err(io())? {
            let entry = entry.map_err(io())?;
            let len = entry.metadata().map_err(io())?.len();
            sizes.insert(entry.file_name().to_string_lossy().into_owned(), len);
        }
        Ok(sizes)
    }

    /// Syncs the staged bundle and swaps it in for `out_dir` (the folder `create` was given),
    /// replacing an existing one; a kill at any step leaves the old bundle or the new one.
    pub fn commit(self, out_dir: &Path) -> Result<(), ExportError> {
        debug_assert_eq!(self.staged.target(), out_dir);
        self.staged.commit().map_err(persist_error)
    }
}

/// A persist error as the exporter's I/O error on the same path.
fn persist_error(e: dreamer_persist::PersistError) -> ExportError {
    let message = format!("{}: {}", e.action, e.source);
    ExportError::io(&e.path)(std::io::Error::new(e.source.kind(), message))
}

/// (parent folder, last component) of the output folder.
fn split_out_dir(out_dir: &Path) -> Result<(PathBuf, String), ExportError> {
    let name = out_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| ExportError::OutDir {
            path: out_dir.to_path_buf(),
            message: "has no folder name".to_string(),
        })?;
    let parent = match out_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}
