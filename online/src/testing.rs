//! A NATS server with JetStream for tests: the pinned binary from `scripts/fetch-deps`
//! (`.deps/nats/bin/nats-server`, or `$DREAMER_NATS_SERVER`), on a free loopback port,
//! storing in a temporary folder, configured by the project's `online/nats-server.conf` (the
//! learner's user and the devices' user with their permissions), optionally with a smaller
//! `max_payload`; killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dreamer_episode::{Episode, Layout};

use crate::{Broker, Credentials};

/// The layout of [`spool_episode`]'s episodes: 3 state values, 1 action.
pub const SPOOL_LAYOUT: Layout = Layout {
    action: 1,
    state: 3,
    pixels: false,
};

/// Runs `work` on a JetStream context of `broker`, in a single-threaded async runtime of
/// its own: how a test talks to the broker directly.
pub fn with_jetstream<F, Fut, T>(broker: &Broker, work: F) -> T
where
    F: FnOnce(async_nats::jetstream::Context) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = broker.connect(Duration::from_secs(2)).await.unwrap();
        work(async_nats::jetstream::new(client)).await
    })
}

/// A message of the episode stream, as a test looks at it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Its `Nats-Msg-Id`.
    pub id: String,
    /// The names of its headers, sorted.
    pub header_names: Vec<String>,
    pub payload: Vec<u8>,
}

/// Every message of the episode stream (up to 1000), oldest first, read by a consumer of
/// its own that leaves the others where they are.
pub fn stream_messages(broker: &Broker) -> Vec<StoredMessage> {
    use futures::StreamExt;
    with_jetstream(broker, async |js| {
        let stream = js.get_stream(crate::EPISODE_STREAM).await.unwrap();
        let consumer = stream
            .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
            .await
            .unwrap();
        let mut batch = consumer
            .fetch()
            .max_messages(1000)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .unwrap();
        let mut out = Vec::new();
        while let Some(Ok(message)) = batch.next().await {
            let headers = message.headers.clone().unwrap_or_default();
            let id = headers
                .get(crate::MESSAGE_ID_HEADER)
                .map(|v| v.to_string())
                .unwrap_or_default();
            let mut header_names: Vec<String> =
                headers.iter().map(|(n, _)| n.to_string()).collect();
            header_names.sort();
            out.push(StoredMessage {
                id,
                header_names,
                payload: message.payload.to_vec(),
            });
        }
        out
    })
}

/// Writes episode `number` of `device` under policy `p1` into `spool`, as the device's
/// recorder would: `steps` steps whose reward at step t is `10 * number + t`.
pub fn spool_episode(spool: &Path, device: &str, number: usize, steps: usize) {
    let dir = spool.join(device).join("p1");
    std::fs::create_dir_all(&dir).unwrap();
    let mut episode = Episode::default();
    for t in 0..steps {
        let x = (number * 10 + t) as f32;
        episode.push(&[x, 0.0, 1.0], &[], &[0.5], x, 1.0);
    }
    let file = dir.join(dreamer_episode::file_name(number, episode.len()));
    dreamer_episode::save(&file, &episode, SPOOL_LAYOUT).unwrap();
}

/// The broker configuration of the project (users, the devices' permissions).
pub const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/nats-server.conf");
/// The devices' user.
pub const USER: &str = "device";
pub const PASSWORD: &str = "device-secret";
/// The learner's user.
pub const LEARNER_USER: &str = "learner";
pub const LEARNER_PASSWORD: &str = "learner-secret";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The nats-server binary.
pub fn server_binary() -> PathBuf {
    std::env::var_os("DREAMER_NATS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../.deps/nats/bin/nats-server")
        })
}

pub struct NatsServer {
    child: Child,
    pub port: u16,
    pub store: PathBuf,
}

impl NatsServer {
    /// Starts a server storing under `dir` on a free port and waits until it accepts
    /// connections.
    pub fn start(dir: &Path) -> NatsServer {
        Self::start_on(dir, free_port())
    }

    /// Starts (or restarts, keeping the store) a server on `port`, configured by the
    /// project's broker configuration ([`CONFIG`]).
    pub fn start_on(dir: &Path, port: u16) -> NatsServer {
        Self::launch(dir, port, None)
    }

    /// Starts a server as [`NatsServer::start`] does, but taking messages of at most
    /// `max_payload` bytes (headers included): how a test meets a broker with NATS's default
    /// 1 MB, or smaller, without episodes of that size.
    pub fn start_with_max_payload(dir: &Path, max_payload: usize) -> NatsServer {
        Self::launch(dir, free_port(), Some(max_payload))
    }

    fn launch(dir: &Path, port: u16, max_payload: Option<usize>) -> NatsServer {
        let store = dir.join("jetstream");
        std::fs::create_dir_all(&store).unwrap();
        // The project's configuration with the limit appended: a later key overrides an
        // earlier one in nats-server's configuration, and the project's file stays the one
        // every test runs.
        let config = match max_payload {
            None => PathBuf::from(CONFIG),
            Some(bytes) => {
                let config = dir.join("nats-server.conf");
                let text = std::fs::read_to_string(CONFIG).unwrap();
                std::fs::write(&config, format!("{text}\nmax_payload: {bytes}\n")).unwrap();
                config
            }
        };
        let binary = server_binary();
        let child = Command::new(&binary)
            .arg("-c")
            .arg(&config)
            .env("DREAMER_NATS_LISTEN", format!("127.0.0.1:{port}"))
            .env("DREAMER_NATS_STORE", &store)
            .env("DREAMER_NATS_LEARNER_PASSWORD", LEARNER_PASSWORD)
            .env("DREAMER_NATS_DEVICE_PASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} (run scripts/fetch-deps): {e}",
                    binary.display()
                )
            });
        let server = NatsServer { child, port, store };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The broker with the devices' credentials.
    pub fn broker(&self) -> Broker {
        Broker {
            url: self.url(),
            credentials: Credentials::UserPassword {
                user: USER.to_string(),
                password: PASSWORD.to_string(),
            },
        }
    }

    /// The broker with the learner's credentials.
    pub fn learner_broker(&self) -> Broker {
        Broker {
            url: self.url(),
            credentials: Credentials::UserPassword {
                user: LEARNER_USER.to_string(),
                password: LEARNER_PASSWORD.to_string(),
            },
        }
    }

    /// Kills the server (its store stays).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
