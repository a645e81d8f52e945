//! Run logs: `metrics.jsonl` (one JSON object per record), TensorBoard event files and a
//! progress bar with ETA.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
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

/// Keep the records of `metrics.jsonl` at `path` up to `env_steps` (those a checkpoint at
/// `env_steps` had seen: a record is written before the checkpoint of its step) and drop
/// the rest, with a last line a kill cut short. Rewritten whole through `dreamer_persist`,
/// only when something is dropped. Returns the number of lines dropped (0 for no file).
pub fn truncate_after(path: &Path, env_steps: u64) -> Result<usize, LogError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(log_error(path)(e)),
    };
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    let mut kept = String::with_capacity(complete.len());
    let mut dropped = usize::from(complete.len() < text.len());
    for line in complete.lines() {
        let step = serde_json::from_str::<Value>(line)
            .ok()
            .and_then(|v| v.get("env_steps").and_then(Value::as_u64));
        // A line that is not a record is not this function's to judge: it stays.
        if step.is_some_and(|s| s > env_steps) {
            dropped += 1;
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if dropped > 0 {
        dreamer_persist::write_file(path, kept.as_bytes()).map_err(|e| LogError {
            path: e.path,
            source: e.source,
        })?;
    }
    Ok(dropped)
}

/// Where a run's printed lines can still be read when stdout is gone.
pub const WITHOUT_STDOUT: &str = "metrics.jsonl has every record";

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
        // indicatif's own {eta} extrapolates a smoothed recent rate: "0s" before the first
        // step and minutes off when the rate changes (fast random prefill, then slow
        // updates). The ETA here is the session's measured env-step rate, "…" until there
        // is one.
        let remaining = move |state: &ProgressState, w: &mut dyn std::fmt::Write| {
            let total = state.len().unwrap_or(total);
            let _ = w.write_str(&eta_text(
                state.pos().saturating_sub(start),
                total.saturating_sub(state.pos()),
                state.elapsed(),
            ));
        };
        bar.set_style(
            ProgressStyle::with_template(
                "{elapsed_precise} [{bar:30}] {pos}/{len} env steps, ETA {remaining} {msg}",
            )
            .expect("valid template")
            .with_key("remaining", remaining)
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
            // A closed stdout (`dreamer train | head`) must not end the run.
            dreamer_cli::stdout::print_or_warn(format_args!("{line}"), WITHOUT_STDOUT);
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

    /// fsync the metrics and the event file, so that what a checkpoint has seen logged
    /// survives a power cut as the checkpoint does.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.jsonl
            .flush()
            .and_then(|()| self.jsonl.get_ref().sync_data())
            .map_err(log_error(&self.jsonl_path))?;
        self.flush_events()?;
        self.events.sync().map_err(log_error(&self.events_path))
    }

    /// Mark in TensorBoard that this session continues the run after `env_steps` (a resume):
    /// what earlier event files hold after that step is superseded by this session's.
    pub fn resumed_after(&mut self, env_steps: u64) -> Result<(), LogError> {
        self.events
            .session_start(env_steps as i64 + 1)
            .map_err(log_error(&self.events_path))?;
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

/// The time left at the rate measured so far: `done` env steps in `elapsed` (this session),
/// `remaining` still to go. "…" until a step has been measured.
pub fn eta_text(done: u64, remaining: u64, elapsed: std::time::Duration) -> String {
    let elapsed = elapsed.as_secs_f64();
    if done == 0 || elapsed <= 0.0 {
        return "…".to_string();
    }
    let seconds = (remaining as f64 * elapsed / done as f64).round() as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m {:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h {:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// The progress bar's message: the last episode return, the last evaluation return and
/// the last update's losses, "-" for what has not happened yet (no update before the
/// prefill ends) rather than a NaN.
pub fn progress_message(
    episode_return: Option<f64>,
    eval_return: Option<f64>,
    model_loss: Option<f64>,
    value_loss: Option<f64>,
) -> String {
    let show = |value: Option<f64>, decimals: usize| {
        value.map_or("-".to_string(), |v| format!("{v:.decimals$}"))
    };
    format!(
        "ep {} eval {} model {} value {}",
        show(episode_return, 1),
        show(eval_return, 1),
        show(model_loss, 2),
        show(value_loss, 2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn records_after_a_checkpoint_and_a_cut_line_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let lines = [
            r#"{"kind":"eval","env_steps":0}"#,
            r#"{"kind":"train","env_steps":200}"#,
            "not json: stays",
            r#"{"kind":"train","env_steps":300}"#,
        ];
        fs::write(&path, lines.join("\n") + "\n" + r#"{"kind":"ep"#).unwrap();
        assert_eq!(truncate_after(&path, 200).unwrap(), 2);
        let kept = fs::read_to_string(&path).unwrap();
        assert_eq!(kept, lines[..3].join("\n") + "\n");
        assert_eq!(truncate_after(&path, 200).unwrap(), 0);
        assert_eq!(fs::read_to_string(&path).unwrap(), kept);
        assert_eq!(truncate_after(&dir.path().join("none"), 0).unwrap(), 0);
    }

    #[test]
    fn eta_is_unknown_before_the_first_step() {
        assert_eq!(eta_text(0, 20_000, Duration::from_secs(0)), "…");
        assert_eq!(eta_text(0, 20_000, Duration::from_secs(5)), "…");
    }

    #[test]
    fn eta_comes_from_the_measured_rate() {
        // 1000 steps in 10 s: 100 steps/s, 3600 steps left.
        assert_eq!(eta_text(1000, 3600, Duration::from_secs(10)), "36s");
        assert_eq!(eta_text(1000, 6500, Duration::from_secs(10)), "1m 05s");
        assert_eq!(eta_text(100, 37_300, Duration::from_secs(1)), "6m 13s");
        assert_eq!(eta_text(10, 3_720, Duration::from_secs(100)), "10h 20m");
        assert_eq!(eta_text(500, 0, Duration::from_secs(3)), "0s");
    }

    #[test]
    fn progress_message_shows_no_nan_before_the_first_update() {
        let before = progress_message(Some(-1234.56), None, None, None);
        assert_eq!(before, "ep -1234.6 eval - model - value -");
        assert!(!before.contains("NaN"));
        assert_eq!(
            progress_message(Some(-150.0), Some(-170.25), Some(1.234), Some(0.5)),
            "ep -150.0 eval -170.2 model 1.23 value 0.50"
        );
    }
}
