//! Following the learner's policies: a thread watches the broker's version record, fetches
//! each new bundle (checked against every hash and the trusted keys, `dreamer_online::policy`),
//! loads it into an agent off the control thread and hands it over; the control loop
//! switches between episodes, never within one. A bundle that fails a check or does not
//! load is refused (said once on stderr) and the device keeps its policy.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use dreamer_cli::errln;
use dreamer_online::Broker;
use dreamer_online::policy::{current_policy, fetch_bundle};
use dreamer_runtime::{Agent, AgentOptions};

/// A new policy, loaded and ready to act.
pub struct Followed {
    pub version: u64,
    pub bundle: PathBuf,
    pub agent: Agent,
}

pub struct PolicyFollower {
    next: Receiver<Followed>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PolicyFollower {
    /// Watches `broker` every `poll`, fetching bundles into `root`, loading them with
    /// `options` (whose trusted keys every bundle must be signed with).
    pub fn start(broker: Broker, root: PathBuf, options: AgentOptions, poll: Duration) -> Self {
        let (tx, next) = sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let inside = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("policy-follow".to_string())
            .spawn(move || follow(&broker, &root, &options, poll, &inside, &tx))
            .ok();
        PolicyFollower { next, stop, thread }
    }

    /// The newest policy loaded since the last call, if any.
    pub fn try_next(&self) -> Option<Followed> {
        let mut newest = None;
        while let Ok(followed) = self.next.try_recv() {
            newest = Some(followed);
        }
        newest
    }
}

impl Drop for PolicyFollower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Unblock a send waiting for room.
        while self.next.try_recv().is_ok() {}
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn follow(
    broker: &Broker,
    root: &std::path::Path,
    options: &AgentOptions,
    poll: Duration,
    stop: &AtomicBool,
    next: &SyncSender<Followed>,
) {
    let mut last = 0u64;
    let mut refused = BTreeSet::new();
    let mut unreachable_said = false;
    while !stop.load(Ordering::Relaxed) {
        match current_policy(broker) {
            Ok(Some(record)) if record.version > last && !refused.contains(&record.version) => {
                let loaded = fetch_bundle(broker, &record, root, &options.trusted_keys)
                    .map_err(|e| e.to_string())
                    .and_then(|bundle| {
                        Agent::load(&bundle, options.clone())
                            .map(|agent| (bundle, agent))
                            .map_err(|e| e.to_string())
                    });
                match loaded {
                    Ok((bundle, agent)) => {
                        last = record.version;
                        let followed = Followed {
                            version: record.version,
                            bundle,
                            agent,
                        };
                        if next.send(followed).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        errln!(
                            "policy v{}: refused, keeping the current policy: {e}",
                            record.version
                        );
                        refused.insert(record.version);
                    }
                }
                unreachable_said = false;
            }
            Ok(_) => unreachable_said = false,
            Err(e) if !unreachable_said => {
                errln!("following policies: {e} (retrying)");
                unreachable_said = true;
            }
            Err(_) => {}
        }
        let until = Instant::now() + poll;
        while Instant::now() < until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
