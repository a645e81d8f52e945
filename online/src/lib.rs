//! Online learning over NATS JetStream: devices put the episodes they record into one
//! durable stream, learners take them from it.
//!
//! This crate holds what both sides must agree on, defined once (the stream, its subjects,
//! the headers of an episode message, the episode id), how to reach the broker
//! ([`Broker`]: URL and credentials), and the device's side: [`upload::Uploader`] moves the
//! episode files of a local spool into the stream and deletes each one only once the broker
//! acknowledged it, retrying across link and broker outages; and the learner's side:
//! [`ingest::Ingest`] takes them from the stream through a durable consumer, checks each,
//! and stores it once by id.
//!
//! Tests start their own server: see `testing` (feature `testing`).

pub mod ingest;
pub mod policy;
pub mod upload;

#[cfg(feature = "testing")]
pub mod testing;

use std::path::PathBuf;
use std::time::Duration;

/// The JetStream stream every episode goes to.
pub const EPISODE_STREAM: &str = "DREAMER_EPISODES";
/// Subjects of episode messages: `dreamer.episodes.<device>`.
pub const EPISODE_SUBJECTS: &str = "dreamer.episodes.>";
/// Header carrying the episode's id (set by the client's `message_id`); JetStream drops a
/// second message with the same id within the stream's duplicate window.
pub const MESSAGE_ID_HEADER: &str = "Nats-Msg-Id";
/// Header carrying the id of the policy that produced the episode.
pub const POLICY_HEADER: &str = "Dreamer-Policy";
/// How long the broker remembers message ids to drop duplicates.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(3600);

/// An episode file too large for one message (the server's `max_payload`) goes as chunks,
/// each a message on the same subject with [`chunk_message_id`] as its message id (so a
/// chunk sent again after a device restart is dropped by the broker like a whole episode)
/// and these headers. This one carries the episode's id.
pub const CHUNK_EPISODE_HEADER: &str = "Dreamer-Chunk-Episode";
/// The chunk's index, from 0.
pub const CHUNK_INDEX_HEADER: &str = "Dreamer-Chunk-Index";
/// How many chunks the episode file was cut into.
pub const CHUNK_COUNT_HEADER: &str = "Dreamer-Chunk-Count";
/// The sha256 of the whole episode file (lowercase hex), checked once it is put together.
pub const CHUNK_SHA256_HEADER: &str = "Dreamer-Chunk-Sha256";
/// Room kept in every message for its subject and headers: a file goes as one message only
/// if it fits in `max_payload` with this to spare, and chunks are this much smaller.
pub const CHUNK_HEADER_MARGIN: usize = 4096;

/// The message id of chunk `index` of `count` of an episode: `<episode id>#<index>/<count>`.
pub fn chunk_message_id(id: &EpisodeId, index: u32, count: u32) -> String {
    format!("{id}#{index}/{count}")
}

/// The subject a device publishes its episodes on.
pub fn episode_subject(device: &str) -> String {
    format!("dreamer.episodes.{device}")
}

/// The episode stream's configuration (created by whichever side comes first).
pub fn episode_stream_config() -> async_nats::jetstream::stream::Config {
    async_nats::jetstream::stream::Config {
        name: EPISODE_STREAM.to_string(),
        subjects: vec![EPISODE_SUBJECTS.to_string()],
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// An episode's id: which device recorded it, under which policy, its number there.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EpisodeId {
    pub device: String,
    pub policy: String,
    pub number: u64,
}

impl std::fmt::Display for EpisodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.device, self.policy, self.number)
    }
}

impl std::str::FromStr for EpisodeId {
    type Err = OnlineError;

    /// `<device>/<policy>/<number>`, each name a plain path component (it names folders).
    fn from_str(text: &str) -> Result<EpisodeId, OnlineError> {
        let malformed = || OnlineError::EpisodeId(text.to_string());
        let mut parts = text.split('/');
        let (device, policy, number) = (
            parts.next().ok_or_else(malformed)?,
            parts.next().ok_or_else(malformed)?,
            parts.next().ok_or_else(malformed)?,
        );
        if parts.next().is_some() || !plain_name(device) || !plain_name(policy) {
            return Err(malformed());
        }
        Ok(EpisodeId {
            device: device.to_string(),
            policy: policy.to_string(),
            number: number.parse().map_err(|_| malformed())?,
        })
    }
}

/// Whether `name` can be a device or policy name in an episode id: a plain path component
/// (letters, digits, `-`, `_`, `.`; not `.` or `..`), as it names a folder.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The environment variable holding the password of a broker user named on a command line
/// (never on the command line itself, where other users of the machine could read it).
pub const PASSWORD_ENV: &str = "DREAMER_NATS_PASSWORD";

/// How to reach the broker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Broker {
    /// `nats://host:port` (several separated by commas).
    pub url: String,
    pub credentials: Credentials,
}

/// How a client proves who it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
    /// A `.creds` file (JWT and nkey seed), as `nsc` writes it.
    File(PathBuf),
}

impl Credentials {
    /// The credentials a command line names: a user (password from [`PASSWORD_ENV`]), a
    /// credentials file, or none.
    pub fn from_args(
        user: Option<&str>,
        creds_file: Option<&std::path::Path>,
    ) -> Result<Credentials, OnlineError> {
        match (user, creds_file) {
            (Some(user), _) => match std::env::var(PASSWORD_ENV) {
                Ok(password) => Ok(Credentials::UserPassword {
                    user: user.to_string(),
                    password,
                }),
                Err(_) => Err(OnlineError::Password(user.to_string())),
            },
            (None, Some(file)) => Ok(Credentials::File(file.to_path_buf())),
            (None, None) => Ok(Credentials::None),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OnlineError {
    #[error("broker user {0}: set the password in ${PASSWORD_ENV}")]
    Password(String),
    #[error("episode id `{0}` is not <device>/<policy>/<number>")]
    EpisodeId(String),
    #[error("broker {url}: {message}")]
    Connect { url: String, message: String },
    #[error("broker {url}: JetStream: {message}")]
    JetStream { url: String, message: String },
    #[error("spool {path}: {message}")]
    Spool { path: PathBuf, message: String },
    #[error(
        "the broker's max_payload of {0} bytes leaves no room for episode data \
         ({CHUNK_HEADER_MARGIN} bytes of each message are kept for headers)"
    )]
    MaxPayload(usize),
    #[error("cannot start the {what} thread: {message}")]
    Thread { what: &'static str, message: String },
}

impl Broker {
    /// Connects (one attempt, `timeout` at most).
    pub async fn connect(&self, timeout: Duration) -> Result<async_nats::Client, OnlineError> {
        let fail = |message: String| OnlineError::Connect {
            url: self.url.clone(),
            message,
        };
        let options = match &self.credentials {
            Credentials::None => async_nats::ConnectOptions::new(),
            Credentials::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
            Credentials::File(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|e| fail(format!("credentials file {}: {e}", path.display())))?,
        };
        options
            .connection_timeout(timeout)
            .connect(self.url.as_str())
            .await
            .map_err(|e| fail(e.to_string()))
    }
}
