//! Recording on the device: episodes in the trainer's file format in a spool, with ids that
//! stay unique across restarts, and `dreamer-rt run --record`.

mod common;

use std::path::Path;

use dreamer_episode::{FRAME_BYTES, Layout};
use dreamer_runtime::record::{NEXT_EPISODE_FILE, RecordError, RecordOptions, Recorder};

fn options(spool: &Path, layout: Layout, max_steps: usize) -> RecordOptions {
    RecordOptions {
        spool: spool.to_path_buf(),
        device: "robot-1".to_string(),
        policy: "v7".to_string(),
        layout,
        max_steps,
        buffers: 2,
    }
}

const BOTH: Layout = Layout {
    action: 2,
    state: 3,
    pixels: true,
};

/// `steps` steps whose values encode (episode, step).
fn record_episode(recorder: &mut Recorder, episode: usize, steps: usize) {
    recorder.begin();
    for t in 0..steps {
        let x = (episode * 100 + t) as f32;
        let frame = vec![(t % 251) as u8; FRAME_BYTES];
        let discount = if t + 1 == steps { 0.0 } else { 1.0 };
        recorder.step(
            &[x, x + 0.5, -x],
            &frame,
            &[x / 10.0, 0.0],
            x * 2.0,
            discount,
        );
    }
    recorder.end();
}

#[test]
fn episodes_reach_the_spool_in_the_trainers_format_numbered_across_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut recorder = Recorder::start(options(tmp.path(), BOTH, 10)).unwrap();
    record_episode(&mut recorder, 0, 4);
    record_episode(&mut recorder, 1, 12); // two steps past max_steps
    let (counters, report) = recorder.finish().unwrap();
    assert_eq!(
        (counters.recorded, counters.dropped, counters.truncated),
        (2, 0, 2)
    );
    assert_eq!(report.written, ["robot-1/v7/0", "robot-1/v7/1"]);
    assert!(report.failed.is_empty());

    let dir = tmp.path().join("robot-1").join("v7");
    let first = dreamer_episode::load(&dir.join("ep000000-4.npz"), BOTH).unwrap();
    assert_eq!(first.reward, [0.0, 2.0, 4.0, 6.0]);
    assert_eq!(first.discount, [1.0, 1.0, 1.0, 0.0]);
    assert_eq!(&first.state[3..6], &[1.0, 1.5, -1.0]);
    assert_eq!(&first.action[2..4], &[0.1, 0.0]);
    assert_eq!(first.pixels[FRAME_BYTES], 1);
    let second = dreamer_episode::load(&dir.join("ep000001-10.npz"), BOTH).unwrap();
    assert_eq!(second.len(), 10);

    // A new recorder (a restarted device) numbers on; a new policy gets its own folder.
    let restarted = RecordOptions {
        policy: "v8".to_string(),
        ..options(tmp.path(), BOTH, 10)
    };
    let mut recorder = Recorder::start(restarted).unwrap();
    record_episode(&mut recorder, 2, 3);
    let (_, report) = recorder.finish().unwrap();
    assert_eq!(report.written, ["robot-1/v8/2"]);
    assert!(tmp.path().join("robot-1/v8/ep000002-3.npz").is_file());
}

#[test]
fn a_short_part_is_padded_and_an_empty_episode_is_not_written() {
    let tmp = tempfile::tempdir().unwrap();
    let mut recorder = Recorder::start(options(tmp.path(), BOTH, 5)).unwrap();
    recorder.begin();
    recorder.end(); // nothing recorded yet: kept for the next episode
    recorder.begin();
    recorder.step(&[1.0], &[9; 10], &[0.5, 0.5, 0.5], 1.0, 1.0);
    let (counters, report) = recorder.finish().unwrap();
    assert_eq!((counters.recorded, report.written.len()), (1, 1));
    let episode =
        dreamer_episode::load(&tmp.path().join("robot-1/v7/ep000000-1.npz"), BOTH).unwrap();
    assert_eq!(episode.state, [1.0, 0.0, 0.0]);
    assert_eq!(episode.action, [0.5, 0.5]);
    assert_eq!(episode.pixels.len(), FRAME_BYTES);
    assert_eq!(&episode.pixels[9..11], &[9, 0]);
}

#[test]
fn bad_names_and_a_damaged_counter_are_refused_with_their_place() {
    let tmp = tempfile::tempdir().unwrap();
    for device in ["", "..", "a/b", "robot 1"] {
        let bad = RecordOptions {
            device: device.to_string(),
            ..options(tmp.path(), BOTH, 5)
        };
        let err = Recorder::start(bad).err().unwrap();
        assert!(
            matches!(err, RecordError::Name { what: "device", .. }),
            "{err}"
        );
    }
    let device_dir = tmp.path().join("robot-1");
    std::fs::create_dir_all(&device_dir).unwrap();
    std::fs::write(device_dir.join(NEXT_EPISODE_FILE), "seven").unwrap();
    let err = Recorder::start(options(tmp.path(), BOTH, 5)).err().unwrap();
    let message = err.to_string();
    assert!(
        message.contains(NEXT_EPISODE_FILE) && message.contains("seven"),
        "{message}"
    );
}

/// A random-weight pendulum bundle.
#[cfg(feature = "sim")]
fn pendulum_bundle(seed: u64) -> tempfile::TempDir {
    use common::{Faults, Sizes, Weights};
    let bundle = tempfile::tempdir().unwrap();
    common::write_bundle(
        bundle.path(),
        &Weights::random(Sizes::pendulum(), seed),
        Faults::default(),
    );
    bundle
}

/// `dreamer-rt run BUNDLE --rate-hz 0 ARGS...` with `env`: its stdout; fails the test when
/// the command fails.
#[cfg(feature = "sim")]
fn run_ok(bundle: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dreamer-rt"))
        .args(["run", bundle.to_str().unwrap(), "--rate-hz", "0"])
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[cfg(feature = "sim")]
#[test]
fn run_records_every_episode_with_its_rewards() {
    use dreamer_wire::report::{RunSummary, read_report};
    let bundle = pendulum_bundle(3);
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let summary = tmp.path().join("summary.json");
    let (spool_arg, summary_arg) = (spool.to_str().unwrap(), summary.to_str().unwrap());
    let run = |episodes: &str| {
        let args = [
            "--episodes",
            episodes,
            "--max-decisions",
            "30",
            "--record",
            spool_arg,
        ];
        let args = [&args[..], &["--device", "sim-1", "--summary", summary_arg]].concat();
        run_ok(bundle.path(), &args, &[])
    };
    let text = run("2");
    assert!(text.contains("recorded 2 episodes"), "{text}");
    let summary: RunSummary = read_report(&summary, "run summary").unwrap();
    let layout = Layout {
        action: 1,
        state: 3,
        pixels: false,
    };
    let device_dir = spool.join("sim-1");
    let policy_dirs: Vec<_> = std::fs::read_dir(&device_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(policy_dirs.len(), 1);
    let files = dreamer_episode::list(&policy_dirs[0]).unwrap();
    assert_eq!(files.len(), 2);
    for (file, run_episode) in files.iter().zip(&summary.episodes) {
        let episode = dreamer_episode::load(file, layout).unwrap();
        // The first observation, then one per decision.
        assert_eq!(episode.len(), 31);
        assert_eq!(episode.action[..1], [0.0]);
        let recorded = episode.total_reward();
        assert!(
            (recorded - run_episode.episode_return).abs() < 1e-3,
            "{recorded}"
        );
    }
    // Run again: numbered on.
    run("1");
    let files = dreamer_episode::list(&policy_dirs[0]).unwrap();
    assert_eq!(files.len(), 3);
    assert!(files[2].ends_with("ep000002-31.npz"), "{files:?}");
}

/// `run --record --upload`: the recorded episodes reach the broker's episode stream and leave
/// the spool; with a wrong password they stay in the spool for the next start.
#[cfg(feature = "sim")]
#[test]
fn run_uploads_recorded_episodes_to_the_broker() {
    use dreamer_online::testing::{NatsServer, PASSWORD, USER};
    let bundle = pendulum_bundle(4);
    let tmp = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&tmp.path().join("broker"));
    let spool = tmp.path().join("spool");
    let url = server.url();
    let run = |password: &str| {
        let args = [
            "--episodes",
            "2",
            "--max-decisions",
            "20",
            "--device",
            "sim-2",
        ];
        let upload = [
            "--upload",
            &url,
            "--nats-user",
            USER,
            "--upload-drain-s",
            "5",
        ];
        let args = [&args[..], &["--record", spool.to_str().unwrap()], &upload].concat();
        run_ok(bundle.path(), &args, &[("DREAMER_NATS_PASSWORD", password)])
    };
    let text = run("wrong");
    assert!(
        text.contains("uploaded 0 episodes") && text.contains("2 left in the spool"),
        "{text}"
    );
    assert!(text.to_lowercase().contains("authorization"), "{text}");
    let text = run(PASSWORD);
    assert!(
        text.contains("uploaded 4 episodes") && text.contains("0 left in the spool"),
        "{text}"
    );
    assert!(dreamer_online::upload::episode_files(&spool).is_empty());
}

/// An overriding action (exploration noise, an actuator's limit) is what the model's next
/// transition starts from; a wrong one is refused and the policy's action stands.
#[test]
fn an_overriding_action_is_what_the_model_sees_next() {
    use common::{Faults, Sizes, Weights};
    use dreamer_runtime::{Agent, AgentOptions, GraphMode, Observation, StepError};
    let sizes = Sizes::state();
    let dir = tempfile::tempdir().unwrap();
    common::write_bundle(dir.path(), &Weights::random(sizes, 9), Faults::default());
    let observations = common::observations(sizes, 3, 2);
    let obs = |i: usize| Observation {
        state: Some(&observations[i].0),
        pixels: None,
    };
    for mode in [GraphMode::Fused, GraphMode::Separate] {
        let options = AgentOptions {
            mode,
            ..AgentOptions::default()
        };
        let mut plain = Agent::load(dir.path(), options.clone()).unwrap();
        let mut explored = Agent::load(dir.path(), options).unwrap();
        let first = plain.step(&obs(0)).unwrap().to_vec();
        assert_eq!(explored.step(&obs(0)).unwrap(), &first[..]);
        let err = explored.override_action(&[0.5]).unwrap_err();
        assert!(
            matches!(
                err,
                StepError::InvalidAction {
                    expected: 2,
                    got: 1
                }
            ),
            "{err}"
        );
        assert!(explored.override_action(&[f32::NAN, 0.0]).is_err());
        assert_eq!(explored.action(), &first[..]);
        let sent = [-first[0], 0.25];
        explored.override_action(&sent).unwrap();
        assert_eq!(explored.action(), &sent[..]);
        let _ = (plain.prepare(), explored.prepare());
        let next_plain = plain.step(&obs(1)).unwrap().to_vec();
        let next_explored = explored.step(&obs(1)).unwrap().to_vec();
        assert_ne!(
            next_plain, next_explored,
            "{mode:?}: the override reached the model"
        );
    }
}

/// `run --explore`: noisy actions within [-1, 1], reproducible from --seed, recorded as sent.
#[cfg(feature = "sim")]
#[test]
fn run_explores_reproducibly_and_records_the_actions_sent() {
    let bundle = pendulum_bundle(5);
    let tmp = tempfile::tempdir().unwrap();
    let recorded = |name: &str, explore: &[&str]| {
        let spool = tmp.path().join(name);
        let args = ["--episodes", "1", "--max-decisions", "40", "--seed", "3"];
        let record = ["--record", spool.to_str().unwrap()];
        run_ok(bundle.path(), &[&args[..], &record, explore].concat(), &[]);
        let files = dreamer_online::upload::episode_files(&spool);
        let layout = Layout {
            action: 1,
            state: 3,
            pixels: false,
        };
        dreamer_episode::load(&files[0].1, layout).unwrap().action
    };
    let plain = recorded("plain", &[]);
    let noisy = recorded("noisy", &["--explore", "0.5"]);
    let again = recorded("again", &["--explore", "0.5"]);
    assert_eq!(noisy, again);
    assert_ne!(noisy, plain);
    assert!(noisy.iter().all(|a| (-1.0..=1.0).contains(a)));
}

/// `run --follow-policies`: a new signed policy published by the learner is fetched, loaded
/// off the control thread and takes over between episodes, its episodes recorded under its
/// own id; one signed by an unknown key is refused and the device keeps running.
#[cfg(feature = "sim")]
#[test]
fn run_follows_signed_policies_between_episodes_and_refuses_foreign_ones() {
    use dreamer_bundle::{MANIFEST_FILE, SIGNATURE_FILE, SecretKey, generate_key_pair};
    use dreamer_online::policy::publish_bundle;
    use dreamer_online::testing::{NatsServer, PASSWORD, USER};
    let tmp = tempfile::tempdir().unwrap();
    let sign = |bundle: &Path, keys: &Path| {
        let (secret, public, _) = generate_key_pair(keys).unwrap();
        let manifest = std::fs::read(bundle.join(MANIFEST_FILE)).unwrap();
        let signature = SecretKey::read(&secret).unwrap().sign_manifest(&manifest);
        std::fs::write(bundle.join(SIGNATURE_FILE), signature).unwrap();
        public
    };
    let start = pendulum_bundle(6);
    let trusted = sign(start.path(), &tmp.path().join("keys/learner"));
    let newer = pendulum_bundle(7);
    let secret = SecretKey::read(&tmp.path().join("keys/learner.secret")).unwrap();
    let manifest = std::fs::read(newer.path().join(MANIFEST_FILE)).unwrap();
    std::fs::write(
        newer.path().join(SIGNATURE_FILE),
        secret.sign_manifest(&manifest),
    )
    .unwrap();
    let foreign = pendulum_bundle(8);
    sign(foreign.path(), &tmp.path().join("keys/stranger"));

    let server = NatsServer::start(&tmp.path().join("broker"));
    let broker = server.learner_broker();
    publish_bundle(&broker, newer.path(), 1).unwrap();
    let spool = tmp.path().join("spool");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dreamer-rt"))
        .args(["run", start.path().to_str().unwrap(), "--rate-hz", "50"])
        .args(["--episodes", "8", "--max-decisions", "20", "--device", "d1"])
        .args([
            "--record",
            spool.to_str().unwrap(),
            "--upload",
            &server.url(),
        ])
        .args(["--nats-user", USER, "--upload-drain-s", "5"])
        .args([
            "--follow-policies",
            tmp.path().join("policies").to_str().unwrap(),
        ])
        .args(["--trusted-key", trusted.to_str().unwrap()])
        .env("DREAMER_NATS_PASSWORD", PASSWORD)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    publish_bundle(&broker, foreign.path(), 2).unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("now policy v1"), "{stdout}");
    assert!(!stdout.contains("now policy v2"), "{stdout}");
    assert!(stderr.contains("policy v2: refused"), "{stderr}");
    assert!(stdout.contains("recorded 8 episodes"), "{stdout}");
    assert!(!tmp.path().join("policies/v2").exists());
    // Episodes of both policies went up, none is left.
    assert!(stdout.contains("uploaded 8 episodes"), "{stdout}");
}

/// SIGTERM to `run --record`: the episode in progress ends where it was (recorded as a cut
/// episode), the run writes its episodes and reports as at its normal end, and exits 0.
#[cfg(feature = "sim")]
#[test]
fn a_signal_ends_the_run_with_its_episodes_written_and_reported() {
    let bundle = pendulum_bundle(4);
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    // 50 decisions per second: an episode of 100 decisions takes 2 s.
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_dreamer-rt"))
        .args(["run", bundle.path().to_str().unwrap(), "--rate-hz", "50"])
        .args(["--episodes", "1000", "--device", "d1", "--record"])
        .arg(&spool)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3000));
    // SAFETY: signalling a child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("stopped by a signal after"), "{text}");
    let finished = text.matches("over 100 decisions").count();
    assert!(finished >= 1, "{text}");
    let recorded = format!("recorded {} episodes", finished + 1);
    assert!(text.contains(&recorded), "{recorded}: {text}");
    let files: Vec<_> = upload_files(&spool);
    assert_eq!(files.len(), finished + 1, "{files:?}");
}

/// The episode files under a spool.
#[cfg(feature = "sim")]
fn upload_files(spool: &Path) -> Vec<std::path::PathBuf> {
    dreamer_online::upload::episode_files(spool)
        .into_iter()
        .map(|(_, file)| file)
        .collect()
}
