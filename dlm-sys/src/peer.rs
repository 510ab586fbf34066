//! The supplementary groups of a Unix socket's peer (`SO_PEERGROUPS`,
//! Linux 4.13 and later), which the safe socket crates do not offer.
//!
//! Together with `SO_PEERCRED` (uid, gid, pid) this is what the kernel
//! recorded about the connecting process when it called `connect()`: a
//! daemon that plays a device node can check a file mode against the
//! peer's groups as the kernel would check them on `open()`.
//!
//! Needs the `std` feature.

extern crate std;

use core::mem::size_of;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::vec;
use std::vec::Vec;

/// The most groups a process can have (`NGROUPS_MAX` on Linux).
const MAX_GROUPS: usize = 65536;

/// Groups asked for on the first try; most processes have fewer.
const FIRST_TRY: usize = 32;

/// `getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS)`: the supplementary group
/// ids of the process at the other end of the connected Unix socket
/// `fd`, as they were when it connected (the primary gid comes from
/// `SO_PEERCRED` and may or may not be among them).
///
/// A kernel older than 4.13 answers `ENOPROTOOPT`; a socket that is not a
/// connected Unix socket gets what the kernel says (`ENOTSOCK`, an empty
/// list, …).
pub fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    peer_groups_from(fd, FIRST_TRY)
}

/// [`peer_groups`], first trying a buffer of `room` groups and growing it
/// to what the kernel says it needs while it answers `ERANGE`.
fn peer_groups_from(fd: BorrowedFd<'_>, mut room: usize) -> io::Result<Vec<u32>> {
    loop {
        let mut buf: Vec<libc::gid_t> = vec![0; room];
        let bytes = room * size_of::<libc::gid_t>();
        let mut len = libc::socklen_t::try_from(bytes)
            .map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))?;
        // SAFETY: `buf` owns `room` initialised gids, so its pointer is
        // valid for writes of `len` (= `room * size_of::<gid_t>()`) bytes,
        // and the kernel writes at most `len` bytes there (none when `room`
        // is 0, when the pointer is dangling but never written). `len` is a
        // live `socklen_t` the kernel may update. `fd` is borrowed, so it
        // stays open for the whole call.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                buf.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            let n = (len as usize / size_of::<libc::gid_t>()).min(room);
            buf.truncate(n);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ERANGE) {
            return Err(err);
        }
        // The kernel put the size it needs in `len`; the groups may also
        // have changed in between, so always grow.
        let needed = len as usize / size_of::<libc::gid_t>();
        let next = needed.max(room.saturating_mul(2)).max(1);
        if next > MAX_GROUPS || next <= room {
            return Err(err);
        }
        room = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::string::String;

    /// This process's supplementary groups, from `/proc/self/status`.
    fn own_groups() -> Vec<u32> {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix("Groups:"))
            .map(String::from)
            .unwrap_or_default();
        let mut g: Vec<u32> = line
            .split_whitespace()
            .map(|s| s.parse().expect("a gid"))
            .collect();
        g.sort_unstable();
        g
    }

    #[test]
    fn a_socket_pair_reports_our_own_groups() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let mut got = peer_groups(a.as_fd()).expect("SO_PEERGROUPS");
        got.sort_unstable();
        assert_eq!(got, own_groups());
    }

    #[test]
    fn a_buffer_too_small_is_grown() {
        let (a, _b) = UnixStream::pair().expect("socketpair");
        let mut want = peer_groups(a.as_fd()).expect("SO_PEERGROUPS");
        want.sort_unstable();
        for room in [0, 1] {
            let mut got = peer_groups_from(a.as_fd(), room).expect("SO_PEERGROUPS");
            got.sort_unstable();
            assert_eq!(got, want, "starting from room for {room}");
        }
    }

    #[test]
    fn a_file_is_not_a_socket() {
        let f = std::fs::File::open("/proc/self/status").expect("open");
        let err = peer_groups(f.as_fd()).expect_err("not a socket");
        assert_eq!(err.raw_os_error(), Some(libc::ENOTSOCK));
    }
}
