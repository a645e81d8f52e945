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

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::AckKind;
use async_nats::jetstream::consumer::PullConsumer;
use dreamer_episode::{Episode, Layout};
use futures::StreamExt;

use crate::{Broker, EpisodeId, MESSAGE_ID_HEADER, OnlineError};

/// The marker a taken episode leaves in the inbox.
const TAKEN_SUFFIX: &str = "taken";

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
                let sent_id = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(MESSAGE_ID_HEADER))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                let outcome = store(inbox, *layout, &sent_id, &message.payload);
                let ack = match &outcome {
                    Stored::Rejected(_) => AckKind::Term,
                    Stored::New(_) | Stored::Duplicate(_) => AckKind::Ack,
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
}

/// Checks and stores one message's episode.
fn store(inbox: &Path, layout: Layout, sent_id: &str, payload: &[u8]) -> Stored {
    let id = match sent_id.parse::<EpisodeId>() {
        Ok(id) => id,
        Err(e) => return Stored::Rejected(e.to_string()),
    };
    let dir = inbox.join(&id.device).join(&id.policy);
    if marker_path(inbox, &id).exists() || stored_file(&dir, id.number).is_some() {
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
