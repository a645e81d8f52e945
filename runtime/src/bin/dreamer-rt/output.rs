//! Lines several subcommands print alike, best-effort through [`outln!`] (stdout may be
//! gone; `main` reports a lost output at the end).

use dreamer_cli::outln;
use dreamer_runtime::{Agent, LatencySummary};

/// One line per graph: the execution providers registered for it.
pub fn print_placements(agent: &Agent) {
    for placement in agent.placements() {
        outln!("  provider  {placement}");
    }
}

/// One latency line under a label, the labels aligned.
pub fn print_latency(label: &str, summary: &LatencySummary) {
    outln!("  {label:<28} {summary}");
}
