//! fsync of files and folders. A rename is durable only once the folder holding it is synced.

use std::fs::File;
use std::path::Path;

use crate::PersistError;

/// fsync the folder `dir` (its entries: creations, renames, removals).
pub(crate) fn sync_dir(dir: &Path) -> Result<(), PersistError> {
    #[cfg(unix)]
    {
        let handle = File::open(dir).map_err(PersistError::at("open", dir))?;
        handle.sync_all().map_err(PersistError::at("sync", dir))?;
    }
    // Elsewhere a folder cannot be opened as a file; renames there are as durable as the
    // platform makes them.
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// fsync the file `path` (written earlier, possibly by another handle: fsync flushes the
/// file, not the handle).
pub(crate) fn sync_file(path: &Path) -> Result<(), PersistError> {
    let handle = File::open(path).map_err(PersistError::at("open", path))?;
    handle.sync_all().map_err(PersistError::at("sync", path))
}
