//! The uploader against a real JetStream server on loopback: episodes reach the stream once
//! each and leave the spool only when acknowledged, across a broker outage; without the
//! devices' credentials nothing is accepted.

use std::path::Path;
use std::time::Duration;

use dreamer_online::testing::{NatsServer, stream_messages};
use dreamer_online::upload::{UploadOptions, Uploader, episode_files};
use dreamer_online::{Broker, Credentials};

/// Episode `number` of `device` in the spool.
fn spool_episode(spool: &Path, device: &str, number: usize) {
    dreamer_online::testing::spool_episode(spool, device, number, 5);
}

fn options(spool: &Path, broker: Broker) -> UploadOptions {
    UploadOptions {
        backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(200),
        timeout: Duration::from_secs(2),
        ..UploadOptions::new(spool.to_path_buf(), broker)
    }
}

#[test]
fn episodes_reach_the_stream_once_and_leave_the_spool_only_when_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let mut server = NatsServer::start(&tmp.path().join("broker"));
    let broker = server.broker();
    for n in 0..3 {
        spool_episode(&spool, "robot-a", n);
    }
    let bytes_of_0 = std::fs::read(spool.join("robot-a/p1/ep000000-5.npz")).unwrap();
    let uploader = Uploader::start(options(&spool, broker.clone())).unwrap();
    let report = uploader.drain(&spool, Duration::from_secs(20));
    assert_eq!(report.uploaded.len(), 3, "{report:?}");
    assert_eq!(report.left_in_spool, 0);

    // The broker goes away: new episodes wait in the spool, retried, nothing lost.
    server.kill();
    spool_episode(&spool, "robot-a", 3);
    spool_episode(&spool, "robot-b", 0);
    let uploader = Uploader::start(options(&spool, broker.clone())).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert!(uploader.failures() > 0);
    assert_eq!(uploader.uploaded(), 0);
    assert_eq!(episode_files(&spool).len(), 2);
    // The broker comes back with its store: the waiting episodes go up.
    let server = NatsServer::start_on(&tmp.path().join("broker"), server.port);
    let report = uploader.drain(&spool, Duration::from_secs(30));
    assert_eq!(report.uploaded.len(), 2, "{report:?}");
    assert!(report.failures > 0 && report.last_error.is_some());

    // The same episode again (a device that crashed before deleting it): the stream keeps one.
    let dir = spool.join("robot-a/p1");
    std::fs::write(dir.join("ep000000-5.npz"), &bytes_of_0).unwrap();
    let uploader = Uploader::start(options(&spool, broker.clone())).unwrap();
    let report = uploader.drain(&spool, Duration::from_secs(20));
    assert_eq!(
        (report.uploaded.len(), report.duplicates.len()),
        (0, 1),
        "{report:?}"
    );

    let messages = stream_messages(&server.broker());
    let ids: Vec<&str> = messages.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "robot-a/p1/0",
            "robot-a/p1/1",
            "robot-a/p1/2",
            "robot-a/p1/3",
            "robot-b/p1/0"
        ]
    );
    assert_eq!(messages[0].payload, bytes_of_0);
}

#[test]
fn a_client_without_the_devices_credentials_is_refused_and_the_spool_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let spool = tmp.path().join("spool");
    let server = NatsServer::start(&tmp.path().join("broker"));
    spool_episode(&spool, "intruder", 0);
    for credentials in [
        Credentials::None,
        Credentials::UserPassword {
            user: "device".to_string(),
            password: "wrong".to_string(),
        },
    ] {
        let broker = Broker {
            url: server.url(),
            credentials,
        };
        let uploader = Uploader::start(options(&spool, broker)).unwrap();
        std::thread::sleep(Duration::from_millis(600));
        let report = uploader.stop();
        assert!(
            report.uploaded.is_empty() && report.failures > 0,
            "{report:?}"
        );
        let error = report.last_error.unwrap();
        assert!(
            error.contains("authorization") || error.contains("Authorization"),
            "{error}"
        );
        assert_eq!(report.left_in_spool, 1);
    }
}
