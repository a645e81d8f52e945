//! A writer killed (aborted by the fault point) at every step of the file and folder
//! sequences: what it leaves always recovers to the old or the new version, whole, and to the
//! new one once the staged copy was complete.
//!
//! The test binary runs itself as the writer: with `CHILD` set, a test only writes.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use dreamer_persist::{AtomicFile, FAULT_ENV, StagedDir, complete_copy, recover};

const CHILD: &str = "DREAMER_PERSIST_TEST_CHILD";

/// Folder version `text`: three files (one in a subfolder), all holding `text`.
fn write_version(staging: &Path, text: &str) {
    fs::write(staging.join("a"), text).unwrap();
    fs::write(staging.join("b"), text).unwrap();
    fs::create_dir(staging.join("sub")).unwrap();
    fs::write(staging.join("sub").join("c"), text).unwrap();
}

fn save_dir(target: &Path, text: &str) {
    let staged = StagedDir::create(target).unwrap();
    write_version(staged.path(), text);
    staged.commit().unwrap();
}

/// The version a folder holds; panics unless all its files agree.
fn version_of(dir: &Path) -> String {
    let texts: Vec<String> = ["a", "b", "sub/c"]
        .iter()
        .map(|f| fs::read_to_string(dir.join(f)).unwrap())
        .collect();
    assert!(
        texts.iter().all(|t| *t == texts[0]),
        "mixed versions {texts:?}"
    );
    texts[0].clone()
}

/// Run the test `name` of this binary as a child writing into `dir`, aborted at `step` of
/// `site`; true when it was aborted.
fn killed_child(name: &str, dir: &Path, site: &str, step: u64) -> bool {
    let status = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, dir)
        .env(FAULT_ENV, format!("{site}:{step}"))
        .output()
        .unwrap();
    if status.status.success() {
        return false;
    }
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        stderr.contains(FAULT_ENV),
        "the child failed otherwise: {stderr}"
    );
    true
}

#[test]
fn a_folder_swap_killed_at_every_step_recovers() {
    if let Ok(dir) = std::env::var(CHILD) {
        save_dir(&Path::new(&dir).join("ckpt"), "v2");
        return;
    }
    let mut step = 1;
    loop {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("ckpt");
        save_dir(&target, "v1");
        let killed = killed_child(
            "a_folder_swap_killed_at_every_step_recovers",
            dir.path(),
            "ckpt",
            step,
        );
        let read = complete_copy(&target).expect("a complete copy is always there");
        // A reader gets a whole version (the old one while the final folder is still
        // there, though recovery would finish the swap).
        let seen = version_of(&read);
        assert!(seen == "v1" || seen == "v2", "step {step}: {seen}");
        recover(&target).unwrap();
        let kept = version_of(&target);
        // Steps: 3 files, the folders, .tmp -> .new, then the swap: from the third step
        // after the last file the new copy is complete and must win.
        assert_eq!(
            kept,
            if step >= 5 || !killed { "v2" } else { "v1" },
            "step {step}"
        );
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "step {step}: leftovers");
        // The next save after a recovery works.
        save_dir(&target, "v3");
        assert_eq!(version_of(&target), "v3");
        if !killed {
            // 3 files + folders + .new + .old + swap + removal = 8 steps.
            assert_eq!(step, 9, "the sequence has 8 steps");
            break;
        }
        step += 1;
    }
}

#[test]
fn a_file_write_killed_at_every_step_leaves_old_or_new() {
    if let Ok(dir) = std::env::var(CHILD) {
        let mut file = AtomicFile::create(&Path::new(&dir).join("report.json")).unwrap();
        file.write_all(b"new contents").unwrap();
        file.commit().unwrap();
        return;
    }
    for step in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        dreamer_persist::write_file(&path, b"old").unwrap();
        let killed = killed_child(
            "a_file_write_killed_at_every_step_leaves_old_or_new",
            dir.path(),
            "report.json",
            step,
        );
        assert_eq!(killed, step <= 2, "step {step}");
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, if step == 1 { "old" } else { "new contents" });
        // The next write of the same file reuses (truncates) the leftover temporary name.
        dreamer_persist::write_file(&path, b"third").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "third");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "step {step}: leftovers");
    }
}

#[test]
fn a_failed_write_leaves_no_temporary_behind() {
    if std::env::var(CHILD).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("out");
    {
        let staged = StagedDir::create(&target).unwrap();
        fs::write(staged.path().join("x"), "half").unwrap();
        // Dropped without commit: an error on the way.
    }
    {
        let mut file = AtomicFile::create(&dir.path().join("f")).unwrap();
        file.write_all(b"half").unwrap();
    }
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    // Errors name the path.
    let err = dreamer_persist::write_file(&dir.path().join("no/such/f"), b"x").unwrap_err();
    assert!(err.to_string().contains("no/such/.f.tmp"), "{err}");
}
