//! Policies down: the learner publishes each verified bundle into a JetStream object store
//! (`DREAMER_BUNDLES`, objects `v<version>/<file>`) and then, in a key-value bucket
//! (`DREAMER_POLICY`, key `current`), the version record naming every file with its sha256.
//! A device fetches the files of a record into a staging folder, checks every hash against
//! the record, opens the result with the bundle loader (which checks the manifest's own
//! hashes and, with trusted keys, the learner's signature), and only then renames it into
//! place: a cut transfer, a changed file or a bad signature never becomes a loadable bundle.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dreamer_bundle::PublicKey;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use crate::{Broker, OnlineError};

/// The object store holding every published bundle's files.
pub const BUNDLE_STORE: &str = "DREAMER_BUNDLES";
/// The key-value bucket holding the current version record.
pub const POLICY_BUCKET: &str = "DREAMER_POLICY";
/// The key of the current version record.
pub const CURRENT_KEY: &str = "current";

/// What devices read to know the current policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    /// Increases with every publication.
    pub version: u64,
    /// Every file of the bundle with its sha256 (lowercase hex).
    pub files: BTreeMap<String, String>,
}

fn object_name(version: u64, file: &str) -> String {
    format!("v{version}/{file}")
}

/// A single-threaded async runtime for one blocking call.
fn runtime() -> Result<tokio::runtime::Runtime, OnlineError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| OnlineError::Thread {
            what: "policy",
            message: e.to_string(),
        })
}

fn js_error(broker: &Broker) -> impl Fn(&dyn std::fmt::Display) -> OnlineError + '_ {
    |e| OnlineError::JetStream {
        url: broker.url.clone(),
        message: e.to_string(),
    }
}

fn spool_error(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> OnlineError + '_ {
    |e| OnlineError::Spool {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// Publishes the bundle folder `dir` as `version`: every file first, the record last, so a
/// device never sees a record whose files are not all there.
pub fn publish_bundle(
    broker: &Broker,
    dir: &Path,
    version: u64,
) -> Result<PolicyRecord, OnlineError> {
    let mut files = BTreeMap::new();
    let mut contents = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| spool_error(dir)(&e))?;
    for entry in entries {
        let path = entry.map_err(|e| spool_error(dir)(&e))?.path();
        if !path.is_file() {
            continue;
        }
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let bytes = std::fs::read(&path).map_err(|e| spool_error(&path)(&e))?;
        files.insert(name.clone(), dreamer_bundle::sha256_hex(&bytes));
        contents.push((name, bytes));
    }
    let record = PolicyRecord { version, files };
    let err = js_error(broker);
    runtime()?.block_on(async {
        let js = async_nats::jetstream::new(broker.connect(Duration::from_secs(5)).await?);
        let store = js
            .create_object_store(async_nats::jetstream::object_store::Config {
                bucket: BUNDLE_STORE.to_string(),
                ..Default::default()
            })
            .await
            .map_err(|e| err(&e))?;
        for (name, bytes) in &contents {
            store
                .put(object_name(version, name).as_str(), &mut bytes.as_slice())
                .await
                .map_err(|e| err(&e))?;
        }
        let kv = policy_bucket(&js).await.map_err(|e| err(&e))?;
        let json = serde_json::to_vec(&record).map_err(|e| err(&e))?;
        kv.put(CURRENT_KEY, json.into())
            .await
            .map_err(|e| err(&e))?;
        Ok(record)
    })
}

async fn policy_bucket(
    js: &async_nats::jetstream::Context,
) -> Result<async_nats::jetstream::kv::Store, async_nats::jetstream::context::CreateKeyValueError> {
    js.create_key_value(async_nats::jetstream::kv::Config {
        bucket: POLICY_BUCKET.to_string(),
        history: 5,
        ..Default::default()
    })
    .await
}

/// The current version record, if a policy was published.
pub fn current_policy(broker: &Broker) -> Result<Option<PolicyRecord>, OnlineError> {
    let err = js_error(broker);
    runtime()?.block_on(async {
        let js = async_nats::jetstream::new(broker.connect(Duration::from_secs(5)).await?);
        let kv = policy_bucket(&js).await.map_err(|e| err(&e))?;
        match kv.get(CURRENT_KEY).await.map_err(|e| err(&e))? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| err(&format!("the version record is not readable: {e}"))),
        }
    })
}

/// Fetches the bundle of `record` into `root/v<version>` (returned), checked as described
/// above; a folder already there from an earlier fetch is returned as is. On any failure
/// nothing is left under `root` but the staging folder's removal.
pub fn fetch_bundle(
    broker: &Broker,
    record: &PolicyRecord,
    root: &Path,
    trusted: &[PublicKey],
) -> Result<PathBuf, OnlineError> {
    let target = root.join(format!("v{}", record.version));
    if target.is_dir() {
        return Ok(target);
    }
    let staging = root.join(format!(".v{}.partial", record.version));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging).map_err(|e| spool_error(&staging)(&e))?;
    let fetched = fetch_into(broker, record, &staging).and_then(|()| {
        dreamer_bundle::Bundle::open(&staging, trusted)
            .map(|_| ())
            .map_err(|e| spool_error(&staging)(&format!("refused: {e}")))
    });
    match fetched
        .and_then(|()| std::fs::rename(&staging, &target).map_err(|e| spool_error(&target)(&e)))
    {
        Ok(()) => Ok(target),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            Err(e)
        }
    }
}

/// Every file of `record` into `dir`, each checked against its hash.
fn fetch_into(broker: &Broker, record: &PolicyRecord, dir: &Path) -> Result<(), OnlineError> {
    let err = js_error(broker);
    runtime()?.block_on(async {
        let js = async_nats::jetstream::new(broker.connect(Duration::from_secs(5)).await?);
        let store = js
            .get_object_store(BUNDLE_STORE)
            .await
            .map_err(|e| err(&e))?;
        for (name, expected) in &record.files {
            let plain = !name.is_empty()
                && name != "."
                && name != ".."
                && !name.contains('/')
                && !name.contains('\\');
            if !plain {
                return Err(err(&format!("the record names the file `{name}`")));
            }
            let object = object_name(record.version, name);
            let mut reader = store
                .get(object.as_str())
                .await
                .map_err(|e| err(&format!("{object}: {e}")))?;
            let mut bytes = Vec::new();
            reader
                .read_to_end(&mut bytes)
                .await
                .map_err(|e| err(&format!("{object}: {e}")))?;
            let actual = dreamer_bundle::sha256_hex(&bytes);
            if &actual != expected {
                return Err(err(&format!(
                    "{object}: sha256 {actual} is not the record's {expected}"
                )));
            }
            let path = dir.join(name);
            std::fs::write(&path, &bytes).map_err(|e| spool_error(&path)(&e))?;
        }
        Ok(())
    })
}
