//! Throughput of the episode path: D devices upload spooled episodes into a local JetStream
//! server at once, then one learner takes them all into its inbox. Prints episodes/s and
//! MB/s for both halves, for state and 64x64 pixel episodes and each device count.
//!
//!   cargo run --release -p dreamer-online --example bench_ingest -- [DEVICES...]
//!
//! (default 1 4 16; the server is the pinned one from `scripts/fetch-deps`).

use std::path::Path;
use std::time::{Duration, Instant};

use dreamer_episode::{Episode, FRAME_BYTES, Layout};
use dreamer_online::ingest::Ingest;
use dreamer_online::testing::NatsServer;
use dreamer_online::upload::{UploadOptions, Uploader, episode_files};

struct Kind {
    name: &'static str,
    layout: Layout,
    /// Steps per episode.
    steps: usize,
    /// Episodes in all, shared by the devices.
    episodes: usize,
}

const KINDS: [Kind; 2] = [
    // cartpole from state: 5 values, 1 action, 1000 env steps at repeat 2.
    Kind {
        name: "state",
        layout: Layout {
            action: 1,
            state: 5,
            pixels: false,
        },
        steps: 501,
        episodes: 640,
    },
    // cartpole from pixels: 1000 env steps at repeat 8.
    Kind {
        name: "pixels",
        layout: Layout {
            action: 1,
            state: 0,
            pixels: true,
        },
        steps: 126,
        episodes: 64,
    },
];

fn episode(kind: &Kind, seed: usize) -> Episode {
    let l = kind.layout;
    let mut episode = Episode::default();
    let mut frame = vec![0u8; if l.pixels { FRAME_BYTES } else { 0 }];
    for t in 0..kind.steps {
        let x = (seed * 1000 + t) as f32 * 1e-3;
        // Noise: camera frames compress, these do not (the worst case for the link).
        let mut h = (seed * 100_003 + t) as u64 | 1;
        for p in frame.iter_mut() {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            *p = h as u8;
        }
        let state: Vec<f32> = (0..l.state).map(|i| x.sin() + i as f32).collect();
        episode.push(&state, &frame, &vec![x.cos(); l.action], x, 1.0);
    }
    episode
}

fn spool(root: &Path, kind: &Kind, devices: usize) -> u64 {
    let mut bytes = 0;
    for n in 0..kind.episodes {
        let device = format!("d{}", n % devices);
        let dir = root.join(&device).join("p1");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join(dreamer_episode::file_name(n / devices, kind.steps));
        dreamer_episode::save(&file, &episode(kind, n), kind.layout).unwrap();
        bytes += std::fs::metadata(&file).unwrap().len();
    }
    bytes
}

fn main() {
    let devices: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("device counts"))
        .collect();
    let devices = if devices.is_empty() {
        vec![1, 4, 16]
    } else {
        devices
    };
    println!(
        "| episodes | devices | count | MB | upload ep/s | upload MB/s | ingest ep/s | ingest MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for kind in &KINDS {
        for &d in &devices {
            let tmp = tempfile::tempdir().unwrap();
            let server = NatsServer::start(&tmp.path().join("broker"));
            // One spool per device, as on separate machines.
            let mut bytes = 0;
            let mut spools = Vec::new();
            for i in 0..d {
                let root = tmp.path().join(format!("spool{i}"));
                let share = Kind {
                    episodes: kind.episodes / d + usize::from(i < kind.episodes % d),
                    ..*kind
                };
                bytes += spool(&root, &share, 1);
                // Each device under its own name.
                std::fs::rename(root.join("d0"), root.join(format!("dev{i}"))).unwrap();
                spools.push(root);
            }
            let started = Instant::now();
            let uploaders: Vec<Uploader> = spools
                .iter()
                .map(|s| Uploader::start(UploadOptions::new(s.clone(), server.broker())).unwrap())
                .collect();
            while spools.iter().any(|s| !episode_files(s).is_empty()) {
                std::thread::sleep(Duration::from_millis(5));
            }
            let upload_s = started.elapsed().as_secs_f64();
            for u in uploaders {
                u.stop();
            }

            let inbox = tmp.path().join("inbox");
            let mut ingest =
                Ingest::connect(&server.learner_broker(), "bench", &inbox, kind.layout).unwrap();
            let started = Instant::now();
            let mut stored = 0;
            while stored < kind.episodes {
                let report = ingest.poll(64, Duration::from_millis(100)).unwrap();
                assert!(report.rejected.is_empty(), "{:?}", report.rejected);
                stored += report.accepted.len();
            }
            let ingest_s = started.elapsed().as_secs_f64();
            let mb = bytes as f64 / 1e6;
            let n = kind.episodes as f64;
            println!(
                "| {} | {d} | {} | {mb:.1} | {:.0} | {:.1} | {:.0} | {:.1} |",
                kind.name,
                kind.episodes,
                n / upload_s,
                mb / upload_s,
                n / ingest_s,
                mb / ingest_s
            );
        }
    }
}
