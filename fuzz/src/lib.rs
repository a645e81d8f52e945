//! What the project's fuzz targets share (a dev-dependency only): each parser of outside
//! input has a `proptest` property in its own crate's tests (docs/fuzzing.md), and they all
//! take their case count, their hang detection and their byte-level mutations from here.

use std::sync::mpsc;
use std::time::Duration;

use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per property: `PROPTEST_CASES` when set (scripts/fuzz-long), else `short` (the
/// test command's run).
pub fn config(short: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(short);
    ProptestConfig {
        cases,
        max_shrink_time: 60_000,
        ..ProptestConfig::default()
    }
}

/// Runs `f` on its own thread and returns its result; a panic is re-raised here (so proptest
/// reports and shrinks it) and a run past `limit` fails the case as a hang.
pub fn bounded<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Disconnected) => match worker.join() {
            Err(panic) => std::panic::resume_unwind(panic),
            Ok(()) => unreachable!("the worker sends before it returns"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("no result within {limit:?}: a hang"),
    }
}

/// One edit of a byte string, at positions drawn relative to its length.
#[derive(Debug, Clone)]
pub enum ByteEdit {
    /// XOR one byte with a non-zero value.
    Flip(Index, u8),
    Insert(Index, Vec<u8>),
    Delete(Index, usize),
    Truncate(Index),
    /// Copy up to `n` bytes from one place over another.
    Splice(Index, Index, usize),
}

/// Any [`ByteEdit`], flips three times as often as each other kind.
pub fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let index = any::<Index>;
    prop_oneof![
        3 => (index(), 1u8..=255).prop_map(|(i, x)| ByteEdit::Flip(i, x)),
        1 => (index(), prop::collection::vec(any::<u8>(), 1..9)).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        1 => (index(), 1usize..64).prop_map(|(i, n)| ByteEdit::Delete(i, n)),
        1 => index().prop_map(ByteEdit::Truncate),
        1 => (index(), index(), 1usize..128).prop_map(|(a, b, n)| ByteEdit::Splice(a, b, n)),
    ]
}

impl ByteEdit {
    /// Applies the edit to `bytes`; edits that need a byte do nothing to an empty string.
    pub fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            ByteEdit::Flip(i, x) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes[i] ^= x;
            }
            ByteEdit::Insert(i, b) => {
                let i = i.index(bytes.len() + 1);
                bytes.splice(i..i, b.iter().copied());
            }
            ByteEdit::Delete(i, n) if !bytes.is_empty() => {
                let i = i.index(bytes.len());
                bytes.drain(i..(i + n).min(bytes.len()));
            }
            ByteEdit::Truncate(i) => {
                let i = i.index(bytes.len() + 1);
                bytes.truncate(i);
            }
            ByteEdit::Splice(from, to, n) if !bytes.is_empty() => {
                let from = from.index(bytes.len());
                let piece = bytes[from..(from + n).min(bytes.len())].to_vec();
                let to = to.index(bytes.len());
                let end = (to + piece.len()).min(bytes.len());
                bytes.splice(to..end, piece);
            }
            ByteEdit::Flip(..) | ByteEdit::Delete(..) | ByteEdit::Splice(..) => {}
        }
    }
}
