//! Making an open descriptor refer to another file, in place: what a
//! client needs to replace a dead daemon connection with a new one while
//! other threads, and epoll, keep using the descriptor's number.
//!
//! The safe fd types offer `dup2` only onto an `OwnedFd` held mutably;
//! a connection shared by several threads is reached through `&self`.
//! The call is sound however the target is held: the target number stays
//! open (it now refers to the source's file), so whoever owns it still
//! owns an open descriptor, and nothing is closed under anyone's feet
//! that they did not already share.
//!
//! Needs the `std` feature.

extern crate std;

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `dup3(source, target, O_CLOEXEC)`: from now on `target` refers to the
/// file `source` refers to; the file `target` referred to is closed
/// unless another descriptor still refers to it. Both stay open.
///
/// The same number twice is `EINVAL`, as `dup3` says.
pub fn replace_fd(target: BorrowedFd<'_>, source: BorrowedFd<'_>) -> io::Result<()> {
    loop {
        // SAFETY: both numbers are open descriptors for the duration of
        // the call (the borrows guarantee it), and dup3 leaves `target`
        // open, referring to `source`'s file, so no owner of `target`
        // ends up with a closed or reused number.
        let r = unsafe { libc::dup3(source.as_raw_fd(), target.as_raw_fd(), libc::O_CLOEXEC) };
        if r >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::vec::Vec;

    #[test]
    fn the_target_number_talks_to_the_new_peer() {
        let (old, old_peer) = UnixStream::pair().unwrap();
        let (new, mut new_peer) = UnixStream::pair().unwrap();
        replace_fd(old.as_fd(), new.as_fd()).unwrap();
        drop(new);
        (&old).write_all(b"hi").unwrap();
        let mut b = [0u8; 2];
        new_peer.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"hi");
        // The old connection lost its only descriptor: its peer sees EOF.
        let mut rest = Vec::new();
        (&old_peer).read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty());
        assert!(
            replace_fd(old.as_fd(), old.as_fd()).is_err(),
            "the same number"
        );
    }
}
