//! `dreamer learn` against a real NATS server: episodes uploaded by (simulated) devices end
//! up in the learner's replay exactly once, it trains at the run's replay ratio, publishes
//! signed bundles the devices can fetch and verify, and a learner killed at any point of
//! its saves and confirmations resumes without losing or doubling an episode.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::TINY_SETS;
use dreamer_bundle::PublicKey;
use dreamer_online::testing::{LEARNER_PASSWORD, LEARNER_USER, NatsServer, spool_episode};
use dreamer_online::upload::{UploadOptions, Uploader, episode_files};
use dreamer_online::{PASSWORD_ENV, policy};
use dreamer_persist::FAULT_ENV;

/// Steps per uploaded episode (50 decisions after the first observation).
const EPISODE_STEPS: usize = 51;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

struct Setup {
    dir: tempfile::TempDir,
    server: NatsServer,
    secret: PathBuf,
    public: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let server = NatsServer::start(&dir.path().join("broker"));
        let (secret, public, _) =
            dreamer_bundle::generate_key_pair(&dir.path().join("learner")).unwrap();
        Setup {
            dir,
            server,
            secret,
            public,
        }
    }

    fn logdir(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    /// Devices record `numbers` episodes each and upload them.
    fn upload(&self, devices: &[&str], numbers: std::ops::Range<usize>) {
        let spool = self.dir.path().join("spool");
        for device in devices {
            for n in numbers.clone() {
                spool_episode(&spool, device, n, EPISODE_STEPS);
            }
        }
        let uploader =
            Uploader::start(UploadOptions::new(spool.clone(), self.server.broker())).unwrap();
        let report = uploader.drain(&spool, Duration::from_secs(20));
        assert!(episode_files(&spool).is_empty(), "{report:?}");
    }

    fn learn(&self, extra: &[&str], fault: Option<&str>) -> Output {
        let mut command = self.command(extra, fault);
        command.args(["--idle-stop-s", "1.5"]);
        command.output().unwrap()
    }

    /// `dreamer learn` on the tiny configuration with the learner's credentials.
    fn command(&self, extra: &[&str], fault: Option<&str>) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_dreamer"));
        command
            .env_remove("RUST_BACKTRACE")
            .env_remove(FAULT_ENV)
            .env(PASSWORD_ENV, LEARNER_PASSWORD);
        command.args(["learn", "--quiet", "--device", "cpu", "--logdir"]);
        command.arg(self.logdir());
        command.args(["--broker", &self.server.url(), "--nats-user", LEARNER_USER]);
        command.arg("--sign-key").arg(&self.secret);
        for set in TINY_SETS
            .iter()
            .chain(&["eval.every=400", "log.checkpoint_every=400"])
        {
            command.args(["--set", set]);
        }
        command.args(extra);
        if let Some(point) = fault {
            command.env(FAULT_ENV, point);
        }
        command
    }

    fn state(&self) -> serde_json::Value {
        let path = self.logdir().join("checkpoint/state.json");
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
    }

    fn replay_files(&self) -> usize {
        dreamer_episode::list(&self.logdir().join("replay"))
            .unwrap()
            .len()
    }
}

/// The state trajectories of `spool_episode`'s episodes `numbers`, sorted.
fn expected(numbers: impl IntoIterator<Item = usize>) -> Vec<Vec<f32>> {
    let mut all: Vec<Vec<f32>> = numbers
        .into_iter()
        .map(|n| {
            (0..EPISODE_STEPS)
                .flat_map(|t| [(n * 10 + t) as f32, 0.0, 1.0])
                .collect()
        })
        .collect();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    all
}

/// The replay's episodes, each as its state trajectory: the uploaded episodes are told
/// apart by their values (`spool_episode` writes 10 * number + t).
fn replay_contents(logdir: &Path) -> Vec<Vec<f32>> {
    let layout = dreamer_online::testing::SPOOL_LAYOUT;
    let mut all: Vec<Vec<f32>> = dreamer_episode::list(&logdir.join("replay"))
        .unwrap()
        .iter()
        .map(|p| dreamer_episode::load(p, layout).unwrap().state)
        .collect();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    all
}

#[test]
fn a_learner_trains_on_uploaded_episodes_and_publishes_signed_bundles() {
    let setup = Setup::new();
    setup.upload(&["d1", "d2"], 0..8);
    // 8 updates per 100 env steps: more than one round between two polls, so an evaluation
    // or a bundle waits for the intake to pause.
    let ratio = ["--set", "collect.train_steps=8", "--publish-every", "40"];
    let output = setup.learn(&ratio, None);
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{}", text(&output.stderr));
    // 16 episodes of 50 decisions at pendulum's action repeat.
    let state = setup.state();
    assert_eq!(state["episodes"], 16, "{stdout}");
    assert_eq!(setup.replay_files(), 16);
    assert!(state.get("taken").is_none(), "confirmed: {state}");
    let env_steps = state["env_steps"].as_u64().unwrap();
    let repeat = env_steps / (16 * 50);
    assert_eq!(env_steps, 16 * 50 * repeat);
    // The replay ratio: 2 after the 200-step prefill, then 8 per 100 env steps.
    let due = |env_steps: u64| 2 + 8 * (env_steps / 100 - 2);
    assert_eq!(
        state["updates"].as_u64().unwrap(),
        due(env_steps),
        "{stdout}"
    );
    assert!(stdout.contains("done: 16 episodes"), "{stdout}");
    // An evaluation at the start and every 400 env steps, each after the updates due then.
    let evaluations: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("env steps"))
        .collect();
    let wanted: Vec<String> = [0, 400, 800, 1200, 1600]
        .iter()
        .map(|&s| {
            let updates = if s == 0 { 0 } else { due(s) };
            format!("env steps {s:>8}  updates {updates:>6}  eval return")
        })
        .collect();
    assert_eq!(evaluations.len(), wanted.len(), "{stdout}");
    for (line, want) in evaluations.iter().zip(&wanted) {
        assert!(line.starts_with(want.as_str()), "{line} / {want}");
    }
    // A bundle every 40 updates after the untrained v1 (v2, v3), and the last one (v4).
    assert!(
        stdout.contains("policies published this session: v1 v2 v3 v4,"),
        "{stdout}"
    );
    // Each once the updates its env steps call for are done, after 40 and 80 updates.
    let published: Vec<(u64, u64)> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("published policy v"))
        .map(|l| {
            let words: Vec<&str> = l.split(' ').collect();
            let env_steps = words[4].trim_start_matches('(');
            (words[2].parse().unwrap(), env_steps.parse().unwrap())
        })
        .collect();
    assert_eq!(published.len(), 4, "{stdout}");
    for ((updates, env_steps), range) in published[1..3].iter().zip([40..80, 80..120]) {
        assert!(range.contains(updates), "{stdout}");
        assert_eq!(*updates, due(*env_steps), "{stdout}");
    }

    // The broker's version record names the newest bundle; a device trusting the learner's
    // key fetches and verifies it.
    let broker = setup.server.broker();
    let record = policy::current_policy(&broker).unwrap().expect("a policy");
    assert!(record.version >= 2, "the untrained one and later ones");
    let trusted = PublicKey::read(&setup.public).unwrap();
    let fetched = policy::fetch_bundle(
        &broker,
        &record,
        &setup.dir.path().join("device"),
        &[trusted],
    )
    .unwrap();
    assert!(fetched.join("manifest.json").is_file());
    assert!(
        setup
            .logdir()
            .join(format!("bundles/v{}/manifest.json", record.version))
            .is_file()
    );

    // More episodes later: the learner resumes and takes only the new ones.
    setup.upload(&["d1"], 8..12);
    let resumed = setup.learn(&[&["--resume"], &ratio[..]].concat(), None);
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_eq!(setup.state()["episodes"], 20);
    assert_eq!(setup.replay_files(), 20);
    // Every uploaded episode once (d1 and d2 recorded the same trajectories).
    assert_eq!(
        replay_contents(&setup.logdir()),
        expected((0..8).chain(0..8).chain(8..12))
    );
    let newer = policy::current_policy(&broker).unwrap().unwrap();
    assert!(newer.version > record.version);

    // A client without the learner's credentials cannot take episodes.
    let stranger = Command::new(env!("CARGO_BIN_EXE_dreamer"))
        .env_remove(PASSWORD_ENV)
        .args(["learn", "--quiet", "--device", "cpu", "--logdir"])
        .arg(setup.dir.path().join("stranger"))
        .args(["--broker", &setup.server.url(), "--sign-key"])
        .arg(&setup.secret)
        .output()
        .unwrap();
    assert!(!stranger.status.success());
    let stderr = text(&stranger.stderr);
    assert!(
        stderr.contains("broker") && stderr.contains(&setup.server.url()),
        "{stderr}"
    );
    assert!(
        !setup.dir.path().join("stranger").exists(),
        "nothing created"
    );
}

#[test]
fn a_learner_killed_while_saving_or_confirming_resumes_with_every_episode_once() {
    // Killed after the checkpoint that counts episode 3 of d1 was saved, before its inbox
    // file was confirmed; and killed within the second checkpoint save itself (the first is
    // the untrained one at the start: 7 steps).
    for point in ["ep000003.taken:1", "checkpoint:10"] {
        let setup = Setup::new();
        setup.upload(&["d1"], 0..12);
        let killed = setup.learn(&["--publish-every", "10"], Some(point));
        let stderr = text(&killed.stderr);
        assert_eq!(killed.status.signal(), Some(6), "{point}: {stderr}");
        let resumed = setup.learn(&["--resume", "--publish-every", "10"], None);
        assert!(
            resumed.status.success(),
            "{point}: {}",
            text(&resumed.stderr)
        );
        // Reconciled: 12 produced = 12 in replay (+ 0 still spooled), none twice.
        assert_eq!(setup.state()["episodes"], 12, "{point}");
        assert_eq!(setup.replay_files(), 12, "{point}");
        assert_eq!(
            replay_contents(&setup.logdir()),
            expected(0..12),
            "{point}: an episode lost or twice"
        );
    }
}

#[test]
fn a_learner_rides_out_a_broker_restart() {
    let mut setup = Setup::new();
    setup.upload(&["d1"], 0..6);
    let child = setup
        .command(&["--idle-stop-s", "8"], None)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2000));
    // The broker goes away for 2 s and comes back on its port with its store.
    let port = setup.server.port;
    setup.server.kill();
    std::thread::sleep(Duration::from_millis(2000));
    setup.server = NatsServer::start_on(&setup.dir.path().join("broker"), port);
    setup.upload(&["d1"], 6..12);
    let output = child.wait_with_output().unwrap();
    let stdout = text(&output.stdout);
    assert!(output.status.success(), "{stdout}{}", text(&output.stderr));
    // The client reconnects by itself: the outage only delays the second half.
    assert_eq!(setup.state()["episodes"], 12, "{stdout}");
    assert_eq!(replay_contents(&setup.logdir()), expected(0..12));
}
