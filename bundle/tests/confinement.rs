//! The loader opens only regular files inside the bundle folder that the manifest lists,
//! capped in size and hashed before use ("the bundle is a trust boundary").

mod common;

use std::fs;
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use dreamer_bundle::{self as bundle, Authenticity, Bundle, BundleError, MANIFEST_FILE};

/// Opens `dir` on a thread and fails the test if that takes over 10 s (a hang on a fifo or
/// a device is what some of these tests guard against).
fn open_quickly(dir: &Path) -> Result<Bundle, BundleError> {
    let dir = dir.to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // The receiver is gone only when the test already failed on the timeout.
        let _ = tx.send(Bundle::open(&dir, &[]));
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the loader hung (it must not block on a fifo or read a device)")
}

fn refused(dir: &Path) -> String {
    match open_quickly(dir) {
        Ok(_) => panic!("the bundle in {} was accepted", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_valid_bundle_opens_with_the_verified_graph_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let manifest = common::valid(tmp.path());
    let opened = open_quickly(tmp.path()).unwrap();
    assert_eq!(opened.manifest, manifest);
    assert_eq!(opened.authenticity, Authenticity::NotChecked);
    for role in manifest.graphs.keys() {
        assert_eq!(
            opened.graph_bytes(role).unwrap(),
            common::graph_bytes(role).as_slice()
        );
    }
    assert_eq!(
        opened.manifest_bytes,
        fs::read(tmp.path().join(MANIFEST_FILE)).unwrap()
    );
}

#[test]
fn a_tampered_graph_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    common::valid(tmp.path());
    fs::write(tmp.path().join("actor.onnx"), b"evil").unwrap();
    let e = refused(tmp.path());
    assert!(e.contains("actor.onnx") && e.contains("sha256"), "{e}");
}

#[test]
fn a_graph_missing_from_files_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = common::valid(tmp.path());
    m.files.remove("actor.onnx");
    common::write_manifest(tmp.path(), &m);
    // Also tampered: before the fix an unlisted graph was never hashed.
    fs::write(tmp.path().join("actor.onnx"), b"evil").unwrap();
    let e = refused(tmp.path());
    assert!(
        e.contains("graphs.actor.file") && e.contains("`files` does not list"),
        "{e}"
    );
}

#[test]
fn empty_files_does_not_disable_checking() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = common::valid(tmp.path());
    m.files.clear();
    common::write_manifest(tmp.path(), &m);
    let e = refused(tmp.path());
    assert!(e.contains("does not list"), "{e}");
}

#[test]
fn a_graph_path_leaving_the_folder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    let mut m = common::valid(&dir);
    // A real file with the right hash outside the bundle: only the path is wrong.
    fs::create_dir_all(tmp.path().join("other")).unwrap();
    fs::write(
        tmp.path().join("other/x.onnx"),
        common::graph_bytes("actor"),
    )
    .unwrap();
    let actor = m.graphs.get_mut("actor").unwrap();
    actor.file = "../other/x.onnx".into();
    let hash = m.files.remove("actor.onnx").unwrap();
    m.files.insert("../other/x.onnx".into(), hash);
    common::write_manifest(&dir, &m);
    let e = refused(&dir);
    assert!(e.contains("leaves the bundle folder"), "{e}");
}

#[test]
fn absolute_paths_are_refused_without_reading_them() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("secret.txt");
    fs::write(&outside, b"private").unwrap();
    let dir = tmp.path().join("b");
    let mut m = common::valid(&dir);
    m.files
        .insert(outside.display().to_string(), "0".repeat(64));
    common::write_manifest(&dir, &m);
    let e = refused(&dir);
    assert!(e.contains("absolute path"), "{e}");
    // The error must not carry the file's hash (that would leak a digest of any file).
    assert!(!e.contains(&bundle::sha256_hex(b"private")), "{e}");

    let mut m = common::valid(&dir);
    m.graphs.get_mut("actor").unwrap().file = "/dev/zero".into();
    common::write_manifest(&dir, &m);
    let e = refused(&dir);
    assert!(e.contains("absolute path"), "{e}");
}

#[cfg(unix)]
#[test]
fn symbolic_links_are_refused() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("b");
    common::valid(&dir);
    // The same bytes behind a link leaving the folder: refused for being a link.
    let outside = tmp.path().join("actor.onnx");
    fs::write(&outside, common::graph_bytes("actor")).unwrap();
    fs::remove_file(dir.join("actor.onnx")).unwrap();
    symlink(&outside, dir.join("actor.onnx")).unwrap();
    let e = refused(&dir);
    assert!(e.contains("symbolic link"), "{e}");

    // A linked manifest too.
    let dir2 = tmp.path().join("c");
    common::valid(&dir2);
    fs::rename(dir2.join(MANIFEST_FILE), tmp.path().join("m.json")).unwrap();
    symlink(tmp.path().join("m.json"), dir2.join(MANIFEST_FILE)).unwrap();
    let e = refused(&dir2);
    assert!(e.contains("symbolic link"), "{e}");
}

#[cfg(unix)]
#[test]
fn devices_and_fifos_are_refused_without_blocking() {
    use std::os::unix::fs::symlink;
    let tmp = tempfile::tempdir().unwrap();
    // manifest.json -> /dev/zero used to hang `info` and `run` forever.
    let dir = tmp.path().join("zero");
    fs::create_dir_all(&dir).unwrap();
    symlink("/dev/zero", dir.join(MANIFEST_FILE)).unwrap();
    let e = refused(&dir);
    assert!(e.contains("symbolic link"), "{e}");

    // A fifo in place of a graph: opening it for reading would block until a writer came.
    let dir = tmp.path().join("fifo");
    common::valid(&dir);
    let graph = dir.join("actor.onnx");
    fs::remove_file(&graph).unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(&graph)
        .status()
        .unwrap();
    assert!(status.success());
    let e = refused(&dir);
    assert!(
        e.contains("fifo") && e.contains("not a regular file"),
        "{e}"
    );

    // A folder where a file should be.
    let dir = tmp.path().join("folder");
    common::valid(&dir);
    fs::remove_file(dir.join("actor.onnx")).unwrap();
    fs::create_dir(dir.join("actor.onnx")).unwrap();
    let e = refused(&dir);
    assert!(e.contains("not a regular file"), "{e}");
}

#[test]
fn files_over_the_cap_are_refused_before_reading() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big_manifest");
    common::valid(&dir);
    // Sparse: no disk used, and the size check comes before any read.
    let f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join(MANIFEST_FILE))
        .unwrap();
    f.set_len(bundle::MAX_MANIFEST_BYTES + 1).unwrap();
    let e = refused(&dir);
    assert!(e.contains("limit"), "{e}");

    let dir = tmp.path().join("big_graph");
    common::valid(&dir);
    let f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("actor.onnx"))
        .unwrap();
    f.set_len(bundle::MAX_FILE_BYTES + 1).unwrap();
    let e = refused(&dir);
    assert!(e.contains("actor.onnx") && e.contains("limit"), "{e}");
}

#[test]
fn read_graph_checks_the_bytes_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let m = common::valid(tmp.path());
    let bytes = bundle::read_graph(tmp.path(), &m, "actor").unwrap();
    assert_eq!(bytes, common::graph_bytes("actor"));
    // Swapped after the bundle was opened: the bytes for the session no longer match.
    fs::write(tmp.path().join("actor.onnx"), b"swapped").unwrap();
    let e = bundle::read_graph(tmp.path(), &m, "actor")
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha256"), "{e}");
}
