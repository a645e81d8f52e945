//! The device's uploader: moves the episode files of a local spool
//! (`<spool>/<device>/<policy>/ep<number>-<len>.npz`, written by the runtime's recorder)
//! into the episode stream, one message per episode with its id as the message id, and
//! deletes a file only once JetStream acknowledged it (a duplicate acknowledged as such
//! counts: the broker already holds it). A file too large for one message (the server's
//! `max_payload`) goes as chunks ([`episode_messages`]) and is deleted once the last one is
//! acknowledged. Until then the file stays: across a broken link, a broker restart or a
//! device restart, upload is retried with growing pauses, and nothing is lost or sent twice
//! into the stream within its duplicate window.
//!
//! It runs on its own thread (with a single-threaded async runtime for the NATS client), so
//! the control loop never waits on the network.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;

use crate::{
    Broker, CHUNK_COUNT_HEADER, CHUNK_EPISODE_HEADER, CHUNK_HEADER_MARGIN, CHUNK_INDEX_HEADER,
    CHUNK_SHA256_HEADER, EpisodeId, OnlineError, POLICY_HEADER, chunk_message_id, episode_subject,
    plain_name,
};

/// How the uploader behaves.
#[derive(Debug, Clone)]
pub struct UploadOptions {
    pub spool: PathBuf,
    pub broker: Broker,
    /// How often an empty spool is looked at again.
    pub poll: Duration,
    /// Pause after the first failure; doubled after each further one, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// Longest wait for a connection or an acknowledgement.
    pub timeout: Duration,
}

impl UploadOptions {
    pub fn new(spool: PathBuf, broker: Broker) -> UploadOptions {
        UploadOptions {
            spool,
            broker,
            poll: Duration::from_millis(100),
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(5),
        }
    }
}

/// What the uploader did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadReport {
    /// Episodes the stream stored, in order.
    pub uploaded: Vec<EpisodeId>,
    /// Episodes the stream already held (acknowledged as duplicates), deleted from the spool.
    pub duplicates: Vec<EpisodeId>,
    /// Failed attempts (each retried).
    pub failures: u64,
    /// The last failure, if any.
    pub last_error: Option<String>,
    /// Episode files still in the spool when the uploader stopped.
    pub left_in_spool: usize,
}

/// Counters the uploader's owner can read while it runs.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    uploaded: AtomicU64,
    failures: AtomicU64,
}

/// A running uploader.
pub struct Uploader {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<UploadReport>>,
}

impl Uploader {
    /// Starts uploading what is in the spool and what arrives there.
    pub fn start(options: UploadOptions) -> Result<Uploader, OnlineError> {
        std::fs::create_dir_all(&options.spool).map_err(|e| OnlineError::Spool {
            path: options.spool.clone(),
            message: e.to_string(),
        })?;
        let shared = Arc::new(Shared::default());
        let inside = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("episode-upload".to_string())
            .spawn(move || run(options, &inside))
            .map_err(|e| OnlineError::Thread {
                what: "upload",
                message: e.to_string(),
            })?;
        Ok(Uploader {
            shared,
            thread: Some(thread),
        })
    }

    /// Episodes uploaded so far.
    pub fn uploaded(&self) -> u64 {
        self.shared.uploaded.load(Ordering::Relaxed)
    }

    /// Failed attempts so far.
    pub fn failures(&self) -> u64 {
        self.shared.failures.load(Ordering::Relaxed)
    }

    /// Keeps uploading until the spool is empty or `timeout` passed, then stops.
    pub fn drain(self, spool: &Path, timeout: Duration) -> UploadReport {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline && !episode_files(spool).is_empty() {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop()
    }

    /// Stops after the message in flight (if any, a chunk of a large episode included) and
    /// returns the report; what was not acknowledged stays in the spool for the next start,
    /// which sends a partly sent episode again whole (the broker drops the chunks it holds).
    pub fn stop(mut self) -> UploadReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Uploader {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The episode files of a spool with their ids, oldest number first per device and policy.
pub fn episode_files(spool: &Path) -> Vec<(EpisodeId, PathBuf)> {
    let dirs = |dir: &Path| -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    };
    let mut files = Vec::new();
    // Only folders an id can name: a learner's inbox keeps its chunk staging beside the
    // devices' folders under a name no device can have.
    let named = |dir: &Path| {
        dirs(dir)
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(plain_name)
            })
            .collect::<Vec<_>>()
    };
    for device_dir in named(spool) {
        for policy_dir in named(&device_dir) {
            let name = |p: &Path| {
                p.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let listed = dreamer_episode::list(&policy_dir).unwrap_or_default();
            for file in listed.into_iter().filter(|p| p.is_file()) {
                if let Some(number) = dreamer_episode::file_index(&file) {
                    let id = EpisodeId {
                        device: name(&device_dir),
                        policy: name(&policy_dir),
                        number: number as u64,
                    };
                    files.push((id, file));
                }
            }
        }
    }
    files.sort();
    files
}

fn run(options: UploadOptions, shared: &Shared) -> UploadReport {
    let mut report = UploadReport::default();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            report.last_error = Some(format!("cannot start the async runtime: {e}"));
            return report;
        }
    };
    runtime.block_on(upload_loop(&options, shared, &mut report));
    report.left_in_spool = episode_files(&options.spool).len();
    report
}

async fn upload_loop(options: &UploadOptions, shared: &Shared, report: &mut UploadReport) {
    let mut jetstream: Option<async_nats::jetstream::Context> = None;
    let mut backoff = options.backoff;
    while !shared.stop.load(Ordering::Relaxed) {
        let files = episode_files(&options.spool);
        if files.is_empty() {
            tokio::time::sleep(options.poll).await;
            continue;
        }
        let attempt = async {
            let js = match &jetstream {
                Some(js) => js.clone(),
                None => {
                    let client = options.broker.connect(options.timeout).await?;
                    let js = async_nats::jetstream::new(client);
                    js.get_or_create_stream(crate::episode_stream_config())
                        .await
                        .map_err(|e| jetstream_error(options, e))?;
                    jetstream = Some(js.clone());
                    js
                }
            };
            for (id, file) in files {
                if shared.stop.load(Ordering::Relaxed) {
                    break;
                }
                let Sent::Acknowledged { duplicate } =
                    publish(&js, options, shared, &id, &file).await?
                else {
                    break;
                };
                std::fs::remove_file(&file).map_err(|e| OnlineError::Spool {
                    path: file.clone(),
                    message: e.to_string(),
                })?;
                if duplicate {
                    report.duplicates.push(id);
                } else {
                    report.uploaded.push(id);
                    shared.uploaded.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok::<(), OnlineError>(())
        };
        match attempt.await {
            Ok(()) => backoff = options.backoff,
            Err(e) => {
                report.failures += 1;
                shared.failures.fetch_add(1, Ordering::Relaxed);
                report.last_error = Some(e.to_string());
                // A fresh connection next time: the broker may have restarted.
                jetstream = None;
                sleep_unless_stopped(backoff, shared).await;
                backoff = (backoff * 2).min(options.max_backoff);
            }
        }
    }
}

/// How far [`publish`] got.
enum Sent {
    /// Every message of the episode acknowledged; `duplicate` when the stream already held
    /// all of them.
    Acknowledged { duplicate: bool },
    /// Asked to stop between two chunks: the file stays for the next start.
    Stopped,
}

/// Publishes one episode file, as one message or as chunks, waiting for each
/// acknowledgement before the next.
async fn publish(
    js: &async_nats::jetstream::Context,
    options: &UploadOptions,
    shared: &Shared,
    id: &EpisodeId,
    file: &Path,
) -> Result<Sent, OnlineError> {
    let bytes = std::fs::read(file).map_err(|e| OnlineError::Spool {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    // Read for every file: a client that reconnected may be talking to a reconfigured server.
    let max_payload = js.client().server_info().max_payload;
    let messages = episode_messages(id, &bytes, max_payload)?;
    let count = messages.len();
    let mut duplicate = true;
    for (index, message) in messages.into_iter().enumerate() {
        if index > 0 && shared.stop.load(Ordering::Relaxed) {
            return Ok(Sent::Stopped);
        }
        let what = if count == 1 {
            format!("episode {id}")
        } else {
            format!("chunk {index} of {count} of episode {id}")
        };
        let ack = js
            .send_publish(episode_subject(&id.device), message)
            .await
            .map_err(|e| jetstream_error(options, e))?;
        let ack = tokio::time::timeout(options.timeout, ack)
            .await
            .map_err(|_| OnlineError::JetStream {
                url: options.broker.url.clone(),
                message: format!("no acknowledgement for {what} within {:?}", options.timeout),
            })?
            .map_err(|e| jetstream_error(options, e))?;
        duplicate &= ack.duplicate;
    }
    Ok(Sent::Acknowledged { duplicate })
}

/// The messages an episode file goes as: itself, as one message, when it fits in
/// `max_payload` (the server's) with [`CHUNK_HEADER_MARGIN`] to spare, otherwise chunks of at
/// most `max_payload - CHUNK_HEADER_MARGIN` bytes, in order, each with its own message id
/// ([`chunk_message_id`]) and the chunk headers (`CHUNK_*_HEADER`), which a learner's
/// [`crate::ingest::Ingest`] puts back together.
pub fn episode_messages(
    id: &EpisodeId,
    bytes: &[u8],
    max_payload: usize,
) -> Result<Vec<PublishMessage>, OnlineError> {
    let room = max_payload
        .checked_sub(CHUNK_HEADER_MARGIN)
        .filter(|&room| room > 0)
        .ok_or(OnlineError::MaxPayload(max_payload))?;
    if bytes.len() <= room {
        return Ok(vec![
            PublishMessage::build()
                .payload(bytes.to_vec().into())
                .message_id(id.to_string())
                .header(POLICY_HEADER, id.policy.as_str()),
        ]);
    }
    let count = bytes.len().div_ceil(room);
    let count = u32::try_from(count).map_err(|_| OnlineError::MaxPayload(max_payload))?;
    let sha256 = dreamer_bundle::sha256_hex(bytes);
    let episode = id.to_string();
    Ok(bytes
        .chunks(room)
        .zip(0..count)
        .map(|(chunk, index)| {
            PublishMessage::build()
                .payload(chunk.to_vec().into())
                .message_id(chunk_message_id(id, index, count))
                .header(POLICY_HEADER, id.policy.as_str())
                .header(CHUNK_EPISODE_HEADER, episode.as_str())
                .header(CHUNK_INDEX_HEADER, index.to_string())
                .header(CHUNK_COUNT_HEADER, count.to_string())
                .header(CHUNK_SHA256_HEADER, sha256.as_str())
        })
        .collect())
}

fn jetstream_error(options: &UploadOptions, e: impl std::fmt::Display) -> OnlineError {
    OnlineError::JetStream {
        url: options.broker.url.clone(),
        message: e.to_string(),
    }
}

async fn sleep_unless_stopped(pause: Duration, shared: &Shared) {
    let deadline = Instant::now() + pause;
    while Instant::now() < deadline && !shared.stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_goes_whole_while_it_fits_with_the_margin_and_in_chunks_beyond() {
        let id: EpisodeId = "robot-1/ab12/7".parse().unwrap();
        let max_payload = CHUNK_HEADER_MARGIN + 1000;
        let count = |len: usize| {
            episode_messages(&id, &vec![7; len], max_payload)
                .unwrap()
                .len()
        };
        assert_eq!((count(0), count(1000)), (1, 1));
        assert_eq!((count(1001), count(2000), count(2001)), (2, 2, 3));
        assert!(matches!(
            episode_messages(&id, b"x", CHUNK_HEADER_MARGIN),
            Err(OnlineError::MaxPayload(_))
        ));
    }
}
