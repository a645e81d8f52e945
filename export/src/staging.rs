//! The output folder: checked before anything is written, the bundle staged in a temporary
//! folder beside it and renamed into place only once it is complete, so a failed export
//! leaves an existing bundle untouched.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use dreamer_bundle::MANIFEST_FILE;

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

/// A temporary folder beside the output folder, removed on drop unless committed.
pub struct Staging {
    pub dir: PathBuf,
    committed: bool,
}

impl Staging {
    pub fn create(out_dir: &Path) -> Result<Staging, ExportError> {
        let (parent, name) = split_out_dir(out_dir)?;
        fs::create_dir_all(&parent).map_err(ExportError::io(&parent))?;
        let dir = parent.join(format!(".{name}.tmp-{}", std::process::id()));
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(ExportError::io(&dir))?;
        }
        fs::create_dir(&dir).map_err(ExportError::io(&dir))?;
        Ok(Staging {
            dir,
            committed: false,
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

    /// Moves the staged bundle to `out_dir`, replacing an existing one.
    pub fn commit(mut self, out_dir: &Path) -> Result<(), ExportError> {
        if out_dir.exists() {
            let (parent, name) = split_out_dir(out_dir)?;
            let old = parent.join(format!(".{name}.old-{}", std::process::id()));
            if old.exists() {
                fs::remove_dir_all(&old).map_err(ExportError::io(&old))?;
            }
            fs::rename(out_dir, &old).map_err(ExportError::io(out_dir))?;
            if let Err(source) = fs::rename(&self.dir, out_dir) {
                // Put the previous bundle back before reporting.
                let _ = fs::rename(&old, out_dir);
                return Err(ExportError::io(out_dir)(source));
            }
            // The new bundle is in place; a leftover previous one only wastes space.
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&self.dir, out_dir).map_err(ExportError::io(out_dir))?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
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
