//! The options that name the NATS broker a device uploads its recorded episodes to.

use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;
use dreamer_online::{Broker, Credentials};

#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// Upload the recorded episodes to this NATS server (JetStream), e.g.
    /// nats://learner.local:4222; each spooled episode is deleted once the broker
    /// acknowledged it.
    #[arg(long, value_name = "URL", requires = "record")]
    pub upload: Option<String>,
    /// User name for the broker; the password comes from $DREAMER_NATS_PASSWORD.
    #[arg(
        long,
        value_name = "USER",
        requires = "upload",
        conflicts_with = "nats_creds"
    )]
    pub nats_user: Option<String>,
    /// A NATS credentials file (JWT and nkey seed, as `nsc` writes it).
    #[arg(long, value_name = "FILE", requires = "upload")]
    pub nats_creds: Option<PathBuf>,
    /// Follow the learner's policies on the same broker: fetch each new bundle into this
    /// folder (every hash and the signature checked: needs --trusted-key), load it off the
    /// control thread, and switch to it between episodes.
    #[arg(long, value_name = "DIR", requires = "upload")]
    pub follow_policies: Option<PathBuf>,
    /// At the end of the run, keep uploading for at most this many seconds before leaving
    /// what is left in the spool for the next start.
    #[arg(long, default_value_t = 10.0, value_name = "S")]
    pub upload_drain_s: f64,
}

impl BrokerArgs {
    /// The broker to upload to, if any.
    pub fn broker(&self) -> Result<Option<Broker>> {
        let Some(url) = &self.upload else {
            return Ok(None);
        };
        let credentials =
            Credentials::from_args(self.nats_user.as_deref(), self.nats_creds.as_deref())?;
        if !(self.upload_drain_s.is_finite() && self.upload_drain_s >= 0.0) {
            bail!(
                "--upload-drain-s {} is not a number of seconds",
                self.upload_drain_s
            );
        }
        Ok(Some(Broker {
            url: url.clone(),
            credentials,
        }))
    }
}
