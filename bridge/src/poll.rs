//! Waiting for one reply from each of several workers at once, with a deadline: poll(2) on
//! their stdout pipes, so N workers run in parallel and a hang is noticed on time.

use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::error::Fault;
use crate::process::Worker;
use crate::protocol::{Frame, kind, raised, take_frame};

/// Bytes read per `read(2)`; a pixel transition (about 12 KiB) takes one.
const READ_CHUNK: usize = 1 << 16;

/// One reply frame from each worker in `which` (indices into `workers`), in that order; the
/// first worker that fails (sends an error frame, ends, breaks the protocol, misses
/// `deadline`) is returned with its fault. `timeout` and `option` only describe the deadline in a timeout fault.
pub(crate) fn receive_all(
    workers: &mut [Worker],
    which: &[usize],
    deadline: Instant,
    timeout: (Duration, &'static str),
    chunk: &mut Vec<u8>,
) -> Result<Vec<Frame>, (usize, Fault)> {
    chunk.resize(READ_CHUNK, 0);
    let mut replies: Vec<Option<Frame>> = vec![None; which.len()];
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(which.len());
    let mut slots: Vec<usize> = Vec::with_capacity(which.len());
    loop {
        fds.clear();
        slots.clear();
        for (slot, &index) in which.iter().enumerate() {
            if replies[slot].is_none() {
                fds.push(libc::pollfd {
                    fd: workers[index].stdout.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                });
                slots.push(slot);
            }
        }
        if fds.is_empty() {
            break;
        }
        let now = Instant::now();
        if now >= deadline {
            let (after, option) = timeout;
            return Err((which[slots[0]], Fault::TimedOut { after, option }));
        }
        // Round up so a sub-millisecond remainder does not spin.
        let wait_ms = (deadline - now)
            .as_micros()
            .div_ceil(1000)
            .min(i32::MAX as u128) as i32;
        // SAFETY: `fds` is a valid, initialised array of `fds.len()` pollfd structs that
        // lives across the call; poll(2) writes only their `revents`.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if ready < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err((
                which[slots[0]],
                Fault::Protocol {
                    detail: format!("poll(2) on the worker pipes failed: {error}"),
                },
            ));
        }
        for (fd, &slot) in fds.iter().zip(&slots) {
            if fd.revents == 0 {
                continue;
            }
            let index = which[slot];
            let worker = &mut workers[index];
            match worker.stdout.read(chunk) {
                Ok(0) => return Err((index, worker.exited_fault())),
                Ok(n) => {
                    worker.inbox.extend_from_slice(&chunk[..n]);
                    match take_frame(&mut worker.inbox) {
                        // An error is reported at once, not after the others replied (or
                        // after a hanging one's deadline).
                        Ok(Some(frame)) if frame.kind == kind::ERROR => {
                            return Err((index, raised(&frame.payload)));
                        }
                        Ok(Some(frame)) => replies[slot] = Some(frame),
                        Ok(None) => {}
                        Err(fault) => return Err((index, fault)),
                    }
                }
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err((index, worker.exited_fault())),
            }
        }
    }
    Ok(replies.into_iter().flatten().collect())
}
