//! The learner's consumer against a real JetStream server: every uploaded episode stored
//! once, corrupted and malformed messages rejected and counted, a restarted learner going on
//! where it acknowledged, and the counts reconciled (produced = stored + still spooled).

use std::path::Path;
use std::time::Duration;

use dreamer_episode::Layout;
use dreamer_online::ingest::Ingest;
use dreamer_online::testing::{NatsServer, SPOOL_LAYOUT};
use dreamer_online::upload::{UploadOptions, Uploader, episode_files};
use dreamer_online::{Broker, episode_subject};

const LAYOUT: Layout = SPOOL_LAYOUT;

/// Episode `number` of `device` in the spool.
fn spool_episode(spool: &Path, device: &str, number: usize) {
    dreamer_online::testing::spool_episode(spool, device, number, 4);
}

fn upload_all(spool: &Path, broker: &Broker) {
    let uploader =
        Uploader::start(UploadOptions::new(spool.to_path_buf(), broker.clone())).unwrap();
    let report = uploader.drain(spool, Duration::from_secs(20));
    assert_eq!(report.left_in_spool, 0, "{report:?}");
}

/// Publishes a raw message on the episode subjects (what a broken or hostile sender does).
fn publish_raw(broker: &Broker, id: &str, payload: &[u8]) {
    dreamer_online::testing::with_jetstream(broker, async |js| {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.to_vec().into())
            .message_id(id);
        js.send_publish(episode_subject("robot-a"), message)
            .await
            .unwrap()
            .await
            .unwrap();
    });
}

#[test]
fn every_episode_is_stored_once_and_bad_ones_are_rejected_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&tmp.path().join("broker"));
    let broker = server.broker();
    let spool = tmp.path().join("spool");
    let inbox = tmp.path().join("inbox");
    for n in 0..4 {
        spool_episode(&spool, "robot-a", n);
    }
    spool_episode(&spool, "robot-b", 0);
    let good = std::fs::read(spool.join("robot-a/p1/ep000001-4.npz")).unwrap();
    upload_all(&spool, &broker);
    // A truncated episode file and a message without a proper id: rejected. Episode 1 again
    // with its id: the broker's duplicate window drops it.
    publish_raw(&broker, "robot-a/p1/9", &good[..good.len() / 2]);
    publish_raw(&broker, "not-an-id", &good);
    publish_raw(&broker, "robot-a/p1/1", &good);

    // The learner stores two, confirms one (its checkpoint counts it), then dies.
    let mut ingest = Ingest::connect(&broker, "learner", &inbox, LAYOUT).unwrap();
    let first = ingest.poll(2, Duration::from_millis(500)).unwrap();
    assert_eq!(first.accepted.len(), 2, "{first:?}");
    let pending = ingest.pending(&Default::default()).unwrap();
    assert_eq!(pending.len(), 2);
    ingest.confirm(&[pending[0].0.clone()]).unwrap();
    drop(ingest);

    // Restarted, it goes on from its acknowledged position.
    let mut ingest = Ingest::connect(&broker, "learner", &inbox, LAYOUT).unwrap();
    let rest = ingest.poll(100, Duration::from_millis(500)).unwrap();
    let ids: Vec<String> = rest.accepted.iter().map(ToString::to_string).collect();
    assert_eq!(
        ids,
        ["robot-a/p1/2", "robot-a/p1/3", "robot-b/p1/0"],
        "{rest:?}"
    );
    assert!(rest.duplicates.is_empty(), "{rest:?}");
    let rejected: Vec<&str> = rest.rejected.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(rejected, ["robot-a/p1/9", "not-an-id"], "{rest:?}");
    assert!(
        rest.rejected[1]
            .1
            .contains("not <device>/<policy>/<number>")
    );
    // Nothing more comes: rejected messages are not redelivered.
    let after = ingest.poll(100, Duration::from_millis(300)).unwrap();
    assert_eq!(after, Default::default());

    // The unconfirmed episode is still pending, with the three new ones.
    let pending = ingest.pending(&Default::default()).unwrap();
    let ids: Vec<String> = pending.iter().map(|(id, _)| id.to_string()).collect();
    assert_eq!(
        ids,
        [
            "robot-a/p1/1",
            "robot-a/p1/2",
            "robot-a/p1/3",
            "robot-b/p1/0"
        ]
    );
    assert_eq!(pending[1].1.reward, [20.0, 21.0, 22.0, 23.0]);
    let ids: Vec<_> = pending.iter().map(|(id, _)| id.clone()).collect();
    ingest.confirm(&ids).unwrap();
    assert!(ingest.pending(&Default::default()).unwrap().is_empty());

    // Reconciled: 5 produced = 1 + 4 confirmed by the learner + 0 still spooled.
    assert_eq!(1 + ids.len() + episode_files(&spool).len(), 5);

    // Everything delivered again (a new consumer from the stream's start, as after a learner
    // that lost its position, or messages past the broker's window): each id is known, so
    // nothing is stored twice.
    let mut again = Ingest::connect(&broker, "learner-again", &inbox, LAYOUT).unwrap();
    let replayed = again.poll(100, Duration::from_millis(500)).unwrap();
    assert!(replayed.accepted.is_empty(), "{replayed:?}");
    assert_eq!((replayed.duplicates.len(), replayed.rejected.len()), (5, 2));
    assert!(again.pending(&Default::default()).unwrap().is_empty());
}
