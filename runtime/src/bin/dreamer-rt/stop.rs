//! SIGINT and SIGTERM ask `serve` and `run` to stop at the next step and finish their work
//! (the summary, the recorded episodes, the uploads); a second signal ends the process at
//! once, for a user whose first Ctrl-C is waiting on a stuck broker.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first SIGINT or SIGTERM.
pub static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    if STOP.swap(true, Ordering::Relaxed) {
        // SAFETY: `_exit` is async-signal-safe; nothing else runs here.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the handler (before any thread is started).
pub fn on_signals() {
    let handler = request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls `_exit`, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// Whether a stop was asked for (`run` polls it; `serve` hands the flag to the library).
#[cfg(feature = "sim")]
pub fn requested() -> bool {
    STOP.load(Ordering::Relaxed)
}
