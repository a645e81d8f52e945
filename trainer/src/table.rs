//! The learning table: every run under one folder, laid out `<runs>/<task>/seed<N>/` (one
//! `dreamer train --logdir` each), gathered into one CSV of evaluation returns and one PNG of
//! learning curves per task, with the published scores at 100k environment steps drawn in.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::plot::{Anchor, read_eval_curve, write_curves};
use crate::run::METRICS_FILE;

/// (env steps, mean noise-free return) of one run's evaluations.
type Curve = Vec<(u64, f64)>;

/// The CSV written next to the runs.
pub const TABLE_FILE: &str = "learning.csv";
/// The per-task summary written next to the runs (a Markdown table).
pub const SUMMARY_FILE: &str = "summary.md";
/// How far below its best evaluation a run's last may end and still count as holding:
/// 10 % of the best's magnitude.
pub const HOLD_FRACTION: f64 = 0.10;

/// Published mean scores at 100k environment steps (DMC convention, action repeat 2) for the
/// tasks that follow DeepMind Control's definitions, by the run folder's task name: DreamerV3
/// from state (dmc_proprio), TD-MPC2 from state, DreamerV1 from pixels (its score file),
/// DreamerV3 from pixels (dmc_vision), in that order.
const ANCHORS_100K: [(&str, [f64; 4]); 2] = [
    ("cartpole-swingup", [500.0, 839.0, 139.0, 607.0]),
    ("acrobot-swingup", [56.0, 179.0, 37.0, 39.0]),
];

/// Colours of the four anchors: DreamerV3 state, TD-MPC2 state, DreamerV1 pixels,
/// DreamerV3 pixels.
const ANCHOR_COLOURS: [[u8; 3]; 4] = [[214, 39, 40], [0, 0, 0], [127, 127, 127], [188, 189, 34]];

/// The anchors for a run folder's task name (`dmc-` and `dmc:` prefixes name the same task).
pub fn anchors_for(task: &str) -> Vec<Anchor> {
    let name = task
        .strip_prefix("dmc-")
        .or_else(|| task.strip_prefix("dmc:"))
        .unwrap_or(task);
    ANCHORS_100K
        .iter()
        .filter(|(anchored, _)| *anchored == name)
        .flat_map(|(_, values)| values.iter().zip(ANCHOR_COLOURS))
        .map(|(&value, rgb)| Anchor {
            env_steps: 100_000,
            value,
            rgb,
        })
        .collect()
}

/// What [`write_table`] found and wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct TableReport {
    /// (task, seed, evaluations found), sorted.
    pub runs: Vec<(String, u64, usize)>,
    pub csv: PathBuf,
    pub pictures: Vec<PathBuf>,
    /// One per task, sorted by task.
    pub summaries: Vec<TaskSummary>,
    /// The summaries as a Markdown table ([`SUMMARY_FILE`]).
    pub summary: PathBuf,
}

/// One run's last and best evaluations.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedSummary {
    pub seed: u64,
    /// (env steps, return) of the last evaluation.
    pub last: (u64, f64),
    /// (env steps, return) of the best evaluation (the earliest of equal ones).
    pub best: (u64, f64),
}

impl SeedSummary {
    fn of(seed: u64, curve: &[(u64, f64)]) -> Option<SeedSummary> {
        let last = *curve.last()?;
        let best = curve
            .iter()
            .copied()
            .fold(curve[0], |best, e| if e.1 > best.1 { e } else { best });
        Some(SeedSummary { seed, last, best })
    }

    /// How far the last evaluation is below the best, as a fraction of the best's magnitude
    /// (0 when the last is the best; the same rule for negative returns).
    pub fn drop_from_best(&self) -> f64 {
        let gap = self.best.1 - self.last.1;
        if gap <= 0.0 {
            0.0
        } else {
            gap / self.best.1.abs().max(f64::MIN_POSITIVE)
        }
    }

    /// Whether the curve holds: the last evaluation within [`HOLD_FRACTION`] of the best.
    pub fn holds(&self) -> bool {
        self.drop_from_best() <= HOLD_FRACTION
    }
}

/// A task's runs at their last evaluations: the mean over seeds and the worst seed.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskSummary {
    pub task: String,
    /// Sorted by seed.
    pub seeds: Vec<SeedSummary>,
}

impl TaskSummary {
    /// Mean over seeds of the last evaluation.
    pub fn mean_last(&self) -> f64 {
        self.seeds.iter().map(|s| s.last.1).sum::<f64>() / self.seeds.len() as f64
    }

    /// The seed whose last evaluation is lowest.
    pub fn worst(&self) -> &SeedSummary {
        self.seeds.iter().fold(
            &self.seeds[0],
            |w, s| if s.last.1 < w.last.1 { s } else { w },
        )
    }

    /// The Markdown row: task, seeds, env steps of the last evaluations, mean, worst seed,
    /// each seed's last / best (steps), and how many seeds hold their curve.
    fn row(&self) -> String {
        let steps: Vec<u64> = self.seeds.iter().map(|s| s.last.0).collect();
        let (lo, hi) = (
            steps.iter().min().copied().unwrap_or(0),
            steps.iter().max().copied().unwrap_or(0),
        );
        let steps = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo}-{hi}")
        };
        let worst = self.worst();
        let per_seed: Vec<String> = self
            .seeds
            .iter()
            .map(|s| {
                format!(
                    "{}: {:.0} / {:.0} at {}k{}",
                    s.seed,
                    s.last.1,
                    s.best.1,
                    s.best.0 / 1000,
                    if s.holds() { "" } else { " (drops)" }
                )
            })
            .collect();
        format!(
            "| {} | {} | {} | {:.0} | {:.0} (seed {}) | {} | {} of {} |\n",
            self.task,
            self.seeds.len(),
            steps,
            self.mean_last(),
            worst.last.1,
            worst.seed,
            per_seed.join("; "),
            self.seeds.iter().filter(|s| s.holds()).count(),
            self.seeds.len()
        )
    }
}

/// The summaries as one Markdown table.
pub fn summary_markdown(summaries: &[TaskSummary]) -> String {
    let mut text = format!(
        "| task | seeds | env steps | mean (last) | worst seed (last) | seed: last / best at | \
         last within {:.0} % of best |\n|---|---|---|---|---|---|---|\n",
        HOLD_FRACTION * 100.0
    );
    for summary in summaries {
        text.push_str(&summary.row());
    }
    text
}

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("cannot read the runs folder {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("no run with evaluations under {} (expected <task>/seed<N>/{METRICS_FILE})", .0.display())]
    Empty(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: dreamer_persist::PersistError,
    },
    #[error("cannot draw {}: {source}", path.display())]
    Draw {
        path: PathBuf,
        source: crate::video::VideoError,
    },
}

/// Folders of `dir`, sorted by name; files and unreadable names are skipped.
fn subfolders(dir: &Path) -> Result<Vec<(String, PathBuf)>, TableError> {
    let read = |source| TableError::Read {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).map_err(read)? {
        let entry = entry.map_err(read)?;
        if let (true, Some(name)) = (entry.path().is_dir(), entry.file_name().to_str()) {
            found.push((name.to_string(), entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

/// Reads every `<runs>/<task>/seed<N>/metrics.jsonl`, writes `<runs>/learning.csv` (task,
/// seed, env_steps, return: every noise-free evaluation), `<runs>/<task>.png` (one curve
/// per seed, the task's anchors at 100k) and `<runs>/summary.md` (per task: mean and worst
/// seed at the last evaluations, each seed's best, whether each curve holds). All replaced
/// whole.
pub fn write_table(runs: &Path) -> Result<TableReport, TableError> {
    let mut curves: BTreeMap<String, Vec<(u64, Curve)>> = BTreeMap::new();
    for (task, task_dir) in subfolders(runs)? {
        for (name, run_dir) in subfolders(&task_dir)? {
            let Some(seed) = name.strip_prefix("seed").and_then(|s| s.parse().ok()) else {
                continue;
            };
            let curve = read_eval_curve(&run_dir.join(METRICS_FILE));
            if !curve.is_empty() {
                curves.entry(task.clone()).or_default().push((seed, curve));
            }
        }
    }
    if curves.is_empty() {
        return Err(TableError::Empty(runs.to_path_buf()));
    }
    let mut csv = String::from("task,seed,env_steps,return\n");
    let mut report = TableReport {
        runs: Vec::new(),
        csv: runs.join(TABLE_FILE),
        pictures: Vec::new(),
        summaries: Vec::new(),
        summary: runs.join(SUMMARY_FILE),
    };
    for (task, seeds) in &mut curves {
        seeds.sort_by_key(|(seed, _)| *seed);
        for (seed, curve) in seeds.iter() {
            for (steps, value) in curve {
                csv.push_str(&format!("{task},{seed},{steps},{value}\n"));
            }
            report.runs.push((task.clone(), *seed, curve.len()));
        }
        report.summaries.push(TaskSummary {
            task: task.clone(),
            seeds: seeds
                .iter()
                .filter_map(|(seed, curve)| SeedSummary::of(*seed, curve))
                .collect(),
        });
        let picture = runs.join(format!("{task}.png"));
        let lines: Vec<Curve> = seeds.iter().map(|(_, c)| c.clone()).collect();
        write_curves(&picture, &lines, &anchors_for(task)).map_err(|source| TableError::Draw {
            path: picture.clone(),
            source,
        })?;
        report.pictures.push(picture);
    }
    for (path, text) in [
        (&report.csv, csv),
        (&report.summary, summary_markdown(&report.summaries)),
    ] {
        dreamer_persist::write_file(path, text.as_bytes()).map_err(|source| TableError::Write {
            path: path.clone(),
            source,
        })?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(dir: &Path, task: &str, seed: u64, evals: &[(u64, f64)]) {
        let run = dir.join(task).join(format!("seed{seed}"));
        fs::create_dir_all(&run).unwrap();
        let mut text = String::from("{\"kind\":\"train\",\"env_steps\":5}\n");
        for (steps, value) in evals {
            text.push_str(&format!(
                "{{\"kind\":\"eval\",\"env_steps\":{steps},\"return\":{value}}}\n"
            ));
        }
        fs::write(run.join(METRICS_FILE), text).unwrap();
    }

    #[test]
    fn every_evaluation_of_every_run_lands_in_the_csv_and_one_picture_per_task() {
        let tmp = tempfile::tempdir().unwrap();
        run(
            tmp.path(),
            "cartpole-swingup",
            1,
            &[(0, 20.5), (5000, 140.0)],
        );
        run(tmp.path(), "cartpole-swingup", 0, &[(0, 19.0)]);
        run(
            tmp.path(),
            "pendulum",
            0,
            &[(2000, -1500.0), (4000, -300.25)],
        );
        // Not a run: ignored.
        fs::create_dir_all(tmp.path().join("pendulum/notes")).unwrap();
        let report = write_table(tmp.path()).unwrap();
        let csv = fs::read_to_string(&report.csv).unwrap();
        assert_eq!(
            csv,
            "task,seed,env_steps,return\n\
             cartpole-swingup,0,0,19\n\
             cartpole-swingup,1,0,20.5\n\
             cartpole-swingup,1,5000,140\n\
             pendulum,0,2000,-1500\n\
             pendulum,0,4000,-300.25\n"
        );
        assert_eq!(
            report.runs,
            vec![
                ("cartpole-swingup".to_string(), 0, 1),
                ("cartpole-swingup".to_string(), 1, 2),
                ("pendulum".to_string(), 0, 2),
            ]
        );
        for picture in &report.pictures {
            let bytes = fs::read(picture).unwrap();
            assert_eq!(&bytes[1..4], b"PNG", "{}", picture.display());
        }
        assert_eq!(report.pictures.len(), 2);
    }

    #[test]
    fn the_summary_gives_mean_worst_seed_and_whether_each_curve_holds() {
        let tmp = tempfile::tempdir().unwrap();
        // Seed 10 sorts after seed 2 by number, not by folder name.
        run(
            tmp.path(),
            "cartpole-swingup",
            10,
            &[(5000, 300.0), (60000, 868.0), (100000, 844.0)],
        );
        run(
            tmp.path(),
            "cartpole-swingup",
            2,
            &[(5000, 250.0), (60000, 872.0), (100000, 729.0)],
        );
        // Negative returns: -185 is 61 % below the best -115; -120 is within 10 % of -110.
        run(
            tmp.path(),
            "pendulum",
            0,
            &[(2000, -1300.0), (16000, -115.0), (20000, -185.0)],
        );
        run(
            tmp.path(),
            "pendulum",
            1,
            &[(2000, -1200.0), (14000, -110.0), (18000, -120.0)],
        );
        let report = write_table(tmp.path()).unwrap();
        let [swingup, pendulum] = &report.summaries[..] else {
            panic!("{:?}", report.summaries)
        };
        assert_eq!(
            swingup.seeds.iter().map(|s| s.seed).collect::<Vec<_>>(),
            [2, 10]
        );
        assert!((swingup.mean_last() - 786.5).abs() < 1e-9);
        assert_eq!(swingup.worst().seed, 2);
        assert_eq!(swingup.seeds[0].best, (60000, 872.0));
        assert!(!swingup.seeds[0].holds(), "729 is 16 % below 872");
        assert!(swingup.seeds[1].holds(), "844 is 3 % below 868");
        assert!((pendulum.seeds[0].drop_from_best() - 70.0 / 115.0).abs() < 1e-12);
        assert!(!pendulum.seeds[0].holds());
        assert!(pendulum.seeds[1].holds());
        assert_eq!(pendulum.worst().seed, 0);
        let text = fs::read_to_string(&report.summary).unwrap();
        assert!(
            text.contains(
                "| cartpole-swingup | 2 | 100000 | 786 | 729 (seed 2) | \
                 2: 729 / 872 at 60k (drops); 10: 844 / 868 at 60k | 1 of 2 |"
            ),
            "{text}"
        );
        assert!(
            text.contains("| pendulum | 2 | 18000-20000 | -152 | -185 (seed 0) |"),
            "{text}"
        );
    }

    #[test]
    fn anchors_follow_the_dmc_tasks_only() {
        let values = |task| -> Vec<f64> { anchors_for(task).iter().map(|a| a.value).collect() };
        assert_eq!(values("cartpole-swingup"), [500.0, 839.0, 139.0, 607.0]);
        assert_eq!(values("dmc-acrobot-swingup"), [56.0, 179.0, 37.0, 39.0]);
        assert!(values("pendulum").is_empty());
        assert!(
            anchors_for("acrobot-swingup")
                .iter()
                .all(|a| a.env_steps == 100_000)
        );
    }

    #[test]
    fn a_folder_without_runs_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let e = write_table(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("no run with evaluations under"), "{e}");
        let missing = tmp.path().join("absent");
        let e = write_table(&missing).unwrap_err().to_string();
        assert!(e.contains("absent"), "{e}");
    }
}
