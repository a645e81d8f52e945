//! `run` in a build without the `sim` feature (a device build): the closed loop needs a
//! simulated task, so the subcommand only says why it is absent and what a device uses.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::Args;

/// Takes whatever `run` would take, so that any invocation gets the explanation.
#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct RunArgs {
    #[arg(hide = true, trailing_var_arg = true, allow_hyphen_values = true)]
    _ignored: Vec<OsString>,
}

pub fn run(_args: RunArgs, _ort_lib: Option<PathBuf>) -> Result<()> {
    bail!(
        "this dreamer-rt was built without the simulation (cargo feature `sim`), so `run`, the \
         closed loop against a built-in task, is absent. A device runs the policy with \
         `dreamer-rt serve` (the firmware over a serial port) or embeds the library \
         (`dreamer_runtime::Agent`); build with the default features for `run`."
    )
}
