//! Policies down, against a real JetStream server: a published signed bundle arrives whole
//! and checked; a changed file, a missing one (a cut transfer) or a bundle signed by another
//! key is refused and never appears where a device loads bundles from.

#[path = "../../bundle/tests/common/mod.rs"]
mod bundle_fixtures;

use std::path::Path;

use dreamer_bundle::{MANIFEST_FILE, PublicKey, SIGNATURE_FILE, SecretKey, generate_key_pair};
use dreamer_online::policy::{PolicyRecord, current_policy, fetch_bundle, publish_bundle};
use dreamer_online::testing::{LEARNER_USER, NatsServer};
use dreamer_online::{Broker, Credentials};

/// A valid bundle in `dir`, signed with the key pair in `keys` (created); returns the public
/// key.
fn signed_bundle(dir: &Path, keys: &Path) -> PublicKey {
    bundle_fixtures::valid(dir);
    let (secret, public, _) = generate_key_pair(keys).unwrap();
    let manifest = std::fs::read(dir.join(MANIFEST_FILE)).unwrap();
    let signature = SecretKey::read(&secret).unwrap().sign_manifest(&manifest);
    std::fs::write(dir.join(SIGNATURE_FILE), signature).unwrap();
    PublicKey::read(&public).unwrap()
}

fn listing(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).unwrap())
        })
        .collect();
    files.sort();
    files
}

#[test]
fn a_published_bundle_arrives_checked_and_a_bad_one_never_becomes_loadable() {
    let tmp = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&tmp.path().join("broker"));
    let broker = server.learner_broker();
    assert_eq!(current_policy(&broker).unwrap(), None);

    let learner = tmp.path().join("learner");
    let trusted = signed_bundle(&learner.join("v1"), &learner.join("keys/learner"));
    let record = publish_bundle(&broker, &learner.join("v1"), 1).unwrap();
    assert!(record.files.contains_key(MANIFEST_FILE) && record.files.contains_key(SIGNATURE_FILE));
    assert_eq!(current_policy(&broker).unwrap(), Some(record.clone()));

    // A device reads policies with its own credentials.
    let device = tmp.path().join("device");
    let trusted = [trusted];
    let fetched = fetch_bundle(&server.broker(), &record, &device, &trusted).unwrap();
    assert_eq!(fetched, device.join("v1"));
    assert_eq!(listing(&fetched), listing(&learner.join("v1")));

    // A record whose hash for one file does not match what the store holds.
    let mut changed = record.clone();
    changed.version = 2;
    publish_bundle(&broker, &learner.join("v1"), 2).unwrap();
    let name = changed
        .files
        .keys()
        .find(|n| n.ends_with(".onnx"))
        .unwrap()
        .clone();
    changed.files.insert(name, "0".repeat(64));
    let err = fetch_bundle(&broker, &changed, &device, &trusted).unwrap_err();
    assert!(err.to_string().contains("is not the record's"), "{err}");

    // A record naming a file the store does not have (a transfer cut short).
    let mut cut = record.clone();
    cut.version = 3;
    let err = fetch_bundle(&broker, &cut, &device, &trusted).unwrap_err();
    assert!(err.to_string().contains("v3/"), "{err}");

    // A bundle signed by a key the device does not trust.
    let other = tmp.path().join("other");
    signed_bundle(&other, &tmp.path().join("keys/other"));
    let foreign: PolicyRecord = publish_bundle(&broker, &other, 4).unwrap();
    let err = fetch_bundle(&broker, &foreign, &device, &trusted).unwrap_err();
    assert!(err.to_string().contains("refused"), "{err}");

    // Only the good bundle is there; no staging folder is left.
    let names: Vec<String> = std::fs::read_dir(&device)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["v1"]);
}

#[test]
fn only_the_learner_may_publish_a_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let server = NatsServer::start(&tmp.path().join("broker"));
    let learner = tmp.path().join("learner");
    signed_bundle(&learner.join("v1"), &learner.join("keys/learner"));
    let record = publish_bundle(&server.learner_broker(), &learner.join("v1"), 1).unwrap();

    // The devices' user may not write the bundle store or the version record; a client
    // without credentials is not let in at all. Either way the learner's record stands.
    let stranger = Broker {
        url: server.url(),
        credentials: Credentials::None,
    };
    let wrong = Broker {
        url: server.url(),
        credentials: Credentials::UserPassword {
            user: LEARNER_USER.to_string(),
            password: "guess".to_string(),
        },
    };
    for (who, broker) in [
        ("device", server.broker()),
        ("stranger", stranger),
        ("wrong password", wrong),
    ] {
        let err = publish_bundle(&broker, &learner.join("v1"), 7).unwrap_err();
        let text = err.to_string();
        // The server drops a device's writes to the store (the client's wait for their
        // acknowledgement ends) and closes the door on a stranger.
        let refused = if who == "device" {
            text.contains("ermission") || text.contains("ack")
        } else {
            text.contains("authorization violation")
        };
        assert!(refused, "{who}: {text}");
        assert_eq!(
            current_policy(&server.learner_broker()).unwrap(),
            Some(record.clone()),
            "{who}"
        );
    }
}
