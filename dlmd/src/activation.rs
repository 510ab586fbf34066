//! Socket activation: serving a listening socket that systemd (or
//! `systemd-socket-activate`) passed, instead of binding one.
//!
//! The protocol is sd_listen_fds(3)'s: `LISTEN_PID` is our pid,
//! `LISTEN_FDS` the number of sockets passed from descriptor 3 on, and
//! `LISTEN_FDNAMES` (optional) their names, separated by `:`. One socket
//! is taken: the only one, or the one named `dlmd.socket` or `dlmd`.
//!
//! The descriptor is not ours by any Rust value, and taking ownership of a
//! raw descriptor needs `unsafe`, which this crate forbids. So it is
//! duplicated instead, with `pidfd_getfd(2)` on our own pidfd (Linux 5.6
//! and later): that makes a new descriptor, owned from the start, and
//! close-on-exec. This happens first thing in `main`, before anything
//! could close the passed descriptor and reuse its number. The original
//! stays open, unused, until the daemon exits.
//!
//! The socket must be a listening Unix stream socket; anything else is
//! refused with a message that says what it is.

use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;

use rustix::net::{AddressFamily, SocketType};
use rustix::process::{PidfdFlags, PidfdGetfdFlags};

/// The first passed descriptor (`SD_LISTEN_FDS_START`).
const FIRST_FD: i32 = 3;

/// The names a passed socket of ours may have.
const NAMES: [&str; 2] = ["dlmd.socket", "dlmd"];

/// What the environment says was passed: the descriptor number, or `None`
/// if nothing was passed to this process.
fn passed_fd(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Option<i32>, String> {
    let Some(pid) = listen_pid else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(our_pid) {
        log::debug!("LISTEN_PID={pid} is another process's: no socket passed to us");
        return Ok(None);
    }
    let n: i32 = listen_fds
        .unwrap_or("0")
        .trim()
        .parse()
        .map_err(|_| format!("LISTEN_FDS={listen_fds:?} is not a number"))?;
    if n <= 0 {
        return Ok(None);
    }
    if n == 1 {
        return Ok(Some(FIRST_FD));
    }
    let names: Vec<&str> = names.unwrap_or("").split(':').collect();
    match names.iter().position(|n| NAMES.contains(n)) {
        Some(i) if (i as i32) < n => Ok(Some(FIRST_FD + i as i32)),
        _ => Err(format!(
            "{n} sockets were passed (LISTEN_FDS) and none is named {} in LISTEN_FDNAMES \
             (set FileDescriptorName= in the socket unit)",
            NAMES.join(" or ")
        )),
    }
}

/// Check that `fd` is a listening Unix stream socket.
fn check(fd: &OwnedFd, num: i32) -> Result<(), String> {
    let what = format!("the passed descriptor {num}");
    let st = rustix::fs::fstat(fd).map_err(|e| format!("cannot stat {what}: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::Socket {
        return Err(format!("{what} is not a socket"));
    }
    let family =
        rustix::net::sockopt::socket_domain(fd).map_err(|e| format!("{what}: SO_DOMAIN: {e}"))?;
    if family != AddressFamily::UNIX {
        return Err(format!(
            "{what} is not a Unix socket (family {family:?}): dlmd serves Unix sockets only"
        ));
    }
    let ty = rustix::net::sockopt::socket_type(fd).map_err(|e| format!("{what}: SO_TYPE: {e}"))?;
    if ty != SocketType::STREAM {
        return Err(format!(
            "{what} is not a stream socket ({ty:?}; ListenStream= in the unit)"
        ));
    }
    let listening = rustix::net::sockopt::socket_acceptconn(fd)
        .map_err(|e| format!("{what}: SO_ACCEPTCONN: {e}"))?;
    if !listening {
        return Err(format!(
            "{what} is not listening (Accept=no in the unit passes the listener)"
        ));
    }
    Ok(())
}

/// The listening socket passed to us, if any. The `LISTEN_*` variables
/// are removed either way, as sd_listen_fds(3) does with `unset_environment`.
pub fn listener() -> Result<Option<UnixListener>, String> {
    let var = |k: &str| std::env::var(k).ok();
    let found = passed_fd(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    for k in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // Single-threaded still: nothing reads the environment meanwhile.
        std::env::remove_var(k);
    }
    let Some(num) = found? else {
        return Ok(None);
    };
    let me = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
        .map_err(|e| format!("cannot open our own pidfd to take the passed socket: {e}"))?;
    let fd = rustix::process::pidfd_getfd(&me, num, PidfdGetfdFlags::empty()).map_err(|e| {
        format!("cannot take the passed descriptor {num} (pidfd_getfd, Linux 5.6 or later): {e}")
    })?;
    check(&fd, num)?;
    Ok(Some(UnixListener::from(fd)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_names_the_descriptor() {
        assert_eq!(passed_fd(None, Some("1"), None, 7), Ok(None));
        assert_eq!(
            passed_fd(Some("8"), Some("1"), None, 7),
            Ok(None),
            "not ours"
        );
        assert_eq!(passed_fd(Some("7"), Some("0"), None, 7), Ok(None));
        assert_eq!(passed_fd(Some("7"), Some("1"), None, 7), Ok(Some(3)));
        assert_eq!(
            passed_fd(Some("7"), Some("2"), Some("other:dlmd.socket"), 7),
            Ok(Some(4))
        );
        assert!(passed_fd(Some("7"), Some("2"), Some("a:b"), 7).is_err());
        assert!(passed_fd(Some("7"), Some("x"), None, 7).is_err());
    }

    #[test]
    fn only_a_listening_unix_stream_socket_is_served() {
        let dir = tempfile::tempdir().expect("temp dir");
        let l = UnixListener::bind(dir.path().join("s")).expect("bind");
        assert_eq!(check(&OwnedFd::from(l), 3), Ok(()));
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("pair");
        let e = check(&OwnedFd::from(a), 3).expect_err("not listening");
        assert!(e.contains("not listening"), "{e}");
        let d = std::os::unix::net::UnixDatagram::unbound().expect("datagram");
        let e = check(&OwnedFd::from(d), 3).expect_err("datagram");
        assert!(e.contains("not a stream socket"), "{e}");
        let f = std::fs::File::open("/dev/null").expect("file");
        let e = check(&OwnedFd::from(f), 3).expect_err("file");
        assert!(e.contains("not a socket"), "{e}");
    }
}
