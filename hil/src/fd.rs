//! Waiting on a descriptor (a pty master or a socket) with microsecond resolution.

use std::io;
use std::time::Duration;

/// Waits until `fd` is readable (or, with `want_write`, writable too) or `timeout` passes
/// (zero: only looks). Returns (readable, writable); a hang-up or error counts as readable,
/// so the read that follows reports it.
pub fn wait_ready(
    fd: libc::c_int,
    want_write: bool,
    timeout: Duration,
) -> io::Result<(bool, bool)> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: one valid pollfd and a valid timespec for the duration of the call; no mask.
    let rc = unsafe { libc::ppoll(&mut pfd, 1, &timeout, std::ptr::null()) };
    if rc < 0 {
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::Interrupted {
            return Ok((false, false));
        }
        return Err(error);
    }
    Ok((
        pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0,
        pfd.revents & libc::POLLOUT != 0,
    ))
}

/// Nothing to read or no room to write now: try again later.
pub fn is_quiet(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
