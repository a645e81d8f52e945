//! Run logs: `metrics.jsonl` (one JSON object per record), TensorBoard event files and a
//! progress bar with ETA.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Map, Value};

use crate::tensorboard::{EventWriter, event_file_in};

#[derive(Debug, thiserror::Error)]
#[error("log file {path}: {source}")]
pub struct LogError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

/// The error of an I/O failure on the log file `path`.
fn log_error(path: &Path) -> impl FnOnce(io::Error) -> LogError + '_ {
    move |source| LogError {
        path: path.to_path_buf(),
        source,
    }
}

/// Check that `dir` can be created and written before any work starts.
pub fn check_writable(dir: &Path) -> Result<(), LogError> {
    fs::create_dir_all(dir).map_err(log_error(dir))?;
    let probe = dir.join(format!(".write-test-{}", std::process::id()));
    fs::write(&probe, b"ok").map_err(log_error(&probe))?;
    fs::remove_file(&probe).map_err(log_error(&probe))
}

pub struct Logger {
    jsonl_path: PathBuf,
    jsonl: BufWriter<File>,
    events_path: PathBuf,
    events: EventWriter,
    bar: ProgressBar,
    start: std::time::Instant,
    /// Wall seconds of earlier sessions of a resumed run.
    wall_offset: f64,
}

impl Logger {
    /// Append to `<dir>/metrics.jsonl` and a new TensorBoard event file in `dir`; the
    /// progress bar counts environment steps up to `total`.
    pub fn new(
        dir: &Path,
        total: u64,
        start: u64,
        wall_offset: f64,
        show_bar: bool,
    ) -> Result<Logger, LogError> {
        let jsonl_path = dir.join("metrics.jsonl");
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&jsonl_path)
            .map_err(log_error(&jsonl_path))?;
        let events_path = event_file_in(dir);
        let events = EventWriter::create(&events_path).map_err(log_error(&events_path))?;
        let bar = ProgressBar::with_draw_target(
            Some(total),
            if show_bar {
                ProgressDrawTarget::stderr()
            } else {
                ProgressDrawTarget::hidden()
            },
        );
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} env steps, ETA {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_position(start);
        Ok(Logger {
            jsonl_path,
            jsonl: BufWriter::new(file),
            events_path,
            events,
            bar,
            start: std::time::Instant::now(),
            wall_offset,
        })
    }

    /// Wall seconds of the run so far (all sessions).
    pub fn wall_s(&self) -> f64 {
        self.wall_offset + self.start.elapsed().as_secs_f64()
    }

    pub fn set_position(&self, env_steps: u64) {
        self.bar.set_position(env_steps);
    }

    pub fn set_message(&self, message: String) {
        self.bar.set_message(message);
    }

    /// Print a line above the progress bar.
    pub fn println(&self, line: String) {
        if self.bar.is_hidden() {
            println!("{line}");
        } else {
            self.bar.println(line);
        }
    }

    /// One record: `kind`, the counters, wall time and `values`, to metrics.jsonl and as
    /// `<kind>/<name>` scalars to TensorBoard.
    pub fn record(
        &mut self,
        kind: &str,
        env_steps: u64,
        updates: u64,
        values: &[(&str, f64)],
    ) -> Result<(), LogError> {
        let mut object = Map::new();
        object.insert("kind".into(), Value::from(kind));
        object.insert("env_steps".into(), Value::from(env_steps));
        object.insert("updates".into(), Value::from(updates));
        object.insert("wall_s".into(), Value::from(self.wall_s()));
        for (name, value) in values {
            object.insert((*name).into(), Value::from(*value));
            self.events
                .scalar(&format!("{kind}/{name}"), env_steps as i64, *value as f32)
                .map_err(log_error(&self.events_path))?;
        }
        let line = Value::Object(object).to_string();
        writeln!(self.jsonl, "{line}")
            .and_then(|_| self.jsonl.flush())
            .map_err(log_error(&self.jsonl_path))?;
        self.flush_events()
    }

    /// An animated image summary (GIF bytes) in TensorBoard.
    pub fn gif(
        &mut self,
        tag: &str,
        env_steps: u64,
        width: u32,
        height: u32,
        gif: Vec<u8>,
    ) -> Result<(), LogError> {
        self.events
            .image(tag, env_steps as i64, width, height, gif)
            .map_err(log_error(&self.events_path))?;
        self.flush_events()
    }

    fn flush_events(&mut self) -> Result<(), LogError> {
        self.events.flush().map_err(log_error(&self.events_path))
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
