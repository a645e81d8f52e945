//! One file, replaced whole: written to `.<name>.tmp` beside it, synced, renamed into place.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::sync::{sync_dir, sync_file};
use crate::{PersistError, fault, parent_of, sibling_names};

/// A file being written to `.<name>.tmp`; [`AtomicFile::commit`] puts it in place. Dropped
/// without a commit (an error on the way), the temporary file is removed.
///
/// It is `Write + Seek`, so encoders that need either (an NPZ archive, a GIF) can write to it,
/// e.g. through a `BufWriter<&mut AtomicFile>`.
#[derive(Debug)]
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    /// None once committed.
    file: Option<File>,
}

impl AtomicFile {
    /// Start writing `path` (its folder must exist). A `.<name>.tmp` left by a killed
    /// writer is truncated.
    pub fn create(path: &Path) -> Result<AtomicFile, PersistError> {
        let (tmp, _, _) = sibling_names(path)?;
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(PersistError::at("create", &tmp))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temporary path, for a writer that only takes a path (libtorch's safetensors
    /// writer): it may write there instead of through this handle, as [`AtomicFile::commit`]
    /// syncs the file by its path.
    pub fn tmp_path(&self) -> &Path {
        &self.tmp
    }

    fn handle(&mut self) -> &mut File {
        self.file
            .as_mut()
            .expect("an AtomicFile is usable until commit consumes it")
    }

    /// Sync the written bytes, rename them into place and sync the folder. Returns the open
    /// file, now at the final path (for writers that keep updating it in place).
    pub fn commit(mut self) -> Result<File, PersistError> {
        // Until the rename, an error drops `self` with its handle, removing the temporary.
        sync_file(&self.tmp)?;
        fault::step(&self.path);
        std::fs::rename(&self.tmp, &self.path)
            .map_err(PersistError::at("rename into place", &self.path))?;
        let file = self.file.take().expect("commit runs once");
        sync_dir(&parent_of(&self.path))?;
        fault::step(&self.path);
        Ok(file)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.handle().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.handle().flush()
    }
}

impl Seek for AtomicFile {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.handle().seek(pos)
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Replace `path` with `bytes` (see [`AtomicFile`]).
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let mut file = AtomicFile::create(path)?;
    let tmp = file.tmp.clone();
    file.write_all(bytes)
        .map_err(PersistError::at("write", &tmp))?;
    file.commit()?;
    Ok(())
}
