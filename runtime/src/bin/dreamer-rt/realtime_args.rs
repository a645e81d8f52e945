//! The real-time options of the subcommands that run a loop (`run`, `bench`, `serve`): CPU
//! pinning, SCHED_FIFO priority and locked memory for the thread that steps the policy.

use clap::Args;
use dreamer_runtime::RealtimeReport;
use dreamer_runtime::control::{self, LoopOptions};

#[derive(Debug, Args)]
pub struct RealtimeArgs {
    /// Pin the thread that steps the policy to this CPU.
    #[arg(long)]
    pin_cpu: Option<usize>,
    /// SCHED_FIFO priority (1-99) for the thread that steps the policy, where permitted.
    #[arg(long)]
    rt_priority: Option<i32>,
    /// Lock memory (mlockall), where permitted.
    #[arg(long)]
    lock_memory: bool,
}

impl RealtimeArgs {
    /// Applies the settings to the calling thread; the report says what the OS refused.
    pub fn apply(&self) -> RealtimeReport {
        control::apply_realtime(&LoopOptions {
            pin_cpu: self.pin_cpu,
            realtime_priority: self.rt_priority,
            lock_memory: self.lock_memory,
        })
    }
}
