//! Fuzz target of the exporter's checkpoint reader (`Checkpoint::load`: `model.safetensors`,
//! `config.toml`, `state.json`, no libtorch). Valid checkpoints (state and pixels) are
//! mutated: safetensors header fields set to extremes (huge, zero and negative shapes,
//! reversed and out-of-file offsets, other dtypes), tensors renamed or dropped, NaN weights,
//! the header length prefix replaced, TOML and JSON values swapped, and bytes flipped,
//! inserted, cut and spliced; random bytes too. Each case must return `Ok` or `Err` within a
//! time bound, never panic; an accepted checkpoint must hold every contract tensor with its
//! shape and finite values, and export (without verification) must not panic on it.
//!
//! `PROPTEST_CASES` sets the number of cases (scripts/fuzz-long runs many).

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::Spec;
use dreamer_export::{
    CONFIG_FILE, Checkpoint, ExportError, ExportOptions, MODEL_FILE, STATE_FILE, contract, export,
    task_facts,
};
use dreamer_fuzz::{ByteEdit, bounded, byte_edit};
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{Value, json};

const LIMIT: Duration = Duration::from_secs(5);

/// The three files the exporter reads, as bytes.
#[derive(Debug, Clone)]
struct Files {
    model: Vec<u8>,
    config: Vec<u8>,
    state: Vec<u8>,
}

/// A tiny valid checkpoint of `spec`, written once.
fn valid(spec: &Spec) -> Files {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(MODEL_FILE);
    common::weights_file(&common::random_weights(spec, 3)).write(&path);
    Files {
        model: std::fs::read(&path).unwrap(),
        config: common::config_toml(spec).into_bytes(),
        state: common::STATE_JSON.as_bytes().to_vec(),
    }
}

/// The tiny state checkpoint's sizes.
fn state_spec() -> Spec {
    Spec {
        c: 1,
        ..Spec::state()
    }
}

/// The tiny pixel checkpoint's sizes.
fn pixels_spec() -> Spec {
    Spec {
        c: 1,
        ..Spec::pixels()
    }
}

fn bases() -> &'static [Files; 2] {
    static BASES: OnceLock<[Files; 2]> = OnceLock::new();
    BASES.get_or_init(|| [valid(&state_spec()), valid(&pixels_spec())])
}

// ---- mutations ---------------------------------------------------------------------------

/// A JSON value at the edges of what a safetensors header or `state.json` may hold.
fn json_value() -> impl Strategy<Value = Value> {
    let number = prop_oneof![
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(-1)),
        Just(json!(i64::MIN)),
        Just(json!(u64::MAX)),
        Just(json!(1u64 << 60)),
        Just(json!(1u64 << 62)),
        Just(json!(u32::MAX)),
        Just(json!(1.5)),
        Just(json!(1e308)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
    ];
    let dims = prop::collection::vec(
        prop_oneof![
            4 => 0u64..40,
            1 => Just(1u64 << 60),
            1 => Just(u64::MAX),
            1 => Just(usize::MAX as u64 / 4 + 1),
        ],
        0..5,
    );
    prop_oneof![
        4 => number,
        2 => dims.prop_map(|d| json!(d)),
        1 => Just(json!([-1, 3])),
        1 => Just(json!(null)),
        1 => Just(json!(true)),
        1 => Just(json!("")),
        1 => prop::sample::select(vec!["F32", "F16", "BF16", "F64", "U8", "I64", "BOOL", "F8_E4M3", "f32", "F4"])
            .prop_map(|s| json!(s)),
        1 => Just(json!({})),
        1 => any::<String>().prop_map(|s| json!(s)),
    ]
}

/// A TOML value for a `config.toml` key.
fn toml_value() -> impl Strategy<Value = toml::Value> {
    prop_oneof![
        prop::sample::select(vec![i64::MIN, -1, 0, 1, 2, 3, 5, 12, 1 << 40, i64::MAX])
            .prop_map(toml::Value::Integer),
        prop::sample::select(vec![
            f64::NAN,
            f64::INFINITY,
            -0.0,
            -1.0,
            1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
            0.1
        ])
        .prop_map(toml::Value::Float),
        any::<bool>().prop_map(toml::Value::Boolean),
        prop::sample::select(vec![
            "pendulum",
            "cartpole-swingup",
            "acrobot",
            "state",
            "pixels",
            "both",
            "",
            "pendulum\u{0}",
        ])
        .prop_map(|s| toml::Value::String(s.to_string())),
        any::<String>().prop_map(toml::Value::String),
        Just(toml::Value::Array(vec![])),
        Just(toml::Value::Table(toml::Table::new())),
    ]
}

/// Keys of `config.toml` worth changing, a few unknown ones among them.
const CONFIG_KEYS: &[&str] = &[
    "run.task",
    "run.obs_mode",
    "run.action_repeat",
    "model.deter",
    "model.stoch",
    "model.hidden",
    "model.units",
    "model.cnn_depth",
    "model.min_std",
    "model.pcont",
    "model.layers",
    "run",
    "model",
    "train.batch",
];

const STATE_KEYS: &[&str] = &[
    "format_version",
    "counters",
    "counters.env_steps",
    "counters.updates",
    "env_steps",
    "updates",
    "eval_return",
];

/// The safetensors header fields a mutation may touch.
const TENSOR_FIELDS: &[&str] = &["shape", "dtype", "data_offsets", "extra"];

/// One change to a checkpoint.
#[derive(Debug, Clone)]
enum Mutation {
    /// Set a field of the `i`-th tensor in the safetensors header.
    TensorField(prop::sample::Index, &'static str, Value),
    /// Give the `i`-th tensor another tensor's name, a new name, or none (drop it).
    Rename(prop::sample::Index, Option<String>),
    /// Rebuild the file with the `i`-th tensor of another shape, its data zero-filled to fit:
    /// the file stays valid safetensors, so the shape reaches the exporter's own checks.
    Reshape(prop::sample::Index, Vec<usize>),
    /// Rebuild the file with the `i`-th tensor of another dtype, its data resized to fit.
    Retype(prop::sample::Index, Dtype),
    /// Set `__metadata__` to a value.
    Metadata(Value),
    /// Write a float over 4 bytes of the data section.
    Weight(prop::sample::Index, f32),
    /// Replace the 8-byte header length prefix.
    Prefix(u64),
    /// Set a key of `config.toml` (`section.key` or a whole section).
    Config(&'static str, toml::Value),
    /// Set a key of `state.json`.
    State(&'static str, Value),
    /// A byte-level edit of one file (0 model, 1 config, 2 state).
    Bytes(u8, ByteEdit),
}

/// A tensor shape: small dimensions, and now and then zero next to a huge one (no data, so
/// safetensors accepts it).
fn shape() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![
            6 => 1usize..40,
            2 => Just(0usize),
            1 => Just(1usize << 62),
            1 => Just(usize::MAX),
            1 => Just(usize::MAX / 3 + 1),
        ],
        0..5,
    )
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let index = any::<prop::sample::Index>;
    let name = prop_oneof![
        Just(None),
        Just(Some("pcont.l0.weight".to_string())),
        Just(Some("rssm.gru.weight_hh".to_string())),
        Just(Some("actor.l0.weight".to_string())),
        Just(Some("encoder.pixels.conv0.weight".to_string())),
        Just(Some("__metadata__".to_string())),
        Just(Some(String::new())),
        any::<String>().prop_map(Some),
    ];
    prop_oneof![
        6 => (index(), prop::sample::select(TENSOR_FIELDS), json_value())
            .prop_map(|(i, f, v)| Mutation::TensorField(i, f, v)),
        2 => (index(), name).prop_map(|(i, n)| Mutation::Rename(i, n)),
        4 => (index(), shape()).prop_map(|(i, d)| Mutation::Reshape(i, d)),
        1 => (index(), prop::sample::select(vec![Dtype::F16, Dtype::BF16, Dtype::F64, Dtype::U8, Dtype::I64, Dtype::BOOL]))
            .prop_map(|(i, d)| Mutation::Retype(i, d)),
        1 => json_value().prop_map(Mutation::Metadata),
        2 => (index(), prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::MAX), any::<f32>()])
            .prop_map(|(i, x)| Mutation::Weight(i, x)),
        1 => prop_oneof![Just(0u64), Just(1), Just(7), Just(u64::MAX), Just(1 << 60), Just(100_000_001), any::<u64>()]
            .prop_map(Mutation::Prefix),
        3 => (prop::sample::select(CONFIG_KEYS), toml_value()).prop_map(|(k, v)| Mutation::Config(k, v)),
        2 => (prop::sample::select(STATE_KEYS), json_value()).prop_map(|(k, v)| Mutation::State(k, v)),
        4 => (0u8..3, byte_edit()).prop_map(|(f, e)| Mutation::Bytes(f, e)),
    ]
}

/// `model.safetensors` split into its header (JSON object) and data section; `None` once
/// the file is no longer shaped that way.
fn split_model(bytes: &[u8]) -> Option<(serde_json::Map<String, Value>, Vec<u8>)> {
    let n = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
    let end = 8usize.checked_add(usize::try_from(n).ok()?)?;
    let header = serde_json::from_slice(bytes.get(8..end)?).ok()?;
    Some((header, bytes[end..].to_vec()))
}

fn join_model(header: &serde_json::Map<String, Value>, data: &[u8]) -> Vec<u8> {
    let text = serde_json::to_vec(header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(data);
    out
}

/// Applies `edit` to the model's header and data when the file still parses that far.
fn edit_model(
    files: &mut Files,
    edit: impl FnOnce(&mut serde_json::Map<String, Value>, &mut Vec<u8>),
) {
    if let Some((mut header, mut data)) = split_model(&files.model) {
        edit(&mut header, &mut data);
        files.model = join_model(&header, &data);
    }
}

/// Rebuilds a valid model file with one tensor (picked by `i` in name order) changed by
/// `edit`; `None` when the file does not parse or the edited tensor is inconsistent.
fn rebuild(
    model: &[u8],
    i: &prop::sample::Index,
    edit: impl FnOnce(&mut Dtype, &mut Vec<usize>, &mut Vec<u8>),
) -> Option<Vec<u8>> {
    let st = SafeTensors::deserialize(model).ok()?;
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    if tensors.is_empty() {
        return None;
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let k = i.index(tensors.len());
    let (_, dtype, shape, data) = &mut tensors[k];
    edit(dtype, shape, data);
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| TensorView::new(*d, s.clone(), b).map(|v| (n.clone(), v)))
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    safetensors::serialize(views, None).ok()
}

/// Data of `len` bytes: the old bytes, cut or zero-padded.
fn resized(data: &[u8], len: usize) -> Vec<u8> {
    let mut out = data[..len.min(data.len())].to_vec();
    out.resize(len, 0);
    out
}

/// Bytes of `shape` in `dtype`, when small enough to write.
fn bytes_of(dtype: Dtype, shape: &[usize]) -> Option<usize> {
    let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))?;
    let bytes = n.checked_mul(dtype.bitsize())? / 8;
    (bytes <= 1 << 20).then_some(bytes)
}

/// Tensor names of a header, sorted, without `__metadata__`.
fn tensor_names(header: &serde_json::Map<String, Value>) -> Vec<String> {
    header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}

fn set_toml(bytes: &mut Vec<u8>, key: &str, value: &toml::Value) {
    let Some(mut table) = std::str::from_utf8(bytes)
        .ok()
        .and_then(|t| toml::from_str::<toml::Table>(t).ok())
    else {
        return;
    };
    match key.split_once('.') {
        Some((section, name)) => {
            let slot = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match slot {
                toml::Value::Table(inner) => {
                    inner.insert(name.to_string(), value.clone());
                }
                other => *other = value.clone(),
            }
        }
        None => {
            table.insert(key.to_string(), value.clone());
        }
    }
    if let Ok(text) = toml::to_string(&table) {
        *bytes = text.into_bytes();
    }
}

fn set_json(bytes: &mut Vec<u8>, key: &str, value: &Value) {
    let Ok(Value::Object(mut root)) = serde_json::from_slice::<Value>(bytes) else {
        return;
    };
    match key.split_once('.') {
        Some((outer, inner)) => {
            if let Some(Value::Object(obj)) = root.get_mut(outer) {
                obj.insert(inner.to_string(), value.clone());
            }
        }
        None => {
            root.insert(key.to_string(), value.clone());
        }
    }
    *bytes = serde_json::to_vec(&Value::Object(root)).unwrap();
}

fn apply(files: &mut Files, mutation: &Mutation) {
    match mutation {
        Mutation::TensorField(i, field, value) => edit_model(files, |header, _| {
            let names = tensor_names(header);
            if names.is_empty() {
                return;
            }
            if let Some(Value::Object(info)) = header.get_mut(&names[i.index(names.len())]) {
                info.insert(field.to_string(), value.clone());
            }
        }),
        Mutation::Rename(i, name) => edit_model(files, |header, _| {
            let names = tensor_names(header);
            if names.is_empty() {
                return;
            }
            let old = &names[i.index(names.len())];
            let info = header.remove(old).unwrap();
            if let Some(new) = name {
                header.insert(new.clone(), info);
            }
        }),
        Mutation::Reshape(i, new_shape) => {
            let rebuilt = rebuild(&files.model, i, |dtype, shape, data| {
                if let Some(len) = bytes_of(*dtype, new_shape) {
                    *shape = new_shape.clone();
                    *data = resized(data, len);
                }
            });
            if let Some(model) = rebuilt {
                files.model = model;
            }
        }
        Mutation::Retype(i, new_dtype) => {
            let rebuilt = rebuild(&files.model, i, |dtype, shape, data| {
                if let Some(len) = bytes_of(*new_dtype, shape) {
                    *dtype = *new_dtype;
                    *data = resized(data, len);
                }
            });
            if let Some(model) = rebuilt {
                files.model = model;
            }
        }
        Mutation::Metadata(value) => edit_model(files, |header, _| {
            header.insert("__metadata__".to_string(), value.clone());
        }),
        Mutation::Weight(i, x) => edit_model(files, |_, data| {
            if data.len() >= 4 {
                let at = i.index(data.len() / 4) * 4;
                data[at..at + 4].copy_from_slice(&x.to_le_bytes());
            }
        }),
        Mutation::Prefix(n) => {
            if files.model.len() >= 8 {
                files.model[..8].copy_from_slice(&n.to_le_bytes());
            }
        }
        Mutation::Config(key, value) => set_toml(&mut files.config, key, value),
        Mutation::State(key, value) => set_json(&mut files.state, key, value),
        Mutation::Bytes(file, edit) => edit.apply(match file {
            0 => &mut files.model,
            1 => &mut files.config,
            _ => &mut files.state,
        }),
    }
}

// ---- the check ---------------------------------------------------------------------------

/// What the exporter did with one checkpoint folder.
#[derive(Debug)]
enum Outcome {
    Refused(ExportError),
    /// Loaded, checked by `check_loaded`; `exported` is the unverified export's result.
    Loaded {
        ckpt: Box<Checkpoint>,
        exported: Result<(), String>,
    },
}

/// Writes the files into a fresh folder and runs the exporter's reading path on it: load,
/// and for an accepted checkpoint the task lookup and an export without verification.
fn read_checkpoint(files: Files) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_dir = dir.path().join("ckpt");
    std::fs::create_dir(&ckpt_dir).unwrap();
    std::fs::write(ckpt_dir.join(MODEL_FILE), &files.model).unwrap();
    std::fs::write(ckpt_dir.join(CONFIG_FILE), &files.config).unwrap();
    std::fs::write(ckpt_dir.join(STATE_FILE), &files.state).unwrap();
    match Checkpoint::load(&ckpt_dir) {
        Err(e) => Outcome::Refused(e),
        Ok(ckpt) => {
            let _ = task_facts(&ckpt);
            let options = ExportOptions {
                verify: false,
                ..ExportOptions::default()
            };
            let exported = export(&ckpt_dir, &dir.path().join("bundle"), &options)
                .map(|_| ())
                .map_err(|e| e.to_string());
            Outcome::Loaded {
                ckpt: Box::new(ckpt),
                exported,
            }
        }
    }
}

/// An accepted checkpoint holds exactly the contract, with finite values and sane options.
fn check_loaded(ckpt: &Checkpoint) -> Result<(), TestCaseError> {
    let with_pcont = ckpt.weights.keys().any(|k| k.starts_with("pcont."));
    let expected = contract(&ckpt.sizes, ckpt.obs, with_pcont);
    prop_assert_eq!(expected.len(), ckpt.weights.len());
    for (name, shape) in &expected {
        let t = ckpt.tensor(name);
        prop_assert_eq!(&t.shape, shape, "{}", name);
        prop_assert_eq!(t.data.len(), shape.iter().product::<usize>(), "{}", name);
        prop_assert!(t.data.iter().all(|x| x.is_finite()), "{}", name);
    }
    prop_assert!(
        ckpt.min_std.is_finite() && ckpt.min_std >= 0.0,
        "{}",
        ckpt.min_std
    );
    prop_assert!(ckpt.action_repeat >= 1);
    Ok(())
}

fn check(files: Files) -> Result<(), TestCaseError> {
    match bounded(LIMIT, move || read_checkpoint(files)) {
        Outcome::Refused(e) => {
            // The message names the file it is about (or the option, for option errors).
            let text = e.to_string();
            prop_assert!(!text.is_empty());
            if let ExportError::Safetensors { path, .. } | ExportError::Tensors { path, .. } = &e {
                prop_assert!(path.ends_with(MODEL_FILE), "{text}");
            }
        }
        Outcome::Loaded { ckpt, exported } => {
            check_loaded(&ckpt)?;
            // Export may refuse (e.g. a task's sizes disagree) but never panics; reaching
            // here means it returned.
            let _ = exported;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(dreamer_fuzz::config(256))]

    #[test]
    fn mutated_valid_checkpoints(
        base in 0usize..2,
        mutations in prop::collection::vec(mutation(), 1..5),
    ) {
        let mut files = bases()[base].clone();
        for m in &mutations {
            apply(&mut files, m);
        }
        check(files)?;
    }

    #[test]
    fn random_model_files(
        base in 0usize..2,
        model in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            // A plausible prefix and header start, then noise.
            (0u64..512, prop::collection::vec(any::<u8>(), 0..256)).prop_map(|(n, rest)| {
                let mut b = n.to_le_bytes().to_vec();
                b.extend(b"{\"");
                b.extend(rest);
                b
            }),
        ],
    ) {
        let mut files = bases()[base].clone();
        files.model = model;
        check(files)?;
    }
}

/// The state checkpoint as it is, for the regressions below to edit.
fn state_base() -> Files {
    bases()[0].clone()
}

#[test]
fn valid_bases_load_and_export() {
    for files in bases() {
        match bounded(LIMIT, {
            let files = files.clone();
            move || read_checkpoint(files)
        }) {
            Outcome::Loaded { exported, .. } => assert_eq!(exported, Ok(())),
            Outcome::Refused(e) => panic!("a valid checkpoint was refused: {e}"),
        }
    }
}

/// Regression: an anchor tensor with a zero dimension has no elements, so safetensors accepts
/// any size in its other dimension; `rssm.gru.weight_hh` of shape `[0, 2^63]` made the size
/// `D = 2^63` and the contract's `3 D` overflowed, `actor.l0.weight` of `[2^64 - 1, 0]` made
/// `U` overflow `D + E` (panics in debug builds). An anchor must hold data; the error names it.
#[test]
fn empty_anchor_tensor_with_huge_dimension_is_refused() {
    for (name, shape) in [
        ("rssm.gru.weight_hh", vec![0, 1usize << 63]),
        ("actor.l0.weight", vec![usize::MAX, 0]),
        ("encoder.state.l0.weight", vec![0, usize::MAX]),
    ] {
        let mut weights = common::random_weights(&state_spec(), 3);
        weights.insert(name.to_string(), (shape.clone(), Vec::new()));
        let mut files = state_base();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MODEL_FILE);
        common::weights_file(&weights).write(&path);
        files.model = std::fs::read(&path).unwrap();
        match bounded(LIMIT, move || read_checkpoint(files)) {
            Outcome::Refused(e) => {
                let text = e.to_string();
                assert!(matches!(e, ExportError::Sizes { .. }), "{text}");
                assert!(text.contains(MODEL_FILE) && text.contains(name), "{text}");
            }
            Outcome::Loaded { .. } => panic!("{name} {shape:?}: accepted"),
        }
    }
}

/// Regression: `model.min_std = 1e300` is a finite float64 but infinite as the float32 the
/// graphs use; it was accepted.
#[test]
fn min_std_beyond_float32_is_refused() {
    let mut files = state_base();
    set_toml(
        &mut files.config,
        "model.min_std",
        &toml::Value::Float(1e300),
    );
    match bounded(LIMIT, move || read_checkpoint(files)) {
        Outcome::Refused(e) => assert!(e.to_string().contains("model.min_std"), "{e}"),
        Outcome::Loaded { ckpt, .. } => panic!("accepted min_std {}", ckpt.min_std),
    }
}

/// A header length prefix of 2^60 (or any size past the file) is an error naming the file,
/// found without allocating that much.
#[test]
fn huge_header_length_is_an_error() {
    for prefix in [1u64 << 60, u64::MAX, 100_000_001] {
        let mut files = state_base();
        apply(&mut files, &Mutation::Prefix(prefix));
        match bounded(LIMIT, move || read_checkpoint(files)) {
            Outcome::Refused(e) => assert!(e.to_string().contains(MODEL_FILE), "{e}"),
            Outcome::Loaded { .. } => panic!("prefix {prefix}: accepted"),
        }
    }
}
