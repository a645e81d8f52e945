//! A folder replaced whole: staged in `.<name>.tmp`, synced, marked complete by its rename
//! to `.<name>.new`, swapped in through `.<name>.old` (the sequence is in the crate docs).

use std::fs;
use std::path::{Path, PathBuf};

use crate::sync::{sync_dir, sync_file};
use crate::{PersistError, fault, parent_of, sibling_names};

/// What [`recover`] did to a final path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Repair {
    /// An incomplete staged copy (`.tmp`) was removed.
    RemovedIncomplete(PathBuf),
    /// The complete staged copy (`.new`) was put in place (the interrupted swap finished).
    Promoted(PathBuf),
    /// With no other copy left, the previous one (`.old`) was put back.
    Restored(PathBuf),
    /// A previous copy (`.old`) left beside a complete final folder was removed.
    RemovedOld(PathBuf),
}

impl std::fmt::Display for Repair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Repair::RemovedIncomplete(p) => write!(f, "removed the incomplete {}", p.display()),
            Repair::Promoted(p) => write!(f, "finished the interrupted swap of {}", p.display()),
            Repair::Restored(p) => write!(f, "put the previous copy {} back", p.display()),
            Repair::RemovedOld(p) => write!(f, "removed the replaced copy {}", p.display()),
        }
    }
}

/// Remove a folder with its contents (or a file in its place: a name this crate owns).
fn remove_tree(path: &Path) -> Result<(), PersistError> {
    let removed = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    removed.map_err(PersistError::at("remove", path))
}

fn rename(from: &Path, to: &Path) -> Result<(), PersistError> {
    fs::rename(from, to).map_err(PersistError::at("rename into place", to))?;
    sync_dir(&parent_of(to))
}

/// Bring the final folder `target` to one complete copy after whatever a killed writer left:
/// a `.tmp` is removed; a `.new` (complete by construction) replaces `target`; an `.old`
/// is removed when `target` is there, and put back when it is the only copy. Returns what
/// was done (empty when nothing was left over).
pub fn recover(target: &Path) -> Result<Vec<Repair>, PersistError> {
    let (tmp, new, old) = sibling_names(target)?;
    let parent = parent_of(target);
    let mut done = Vec::new();
    if tmp.exists() {
        remove_tree(&tmp)?;
        sync_dir(&parent)?;
        done.push(Repair::RemovedIncomplete(tmp));
    }
    if target.exists() && old.exists() {
        // The final folder is complete; the displaced one (maybe half removed) goes.
        remove_tree(&old)?;
        sync_dir(&parent)?;
        done.push(Repair::RemovedOld(old.clone()));
    }
    if new.exists() {
        if target.exists() {
            rename(target, &old)?;
        }
        rename(&new, target)?;
        done.push(Repair::Promoted(target.to_path_buf()));
        if old.exists() {
            remove_tree(&old)?;
            sync_dir(&parent)?;
        }
    } else if !target.exists() && old.exists() {
        rename(&old, target)?;
        done.push(Repair::Restored(target.to_path_buf()));
    }
    Ok(done)
}

/// The complete copy of the folder `target` a reader should use, changing nothing: `target`
/// itself, else the staged `.new`, else the displaced `.old`; None when there is none.
pub fn complete_copy(target: &Path) -> Option<PathBuf> {
    let (_, new, old) = sibling_names(target).ok()?;
    [target.to_path_buf(), new, old]
        .into_iter()
        .find(|p| p.is_dir())
}

/// A folder being staged in `.<name>.tmp` beside its final path; [`StagedDir::commit`]
/// swaps it in. Dropped without a commit, the staged folder is removed.
#[derive(Debug)]
pub struct StagedDir {
    target: PathBuf,
    staging: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Repair what an earlier writer left ([`recover`]), then create an empty staging folder
    /// (and the final path's parents).
    pub fn create(target: &Path) -> Result<StagedDir, PersistError> {
        let parent = parent_of(target);
        fs::create_dir_all(&parent).map_err(PersistError::at("create", &parent))?;
        recover(target)?;
        let (staging, _, _) = sibling_names(target)?;
        fs::create_dir(&staging).map_err(PersistError::at("create", &staging))?;
        Ok(StagedDir {
            target: target.to_path_buf(),
            staging,
            committed: false,
        })
    }

    /// The staging folder to write into.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// The final path.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Sync everything staged, then swap it in (steps 2 to 6 of the crate docs).
    pub fn commit(mut self) -> Result<(), PersistError> {
        let (_, new, old) = sibling_names(&self.target)?;
        let parent = parent_of(&self.target);
        let (files, folders) = tree(&self.staging)?;
        for file in &files {
            sync_file(file)?;
            fault::step(&self.target);
        }
        // Deepest first: a folder is synced after the entries made in it.
        for folder in folders.iter().rev() {
            sync_dir(folder)?;
        }
        fault::step(&self.target);
        rename(&self.staging, &new)?;
        // From here the staged copy is complete and recover() would promote it.
        self.committed = true;
        fault::step(&self.target);
        if self.target.exists() {
            rename(&self.target, &old)?;
            fault::step(&self.target);
        }
        rename(&new, &self.target)?;
        fault::step(&self.target);
        if old.exists() {
            remove_tree(&old)?;
            sync_dir(&parent)?;
            fault::step(&self.target);
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.staging);
        }
    }
}

/// Files and folders under `root` (`root` first among the folders), each list in path order.
fn tree(root: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>), PersistError> {
    let mut files = Vec::new();
    let mut folders = vec![root.to_path_buf()];
    let mut next = 0;
    while next < folders.len() {
        let folder = folders[next].clone();
        next += 1;
        let mut entries: Vec<PathBuf> = fs::read_dir(&folder)
            .map_err(PersistError::at("list", &folder))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(PersistError::at("list", &folder))?;
        entries.sort();
        for entry in entries {
            if entry.is_dir() {
                folders.push(entry);
            } else {
                files.push(entry);
            }
        }
    }
    Ok((files, folders))
}
