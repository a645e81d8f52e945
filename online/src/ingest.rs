//! The learner's side of the episode stream: a durable consumer that takes episode messages,
//! checks each one, and keeps the good ones in an inbox folder laid out like a device's
//! spool (`<inbox>/<device>/<policy>/ep<number>-<len>.npz`), acknowledging a message only
//! once its file is durably written. Whoever trains reads the files from there
//! ([`Ingest::pending`]) and, once they are safe in its checkpointed replay, confirms them
//! ([`Ingest::confirm`]), which leaves a marker behind, so an episode delivered again later
//! (a redelivery after a learner crash, a device that sent it twice) is recognised by its id
//! and stored once.
//!
//! A message that is not a valid episode of the learner's layout, or whose id is malformed,
//! is rejected, counted, and acknowledged as terminal so the broker does not send it again.
//!
//! An episode sent as chunks (too large for one message: [`crate::upload::episode_messages`])
//! is put back together in a staging folder, `<inbox>/.parts#/<device>/<policy>/ep<number>/`,
//! one file per chunk (`<index>-of-<count>`, each written kill-safe before its message is
//! acknowledged). Its name cannot be a device's (`#` is not allowed in ids), so neither
//! [`Ingest::pending`] nor a trainer walking the inbox takes it for episodes. Once every
//! chunk is there, the file is put together, checked against the chunks' sha256, and then
//! goes the way a one-message episode goes; the staging folder is removed.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use dreamer_episode::{Episode, Layout};
use futures::StreamExt;

use crate::{
    Broker, CHUNK_COUNT_HEADER, CHUNK_EPISODE_HEADER, CHUNK_INDEX_HEADER, CHUNK_SHA256_HEADER,
    EpisodeId, MESSAGE_ID_HEADER, OnlineError, chunk_message_id,
};

/// The marker a taken episode leaves in the inbox.
const TAKEN_SUFFIX: &str = "taken";
/// The inbox's folder for chunks of episodes not yet complete.
const STAGING_DIR: &str = ".parts#";
/// The file in an episode's staging folder holding the sha256 its first chunk announced.
const STAGED_SHA256: &str = "sha256";
/// The largest episode put together from chunks: the whole file is held in memory to be
/// checked, so a broken or hostile sender must not make it arbitrarily large.
const MAX_CHUNKED_EPISODE_BYTES: u64 = 1 << 30;

/// What one [`Ingest::poll`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestReport {
    /// Episodes stored in the inbox.
    pub accepted: Vec<EpisodeId>,
    /// Episodes already stored or taken before (stored once).
    pub duplicates: Vec<EpisodeId>,
    /// Messages that are not valid episodes: (message id as sent, why).
    pub rejected: Vec<(String, String)>,
}

/// A connected learner-side consumer.
pub struct Ingest {
    runtime: tokio::runtime::Runtime,
    consumer: PullConsumer,
    url: String,
    inbox: PathBuf,
    layout: Layout,
}

impl Ingest {
    /// Connects, creates the episode stream if it is missing, and binds the durable consumer
    /// `name` (created on first use; a restarted learner resumes where it acknowledged).
    pub fn connect(
        broker: &Broker,
        name: &str,
        inbox: &Path,
        layout: Layout,
    ) -> Result<Ingest, OnlineError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| OnlineError::Thread {
                what: "ingest",
                message: e.to_string(),
            })?;
        let js_error = |e: &dyn std::fmt::Display| OnlineError::JetStream {
            url: broker.url.clone(),
            message: e.to_string(),
        };
        let consumer = runtime.block_on(async {
            let client = broker.connect(Duration::from_secs(5)).await?;
            let js = async_nats::jetstream::new(client);
            let stream = js
                .get_or_create_stream(crate::episode_stream_config())
                .await
                .map_err(|e| js_error(&e))?;
            let config = async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(name.to_string()),
                ack_wait: Duration::from_secs(30),
                ..Default::default()
            };
            stream
                .get_or_create_consumer(name, config)
                .await
                .map_err(|e| js_error(&e))
        })?;
        // Created once the broker accepted the learner: a refused one leaves nothing behind.
        std::fs::create_dir_all(inbox).map_err(|e| OnlineError::Spool {
            path: inbox.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Ingest {
            runtime,
            consumer,
            url: broker.url.clone(),
            inbox: inbox.to_path_buf(),
            layout,
        })
    }

    /// Takes up to `max` messages, waiting at most `wait` for them.
    pub fn poll(&mut self, max: usize, wait: Duration) -> Result<IngestReport, OnlineError> {
        let mut report = IngestReport::default();
        let Ingest {
            runtime,
            consumer,
            url,
            inbox,
            layout,
        } = self;
        let js_error = |e: &dyn std::fmt::Display| OnlineError::JetStream {
            url: url.clone(),
            message: e.to_string(),
        };
        runtime.block_on(async {
            let mut batch = consumer
                .fetch()
                .max_messages(max)
                .expires(wait)
                .messages()
                .await
                .map_err(|e| js_error(&e))?;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| js_error(&e))?;
                let header = |name: &str| {
                    message
                        .headers
                        .as_ref()
                        .and_then(|h| h.get(name))
                        .map(|v| v.to_string())
                };
                let sent_id = header(MESSAGE_ID_HEADER).unwrap_or_default();
                let chunk = ChunkHeaders {
                    episode: header(CHUNK_EPISODE_HEADER),
                    index: header(CHUNK_INDEX_HEADER),
                    count: header(CHUNK_COUNT_HEADER),
                    sha256: header(CHUNK_SHA256_HEADER),
                };
                let outcome = if chunk.is_chunk() {
                    store_chunk(inbox, *layout, &sent_id, &chunk, &message.payload)
                } else {
                    store(inbox, *layout, &sent_id, &message.payload)
                };
                let ack = match &outcome {
                    Stored::Rejected(_) | Stored::Dropped => AckKind::Term,
                    Stored::New(_) | Stored::Duplicate(_) | Stored::Chunk => AckKind::Ack,
                };
                // The file is on disk before the broker forgets the message.
                message
                    .double_ack_with(ack)
                    .await
                    .map_err(|e| js_error(&e))?;
                match outcome {
                    Stored::New(id) => report.accepted.push(id),
                    Stored::Duplicate(id) => report.duplicates.push(id),
                    Stored::Rejected(why) => report.rejected.push((sent_id, why)),
                    Stored::Chunk | Stored::Dropped => {}
                }
            }
            Ok::<(), OnlineError>(())
        })?;
        Ok(report)
    }

    /// The episodes waiting in the inbox, oldest number first per device and policy. They
    /// stay there until [`Ingest::confirm`]: a learner adds them to its replay, saves the
    /// checkpoint that counts them, then confirms, so a learner killed in between finds them
    /// again (and its replay, reopened at the checkpoint, does not hold them twice).
    /// Episodes in `known` (already handed over, not yet confirmed) are not read again.
    pub fn pending(
        &self,
        known: &BTreeSet<EpisodeId>,
    ) -> Result<Vec<(EpisodeId, Episode)>, OnlineError> {
        crate::upload::episode_files(&self.inbox)
            .into_iter()
            .filter(|(id, _)| !known.contains(id))
            .map(|(id, file)| {
                dreamer_episode::load(&file, self.layout)
                    .map(|episode| (id, episode))
                    .map_err(|e| OnlineError::Spool {
                        path: file.clone(),
                        message: e.to_string(),
                    })
            })
            .collect()
    }

    /// Marks episodes as in the learner's keeping: each inbox file is replaced by a marker
    /// (written first, kill-safe), so the id stays known and a later delivery of it is a
    /// duplicate.
    pub fn confirm(&self, ids: &[EpisodeId]) -> Result<(), OnlineError> {
        let spool_err = |path: &Path, e: &dyn std::fmt::Display| OnlineError::Spool {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        for id in ids {
            let marker = marker_path(&self.inbox, id);
            dreamer_persist::write_file(&marker, b"").map_err(|e| spool_err(&marker, &e))?;
            let dir = self.inbox.join(&id.device).join(&id.policy);
            if let Some(file) = stored_file(&dir, id.number) {
                std::fs::remove_file(&file).map_err(|e| spool_err(&file, &e))?;
            }
        }
        Ok(())
    }
}

/// What became of one message.
enum Stored {
    New(EpisodeId),
    Duplicate(EpisodeId),
    Rejected(String),
    /// A chunk kept until its episode is complete, or one of an episode already stored that
    /// is not counted as a duplicate (see [`store_chunk`]).
    Chunk,
    /// A chunk of an episode already rejected: that was counted once, at the chunk that
    /// showed the fault.
    Dropped,
}

/// Checks and stores one message's episode.
fn store(inbox: &Path, layout: Layout, sent_id: &str, payload: &[u8]) -> Stored {
    match sent_id.parse::<EpisodeId>() {
        Ok(id) => store_episode(inbox, layout, id, payload),
        Err(e) => Stored::Rejected(e.to_string()),
    }
}

/// Checks and stores a whole episode file, from one message or put together from chunks.
fn store_episode(inbox: &Path, layout: Layout, id: EpisodeId, payload: &[u8]) -> Stored {
    let dir = inbox.join(&id.device).join(&id.policy);
    if known(inbox, &id) {
        return Stored::Duplicate(id);
    }
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return Stored::Rejected(format!("cannot create {}: {e}", dir.display()));
    }
    // Checked as the trainer will read it: from a file, against the learner's layout.
    let incoming = dir.join(".incoming.npz");
    let checked = std::fs::write(&incoming, payload)
        .map_err(|e| e.to_string())
        .and_then(|()| dreamer_episode::load(&incoming, layout).map_err(|e| e.to_string()));
    let _ = std::fs::remove_file(&incoming);
    let episode = match checked {
        Ok(episode) => episode,
        Err(why) => return Stored::Rejected(why),
    };
    let file = dir.join(dreamer_episode::file_name(
        id.number as usize,
        episode.len(),
    ));
    match dreamer_persist::write_file(&file, payload) {
        Ok(()) => Stored::New(id),
        Err(e) => Stored::Rejected(format!("cannot store {}: {e}", file.display())),
    }
}

/// The chunk headers of a message, as sent.
struct ChunkHeaders {
    episode: Option<String>,
    index: Option<String>,
    count: Option<String>,
    sha256: Option<String>,
}

impl ChunkHeaders {
    fn is_chunk(&self) -> bool {
        self.episode.is_some()
            || self.index.is_some()
            || self.count.is_some()
            || self.sha256.is_some()
    }
}

/// Keeps one chunk of an episode, and stores the episode once every chunk is there.
///
/// A chunk of an episode already stored or taken is a duplicate, counted once per episode:
/// at its last chunk, which every full redelivery holds and which is the one that completed
/// it when the learner stopped between storing and acknowledging. Headers that disagree
/// with each other or with earlier chunks (or the whole file's sha256) reject the episode:
/// a marker keeps its later chunks from being staged again.
fn store_chunk(
    inbox: &Path,
    layout: Layout,
    sent_id: &str,
    headers: &ChunkHeaders,
    payload: &[u8],
) -> Stored {
    let Some(episode) = &headers.episode else {
        return Stored::Rejected(format!(
            "chunk message `{sent_id}` without {CHUNK_EPISODE_HEADER}"
        ));
    };
    let id = match episode.parse::<EpisodeId>() {
        Ok(id) => id,
        Err(e) => return Stored::Rejected(e.to_string()),
    };
    let staging = staging_dir(inbox, &id);
    if rejected_marker(inbox, &id).exists() {
        // Left by a learner stopped between writing the marker and removing the folder.
        let _ = std::fs::remove_dir_all(&staging);
        return Stored::Dropped;
    }
    let (index, count, sha256) = match chunk_position(&id, sent_id, headers) {
        Ok(position) => position,
        Err(why) => return reject_episode(inbox, &id, why),
    };
    if known(inbox, &id) {
        let _ = std::fs::remove_dir_all(&staging);
        return if index + 1 == count {
            Stored::Duplicate(id)
        } else {
            Stored::Chunk
        };
    }
    match stage(&staging, &id, index, count, &sha256, payload) {
        Ok(false) => Stored::Chunk,
        Ok(true) => match assemble(&staging, &id, count, &sha256) {
            Err(why) => reject_episode(inbox, &id, why),
            Ok(bytes) => match store_episode(inbox, layout, id.clone(), &bytes) {
                Stored::Rejected(why) => reject_episode(inbox, &id, format!("episode {id}: {why}")),
                stored => {
                    // The episode is in the inbox before its chunks go: a learner stopped in
                    // between gets the last chunk again, sees a duplicate, and removes them.
                    let _ = std::fs::remove_dir_all(&staging);
                    stored
                }
            },
        },
        Err(why) => reject_episode(inbox, &id, why),
    }
}

/// The chunk's index, the chunk count and the whole file's sha256, checked against each
/// other and against the message id.
fn chunk_position(
    id: &EpisodeId,
    sent_id: &str,
    headers: &ChunkHeaders,
) -> Result<(u32, u32, String), String> {
    let number = |name: &str, value: &Option<String>| {
        value
            .as_deref()
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or_else(|| format!("episode {id}: chunk header {name} is missing or not a number"))
    };
    let index = number(CHUNK_INDEX_HEADER, &headers.index)?;
    let count = number(CHUNK_COUNT_HEADER, &headers.count)?;
    if index >= count {
        return Err(format!(
            "episode {id}: chunk index {index} is out of range for {count} chunks"
        ));
    }
    let sha256 = headers.sha256.clone().unwrap_or_default();
    if sha256.len() != 64
        || !sha256
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        return Err(format!(
            "episode {id}: chunk header {CHUNK_SHA256_HEADER} is `{sha256}`, not a sha256"
        ));
    }
    let expected = chunk_message_id(id, index, count);
    if sent_id != expected {
        return Err(format!(
            "episode {id}: message id `{sent_id}` is not its chunk headers' `{expected}`"
        ));
    }
    Ok((index, count, sha256))
}

/// Writes a chunk into the episode's staging folder, kill-safe, after checking it against
/// the chunks already there; returns whether every chunk is now there.
fn stage(
    staging: &Path,
    id: &EpisodeId,
    index: u32,
    count: u32,
    sha256: &str,
    payload: &[u8],
) -> Result<bool, String> {
    let io = |path: &Path, e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    std::fs::create_dir_all(staging).map_err(|e| io(staging, &e))?;
    let mut staged_bytes = payload.len() as u64;
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(staging).map_err(|e| io(staging, &e))? {
        let entry = entry.map_err(|e| io(staging, &e))?;
        let Some((other, other_count)) = entry.file_name().to_str().and_then(chunk_file) else {
            continue;
        };
        if other_count != count {
            return Err(format!(
                "episode {id}: chunk {index} says {count} chunks, an earlier one {other_count}"
            ));
        }
        if other != index {
            staged_bytes += entry.metadata().map_err(|e| io(&entry.path(), &e))?.len();
            present.insert(other);
        }
    }
    if staged_bytes > MAX_CHUNKED_EPISODE_BYTES {
        return Err(format!(
            "episode {id}: its chunks come to more than {MAX_CHUNKED_EPISODE_BYTES} bytes"
        ));
    }
    // The first chunk's sha256 is kept so every later one is held to it.
    let sha_file = staging.join(STAGED_SHA256);
    match std::fs::read_to_string(&sha_file) {
        Ok(first) if first != sha256 => {
            return Err(format!(
                "episode {id}: chunk {index} has sha256 {sha256}, an earlier one {first}"
            ));
        }
        Ok(_) => {}
        Err(_) => {
            dreamer_persist::write_file(&sha_file, sha256.as_bytes()).map_err(|e| e.to_string())?;
        }
    }
    let file = staging.join(format!("{index}-of-{count}"));
    dreamer_persist::write_file(&file, payload).map_err(|e| e.to_string())?;
    present.insert(index);
    Ok(present.len() == count as usize)
}

/// The episode file put together from its staged chunks, checked against their sha256.
fn assemble(staging: &Path, id: &EpisodeId, count: u32, sha256: &str) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    for index in 0..count {
        let file = staging.join(format!("{index}-of-{count}"));
        let chunk = std::fs::read(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        bytes.extend_from_slice(&chunk);
    }
    let actual = dreamer_bundle::sha256_hex(&bytes);
    if actual != sha256 {
        return Err(format!(
            "episode {id}: its {} bytes put together have sha256 {actual}, the chunks said {sha256}",
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Rejects a chunked episode: the marker (kill-safe, with the reason) first, so none of its
/// chunks is staged again, then its staging folder goes.
fn reject_episode(inbox: &Path, id: &EpisodeId, why: String) -> Stored {
    let marker = rejected_marker(inbox, id);
    let written = marker
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            dreamer_persist::write_file(&marker, why.as_bytes()).map_err(|e| e.to_string())
        });
    if written.is_ok() {
        let _ = std::fs::remove_dir_all(staging_dir(inbox, id));
    }
    Stored::Rejected(why)
}

/// `<index>-of-<count>`, the name of a staged chunk.
fn chunk_file(name: &str) -> Option<(u32, u32)> {
    let (index, count) = name.split_once("-of-")?;
    Some((index.parse().ok()?, count.parse().ok()?))
}

fn staging_dir(inbox: &Path, id: &EpisodeId) -> PathBuf {
    inbox
        .join(STAGING_DIR)
        .join(&id.device)
        .join(&id.policy)
        .join(format!("ep{:06}", id.number))
}

fn rejected_marker(inbox: &Path, id: &EpisodeId) -> PathBuf {
    inbox
        .join(STAGING_DIR)
        .join(&id.device)
        .join(&id.policy)
        .join(format!("ep{:06}.rejected", id.number))
}

/// Whether episode `id` is in the inbox or was taken from it.
fn known(inbox: &Path, id: &EpisodeId) -> bool {
    let dir = inbox.join(&id.device).join(&id.policy);
    marker_path(inbox, id).exists() || stored_file(&dir, id.number).is_some()
}

fn marker_path(inbox: &Path, id: &EpisodeId) -> PathBuf {
    inbox
        .join(&id.device)
        .join(&id.policy)
        .join(format!("ep{:06}.{TAKEN_SUFFIX}", id.number))
}

/// The stored file of episode `number` in `dir`, whatever its length.
fn stored_file(dir: &Path, number: u64) -> Option<PathBuf> {
    dreamer_episode::list(dir)
        .ok()?
        .into_iter()
        .find(|p| dreamer_episode::file_index(p) == Some(number as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_three_plain_parts() {
        let id: EpisodeId = "robot-1/ab12/7".parse().unwrap();
        assert_eq!(
            (id.device.as_str(), id.policy.as_str(), id.number),
            ("robot-1", "ab12", 7)
        );
        for bad in [
            "", "a/b", "a/b/c", "a/b/1/2", "../b/1", "a/../1", "a b/c/1", "a//1",
        ] {
            assert!(bad.parse::<EpisodeId>().is_err(), "{bad}");
        }
    }
}
