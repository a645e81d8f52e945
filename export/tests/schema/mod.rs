//! The published JSON Schema of `manifest.json` (docs/manifest.schema.json), for every test
//! that writes a bundle: `schema::assert_bundle(&dir)`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::Value;

pub fn schema_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/manifest.schema.json")
}

/// The schema as JSON.
pub fn schema() -> Value {
    let path = schema_path();
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn validator() -> &'static jsonschema::Validator {
    static VALIDATOR: OnceLock<jsonschema::Validator> = OnceLock::new();
    VALIDATOR.get_or_init(|| {
        jsonschema::draft202012::new(&schema())
            .unwrap_or_else(|e| panic!("{} does not compile: {e}", schema_path().display()))
    })
}

/// Every violation of the schema by `manifest`, as `<instance path>: <message>`.
pub fn violations(manifest: &Value) -> Vec<String> {
    validator()
        .iter_errors(manifest)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

/// Panics listing every violation unless `manifest` matches the schema.
pub fn assert_valid(manifest: &Value, what: &str) {
    let found = violations(manifest);
    assert!(
        found.is_empty(),
        "{what} does not match {}:\n{}",
        schema_path().display(),
        found.join("\n")
    );
}

/// Reads `dir/manifest.json` as written and checks it against the schema.
pub fn assert_bundle(dir: &Path) -> Value {
    let path = dir.join(dreamer_bundle::MANIFEST_FILE);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let manifest: Value = serde_json::from_str(&text).unwrap();
    assert_valid(&manifest, &path.display().to_string());
    manifest
}
