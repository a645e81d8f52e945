//! Every state the folder sequence can leave, built by hand, recovers to one complete copy.

use std::fs;
use std::path::Path;

use dreamer_persist::{Repair, complete_copy, recover};

/// A folder holding `file` with `text`.
fn folder(path: &Path, text: &str) {
    fs::create_dir_all(path).unwrap();
    fs::write(path.join("file"), text).unwrap();
}

fn content(path: &Path) -> String {
    fs::read_to_string(path.join("file")).unwrap()
}

/// Names in `dir` other than the final one.
fn leftovers(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "ckpt")
        .collect();
    names.sort();
    names
}

/// Build the state from (sibling, content) pairs, recover, and return the final content.
fn recovered(state: &[(&str, &str)]) -> (Option<String>, Vec<Repair>) {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("ckpt");
    for (name, text) in state {
        folder(&dir.path().join(name), text);
    }
    let before = complete_copy(&target).map(|p| content(&p));
    let repairs = recover(&target).unwrap();
    assert_eq!(leftovers(dir.path()), Vec::<String>::new(), "{state:?}");
    let after = target.exists().then(|| content(&target));
    // A reader is given a whole copy whenever recovery keeps one: the final folder while
    // it is there (recovery may then roll a newer staged copy forward), else what recovery
    // puts in place.
    assert_eq!(before.is_some(), after.is_some(), "{state:?}");
    if !state.iter().any(|(n, _)| *n == "ckpt") {
        assert_eq!(before, after, "{state:?}");
    }
    // A second recovery finds nothing to do.
    assert_eq!(recover(&target).unwrap(), vec![], "{state:?}");
    (after, repairs)
}

/// Sibling folders and their contents.
type State = &'static [(&'static str, &'static str)];

#[test]
fn each_interrupted_state_recovers_to_one_complete_copy() {
    let cases: [(State, Option<&str>); 9] = [
        // Nothing there, or only what the first save was staging.
        (&[], None),
        (&[(".ckpt.tmp", "half")], None),
        // A later save staging: the current copy stays.
        (&[("ckpt", "v1"), (".ckpt.tmp", "half")], Some("v1")),
        // Staged and complete, before the swap: it is rolled forward.
        (&[("ckpt", "v1"), (".ckpt.new", "v2")], Some("v2")),
        (&[(".ckpt.new", "v2")], Some("v2")),
        // Between the two renames of the swap.
        (&[(".ckpt.old", "v1"), (".ckpt.new", "v2")], Some("v2")),
        // After the swap, before the old copy is removed.
        (&[("ckpt", "v2"), (".ckpt.old", "v1")], Some("v2")),
        // Only the old copy (the final one deleted by hand): it is put back.
        (&[(".ckpt.old", "v1")], Some("v1")),
        // Everything at once.
        (
            &[
                ("ckpt", "v1"),
                (".ckpt.tmp", "half"),
                (".ckpt.new", "v2"),
                (".ckpt.old", "v0"),
            ],
            Some("v2"),
        ),
    ];
    for (state, expected) in cases {
        let (after, _) = recovered(state);
        assert_eq!(after.as_deref(), expected, "{state:?}");
    }
}

#[test]
fn recovery_says_what_it_did() {
    let (_, repairs) = recovered(&[(".ckpt.old", "v1"), (".ckpt.new", "v2")]);
    assert!(matches!(repairs.as_slice(), [Repair::Promoted(p)] if p.ends_with("ckpt")));
    let text = repairs[0].to_string();
    assert!(text.contains("ckpt"), "{text}");
    let (_, repairs) = recovered(&[("ckpt", "v1"), (".ckpt.tmp", "half")]);
    assert!(
        matches!(repairs.as_slice(), [Repair::RemovedIncomplete(p)] if p.ends_with(".ckpt.tmp"))
    );
}
