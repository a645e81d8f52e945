//! Lines several subcommands print alike.

use dreamer_runtime::{Agent, LatencySummary};

/// One line per graph: the execution providers registered for it.
pub fn print_placements(agent: &Agent) {
    for placement in agent.placements() {
        println!("  provider  {placement}");
    }
}

/// One latency line under a label, the labels aligned.
pub fn print_latency(label: &str, summary: &LatencySummary) {
    println!("  {label:<28} {summary}");
}
