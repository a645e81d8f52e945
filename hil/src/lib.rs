//! Hardware-in-the-loop harness for a deployed Dreamer policy.
//!
//! [`harness::run`] starts the simulated robot (`firmware-host`: the firmware core against
//! a real-time plant) and the policy runtime (`dreamer-rt serve`) as separate processes,
//! over a serial line (a pseudo-terminal pair, [`pty`]) or UDP on loopback, optionally
//! through [`proxy`], which injects seeded, reproducible faults (dropped, flipped,
//! duplicated and delayed bytes or datagrams, reordered datagrams) and keeps a ledger of
//! what each receiver must conclude. The report puts
//! the loop's latency, deadline misses, frame errors and episode return next to the same
//! policy's return in pure simulation. See `docs/hil.md`.

pub mod baseline;
pub mod fd;
pub mod harness;
pub mod proxy;
pub mod pty;
pub mod sched;

pub use harness::{HilOptions, HilReport, LinkKind, run};
pub use proxy::{
    Direction, FaultRates, Injected, Ledger, LinkStats, Proxy, Reconciliation, UdpEnds,
};
