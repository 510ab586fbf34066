//! Waiting for fds with `poll(2)`.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use dlm_proto::error::Errno;

/// Wait until any of `fds` is readable (or, with `write`, writable), up to
/// `timeout` (`None`: no bound). Whether one is.
pub(crate) fn wait_fds(
    fds: &[BorrowedFd<'_>],
    write: bool,
    timeout: Option<Duration>,
) -> Result<bool, Errno> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let flags = if write { PollFlags::OUT } else { PollFlags::IN };
    // A deadline the clock cannot represent is no deadline.
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let mut pfds: Vec<PollFd<'_>> = fds.iter().map(|fd| PollFd::new(fd, flags)).collect();
        let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        let ts = left.map(|d| Timespec {
            tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: i64::from(d.subsec_nanos()),
        });
        match poll(&mut pfds, ts.as_ref()) {
            Ok(n) => return Ok(n > 0),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Errno::from_raw(e.raw_os_error())),
        }
    }
}
