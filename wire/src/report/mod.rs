//! The JSON reports the processes of a loop print when they exit (the firmware simulation,
//! `dreamer-rt run` and `dreamer-rt serve`), as typed records: the producer serialises them
//! and the harness deserialises the very same types, so neither side parses text meant for
//! people.

mod firmware;
mod runtime;

pub use firmware::*;
pub use runtime::*;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a report could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot write {path}: {source}")]
    Write {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid {what}: {source}")]
    Parse {
        path: std::path::PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("cannot serialise the report: {0}")]
    Serialise(serde_json::Error),
}

/// The report as pretty JSON, also written to `path` when given, replaced whole through
/// `dreamer_persist` (synced and renamed into place), so a reader never sees half a report.
pub fn write_report<T: Serialize>(report: &T, path: Option<&Path>) -> Result<String, ReportError> {
    let text = serde_json::to_string_pretty(report).map_err(ReportError::Serialise)?;
    if let Some(path) = path {
        dreamer_persist::write_file(path, text.as_bytes()).map_err(|e| ReportError::Write {
            path: path.to_path_buf(),
            source: e.source,
        })?;
    }
    Ok(text)
}

/// Reads a report written by [`write_report`]; `what` names it in errors.
pub fn read_report<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, ReportError> {
    let text = std::fs::read_to_string(path).map_err(|source| ReportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Parse {
        path: path.to_path_buf(),
        what,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Sample {
        ticks: u32,
        name: String,
    }

    #[test]
    fn written_report_reads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        let sample = Sample {
            ticks: 7,
            name: "loop".to_string(),
        };
        let text = write_report(&sample, Some(&path)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(read_report::<Sample>(&path, "sample").unwrap(), sample);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "{names:?}");
        std::fs::write(&path, "{\"ticks\": \"seven\"}").unwrap();
        let err = read_report::<Sample>(&path, "sample")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("report.json") && err.contains("sample"),
            "{err}"
        );
    }

    #[test]
    fn unwritable_path_is_an_error_naming_it() {
        let path = Path::new("/nonexistent-dir/report.json");
        let err = write_report(&1u32, Some(path)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent-dir/report.json"), "{err}");
    }
}
