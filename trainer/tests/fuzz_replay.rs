//! Fuzz target of the replay loader (`Replay::open`, which reads every `ep*.npz` episode of
//! a run folder at restart). Two families of inputs:
//!
//! - episode files exactly as the trainer writes them (compressed npz), mutated byte-wise
//!   (flips, insertions, cuts, splices: the zip's own checks see most of these);
//! - episodes rebuilt as stored (uncompressed) zips from their `.npy` parts, with the parts
//!   mutated where the zip cannot see it: the npy header's shape (extremes, negative, empty,
//!   wrong rank), dtype, byte order and `fortran_order`, the data cut or extended, arrays
//!   renamed, dropped or duplicated, and the zip's CRC and sizes left stale or recomputed.
//!
//! Each case must return `Ok` or `Err` within a time bound, never panic; a loaded replay
//! holds episodes whose arrays fit its layout, and sampling a batch from it works.
//!
//! `PROPTEST_CASES` sets the number of cases (scripts/fuzz-long runs many).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use dreamer_fuzz::{ByteEdit, bounded, byte_edit};
use dreamer_trainer::replay::{Episode, Layout, Replay};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const LIMIT: Duration = Duration::from_secs(5);

/// The layouts the trainer uses: state, pixels, both.
const LAYOUTS: [Layout; 3] = [
    Layout {
        action: 1,
        state: 3,
        pixels: false,
    },
    Layout {
        action: 2,
        state: 0,
        pixels: true,
    },
    Layout {
        action: 1,
        state: 5,
        pixels: true,
    },
];

const FRAME: usize = 64 * 64 * 3;

/// A short episode of `layout` with varied values.
fn episode(layout: Layout, len: usize) -> Episode {
    let mut e = Episode::default();
    for t in 0..len {
        let state: Vec<f32> = (0..layout.state)
            .map(|i| (t * 7 + i) as f32 * 0.25)
            .collect();
        let pixels: Vec<u8> = if layout.pixels {
            (0..FRAME).map(|i| (i * 31 + t) as u8).collect()
        } else {
            Vec::new()
        };
        let action: Vec<f32> = (0..layout.action)
            .map(|i| (i as f32 - 0.5) * t as f32)
            .collect();
        e.push(
            &state,
            &pixels,
            &action,
            t as f32,
            if t + 1 == len { 0.0 } else { 1.0 },
        );
    }
    e
}

/// One `.npy` array of an episode, split into header fields and data.
#[derive(Debug, Clone)]
struct Npy {
    name: String,
    descr: String,
    fortran: String,
    shape: Vec<String>,
    data: Vec<u8>,
}

impl Npy {
    fn f32(name: &str, shape: &[usize], values: &[f32]) -> Npy {
        Npy {
            name: format!("{name}.npy"),
            descr: "<f4".into(),
            fortran: "False".into(),
            shape: shape.iter().map(|d| d.to_string()).collect(),
            data: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    /// Version 1.0 npy bytes: magic, header length, the header dict padded to 64, data.
    fn bytes(&self) -> Vec<u8> {
        let shape = match self.shape.len() {
            1 => format!("({},)", self.shape[0]),
            _ => format!("({})", self.shape.join(", ")),
        };
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': {}, 'shape': {}, }}",
            self.descr, self.fortran, shape
        );
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend((header.len() as u16).to_le_bytes());
        out.extend(header.as_bytes());
        out.extend(&self.data);
        out
    }
}

/// The arrays of an episode as the trainer lays them out.
fn parts(layout: Layout, e: &Episode) -> Vec<Npy> {
    let len = e.len();
    let mut out = vec![
        Npy::f32("action", &[len, layout.action], &e.action),
        Npy::f32("reward", &[len], &e.reward),
        Npy::f32("discount", &[len], &e.discount),
    ];
    if layout.state > 0 {
        out.push(Npy::f32("state", &[len, layout.state], &e.state));
    }
    if layout.pixels {
        out.push(Npy {
            name: "image.npy".into(),
            descr: "|u1".into(),
            fortran: "False".into(),
            shape: [len, 64, 64, 3].iter().map(|d| d.to_string()).collect(),
            data: e.pixels.clone(),
        });
    }
    out
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A stored (uncompressed) zip of `(name, bytes)` entries; `stale` entries keep the CRC and
/// sizes of `stale_as` instead of their own, as a file edited in place would.
fn stored_zip(entries: &[(String, Vec<u8>)], stale: Option<(usize, &[u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (i, (name, data)) in entries.iter().enumerate() {
        let described: &[u8] = match stale {
            Some((k, old)) if k == i => old,
            _ => data,
        };
        let (crc, size) = (crc32(described), described.len() as u32);
        let offset = out.len() as u32;
        let common = |v: &mut Vec<u8>| {
            v.extend(20u16.to_le_bytes()); // version needed
            v.extend(0u16.to_le_bytes()); // flags
            v.extend(0u16.to_le_bytes()); // method: stored
            v.extend(0u16.to_le_bytes()); // time
            v.extend(0x21u16.to_le_bytes()); // date: 1980-01-01
            v.extend(crc.to_le_bytes());
            v.extend(size.to_le_bytes());
            v.extend(size.to_le_bytes());
            v.extend((name.len() as u16).to_le_bytes());
            v.extend(0u16.to_le_bytes()); // extra length
        };
        out.extend(0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend(name.as_bytes());
        out.extend(data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes()); // version made by
        common(&mut central);
        central.extend(0u16.to_le_bytes()); // comment length
        central.extend(0u16.to_le_bytes()); // disk
        central.extend(0u16.to_le_bytes()); // internal attributes
        central.extend(0u32.to_le_bytes()); // external attributes
        central.extend(offset.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// The trainer's own episode files, written once per layout: `(file name, bytes)`.
fn written() -> &'static Vec<(String, Vec<u8>)> {
    static FILES: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        LAYOUTS
            .iter()
            .map(|&layout| {
                let dir = tempfile::tempdir().unwrap();
                let mut replay = Replay::open(dir.path(), layout, None).unwrap();
                replay.add(episode(layout, 3)).unwrap();
                let path = only_file(dir.path());
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                (name, std::fs::read(&path).unwrap())
            })
            .collect()
    })
}

fn only_file(dir: &Path) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    files.into_iter().next().unwrap()
}

// ---- mutations ---------------------------------------------------------------------------

/// One change to the `.npy` parts of an episode (`i` picks the part).
#[derive(Debug, Clone)]
enum PartEdit {
    Shape(prop::sample::Index, Vec<String>),
    Descr(prop::sample::Index, &'static str),
    Fortran(prop::sample::Index, &'static str),
    Rename(prop::sample::Index, String),
    Drop(prop::sample::Index),
    Duplicate(prop::sample::Index),
    /// Float values written over the data (NaN, infinities, extremes).
    Values(prop::sample::Index, f32),
    Data(prop::sample::Index, ByteEdit),
    /// A byte edit of the whole npy, header included.
    Raw(prop::sample::Index, ByteEdit),
}

fn dim() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (0usize..8).prop_map(|d| d.to_string()),
        1 => Just("64".to_string()),
        1 => Just("3".to_string()),
        1 => Just("-1".to_string()),
        1 => Just(String::new()),
        1 => Just("1.5".to_string()),
        1 => Just("'a'".to_string()),
        1 => Just((1u64 << 31).to_string()),
        1 => Just((1u64 << 40).to_string()),
        1 => Just((1u64 << 62).to_string()),
        1 => Just(u64::MAX.to_string()),
        1 => Just("99999999999999999999999".to_string()),
    ]
}

fn part_edit() -> impl Strategy<Value = PartEdit> {
    let index = any::<prop::sample::Index>;
    prop_oneof![
        4 => (index(), prop::collection::vec(dim(), 0..5)).prop_map(|(i, s)| PartEdit::Shape(i, s)),
        2 => (index(), prop::sample::select(vec![
            "<f4", ">f4", "<f8", "<f2", "|u1", "<i4", "<i8", "|b1", "<c8", "|O", "<U3", "f4", "", "'",
        ])).prop_map(|(i, d)| PartEdit::Descr(i, d)),
        1 => (index(), prop::sample::select(vec!["True", "False", "1", "None", "'x'"]))
            .prop_map(|(i, f)| PartEdit::Fortran(i, f)),
        1 => (index(), prop::sample::select(vec![
            "action.npy", "reward.npy", "discount.npy", "state.npy", "image.npy", "action", "other.npy", "",
        ]).prop_map(String::from)).prop_map(|(i, n)| PartEdit::Rename(i, n)),
        1 => index().prop_map(PartEdit::Drop),
        1 => index().prop_map(PartEdit::Duplicate),
        2 => (index(), prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(-f32::MAX), any::<f32>()])
            .prop_map(|(i, x)| PartEdit::Values(i, x)),
        2 => (index(), byte_edit()).prop_map(|(i, e)| PartEdit::Data(i, e)),
        2 => (index(), byte_edit()).prop_map(|(i, e)| PartEdit::Raw(i, e)),
    ]
}

/// Applies the part edits and returns the zip entries.
fn edited_entries(mut parts: Vec<Npy>, edits: &[PartEdit]) -> Vec<(String, Vec<u8>)> {
    let mut raw: Vec<Option<Vec<u8>>> = vec![None; parts.len()];
    for edit in edits {
        if parts.is_empty() {
            break;
        }
        let n = parts.len();
        let pick = |i: &prop::sample::Index| i.index(n);
        match edit {
            PartEdit::Shape(i, shape) => parts[pick(i)].shape = shape.clone(),
            PartEdit::Descr(i, d) => parts[pick(i)].descr = d.to_string(),
            PartEdit::Fortran(i, f) => parts[pick(i)].fortran = f.to_string(),
            PartEdit::Rename(i, n) => parts[pick(i)].name = n.clone(),
            PartEdit::Drop(i) => {
                let k = pick(i);
                parts.remove(k);
                raw.remove(k);
            }
            PartEdit::Duplicate(i) => {
                let k = pick(i);
                parts.push(parts[k].clone());
                raw.push(raw[k].clone());
            }
            PartEdit::Values(i, x) => {
                let part = &mut parts[pick(i)];
                if part.data.len() >= 4 {
                    let at = (part.data.len() / 2) & !3;
                    part.data[at..at + 4].copy_from_slice(&x.to_le_bytes());
                }
            }
            PartEdit::Data(i, e) => e.apply(&mut parts[pick(i)].data),
            PartEdit::Raw(i, e) => {
                let k = pick(i);
                let mut bytes = raw[k].take().unwrap_or_else(|| parts[k].bytes());
                e.apply(&mut bytes);
                raw[k] = Some(bytes);
            }
        }
    }
    parts
        .iter()
        .zip(raw)
        .map(|(p, r)| (p.name.clone(), r.unwrap_or_else(|| p.bytes())))
        .collect()
}

// ---- the check ---------------------------------------------------------------------------

/// Writes `files` into a fresh replay folder and opens it with `layout` (with and without a
/// limit, as a fresh run and a resumed one do); an opened replay must hold episodes that fit
/// the layout, and sampling a batch from it must work.
fn open_replay(
    layout: Layout,
    files: Vec<(String, Vec<u8>)>,
    limit: Option<usize>,
) -> Result<(), TestCaseError> {
    let loaded = bounded(LIMIT, move || {
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        let result = Replay::open(dir.path(), layout, limit);
        let sampled = result.as_ref().ok().map(|replay| {
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            replay.sample(2, 2, &mut rng).map(|s| {
                let batch = s.to_batch(tch::Device::Cpu);
                batch.reward.size()
            })
        });
        (
            result.map(|r| (r.episodes(), r.steps(), r.missing())),
            sampled,
        )
    });
    match loaded {
        (Err(e), _) => prop_assert!(!e.to_string().is_empty()),
        (Ok((_, _, missing)), sampled) => {
            if let Some(Some(size)) = sampled {
                prop_assert_eq!(size, vec![2, 2]);
            }
            if let Some(limit) = limit {
                prop_assert!(missing <= limit);
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(dreamer_fuzz::config(128))]

    #[test]
    fn mutated_trainer_files(
        which in 0usize..LAYOUTS.len(),
        edits in prop::collection::vec(byte_edit(), 1..4),
        limit in prop_oneof![Just(None), (0usize..4).prop_map(Some)],
    ) {
        let (name, mut bytes) = written()[which].clone();
        for e in &edits {
            e.apply(&mut bytes);
        }
        open_replay(LAYOUTS[which], vec![(name, bytes)], limit)?;
    }

    #[test]
    fn mutated_npy_parts(
        which in 0usize..LAYOUTS.len(),
        len in prop_oneof![Just(0usize), 1usize..5],
        edits in prop::collection::vec(part_edit(), 0..4),
        stale in prop_oneof![3 => Just(None), 1 => any::<prop::sample::Index>().prop_map(Some)],
        other_layout in prop_oneof![3 => Just(None), 1 => (0usize..LAYOUTS.len()).prop_map(Some)],
    ) {
        let layout = LAYOUTS[which];
        let original = parts(layout, &episode(layout, len));
        let entries = edited_entries(original.clone(), &edits);
        let stale = stale.map(|i| {
            let k = i.index(entries.len().max(1));
            (k, original.get(k).map(Npy::bytes).unwrap_or_default())
        });
        let zip = stored_zip(&entries, stale.as_ref().map(|(k, b)| (*k, b.as_slice())));
        let read_as = LAYOUTS[other_layout.unwrap_or(which)];
        open_replay(read_as, vec![("ep000000-3.npz".into(), zip)], None)?;
    }

    #[test]
    fn random_files(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..512),
            // A zip's local header signature, then noise.
            prop::collection::vec(any::<u8>(), 0..512).prop_map(|mut b| {
                b.splice(0..0, *b"PK\x03\x04");
                b
            }),
        ],
        name in prop_oneof![
            Just("ep000000-3.npz".to_string()),
            Just("ep999999999999999999999-1.npz".to_string()),
            Just("ep-.npz".to_string()),
            "ep[0-9a-z-]{0,12}\\.npz",
        ],
        limit in prop_oneof![Just(None), (0usize..4).prop_map(Some)],
    ) {
        open_replay(LAYOUTS[0], vec![(name, bytes)], limit)?;
    }
}

#[test]
fn stored_zip_of_valid_parts_loads() {
    // Guards the structure-aware family: unedited parts in a stored zip are a valid episode.
    for layout in LAYOUTS {
        let e = episode(layout, 4);
        let zip = stored_zip(&edited_entries(parts(layout, &e), &[]), None);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ep000000-4.npz"), zip).unwrap();
        let replay = Replay::open(dir.path(), layout, None).unwrap();
        assert_eq!((replay.episodes(), replay.steps()), (1, 4));
    }
}

/// Runs the test `name` of this binary in a child process with `FUZZ_REPLAY_CHILD` set and
/// says whether it passed: a case that aborts the process fails here instead of taking
/// the whole test binary down.
fn passes_in_child(name: &str) -> Result<(), String> {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--include-ignored", "--test-threads=1"])
        .env("FUZZ_REPLAY_CHILD", "1")
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// The zip entries of `parts`, unmutated.
fn entries(parts: &[Npy]) -> Vec<(String, Vec<u8>)> {
    parts.iter().map(|p| (p.name.clone(), p.bytes())).collect()
}

fn in_child() -> bool {
    std::env::var_os("FUZZ_REPLAY_CHILD").is_some()
}

/// A valid state episode whose `reward` header claims `2^40` float32 (4 TiB): reading it as
/// the header says would allocate 4 TiB and abort the process, so the loader compares the
/// claim with the bytes present first. Run in a child process, so a regression fails this
/// test alone.
#[test]
fn npy_header_claiming_4_tib_is_an_error() {
    if !in_child() {
        let result = passes_in_child("npy_header_claiming_4_tib_is_an_error");
        assert!(
            result.is_ok(),
            "the loader did not return: {}",
            result.unwrap_err()
        );
        return;
    }
    let layout = LAYOUTS[0];
    let mut npy = parts(layout, &episode(layout, 3));
    npy[1].shape = vec![(1u64 << 40).to_string()];
    let zip = stored_zip(&entries(&npy), None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ep000000-3.npz"), zip).unwrap();
    let err = Replay::open(dir.path(), layout, None).unwrap_err();
    assert!(err.to_string().contains("ep000000-3.npz"), "{err}");
}

/// A resumed run opens the replay with the checkpoint's episode count as `limit`; a count of
/// `2^60` (a damaged or hand-edited `state.json`) made the loader allocate a flag per episode
/// and abort. Run in a child process, so a regression fails this test alone.
#[test]
fn huge_episode_limit_is_handled() {
    if !in_child() {
        let result = passes_in_child("huge_episode_limit_is_handled");
        assert!(
            result.is_ok(),
            "the loader did not return: {}",
            result.unwrap_err()
        );
        return;
    }
    let layout = LAYOUTS[0];
    let (name, bytes) = written()[0].clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(name), bytes).unwrap();
    let replay = Replay::open(dir.path(), layout, Some(1 << 60)).unwrap();
    assert_eq!(replay.episodes(), 1);
    assert_eq!(replay.missing(), (1 << 60) - 1);
}

/// The `action` array of shape `[2^31, 0, 2, 2^31]` holds no elements, but its non-zero
/// dimensions overflow `isize`, which `ndarray` refuses even for an empty array (found by
/// `mutated_npy_parts`, where it was a panic): an error naming the file.
#[test]
fn npy_shape_overflowing_isize_is_an_error() {
    let layout = LAYOUTS[0];
    let mut npy = parts(layout, &episode(layout, 0));
    npy[0].shape = ["2147483648", "0", "2", "2147483648"]
        .map(String::from)
        .to_vec();
    let zip = stored_zip(&entries(&npy), None);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ep000000-0.npz"), zip).unwrap();
    let err = bounded(LIMIT, {
        let dir = dir.path().to_path_buf();
        move || Replay::open(&dir, layout, None).map(|_| ())
    })
    .unwrap_err();
    assert!(err.to_string().contains("ep000000-0.npz"), "{err}");
}
