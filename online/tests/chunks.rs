//! Episodes larger than the broker's `max_payload`, against a real JetStream server whose
//! limit is a few kB: they go as chunks and arrive whole and byte-identical without holding
//! up the episodes behind them, a device stopped or killed between chunks sends the episode
//! again and it is stored once, and chunk sets that do not add up are rejected and counted.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dreamer_episode::Episode;
use dreamer_online::ingest::Ingest;
use dreamer_online::testing::{NatsServer, SPOOL_LAYOUT, stream_messages, with_jetstream};
use dreamer_online::upload::{UploadOptions, Uploader, episode_files, episode_messages};
use dreamer_online::{
    Broker, CHUNK_COUNT_HEADER, CHUNK_EPISODE_HEADER, CHUNK_HEADER_MARGIN, CHUNK_INDEX_HEADER,
    CHUNK_SHA256_HEADER, EPISODE_STREAM, EpisodeId, episode_subject,
};

/// Episode data per chunk under the test broker's limit.
const CHUNK: usize = 4096;
const MAX_PAYLOAD: usize = CHUNK_HEADER_MARGIN + CHUNK;

/// Episode `number` of `device` (policy `p1`) in the spool, `steps` steps of noise (so the
/// file does not compress below the broker's limit); returns its file.
fn spool_noise_episode(spool: &Path, device: &str, number: usize, steps: usize) -> PathBuf {
    let dir = spool.join(device).join("p1");
    std::fs::create_dir_all(&dir).unwrap();
    let mut state = number as u64 * 7919 + 1;
    let mut noise = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    let mut episode = Episode::default();
    for _ in 0..steps {
        let observation = [noise(), noise(), noise()];
        episode.push(&observation, &[], &[noise()], noise(), 1.0);
    }
    let file = dir.join(dreamer_episode::file_name(number, episode.len()));
    dreamer_episode::save(&file, &episode, SPOOL_LAYOUT).unwrap();
    file
}

fn id(device: &str, number: u64) -> EpisodeId {
    EpisodeId {
        device: device.to_string(),
        policy: "p1".to_string(),
        number,
    }
}

fn options(spool: &Path, broker: &Broker) -> UploadOptions {
    UploadOptions {
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        ..UploadOptions::new(spool.to_path_buf(), broker.clone())
    }
}

/// The bytes of the inbox's file of episode `id`.
fn inbox_bytes(inbox: &Path, id: &EpisodeId) -> Vec<u8> {
    let dir = inbox.join(&id.device).join(&id.policy);
    let files = dreamer_episode::list(&dir).unwrap();
    let file = files
        .iter()
        .find(|f| dreamer_episode::file_index(f) == Some(id.number as usize))
        .unwrap_or_else(|| panic!("episode {id} is not in the inbox: {files:?}"));
    std::fs::read(file).unwrap()
}

fn stream_len(broker: &Broker) -> u64 {
    with_jetstream(broker, async |js| {
        let stream = js.get_stream(EPISODE_STREAM).await.unwrap();
        stream.cached_info().state.messages
    })
}

/// Publishes messages on `device`'s subject, as a device does, each acknowledged.
fn publish(
    broker: &Broker,
    device: &str,
    messages: Vec<async_nats::jetstream::message::PublishMessage>,
) {
    with_jetstream(broker, async |js| {
        for message in messages {
            js.send_publish(episode_subject(device), message)
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

/// A chunk message as a broken or hostile sender may make it.
fn raw_chunk(
    id: &str,
    index: u32,
    count: u32,
    sha256: &str,
    payload: &[u8],
) -> async_nats::jetstream::message::PublishMessage {
    async_nats::jetstream::message::PublishMessage::build()
        .payload(payload.to_vec().into())
        .message_id(format!("{id}#{index}/{count}"))
        .header(CHUNK_EPISODE_HEADER, id)
        .header(CHUNK_INDEX_HEADER, index.to_string())
        .header(CHUNK_COUNT_HEADER, count.to_string())
        .header(CHUNK_SHA256_HEADER, sha256)
}

/// The staged chunks of the inbox (under its staging folder, whatever its name).
fn staged_files(inbox: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("-of-"))
            {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(inbox, &mut out);
    out
}

#[test]
fn a_large_episode_goes_in_chunks_arrives_whole_and_does_not_block_the_next() {
    let tmp = tempfile::tempdir().unwrap();
    let server = NatsServer::start_with_max_payload(&tmp.path().join("broker"), MAX_PAYLOAD);
    let broker = server.broker();
    let spool = tmp.path().join("spool");
    let inbox = tmp.path().join("inbox");
    let large = spool_noise_episode(&spool, "robot-a", 0, 2000);
    let small = spool_noise_episode(&spool, "robot-a", 1, 5);
    let large_bytes = std::fs::read(&large).unwrap();
    let small_bytes = std::fs::read(&small).unwrap();
    let large_episode = dreamer_episode::load(&large, SPOOL_LAYOUT).unwrap();
    let chunks = large_bytes.len().div_ceil(CHUNK);
    assert!(chunks >= 4, "{} bytes", large_bytes.len());
    assert!(small_bytes.len() + CHUNK_HEADER_MARGIN <= MAX_PAYLOAD);

    let report = Uploader::start(options(&spool, &broker))
        .unwrap()
        .drain(&spool, Duration::from_secs(20));
    assert_eq!(
        report.uploaded,
        [id("robot-a", 0), id("robot-a", 1)],
        "{report:?}"
    );
    assert_eq!(
        (report.failures, report.left_in_spool),
        (0, 0),
        "{report:?}"
    );

    // The large one as chunks, each with its own id; the small one exactly as before: one
    // message with the episode's id and policy, no chunk headers.
    let messages = stream_messages(&broker);
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    let mut expected: Vec<String> = (0..chunks)
        .map(|i| format!("robot-a/p1/0#{i}/{chunks}"))
        .collect();
    expected.push("robot-a/p1/1".to_string());
    assert_eq!(ids, expected);
    assert_eq!(
        messages[0].header_names,
        [
            CHUNK_COUNT_HEADER,
            CHUNK_EPISODE_HEADER,
            CHUNK_INDEX_HEADER,
            CHUNK_SHA256_HEADER,
            "Dreamer-Policy",
            "Nats-Msg-Id"
        ]
    );
    assert_eq!(
        messages[chunks].header_names,
        ["Dreamer-Policy", "Nats-Msg-Id"]
    );

    let mut ingest = Ingest::connect(&broker, "learner", &inbox, SPOOL_LAYOUT).unwrap();
    let taken = ingest.poll(1000, Duration::from_millis(500)).unwrap();
    assert_eq!(
        taken.accepted,
        [id("robot-a", 0), id("robot-a", 1)],
        "{taken:?}"
    );
    assert!(
        taken.duplicates.is_empty() && taken.rejected.is_empty(),
        "{taken:?}"
    );
    assert_eq!(inbox_bytes(&inbox, &id("robot-a", 0)), large_bytes);
    assert_eq!(inbox_bytes(&inbox, &id("robot-a", 1)), small_bytes);
    assert!(staged_files(&inbox).is_empty());
    let pending = ingest.pending(&Default::default()).unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].1.reward, large_episode.reward);
}

#[test]
fn a_device_stopped_or_killed_between_chunks_sends_again_and_the_episode_arrives_once() {
    let tmp = tempfile::tempdir().unwrap();
    let server = NatsServer::start_with_max_payload(&tmp.path().join("broker"), MAX_PAYLOAD);
    let broker = server.broker();
    let spool = tmp.path().join("spool");
    let inbox = tmp.path().join("inbox");
    let mut ingest = Ingest::connect(&broker, "learner", &inbox, SPOOL_LAYOUT).unwrap();

    // Killed: the device sent two chunks of episode 0, each acknowledged, and died; its file
    // is still in the spool.
    let file = spool_noise_episode(&spool, "robot-a", 0, 1000);
    let bytes = std::fs::read(&file).unwrap();
    let messages = episode_messages(&id("robot-a", 0), &bytes, MAX_PAYLOAD).unwrap();
    let count = messages.len();
    publish(&broker, "robot-a", messages.into_iter().take(2).collect());
    // The learner keeps them aside, and nothing of them is an episode yet.
    let partial = ingest.poll(1000, Duration::from_millis(300)).unwrap();
    assert_eq!(partial, Default::default());
    assert_eq!(staged_files(&inbox).len(), 2);
    assert!(ingest.pending(&Default::default()).unwrap().is_empty());

    // Stopped: episode 1 of many chunks, the uploader asked to stop while it sends them; it
    // stops after the chunk in flight and keeps the file unless the last one was acknowledged.
    std::fs::remove_file(&file).unwrap();
    let second = spool_noise_episode(&spool, "robot-a", 1, 20_000);
    let second_count = std::fs::metadata(&second)
        .unwrap()
        .len()
        .div_ceil(CHUNK as u64);
    let uploader = Uploader::start(options(&spool, &broker)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stream_len(&broker) < 3 {
        assert!(Instant::now() < deadline, "no chunk of episode 1 was sent");
        std::thread::sleep(Duration::from_millis(2));
    }
    let report = uploader.stop();
    let sent = stream_len(&broker) - 2;
    if second.exists() {
        assert!(report.uploaded.is_empty(), "{report:?}");
        assert!(sent < second_count, "{sent} of {second_count}");
    } else {
        assert_eq!(report.uploaded, [id("robot-a", 1)], "{report:?}");
    }

    // Both restart with the file of episode 0 back: every episode arrives, once.
    std::fs::write(&file, &bytes).unwrap();
    let report = Uploader::start(options(&spool, &broker))
        .unwrap()
        .drain(&spool, Duration::from_secs(20));
    assert_eq!(report.left_in_spool, 0, "{report:?}");
    assert!(episode_files(&spool).is_empty());
    let mut taken = ingest.poll(1000, Duration::from_millis(500)).unwrap();
    // Episode 1 first when the stop came after its last chunk.
    taken.accepted.sort();
    assert_eq!(
        taken.accepted,
        [id("robot-a", 0), id("robot-a", 1)],
        "{taken:?}"
    );
    assert!(
        taken.rejected.is_empty() && taken.duplicates.is_empty(),
        "{taken:?}"
    );
    assert_eq!(inbox_bytes(&inbox, &id("robot-a", 0)), bytes);
    assert!(staged_files(&inbox).is_empty());
    // The chunks sent twice were dropped by the broker: the stream holds each once.
    let episode_1_chunks = stream_messages(&broker)
        .iter()
        .filter(|m| m.id.starts_with("robot-a/p1/1#"))
        .count();
    assert_eq!(stream_len(&broker), (count + episode_1_chunks) as u64);

    // Everything delivered again (a learner that lost its position): each episode is a
    // duplicate, counted once, and nothing is staged again.
    let mut again = Ingest::connect(&broker, "learner-again", &inbox, SPOOL_LAYOUT).unwrap();
    let mut replayed = again.poll(1000, Duration::from_millis(500)).unwrap();
    replayed.duplicates.sort();
    assert_eq!(
        replayed.duplicates,
        [id("robot-a", 0), id("robot-a", 1)],
        "{replayed:?}"
    );
    assert!(replayed.accepted.is_empty() && replayed.rejected.is_empty());
    assert!(staged_files(&inbox).is_empty());
    assert_eq!(again.pending(&Default::default()).unwrap().len(), 2);
}

#[test]
fn chunk_sets_that_do_not_add_up_are_rejected_counted_and_not_stored() {
    let tmp = tempfile::tempdir().unwrap();
    let server = NatsServer::start_with_max_payload(&tmp.path().join("broker"), MAX_PAYLOAD);
    let broker = server.broker();
    let spool = tmp.path().join("spool");
    let inbox = tmp.path().join("inbox");
    let mut ingest = Ingest::connect(&broker, "learner", &inbox, SPOOL_LAYOUT).unwrap();
    let bytes = std::fs::read(spool_noise_episode(&spool, "robot-a", 0, 600)).unwrap();
    let sha256 = dreamer_bundle::sha256_hex(&bytes);
    let parts: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
    let n = parts.len() as u32;
    assert!(n >= 3);
    let mut messages = Vec::new();

    // Episode 5: a chunk changed on the way; its sha256 does not match once put together.
    for (i, part) in parts.iter().enumerate() {
        let mut part = part.to_vec();
        if i == 1 {
            part[7] ^= 0xff;
        }
        messages.push(raw_chunk("robot-a/p1/5", i as u32, n, &sha256, &part));
    }
    // Episode 6: the second chunk says there is one more chunk than the first said; the
    // chunks after it are dropped with the episode, not counted again.
    for (i, part) in parts.iter().enumerate() {
        let count = if i == 1 { n + 1 } else { n };
        messages.push(raw_chunk("robot-a/p1/6", i as u32, count, &sha256, part));
    }
    // Episode 7: a chunk index out of range.
    messages.push(raw_chunk("robot-a/p1/7", 0, n, &sha256, parts[0]));
    messages.push(raw_chunk("robot-a/p1/7", n, n, &sha256, parts[0]));
    // Episode 8: chunks that add up, to a file that is not an episode (cut short): checked as
    // a one-message episode is.
    let cut = &bytes[..bytes.len() - 100];
    messages.extend(episode_messages(&id("robot-a", 8), cut, MAX_PAYLOAD).unwrap());
    // Episode 9: a sha256 that is not one.
    messages.push(raw_chunk("robot-a/p1/9", 0, n, "not-a-sha", parts[0]));
    publish(&broker, "robot-a", messages);

    let report = ingest.poll(1000, Duration::from_millis(500)).unwrap();
    assert!(
        report.accepted.is_empty() && report.duplicates.is_empty(),
        "{report:?}"
    );
    let rejected: Vec<&str> = report.rejected.iter().map(|(id, _)| id.as_str()).collect();
    let last = n - 1;
    let cut_chunks = cut.len().div_ceil(CHUNK);
    assert_eq!(
        rejected,
        [
            format!("robot-a/p1/5#{last}/{n}"),
            format!("robot-a/p1/6#1/{}", n + 1),
            format!("robot-a/p1/7#{n}/{n}"),
            format!("robot-a/p1/8#{}/{cut_chunks}", cut_chunks - 1),
            format!("robot-a/p1/9#0/{n}"),
        ],
        "{report:?}"
    );
    let whys: Vec<&str> = report
        .rejected
        .iter()
        .map(|(_, why)| why.as_str())
        .collect();
    for (why, (number, word)) in whys.iter().zip([
        (5, "sha256"),
        (6, "chunks"),
        (7, "out of range"),
        (8, ""),
        (9, "sha256"),
    ]) {
        assert!(
            why.contains(&format!("episode robot-a/p1/{number}")) && why.contains(word),
            "{why}"
        );
    }

    // Nothing stored, nothing left staged, nothing delivered again.
    assert!(ingest.pending(&Default::default()).unwrap().is_empty());
    assert!(staged_files(&inbox).is_empty());
    assert_eq!(
        ingest.poll(1000, Duration::from_millis(300)).unwrap(),
        Default::default()
    );
}
